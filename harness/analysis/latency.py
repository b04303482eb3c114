"""Latency statistics per arm and per workload slice: quantiles and means with bootstrap CIs.

Uses successful rows only (errored rows have no TTFT/E2E). Keys of one metric's entry:
``n``, ``mean``, ``p50`` ``p90`` ``p95`` ``p99`` ``p99_9``, ``ci`` (``{stat: [low, high]}``),
``ci_method`` (``scipy``, ``order-statistic``, ``constant`` or ``none``; see
:mod:`harness.analysis.stats`) and, for ITL, ``quantile_n`` (pooled gaps the quantiles were
computed from; below ``n`` when the pool was sampled).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.analysis import metrics as m
from harness.analysis.data import PooledSample, RunData
from harness.analysis.stats import (
    QUANTILES,
    BootstrapSettings,
    bootstrap_quantiles_ci,
    finite,
    quantiles,
)
from harness.analysis.timeseries import bin_index, bin_width, binned_quantiles

_QS = tuple(q for _, q in QUANTILES)
_QKEYS = tuple(k for k, _ in QUANTILES)


def describe(
    values: np.ndarray,
    settings: BootstrapSettings,
    *,
    ci: bool = True,
    n_total: int | None = None,
    mean: float | None = None,
) -> dict[str, Any]:
    """Quantiles, mean and (optionally) their bootstrap CIs of one sample.

    ``n_total``/``mean`` override the count and mean when ``values`` is a sample of a larger
    pool (pooled ITL): quantiles come from the sample, the mean from every value.
    """
    v = finite(values)
    point = quantiles(v, _QS)
    out: dict[str, Any] = {
        "n": int(n_total if n_total is not None else v.size),
        "mean": float(mean if mean is not None else (v.mean() if v.size else math.nan)),
    }
    out.update({k: float(x) for k, x in zip(_QKEYS, point, strict=True)})
    if n_total is not None:
        out["quantile_n"] = int(v.size)
    if ci:
        lo, hi, method = bootstrap_quantiles_ci(v, _QS, settings)
        keys = (*_QKEYS, "mean")
        out["ci"] = {k: [float(a), float(b)] for k, a, b in zip(keys, lo, hi, strict=True)}
        out["ci_method"] = method
    return out


def describe_pooled(sample: PooledSample | None, settings: BootstrapSettings, *, ci: bool = True):
    """:func:`describe` of a pooled ITL sample (exact count and mean)."""
    sample = sample or PooledSample()
    return describe(sample.values, settings, ci=ci, n_total=sample.n_total, mean=sample.mean)


def metric_values(data: RunData, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Per-request latency values (ok rows) of each metric in :data:`metrics.LATENCY_METRICS`."""
    return {lm.key: lm.values(data, mask) for lm in m.LATENCY_METRICS}


def _group_stats(
    data: RunData, mask: np.ndarray, itl: PooledSample | None, ci: bool
) -> dict[str, Any]:
    settings = data.bootstrap()
    out = {k: describe(v, settings, ci=ci) for k, v in metric_values(data, mask).items()}
    out[m.ITL_KEY] = describe_pooled(m.itl(itl or PooledSample()), settings, ci=ci)
    return out


def latency_summary(data: RunData, *, ci: bool = True) -> dict[str, dict[str, Any]]:
    """``{arm: {metric: stats}}`` over all slices of the analysed phases."""
    return {
        arm: _group_stats(data, data.arm_mask(arm), data.itl.get((i, None)), ci)
        for i, arm in enumerate(data.arms)
    }


def latency_by_slice(data: RunData, *, ci: bool = True) -> dict[str, dict[str, Any]]:
    """``{arm: {slice: {metric: stats}}}``; empty when the run has a single slice."""
    if len(data.slices) < 2:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for i, arm in enumerate(data.arms):
        am = data.arm_mask(arm)
        out[arm] = {}
        for j, name in enumerate(data.slices):
            mask = am & (data.slice == j)
            if mask.any():
                out[arm][name] = _group_stats(data, mask, data.itl.get((i, j)), ci)
    return out


def latency_over_time(
    data: RunData, metric_keys: tuple[str, ...] = ("ttft_s", "e2e_s")
) -> dict[str, Any]:
    """p50/p99 per time bin (by send time), per arm: ``{bin_s, arms: {arm: {metric: [...]}}}``.

    Each point is ``{"t": bin start (s), "n", "p50", "p99"}``; per-bin quantiles are t-digest
    estimates (exact for small bins).
    """
    width = bin_width(data.duration_s())
    t = data.cols["t_sent"]
    bins = bin_index(np.where(np.isfinite(t), t, data.cols["t_scheduled"]), width)
    out: dict[str, Any] = {"bin_s": width, "arms": {}}
    for arm in data.arms:
        sel = data.arm_mask(arm) & data.ok
        series = {}
        for key in metric_keys:
            per_bin = binned_quantiles(bins[sel], data.cols[key][sel], (0.5, 0.99))
            series[key] = [
                {"t": b * width, "n": n, "p50": q[0], "p99": q[1]}
                for b, (n, q) in sorted(per_bin.items())
            ]
        out["arms"][arm] = series
    return out
