"""Failure tickets: error counts and rates per 1,000 requests by type and arm, over time, and
the retry rate. Every attempt (row) counts as a request here, errored or not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.analysis import metrics as m
from harness.analysis.data import RunData
from harness.analysis.stats import wilson_ci
from harness.analysis.timeseries import bin_index, bin_width, counts


def errors_summary(data: RunData) -> dict[str, Any]:
    """``{arm: {requests, errors, per_1000, per_1000_ci, by_type: {type: {count, per_1000}},
    logical_requests, retries, retry_rate, over_time: {bin_s, points: [...]}}}``."""
    width = bin_width(data.duration_s())
    t = data.cols["t_sent"]
    bins = bin_index(np.where(np.isfinite(t), t, data.cols["t_scheduled"]), width)
    n_bins = int(bins.max()) + 1 if bins.size and bins.max() >= 0 else 0
    out: dict[str, Any] = {}
    for arm in data.arms:
        am = data.arm_mask(arm)
        n = int(am.sum())
        err = am & ~data.ok
        n_err = int(err.sum())
        lo, hi = wilson_ci(n_err, n, data.analysis.confidence)
        by_type = {}
        for code, name in enumerate(data.error_types):
            c = int((err & (data.error == code)).sum())
            if c:
                by_type[name] = {"count": c, "per_1000": m.errors_per_1000(c, n)}
        logical = int((am & (data.attempt == 0)).sum())
        retries = int((am & (data.attempt > 0)).sum())
        req_bins = counts(bins[am], n_bins)
        err_bins = counts(bins[err], n_bins)
        type_bins = {
            name: counts(bins[err & (data.error == data.error_types.index(name))], n_bins)
            for name in by_type
        }
        points = []
        for b in range(n_bins):
            if req_bins[b] == 0:
                continue
            points.append(
                {
                    "t": b * width,
                    "requests": int(req_bins[b]),
                    "errors": int(err_bins[b]),
                    "per_1000": m.errors_per_1000(int(err_bins[b]), int(req_bins[b])),
                    "by_type": {k: int(v[b]) for k, v in type_bins.items() if v[b]},
                }
            )
        out[arm] = {
            "requests": n,
            "errors": n_err,
            "per_1000": m.errors_per_1000(n_err, n),
            "per_1000_ci": [1000 * lo, 1000 * hi],
            "by_type": by_type,
            "logical_requests": logical,
            "retries": retries,
            "retry_rate": m.retry_rate(retries, logical),
            "over_time": {"bin_s": width, "points": points},
        }
    return out
