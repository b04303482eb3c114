"""Server-side view from the scraped ``/metrics`` table: queue depth and KV-cache use over time.

Only samples inside the analysed request window (the analysed phases) count. Samples of one
metric name at one scrape time are combined over their label sets (e.g. several
``model_name`` values): counts (running, waiting) are summed, ratio gauges (names with
``_perc`` or ``usage``, e.g. KV-cache use) are averaged, since a sum of fractions is not a
fraction. NaN samples are dropped. Then each series is summarised (mean, p50, p95, max) and
binned over time (mean per bin). Times are relative to the start of the analysed window.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from harness.analysis.data import RunData
from harness.analysis.timeseries import bin_width

#: Metric names summarised when present (vLLM's names; older vLLM used gpu_cache_usage_perc).
SERVER_METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
)


def is_ratio_gauge(name: str) -> bool:
    """Whether a metric is a fraction (combined over label sets by mean, not sum)."""
    return "_perc" in name or "usage" in name


def server_summary(data: RunData, names: tuple[str, ...] = SERVER_METRICS) -> dict[str, Any]:
    """``{arm: {metric name: {samples, mean, p50, p95, max, over_time: {bin_s, points}}}}``;
    empty when the run scraped no metrics (or none inside the analysed window)."""
    table = data.metrics
    if table is None or table.num_rows == 0:
        return {}
    table = table.select(["arm", "t", "name", "value"])
    table = table.filter(pc.is_in(table.column("name").cast(pa.string()), pa.array(list(names))))
    if table.num_rows == 0:
        return {}
    t_ns = pc.cast(table.column("t"), pa.int64()).to_numpy(zero_copy_only=False)
    t0 = data.t0_ns if data.t0_ns is not None else int(np.nanmin(t_ns))
    t_rel = (t_ns - t0) / 1e9
    v_all = pc.cast(table.column("value"), pa.float64()).fill_null(np.nan).to_numpy()
    keep = np.isfinite(t_rel) & np.isfinite(v_all)
    lo, hi = data.window()
    if math.isfinite(lo) and math.isfinite(hi):
        keep &= (t_rel >= lo) & (t_rel <= hi)
    table = table.set_column(1, "t", pa.array(t_rel))
    table = table.set_column(0, "arm", table.column("arm").cast(pa.string()))
    table = table.set_column(2, "name", table.column("name").cast(pa.string()))
    table = table.set_column(3, "value", pa.array(v_all)).filter(pa.array(keep))
    if table.num_rows == 0:
        return {}
    combined = table.group_by(["arm", "name", "t"]).aggregate([("value", "sum"), ("value", "mean")])
    out: dict[str, Any] = {}
    for arm in sorted(set(combined.column("arm").to_pylist())):
        per_arm = combined.filter(pc.equal(combined.column("arm"), arm))
        out[arm] = {}
        for name in names:
            rows = per_arm.filter(pc.equal(per_arm.column("name"), name))
            if rows.num_rows == 0:
                continue
            t = rows.column("t").to_numpy()
            agg = "value_mean" if is_ratio_gauge(name) else "value_sum"
            v = rows.column(agg).to_numpy()
            order = np.argsort(t)
            t, v = t[order], v[order]
            out[arm][name] = {"samples": int(v.size), **_describe(v), "over_time": _bin(t, v)}
    return out


def _describe(v: np.ndarray) -> dict[str, float]:
    f = v[np.isfinite(v)]
    if f.size == 0:
        return {"mean": math.nan, "p50": math.nan, "p95": math.nan, "max": math.nan}
    p50, p95 = np.quantile(f, [0.5, 0.95])
    return {"mean": float(f.mean()), "p50": float(p50), "p95": float(p95), "max": float(f.max())}


def _bin(t: np.ndarray, v: np.ndarray, target_bins: int = 200) -> dict[str, Any]:
    span = float(t.max() - t.min()) if t.size else 0.0
    width = bin_width(span, target_bins)
    if t.size <= target_bins:
        return {"bin_s": None, "points": [[float(a), float(b)] for a, b in zip(t, v, strict=True)]}
    b = np.floor((t - t.min()) / width).astype(np.int64)
    sums = np.bincount(b, weights=v)  # v is finite: NaN samples were dropped
    n = np.bincount(b)
    pts = [[float(t.min() + i * width), float(sums[i] / n[i])] for i in range(n.size) if n[i]]
    return {"bin_s": width, "points": pts}
