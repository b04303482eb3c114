"""Throughput: completed requests/s and output tokens/s, overall and over time, and the
achieved arrival rate next to the offered one (was the schedule delivered?).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.analysis import metrics as m
from harness.analysis.data import RunData
from harness.analysis.timeseries import bin_index, bin_width, counts


def throughput_summary(data: RunData) -> dict[str, Any]:
    """``{arm: {duration_s, requests_ok, request_rps, output_tokens, output_tps,
    logical_requests, achieved_arrival_rps, offered_rps, offered_mode, achieved_vs_offered,
    over_time: {bin_s, points: [{t, requests_per_s, output_tokens_per_s, arrivals_per_s}]}}}``.

    Over time, completions are counted in the bin of their ``t_end``, arrivals (first
    attempts) in the bin of their ``t_scheduled``.
    """
    duration = m.duration(data)
    width = bin_width(duration)
    end_bins = bin_index(data.cols["t_end"], width)
    sched = data.cols["t_scheduled"]
    arr_bins = bin_index(np.where(np.isfinite(sched), sched, data.cols["t_sent"]), width)
    n_bins = max(
        int(end_bins.max()) + 1 if end_bins.size else 0,
        int(arr_bins.max()) + 1 if arr_bins.size else 0,
    )
    offered = data.offered()
    offered_rate = offered.get("rate")
    offered_rate = float(offered_rate) if isinstance(offered_rate, int | float) else math.nan
    if offered.get("mode") == "closed":
        offered_rate = math.nan
    tokens = np.nan_to_num(data.cols["completion_tokens"])
    out: dict[str, Any] = {}
    for arm in data.arms:
        am = data.arm_mask(arm)
        ok = am & data.ok
        first = am & (data.attempt == 0)
        n_ok = int(ok.sum())
        out_tokens = float(tokens[ok].sum())
        achieved = m.achieved_arrival_rate(sched[first])
        req = counts(end_bins[ok], n_bins)
        tok = counts(end_bins[ok], n_bins, tokens[ok])
        arr = counts(arr_bins[first], n_bins)
        points = [
            {
                "t": b * width,
                "requests_per_s": req[b] / width,
                "output_tokens_per_s": tok[b] / width,
                "arrivals_per_s": arr[b] / width,
            }
            for b in range(n_bins)
        ]
        out[arm] = {
            "duration_s": duration,
            "requests_ok": n_ok,
            "request_rps": m.request_throughput(n_ok, duration),
            "output_tokens": out_tokens,
            "output_tps": m.output_token_throughput(out_tokens, duration),
            "logical_requests": int(first.sum()),
            "achieved_arrival_rps": achieved,
            "offered_rps": offered_rate,
            "offered_mode": offered.get("mode"),
            "achieved_vs_offered": achieved / offered_rate if offered_rate else math.nan,
            "over_time": {"bin_s": width, "points": points},
        }
    return out
