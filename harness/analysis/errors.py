"""Failure tickets: error counts and rates per 1,000 requests by type and arm, over time, and
the retry rate.

Headline: per logical request (:mod:`harness.analysis.requests`), by final outcome after
retries, so a request that failed once and then succeeded is not a ticket. ``per_attempt``:
every attempt sent, errored or not (what retries cost, what a provider may bill). Rows the
harness cancelled (drain, SIGINT) are not failures of the target: they are counted apart
(``cancelled``) and are in no rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.analysis import metrics as m
from harness.analysis.data import RunData
from harness.analysis.requests import CANCELLED, FAILED, logical_requests
from harness.analysis.stats import wilson_ci
from harness.analysis.timeseries import TimeBins, counts, first_finite, n_bins


def _by_type(data: RunData, codes: np.ndarray, n: int) -> dict[str, dict[str, Any]]:
    out = {}
    for code, name in enumerate(data.error_types):
        c = int((codes == code).sum())
        if c:
            out[name] = {"count": c, "per_1000": m.errors_per_1000(c, n)}
    return out


def errors_summary(data: RunData) -> dict[str, Any]:
    """``{arm: {requests, errors, per_1000, per_1000_ci, by_type: {type: {count, per_1000}},
    cancelled, per_attempt: {attempts, errors, per_1000, per_1000_ci, by_type, cancelled},
    logical_requests, retries, retry_rate, over_time: {bin_s, points: [...]}}}``.

    ``requests``/``errors``/``by_type``: logical requests (harness-cancelled ones left out)
    and those whose final outcome failed, by the final attempt's error type. Over time,
    attempts are binned by send time (else scheduled time); each point is a ratio of counts
    in the same bin (error attempts per 1,000 attempts), so a partial last bin needs no
    correction for its width.
    """
    tb = TimeBins.for_window(data.window())
    bins = tb.index(first_finite(data.cols["t_sent"], data.cols["t_scheduled"]))
    nb = n_bins(bins)
    conf = data.analysis.confidence
    lr = logical_requests(data)
    out: dict[str, Any] = {}
    for arm in data.arms:
        am = data.arm_mask(arm)
        in_arm = am[lr.first]
        req = in_arm & (lr.outcome != CANCELLED)
        n_req = int(req.sum())
        failed = req & (lr.outcome == FAILED)
        n_failed = int(failed.sum())
        lo, hi = wilson_ci(n_failed, n_req, conf)

        att = am & ~data.cancelled
        n = int(att.sum())
        err = att & ~data.ok
        n_err = int(err.sum())
        alo, ahi = wilson_ci(n_err, n, conf)
        by_type_att = _by_type(data, data.error[err], n)
        logical = int(in_arm.sum())
        # a router arm's first attempt of a later leg (escalation, failover) is no retry
        from harness.routing.live import later_leg_rows

        code = data.arms.index(arm)
        retries = int((am & (data.attempt > 0) & ~later_leg_rows(data, code)).sum())
        req_bins = counts(bins[att], nb)
        err_bins = counts(bins[err], nb)
        type_bins = {name: counts(bins[err & data.error_rows(name)], nb) for name in by_type_att}
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
            "requests": n_req,
            "errors": n_failed,
            "per_1000": m.errors_per_1000(n_failed, n_req),
            "per_1000_ci": [1000 * lo, 1000 * hi],
            "by_type": _by_type(data, lr.error[failed], n_req),
            "cancelled": int((in_arm & (lr.outcome == CANCELLED)).sum()),
            "per_attempt": {
                "attempts": n,
                "errors": n_err,
                "per_1000": m.errors_per_1000(n_err, n),
                "per_1000_ci": [1000 * alo, 1000 * ahi],
                "by_type": by_type_att,
                "cancelled": int((am & data.cancelled).sum()),
            },
            "logical_requests": logical,
            "retries": retries,
            "retry_rate": m.retry_rate(retries, logical),
            "over_time": {"bin_s": tb.width, "points": points},
        }
    return out
