"""Failure tickets: error counts and rates per 1,000 requests by type and arm, over time, and
the retry rate. Every attempt (row) counts as a request here, errored or not.
"""

from __future__ import annotations

from typing import Any

from harness.analysis import metrics as m
from harness.analysis.data import RunData
from harness.analysis.stats import wilson_ci
from harness.analysis.timeseries import TimeBins, counts, first_finite, n_bins


def errors_summary(data: RunData) -> dict[str, Any]:
    """``{arm: {requests, errors, per_1000, per_1000_ci, by_type: {type: {count, per_1000}},
    logical_requests, retries, retry_rate, over_time: {bin_s, points: [...]}}}``.

    Over time, attempts are binned by send time (else scheduled time); each point is a ratio
    of counts in the same bin (errors per 1,000 attempts), so a partial last bin needs no
    correction for its width.
    """
    tb = TimeBins.for_window(data.window())
    bins = tb.index(first_finite(data.cols["t_sent"], data.cols["t_scheduled"]))
    nb = n_bins(bins)
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
        req_bins = counts(bins[am], nb)
        err_bins = counts(bins[err], nb)
        type_bins = {
            name: counts(bins[err & (data.error == data.error_types.index(name))], nb)
            for name in by_type
        }
        points = []
        for b in range(nb):
            if req_bins[b] == 0:
                continue
            points.append(
                {
                    "t": tb.start(b),
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
            "over_time": {"bin_s": tb.width, "points": points},
        }
    return out
