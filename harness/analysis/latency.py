"""Latency statistics per arm and per workload slice: quantiles and means with bootstrap CIs.

Uses successful rows only (errored rows have no TTFT/E2E). Keys of one metric's entry:
``n``, ``mean``, ``p50`` ``p90`` ``p95`` ``p99`` ``p99_9``, ``ci`` (``{stat: [low, high]}``),
``ci_method`` (``scipy``, ``order-statistic``, ``constant`` or ``none``; see
:mod:`harness.analysis.stats`) and, for ITL, ``quantile_n`` (pooled gaps the quantiles were
computed from; below ``n`` when the pool was sampled) and ``ci_requests`` (requests the CI
resampled). ITL CIs come from the cluster bootstrap over requests (``ci_method`` ``cluster``,
or ``cluster-subsample`` when a uniform sample of requests was resampled and rescaled): gaps
of one request are correlated, so treating them as independent would make the CIs too narrow.
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
    ClusteredSample,
    bootstrap_quantiles_ci,
    cluster_quantiles_ci,
    finite,
    sorted_quantiles,
)
from harness.analysis.timeseries import TimeBins, binned_quantiles, first_finite

_QS = tuple(q for _, q in QUANTILES)
_QKEYS = tuple(k for k, _ in QUANTILES)


def describe(
    values: np.ndarray,
    settings: BootstrapSettings,
    *,
    ci: bool = True,
    n_total: int | None = None,
    mean: float | None = None,
    presorted: bool = False,
    clusters: ClusteredSample | None = None,
) -> dict[str, Any]:
    """Quantiles, mean and (optionally) their bootstrap CIs of one sample.

    ``n_total``/``mean`` override the count and mean when ``values`` is a sample of a larger
    pool (pooled ITL): quantiles come from the sample, the mean from every value.
    ``clusters``: the values come in correlated clusters (ITL: requests); the CIs are then
    cluster-bootstrap CIs over this sample of clusters.
    """
    v = np.sort(finite(values)) if not presorted else np.asarray(values, np.float64)
    point = sorted_quantiles(v, _QS)
    out: dict[str, Any] = {
        "n": int(n_total if n_total is not None else v.size),
        "mean": float(mean if mean is not None else (v.mean() if v.size else math.nan)),
    }
    out.update({k: float(x) for k, x in zip(_QKEYS, point, strict=True)})
    if n_total is not None:
        out["quantile_n"] = int(v.size)
    if ci and clusters is not None:
        out["ci_requests"] = clusters.n_clusters
        centre = np.array([*point, out["mean"]])
        lo, hi, method = cluster_quantiles_ci(clusters, _QS, settings, centre=centre)
    elif ci:
        lo, hi, method = bootstrap_quantiles_ci(v, _QS, settings, presorted=True)
    if ci:
        keys = (*_QKEYS, "mean")
        out["ci"] = {k: [float(a), float(b)] for k, a, b in zip(keys, lo, hi, strict=True)}
        out["ci_method"] = method
    return out


def sorted_values(data: RunData, arm: int, slice_: int | None) -> dict[str, np.ndarray]:
    """Sorted finite values of every latency metric (ITL: the pooled sample) for one arm
    (code) and one slice (code; None = all), cached on ``data`` so each sort happens once."""
    key = ("sorted", arm, slice_)
    if key not in data.cache:
        mask = data.arm == arm
        if slice_ is not None:
            mask &= data.slice == slice_
        vals = {lm.key: np.sort(lm.values(data, mask)) for lm in m.LATENCY_METRICS}
        smp = m.itl(data.itl.get((arm, slice_)) or PooledSample())
        vals[m.ITL_KEY] = np.sort(smp.values)
        data.cache[key] = vals  # type: ignore[assignment]
    return data.cache[key]  # type: ignore[return-value]


def itl_clusters(data: RunData, arm: int, slice_: int | None) -> ClusteredSample:
    """The sample of whole requests (their ITL gaps) for one arm (code) and slice (None: all)."""
    cs = data.itl_clusters.get((arm, slice_))
    return cs.sample() if cs is not None else ClusteredSample(np.empty(0), np.empty(0, np.int64))


def _group_stats(data: RunData, arm: int, slice_: int | None, ci: bool) -> dict[str, Any]:
    settings = data.bootstrap()
    vals = sorted_values(data, arm, slice_)
    out = {}
    for key, v in vals.items():
        if key == m.ITL_KEY:
            smp = data.itl.get((arm, slice_)) or PooledSample()
            out[key] = describe(
                v,
                settings,
                ci=ci,
                n_total=smp.n_total,
                mean=smp.mean,
                presorted=True,
                clusters=itl_clusters(data, arm, slice_),
            )
        else:
            out[key] = describe(v, settings, ci=ci, presorted=True)
    return out


def latency_summary(data: RunData, *, ci: bool = True) -> dict[str, dict[str, Any]]:
    """``{arm: {metric: stats}}`` over all slices of the analysed phases."""
    return {arm: _group_stats(data, i, None, ci) for i, arm in enumerate(data.arms)}


def latency_by_slice(data: RunData, *, ci: bool = True) -> dict[str, dict[str, Any]]:
    """``{arm: {slice: {metric: stats}}}``; empty when the run has a single slice."""
    if len(data.slices) < 2:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for i, arm in enumerate(data.arms):
        am = data.arm_mask(arm)
        out[arm] = {}
        for j, name in enumerate(data.slices):
            if (am & (data.slice == j)).any():
                out[arm][name] = _group_stats(data, i, j, ci)
    return out


def latency_over_time(
    data: RunData, metric_keys: tuple[str, ...] = ("ttft_s", "e2e_s")
) -> dict[str, Any]:
    """p50/p99 per time bin (by send time), per arm: ``{bin_s, arms: {arm: {metric: [...]}}}``.

    Each point is ``{"t": bin start (s), "n", "p50", "p99"}``; per-bin quantiles are t-digest
    estimates (exact for small bins).
    """
    tb = TimeBins.for_window(data.window())
    bins = tb.index(first_finite(data.cols["t_sent"], data.cols["t_scheduled"]))
    out: dict[str, Any] = {"bin_s": tb.width, "arms": {}}
    for arm in data.arms:
        sel = data.arm_mask(arm) & data.ok
        series = {}
        for key in metric_keys:
            per_bin = binned_quantiles(bins[sel], data.cols[key][sel], (0.5, 0.99))
            series[key] = [
                {"t": tb.start(b), "n": n, "p50": q[0], "p99": q[1]}
                for b, (n, q) in sorted(per_bin.items())
            ]
        out["arms"][arm] = series
    return out
