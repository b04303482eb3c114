"""Comparisons of two samples of every latency metric: p50/p99 differences and shift functions.

For each metric: ``diff(q) = Q_other(q) - Q_baseline(q)`` with an independent-sample
bootstrap CI (seeded; :func:`harness.analysis.stats.bootstrap_quantile_diff_ci`) at the
median, p99 and every decile (the shift function of Rousselet, Pernet & Wilcox 2017). A
positive difference means ``other`` is slower. ITL resamples requests, not gaps (cluster
bootstrap, :func:`harness.analysis.stats.cluster_quantile_diff_ci`): the gaps of one request
are correlated, and an independent-gap bootstrap would call differences significant far too
often. Used arm-vs-arm within a run (baseline = the
first arm) and run-vs-run for one arm (``harness.report.compare_runs``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.analysis.data import RunData
from harness.analysis.latency import itl_clusters, sorted_values
from harness.analysis.metrics import ITL_KEY
from harness.analysis.stats import (
    DECILES,
    BootstrapSettings,
    ClusteredSample,
    bootstrap_quantile_diff_ci,
    cluster_quantile_diff_ci,
    sorted_quantiles,
)

#: Headline quantiles of a comparison, with their keys.
HEADLINE = (("p50", 0.5), ("p99", 0.99))


#: Stand-in for a censored value (+inf) inside the difference bootstrap; a bound that reaches
#: it is reported as unbounded (+-inf, null in JSON).
_CENSORED_STANDIN = 1e12


def _standin(v: np.ndarray) -> np.ndarray:
    return np.where(np.isposinf(v), _CENSORED_STANDIN, v) if v.size and v[-1] == np.inf else v


def _unbounded(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bounds that only a censored stand-in can produce become +-inf: a difference of two
    quantiles of finite values never exceeds the span of the finite values of both sides."""
    fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
    if not fa.size or not fb.size:
        return x
    span = max(fa.max(), fb.max()) - min(fa.min(), fb.min())
    x = np.where(x > span, np.inf, x)
    return np.where(x < -span, -np.inf, x)


def compare_samples(
    baseline: dict[str, np.ndarray],
    other: dict[str, np.ndarray],
    settings: BootstrapSettings,
    clusters: dict[str, tuple[ClusteredSample, ClusteredSample]] | None = None,
) -> dict[str, Any]:
    """``{"metrics": {metric: {p50|p99: {baseline, other, diff, ratio, ci, significant}}},
    "shift": {metric: [{q, baseline, other, diff, ci}]}}`` for the metrics in both dicts.

    Inputs are value arrays per metric (any order; NaN ignored). ``clusters``: for a metric
    whose values come in correlated clusters (ITL), the (baseline, other) samples of whole
    clusters; its CIs then come from the cluster bootstrap (point estimates still from the
    value arrays).

    Censored values (``+inf``: timeouts, requests never answered, see
    :mod:`harness.analysis.metrics`) take part: where a quantile of one side is censored the
    entry's ``censored`` names that side (``baseline``, ``other`` or ``both``), ``diff`` and
    its CI are not numbers (null), and ``slower`` says which side is slower when only one is
    censored (a censored quantile is longer than anything observed); a CI bound reached
    through censored values is unbounded (null)."""
    qs = [q for _, q in HEADLINE] + list(DECILES)
    metrics: dict[str, Any] = {}
    shift: dict[str, Any] = {}
    for key in baseline:
        if key not in other:
            continue
        a, b = _sorted(baseline[key]), _sorted(other[key])
        qa, qb = sorted_quantiles(a, qs), sorted_quantiles(b, qs)
        if clusters and key in clusters and a.size and b.size:
            ca, cb = clusters[key]
            diff = qb - qa
            lo, hi, method = cluster_quantile_diff_ci(ca, cb, qs, settings, centres=(qa, qb))
        else:
            diff, lo, hi, method = bootstrap_quantile_diff_ci(
                _standin(a), _standin(b), qs, settings, presorted=True
            )
            lo, hi = _unbounded(lo, a, b), _unbounded(hi, a, b)
        entry: dict[str, Any] = {"n_baseline": int(a.size), "n_other": int(b.size)}
        entry["ci_method"] = method
        for i, (name, _) in enumerate(HEADLINE):
            entry[name] = _point(qa[i], qb[i], diff[i], lo[i], hi[i])
        metrics[key] = entry
        off = len(HEADLINE)
        shift[key] = [
            {"q": q, **_point(qa[off + i], qb[off + i], diff[off + i], lo[off + i], hi[off + i])}
            for i, q in enumerate(DECILES)
        ]
    return {"metrics": metrics, "shift": shift}


def _sorted(v: np.ndarray) -> np.ndarray:
    """Sorted values without NaN; ``+inf`` (censored) kept at the end."""
    v = np.asarray(v, dtype=np.float64)
    keep = ~np.isnan(v) & (v != -np.inf)
    if not keep.all():
        v = v[keep]
    if v.size > 1 and not np.all(v[1:] >= v[:-1]):
        v = np.sort(v)
    return v


def _point(a: float, b: float, d: float, lo: float, hi: float) -> dict[str, Any]:
    cens_a, cens_b = a == math.inf, b == math.inf
    out: dict[str, Any] = {"baseline": float(a), "other": float(b)}
    if cens_a or cens_b:
        side = "both" if cens_a and cens_b else ("baseline" if cens_a else "other")
        slower = None if side == "both" else side
        return out | {"diff": math.nan, "ratio": math.nan, "ci": [math.nan, math.nan],
                      "significant": False, "censored": side, "slower": slower}  # fmt: skip
    ratio = float(b / a) if a and math.isfinite(a) and math.isfinite(b) else math.nan
    significant = bool(not math.isnan(lo) and not math.isnan(hi) and (lo > 0 or hi < 0))
    slower = ("other" if lo > 0 else "baseline") if significant else None
    return out | {
        "diff": float(d),
        "ratio": ratio,
        "ci": [float(lo), float(hi)],
        "significant": significant,
        "censored": None,
        "slower": slower,
    }


def arm_values(data: RunData, arm: str) -> dict[str, np.ndarray]:
    """Every latency metric's sorted values for one arm (ITL: the pooled sample); cached."""
    return sorted_values(data, data.arms.index(arm), None)


def arm_clusters(data: RunData, arm: str) -> ClusteredSample:
    """The sample of whole requests (ITL gaps) of one arm, for cluster-bootstrap CIs."""
    return itl_clusters(data, data.arms.index(arm), None)


def compare_arms(data: RunData) -> dict[str, Any]:
    """``{"baseline": arm, "pairs": [{"baseline", "other", "metrics", "shift"}]}``.

    The baseline is the first arm (manifest order); every other arm is compared with it.
    Fewer than two arms gives ``{"baseline": arm or None, "pairs": []}``.
    """
    if not data.arms:
        return {"baseline": None, "pairs": []}
    base = data.arms[0]
    settings = data.bootstrap()
    base_vals = arm_values(data, base)
    base_clusters = arm_clusters(data, base)
    pairs = []
    for arm in data.arms[1:]:
        clusters = {ITL_KEY: (base_clusters, arm_clusters(data, arm))}
        res = compare_samples(base_vals, arm_values(data, arm), settings, clusters)
        pairs.append({"baseline": base, "other": arm, **res})
    return {"baseline": base, "pairs": pairs}
