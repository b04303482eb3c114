"""Sweeps (multirun over load): latency vs throughput per arm, and the highest load meeting the SLO.

Input: one light summary per run (:func:`sweep_point`). A load level "meets the SLO" for an
arm when its goodput share (requests meeting every SLO bound / all requests) is at least
``attainment`` (default 0.99, i.e. "p99 within the bounds"). Runs repeated at the same load
are grouped: the load meets the SLO only when *every* run at it does (strict, not pooled:
pooling would let one large good repeat hide a failing one). The reported maximum is the
highest load such that it and every lower load of the sweep meet the SLO, so a lucky point
above a failing one does not count.
"""

from __future__ import annotations

import math
from typing import Any

from harness.analysis.data import RunData

DEFAULT_ATTAINMENT = 0.99


def load_value(manifest: dict[str, Any]) -> float | None:
    """The swept load of a run: ``sweep.value``, else ``offered.rate``, else ``config.load.rate``.

    Closed-loop runs without a sweep value fall back to ``config.load.concurrency``.
    """
    sweep = manifest.get("sweep") or {}
    load = (manifest.get("config") or {}).get("load") or {}
    for v in (
        sweep.get("value"),
        (manifest.get("offered") or {}).get("rate"),
        load.get("rate") if load.get("mode") != "closed" else load.get("concurrency"),
        load.get("rate"),
    ):
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                continue
    return None


def sweep_point(data: RunData, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One run's figures per arm for the sweep table (from its run summary)."""
    out = {}
    for arm in data.arms:
        lat = summary["latency"].get(arm, {})
        gp = summary["goodput"].get(arm, {})
        th = summary["throughput"].get(arm, {})
        er = summary["errors"].get(arm, {})
        point = {
            "run_id": data.run_id,
            "load": load_value(data.manifest),
            "request_rps": th.get("request_rps"),
            "output_tps": th.get("output_tps"),
            "achieved_arrival_rps": th.get("achieved_arrival_rps"),
            "goodput_share": gp.get("share"),
            "goodput_rps": gp.get("rate_rps"),
            "errors_per_1000": er.get("per_1000"),
        }
        keys = ("request_ttft_s", "request_e2e_s", "ttft_s", "tpot_s", "e2e_s", "ttft_sched_s",
                "e2e_sched_s")  # fmt: skip
        for key in keys:
            for q in ("p50", "p99"):
                point[f"{key}_{q}"] = lat.get(key, {}).get(q)
        out[arm] = point
    return out


def sweep_curve(
    points: list[dict[str, dict[str, Any]]], attainment: float = DEFAULT_ATTAINMENT
) -> dict[str, Any]:
    """``{arm: {"points": [...sorted by load...], "loads": [{load, runs, runs_meeting_slo,
    meets_slo}], "max_load_meeting_slo": float | None}}``.

    ``points`` keep one entry per run (with its own ``meets_slo``); ``loads`` group the runs
    by load (known loads only, ascending), a load meeting the SLO when all its runs do."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for run in points:
        for arm, p in run.items():
            arms.setdefault(arm, []).append(dict(p))
    out: dict[str, Any] = {}
    for arm, pts in arms.items():
        pts.sort(key=lambda p: (p["load"] is None, p["load"] if p["load"] is not None else 0))
        for p in pts:
            share = p.get("goodput_share")
            p["meets_slo"] = bool(
                share is not None and math.isfinite(share) and share >= attainment
            )
        loads: dict[float, list[bool]] = {}
        for p in pts:
            if p["load"] is not None:
                loads.setdefault(p["load"], []).append(p["meets_slo"])
        groups = [
            {"load": x, "runs": len(ok), "runs_meeting_slo": sum(ok), "meets_slo": all(ok)}
            for x, ok in loads.items()
        ]
        best = None
        for g in groups:
            if not g["meets_slo"]:
                break
            best = g["load"]
        out[arm] = {"points": pts, "loads": groups, "max_load_meeting_slo": best}
    return out
