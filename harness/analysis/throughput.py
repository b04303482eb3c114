"""Throughput: completed requests/s and output tokens/s, overall and over time, and the
delivered arrival rate next to the offered one (was the schedule delivered?).

Offered (``offered_rps``, per arm): the expected arrivals over the analysed window divided by
its length, ``manifest.offered.expected_arrivals / window_s``, which the runner computes for
an open loop from the arrival process itself (load shapes and trace replay included); those
figures are for the main phase, so they are used when exactly ``main`` is analysed. Without
them, ``rate`` is the offered rate only when it is constant (shape ``none``, arrival not
``trace``); otherwise the offered rate is unknown (null, with ``offered_note`` saying why).
A closed loop has no offered rate.

Delivered (``achieved_arrival_rps``): logical requests (first attempts) per second by *send*
time, so a client that fell behind its schedule shows; ``scheduled_rps`` is the same figure
by scheduled time (what the schedule asked for).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.analysis import metrics as m
from harness.analysis.data import RunData
from harness.analysis.stats import poisson_rate_ci
from harness.analysis.timeseries import TimeBins, counts, first_finite, n_bins


def _number(x: Any) -> float | None:
    ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None


def offered_load(data: RunData) -> tuple[float, float | None, str | None]:
    """``(offered_rps, expected_arrivals, note)`` per arm for the analysed window (see the
    module docstring); ``offered_rps`` is NaN when unknown and ``note`` says why (None when
    nothing needs saying, e.g. a closed loop)."""
    off = data.offered()
    if off.get("mode") == "closed":
        return math.nan, None, None
    expected, window = _number(off.get("expected_arrivals")), _number(off.get("window_s"))
    main_only = list(data.analysis.include_phases) == ["main"]
    if expected is not None and window and window > 0 and main_only:
        return m.offered_rate(expected, window), expected, None
    rate = _number(off.get("rate"))
    if rate is None:  # nothing was claimed (no manifest, closed loop): nothing to say
        return math.nan, None, None
    shape = off.get("shape") or "none"
    arrival = off.get("arrival")
    if shape == "none" and arrival != "trace":
        return rate, None, None
    why = f"load shape {shape!r}" if shape != "none" else f"arrival {arrival!r}"
    if expected is not None and not main_only:
        why += "; the expected count is for the main phase only, and other phases are analysed"
    return (
        math.nan,
        None,
        f"The offered arrival rate over the analysed window is not known ({why}: the "
        f"configured rate of {rate:g}/s is not what was offered): achieved vs offered is "
        "not reported.",
    )


def throughput_summary(data: RunData) -> dict[str, Any]:
    """``{arm: {duration_s, requests_ok, tokens_per_chunk, request_rps, output_tokens, output_tps,
    logical_requests, achieved_arrival_rps, scheduled_rps, offered_rps, offered_arrivals,
    offered_mode, offered_note, achieved_vs_offered, achieved_below_offered,
    over_time: {bin_s, points: [{t, covered_s, requests_per_s, output_tokens_per_s,
    arrivals_per_s}]}}}``.

    Over time, completions are counted in the bin of their ``t_end``, arrivals (first
    attempts) in the bin of their ``t_sent`` (else ``t_scheduled``); each count is divided by
    the seconds of the analysed window the bin covers (the last bin is usually partial).
    ``achieved_below_offered``: the delivered rate's Poisson CI lies below the offered rate
    (a shortfall that chance does not explain); None when there is no offered rate.
    ``duration_s`` is the arm's own window (:meth:`RunData.arm_window`), so one arm's
    straggler never lowers another arm's throughput; the over-time bins share one time axis.
    """
    bins = TimeBins.for_window(data.window())
    sent = data.cols["t_sent"]
    end_bins = bins.index(data.cols["t_end"])
    arr_bins = bins.index(first_finite(sent, data.cols["t_scheduled"]))
    nb = n_bins(end_bins, arr_bins)
    covered = bins.covered(nb)
    offered_rate, expected, note = offered_load(data)
    mode = data.offered().get("mode")
    conf = float(data.analysis.confidence)
    tokens = np.nan_to_num(data.cols["completion_tokens"])
    out: dict[str, Any] = {}
    chunks = data.n_chunks.astype(np.float64)
    for arm in data.arms:
        duration = m.duration(data, arm)
        am = data.arm_mask(arm)
        ok = am & data.ok
        streamed = ok & (data.n_chunks > 0) & np.isfinite(data.cols["completion_tokens"])
        first = am & (data.attempt == 0)
        n_ok = int(ok.sum())
        out_tokens = float(tokens[ok].sum())
        achieved = m.achieved_arrival_rate(sent[first])
        ratio = achieved / offered_rate if offered_rate else math.nan
        below = None
        if math.isfinite(ratio):
            t = sent[first]
            t = t[np.isfinite(t)]
            span = float(t.max() - t.min()) if t.size > 1 else 0.0
            below = bool(poisson_rate_ci(t.size - 1, span, conf)[1] < offered_rate)
        req = counts(end_bins[ok], nb) / covered
        tok = counts(end_bins[ok], nb, tokens[ok]) / covered
        arr = counts(arr_bins[first], nb) / covered
        points = [
            {
                "t": bins.start(b),
                "covered_s": float(covered[b]),
                "requests_per_s": float(req[b]),
                "output_tokens_per_s": float(tok[b]),
                "arrivals_per_s": float(arr[b]),
            }
            for b in range(nb)
        ]
        out[arm] = {
            "duration_s": duration,
            "requests_ok": n_ok,
            "request_rps": m.request_throughput(n_ok, duration),
            "output_tokens": out_tokens,
            "output_tps": m.output_token_throughput(out_tokens, duration),
            "tokens_per_chunk": m.tokens_per_chunk(
                float(tokens[streamed].sum()), float(chunks[streamed].sum())
            ),
            "logical_requests": int(first.sum()),
            "achieved_arrival_rps": achieved,
            "scheduled_rps": m.achieved_arrival_rate(data.cols["t_scheduled"][first]),
            "offered_rps": offered_rate,
            "offered_arrivals": expected,
            "offered_mode": mode,
            "offered_note": note,
            "achieved_vs_offered": ratio,
            "achieved_below_offered": below,
            "over_time": {"bin_s": bins.width, "points": points},
        }
    return out
