"""Goodput: the share and the rate of requests that meet the SLO bounds in the config.

Headline (per logical request, :mod:`harness.analysis.requests`): a request meets the SLO
when its final attempt succeeded and its ``request_ttft_s``/``request_e2e_s`` (from the
original arrival, retries and backoffs included) and the final attempt's TPOT are within the
bounds; a request that finally failed or timed out is a miss, never absent. Requests the
harness cancelled (drain, SIGINT) are counted apart (``cancelled``) and are in neither the
numerator nor the denominator.

Per attempt (``per_attempt``: what the provider served, retries included): every attempt
that was sent counts, an errored one as a miss, with latencies from its own send time.
``share_from_scheduled`` uses the from-scheduled TTFT/E2E instead, so that client-side
queueing cannot flatter the result. Successful requests whose latencies the data checks
rejected (``rejected``) are in neither figure. A null bound is not checked (see
:func:`harness.analysis.metrics.meets_slo`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from harness.analysis import metrics as m
from harness.analysis.data import RunData
from harness.analysis.requests import CANCELLED, OK, logical_requests
from harness.analysis.stats import wilson_ci


def _meets_attempts(data: RunData, mask: np.ndarray, scheduled: bool = False) -> np.ndarray:
    c = data.cols
    ttft = c["ttft_sched_s"] if scheduled else c["ttft_s"]
    e2e = c["e2e_sched_s"] if scheduled else c["e2e_s"]
    return m.meets_slo(data.ok[mask], ttft[mask], c["tpot_s"][mask], e2e[mask], data.analysis.slo)


def _block(data: RunData, mask: np.ndarray, duration: float) -> dict[str, Any]:
    conf = data.analysis.confidence
    lr = logical_requests(data)
    in_mask = mask[lr.first]
    sel = in_mask & (lr.outcome != CANCELLED)
    rej = data.rejected
    n_rejected = 0
    if rej is not None:  # latencies the data checks rejected: neither a hit nor a miss
        bad = rej[lr.final] & (lr.outcome == OK)
        n_rejected = int((sel & bad).sum())
        sel &= ~bad
        mask = mask & ~(rej & data.ok)
    n_req = int(sel.sum())
    meets = m.meets_slo(
        lr.outcome[sel] == OK, lr.ttft_s[sel], lr.tpot_s[sel], lr.e2e_s[sel], data.analysis.slo
    )
    meeting = int(meets.sum())
    att = mask & ~data.cancelled
    n_att = int(att.sum())
    meeting_att = int(_meets_attempts(data, att).sum())
    meeting_sched = int(_meets_attempts(data, att, scheduled=True).sum())
    return {
        "requests": n_req,
        "meeting_slo": meeting,
        "share": m.goodput_share(meeting, n_req),
        "share_ci": list(wilson_ci(meeting, n_req, conf)),
        "rate_rps": m.goodput_rate(meeting, duration),
        "cancelled": int((in_mask & (lr.outcome == CANCELLED)).sum()),
        "rejected": n_rejected,
        "per_attempt": {
            "attempts": n_att,
            "meeting_slo": meeting_att,
            "share": m.goodput_share(meeting_att, n_att),
            "share_ci": list(wilson_ci(meeting_att, n_att, conf)),
            "share_from_scheduled": m.goodput_share(meeting_sched, n_att),
            "cancelled": int((mask & data.cancelled).sum()),
        },
    }


def goodput_summary(data: RunData) -> dict[str, Any]:
    """``{arm: {slo, requests, meeting_slo, share, share_ci, rate_rps, cancelled,
    per_attempt: {attempts, meeting_slo, share, share_ci, share_from_scheduled, cancelled},
    by_slice: {slice: {...}}}}``; ``requests`` are logical requests (harness-cancelled ones
    left out), ``rate_rps`` is over the arm's own window."""
    slo = asdict(data.analysis.slo)
    out: dict[str, Any] = {}
    for arm in data.arms:
        am = data.arm_mask(arm)
        duration = m.duration(data, arm)
        block = {"slo": slo, **_block(data, am, duration)}
        if len(data.slices) > 1:
            block["by_slice"] = {
                s: _block(data, am & (data.slice == j), duration)
                for j, s in enumerate(data.slices)
                if (am & (data.slice == j)).any()
            }
        out[arm] = block
    return out
