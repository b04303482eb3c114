"""Goodput: the share and the rate of requests that meet the SLO bounds in the config.

An errored request never meets the SLO; a null bound is not checked (see
:func:`harness.analysis.metrics.meets_slo`). Requests are attempts (rows): a retried request
that failed first counts that failure. The main figures use latencies from the send time
(as vLLM does); ``share_from_scheduled`` uses the from-scheduled TTFT/E2E instead, so that
client-side queueing cannot flatter the result.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from harness.analysis import metrics as m
from harness.analysis.data import RunData
from harness.analysis.stats import wilson_ci


def _meets(data: RunData, mask: np.ndarray, scheduled: bool = False) -> np.ndarray:
    c = data.cols
    ttft = c["ttft_sched_s"] if scheduled else c["ttft_s"]
    e2e = c["e2e_sched_s"] if scheduled else c["e2e_s"]
    return m.meets_slo(data.ok[mask], ttft[mask], c["tpot_s"][mask], e2e[mask], data.analysis.slo)


def _block(data: RunData, mask: np.ndarray, duration: float) -> dict[str, Any]:
    n = int(mask.sum())
    meeting = int(_meets(data, mask).sum())
    meeting_sched = int(_meets(data, mask, scheduled=True).sum())
    return {
        "requests": n,
        "meeting_slo": meeting,
        "share": m.goodput_share(meeting, n),
        "share_ci": list(wilson_ci(meeting, n, data.analysis.confidence)),
        "rate_rps": m.goodput_rate(meeting, duration),
        "share_from_scheduled": m.goodput_share(meeting_sched, n),
    }


def goodput_summary(data: RunData) -> dict[str, Any]:
    """``{arm: {slo, requests, meeting_slo, share, share_ci, rate_rps, share_from_scheduled,
    by_slice: {slice: {...}}}}``."""
    duration = m.duration(data)
    slo = asdict(data.analysis.slo)
    out: dict[str, Any] = {}
    for arm in data.arms:
        am = data.arm_mask(arm)
        block = {"slo": slo, **_block(data, am, duration)}
        if len(data.slices) > 1:
            block["by_slice"] = {
                s: _block(data, am & (data.slice == j), duration)
                for j, s in enumerate(data.slices)
                if (am & (data.slice == j)).any()
            }
        out[arm] = block
    return out
