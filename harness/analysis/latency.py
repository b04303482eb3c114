"""Latency statistics per arm and per workload slice: quantiles and means with their CIs.

Which rows each metric holds is defined in :mod:`harness.analysis.metrics` (successful
attempts plus censored timeouts; per logical request, failures censored). Keys of one
metric's entry: ``n``, ``mean`` (uncensored values), ``p50`` ``p90`` ``p95`` ``p99``
``p99_9``, ``censored_n``, ``censored_share``, ``censored`` (quantiles that fall among the
censored values: null), ``ci`` (``{stat: [low, high]}``),
``ci_method`` (``order-statistic``: distribution-free binomial intervals for the quantiles,
``none`` below 5 values; see :mod:`harness.analysis.stats`), ``ci_not_estimable`` (quantiles
with a bound that cannot exist at this n), ``ci_censored`` (upper bound among censored
values) and, for ITL, ``quantile_n`` (pooled gaps the quantiles were
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
    """Quantiles, mean and (optionally) their CIs of one sample, censored values included.

    ``values`` may hold ``+inf``: censored observations (a timed-out attempt, a request that
    never got an answer), known only to be longer than anything observed. They count in
    ``n`` and in every quantile's rank; a quantile whose rank falls among them is not a
    number (``+inf``, null in JSON) and is listed in ``censored`` (the report shows it as
    censored). ``censored_n``/``censored_share`` say how many; ``mean`` (and its CI) is over
    the uncensored values only.

    Quantile CIs are distribution-free order-statistic (binomial) intervals (Hahn & Meeker
    1991, "Statistical Intervals", sec. 5.2; ``scipy.stats.quantile_test``): coverage at
    least the nominal level at every sample size, each tail at most ``alpha/2``. A bound that
    does not exist at this sample size (e.g. the upper bound of p99 below 367 values at 95%)
    is not estimable: NaN from the stats function, and its key is listed in
    ``ci_not_estimable``. The mean's CI is the percentile bootstrap (its normal limit past
    ``settings.max_n``); see :mod:`harness.analysis.stats`.

    ``n_total``/``mean`` override the count and mean when ``values`` is a sample of a larger
    pool (pooled ITL): quantiles come from the sample, the mean from every value.
    ``clusters``: the values come in correlated clusters (ITL: requests); the CIs are then
    cluster-bootstrap CIs over this sample of clusters.
    """
    v = np.asarray(values, np.float64)
    if not presorted:
        v = np.sort(v[~np.isnan(v) & (v != -np.inf)])
    n_cens = int(np.isposinf(v).sum()) if v.size and v[-1] == np.inf else 0
    fin = v[: v.size - n_cens]
    point = sorted_quantiles(v, _QS)
    out: dict[str, Any] = {
        "n": int(n_total if n_total is not None else v.size),
        "mean": float(mean if mean is not None else (fin.mean() if fin.size else math.nan)),
    }
    out.update({k: float(x) for k, x in zip(_QKEYS, point, strict=True)})
    out["censored_n"] = n_cens
    out["censored_share"] = n_cens / v.size if v.size else math.nan
    out["censored"] = [k for k, x in zip(_QKEYS, point, strict=True) if x == np.inf]
    if n_total is not None:
        out["quantile_n"] = int(v.size)
    not_estimable: list[str] = []
    if ci and clusters is not None:
        out["ci_requests"] = clusters.n_clusters
        centre = np.array([*point, out["mean"]])
        lo, hi, method = cluster_quantiles_ci(clusters, _QS, settings, centre=centre)
    elif ci:
        lo, hi, method = bootstrap_quantiles_ci(fin if not n_cens else v, _QS, settings,
                                                presorted=True)  # fmt: skip
        if method != "none":  # NaN quantile bound: not estimable at this n
            qlo, qhi = lo[:-1], hi[:-1]
            bad = np.isnan(qlo) | np.isnan(qhi)
            not_estimable = [k for k, b in zip(_QKEYS, bad, strict=True) if b]
        if n_cens:
            lo, hi = _censored_bounds(fin, lo, hi, settings)
    if ci:
        keys = (*_QKEYS, "mean")
        out["ci"] = {k: [float(a), float(b)] for k, a, b in zip(keys, lo, hi, strict=True)}
        out["ci_method"] = method
        out["ci_not_estimable"] = not_estimable
        # bounds that are order statistics among the censored values (+inf, null in JSON)
        out["ci_censored"] = [k for k, b in zip(_QKEYS, hi, strict=False) if b == np.inf]
    return out


def _censored_bounds(
    fin: np.ndarray, lo: np.ndarray, hi: np.ndarray, settings: BootstrapSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Quantile bounds over the censored sample as they are (an order statistic among the
    censored values is +inf: "censored"; NaN stays "not estimable"); the mean's bounds over
    the uncensored values."""
    lo, hi = lo.copy(), hi.copy()
    mlo, mhi, _ = bootstrap_quantiles_ci(fin, _QS, settings, presorted=True)
    lo[-1], hi[-1] = mlo[-1], mhi[-1]
    return lo, hi


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
                # nothing else reads one slice's sorted values: free them (memory at 10M rows)
                data.cache.pop(("sorted", i, j), None)
    return out


def latency_over_time(
    data: RunData, metric_keys: tuple[str, ...] = ("ttft_s", "e2e_s")
) -> dict[str, Any]:
    """p50/p99 per time bin (by send time), per arm: ``{bin_s, arms: {arm: {metric: [...]}}}``.

    Each point is ``{"t": bin start (s), "n", "censored", "p50", "p99"}``; per-bin quantiles
    are t-digest estimates (exact for small bins). Timed-out attempts count as censored values
    (``+inf``, as in :func:`harness.analysis.metrics.ttft`/``e2e``): ``n`` includes them, and
    in a bin that has any, the quantiles are computed exactly over the bin with them, so a
    quantile among them is ``+inf`` (null in JSON, a gap in the plot), never a flattering
    finite number.
    """
    tb = TimeBins.for_window(data.window())
    bins = tb.index(first_finite(data.cols["t_sent"], data.cols["t_scheduled"]))
    timed_out = m.timed_out(data)
    out: dict[str, Any] = {"bin_s": tb.width, "arms": {}}
    for arm in data.arms:
        am = data.arm_mask(arm)
        sel = am & data.ok
        series = {}
        for key in metric_keys:
            v = data.cols[key]
            per_bin = binned_quantiles(bins[sel], v[sel], (0.5, 0.99))
            # timed out before the value was observed (a TTFT seen before the timeout counts)
            cens = am & timed_out & ~(np.isfinite(v) & (v >= 0) & key.startswith("ttft"))
            c_bins = np.bincount(bins[cens][bins[cens] >= 0]) if cens.any() else np.empty(0)
            points = {b: {"t": tb.start(b), "n": n, "censored": 0, "p50": q[0], "p99": q[1]}
                      for b, (n, q) in per_bin.items()}  # fmt: skip
            for b in np.flatnonzero(c_bins):
                b = int(b)
                fin = v[sel & (bins == b)]
                fin = fin[np.isfinite(fin)]
                allv = np.sort(np.concatenate([fin, np.full(int(c_bins[b]), np.inf)]))
                q50, q99 = sorted_quantiles(allv, (0.5, 0.99))
                points[b] = {"t": tb.start(b), "n": int(allv.size), "censored": int(c_bins[b]),
                             "p50": float(q50), "p99": float(q99)}  # fmt: skip
            series[key] = [points[b] for b in sorted(points)]
        out["arms"][arm] = series
    return out
