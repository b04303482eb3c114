"""Statistics helpers: quantiles, bootstrap confidence intervals, binomial intervals.

Pure functions over numpy arrays, seeded, with explicit guards for tiny samples. Latency
tails are compared with bootstrap confidence intervals of quantiles and of quantile
differences (Efron & Tibshirani 1993, ch. 13; Rousselet, Pernet & Wilcox 2017 for the shift
function), never with mean +- 1.96 sigma.

Two ways to the same bootstrap distribution, chosen by sample size:

- up to ``max_n`` points: ``scipy.stats.bootstrap`` (percentile method, vectorised, seeded);
- beyond: the *order-statistic bootstrap*, which draws the resampled quantile directly
  instead of building resamples. A resample's k-th smallest value (0-based) is
  ``x_sorted[floor(n * U_(k))]`` with ``U_(k) ~ Beta(k + 1, n - k)`` (order statistics of n
  uniforms) and ``U_(k+1) = U_(k) + (1 - U_(k)) * Beta(1, n - k - 1)``, so the type-7
  quantile of a resample costs O(1) per replicate after one sort: every point counts, and
  10 million rows take seconds (Hutson 1999, "Calculating nonparametric confidence
  intervals for quantiles using fractional order statistics", J. Applied Statistics).
  The mean's bootstrap distribution at that size is its normal limit, ``mean +- z * sd/sqrt(n)``
  with the bootstrap's own variance (``sd`` with ddof=0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

#: Quantiles reported for every latency metric, with their summary keys.
QUANTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.50),
    ("p90", 0.90),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99_9", 0.999),
)
#: Deciles of the shift function.
DECILES: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))
#: Largest sample resampled with scipy.stats.bootstrap; beyond it the order-statistic
#: bootstrap is used (same distribution, O(resamples) per quantile after one sort).
BOOTSTRAP_MAX_N = 2_000
#: Below this many points no confidence interval is computed (it would be meaningless).
MIN_N_FOR_CI = 5


@dataclass(frozen=True)
class BootstrapSettings:
    """How confidence intervals are computed (read from AnalysisConfig in one place)."""

    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0
    max_n: int = BOOTSTRAP_MAX_N
    method: str = "percentile"


def finite(values: np.ndarray) -> np.ndarray:
    """The finite values of ``values`` as float64 (nulls are NaN on the way in)."""
    v = np.asarray(values, dtype=np.float64)
    return v[np.isfinite(v)]


def quantiles(values: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Sample quantiles, numpy's default (linear interpolation, Hyndman & Fan type 7).

    Empty input gives NaN for every quantile.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return np.full(len(qs), np.nan)
    return np.quantile(v, np.asarray(qs, dtype=np.float64))


def sorted_quantiles(xs: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """:func:`quantiles` of an already sorted, finite array in O(len(qs)) (same type-7 values)."""
    n = xs.size
    if n == 0:
        return np.full(len(qs), np.nan)
    h = (n - 1) * np.asarray(qs, dtype=np.float64)
    j = np.floor(h).astype(np.int64)
    k = np.minimum(j + 1, n - 1)
    g = h - j
    return xs[j] + g * (xs[k] - xs[j])


def subsample(values: np.ndarray, max_n: int, seed: int) -> np.ndarray:
    """A seeded uniform random subsample (without replacement) of at most ``max_n`` values."""
    v = np.asarray(values)
    if v.size <= max_n:
        return v
    rng = np.random.default_rng(seed)
    return v[rng.choice(v.size, size=max_n, replace=False)]


def _quantiles_and_mean(qs: np.ndarray):
    def statistic(x: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.concatenate(
            [np.quantile(x, qs, axis=axis), np.mean(x, axis=axis)[np.newaxis]], axis=0
        )

    return statistic


def _percentile_interval(reps: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = 1 - confidence
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2], axis=-1)
    return lo, hi


def order_stat_bootstrap(
    sorted_values: np.ndarray, qs: Sequence[float], resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap replicates of type-7 quantiles, drawn from order statistics (no resampling).

    Returns an array of shape ``(len(qs), resamples)`` distributed exactly as the quantiles
    of ``resamples`` resamples (with replacement, size n) of ``sorted_values``.
    """
    xs = np.asarray(sorted_values, dtype=np.float64)
    n = xs.size
    out = np.empty((len(qs), resamples))
    for i, q in enumerate(qs):
        h = (n - 1) * float(q)
        j = int(math.floor(h))
        g = h - j
        u1 = rng.beta(j + 1, n - j, size=resamples)
        i1 = np.minimum((n * u1).astype(np.int64), n - 1)
        if g > 0 and n - j - 1 >= 1:
            u2 = u1 + (1 - u1) * rng.beta(1, n - j - 1, size=resamples)
            i2 = np.minimum((n * u2).astype(np.int64), n - 1)
            out[i] = xs[i1] + g * (xs[i2] - xs[i1])
        else:
            out[i] = xs[i1]
    return out


def bootstrap_quantiles_ci(
    values: np.ndarray, qs: Sequence[float], settings: BootstrapSettings, *, presorted: bool = False
) -> tuple[np.ndarray, np.ndarray, str]:
    """Percentile-bootstrap CIs of the quantiles ``qs`` and of the mean.

    Returns ``(low, high, method)`` where ``low``/``high`` have ``len(qs) + 1`` entries (the
    last one is the mean) and ``method`` names how they were computed (see module docstring):
    ``scipy`` up to ``settings.max_n`` values, ``order-statistic`` beyond, ``none`` below
    :data:`MIN_N_FOR_CI` values (NaN bounds), ``constant`` for a constant sample.
    ``presorted``: ``values`` is already sorted and finite (saves a sort).
    """
    v = np.asarray(values, dtype=np.float64) if presorted else finite(values)
    k = len(qs) + 1
    q = np.asarray(qs, dtype=np.float64)
    if v.size < MIN_N_FOR_CI:
        return np.full(k, np.nan), np.full(k, np.nan), "none"
    if np.all(v == v[0]):  # degenerate: every resample gives the same value
        point = _quantiles_and_mean(q)(v)
        return point.copy(), point.copy(), "constant"
    if v.size > settings.max_n:
        rng = np.random.default_rng(settings.seed)
        reps = order_stat_bootstrap(v if presorted else np.sort(v), q, settings.resamples, rng)
        lo, hi = _percentile_interval(reps, settings.confidence)
        z = float(sps.norm.ppf(0.5 + settings.confidence / 2))
        half = z * float(v.std()) / math.sqrt(v.size)
        m = float(v.mean())
        return np.append(lo, m - half), np.append(hi, m + half), "order-statistic"
    res = sps.bootstrap(
        (v,),
        _quantiles_and_mean(q),
        n_resamples=settings.resamples,
        confidence_level=settings.confidence,
        method=settings.method,
        vectorized=True,
        batch=max(1, 4_000_000 // v.size),
        rng=np.random.default_rng(settings.seed),
    )
    ci = res.confidence_interval
    return np.atleast_1d(ci.low), np.atleast_1d(ci.high), "scipy"


def bootstrap_quantile_diff_ci(
    baseline: np.ndarray,
    other: np.ndarray,
    qs: Sequence[float],
    settings: BootstrapSettings,
    *,
    presorted: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Quantile differences ``Q_other(q) - Q_baseline(q)`` with independent-sample bootstrap CIs.

    Each sample is resampled independently (unpaired), the difference of quantiles taken per
    resample, and the percentile interval of those differences returned. When both samples
    have at most ``settings.max_n`` values this is ``scipy.stats.bootstrap`` with two samples;
    otherwise the replicates of each side come from :func:`order_stat_bootstrap` (the same
    distribution). ``presorted``: both inputs are sorted and finite. Returns
    ``(diff, low, high, method)``.
    """
    if presorted:
        a, b = np.asarray(baseline, np.float64), np.asarray(other, np.float64)
    else:
        a, b = np.sort(finite(baseline)), np.sort(finite(other))
    q = np.asarray(qs, dtype=np.float64)
    nan = np.full(q.size, np.nan)
    if a.size == 0 or b.size == 0:
        return nan.copy(), nan.copy(), nan.copy(), "none"
    diff = sorted_quantiles(b, q) - sorted_quantiles(a, q)
    if a.size < MIN_N_FOR_CI or b.size < MIN_N_FOR_CI:
        return diff, nan.copy(), nan.copy(), "none"

    def statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.quantile(y, q, axis=axis) - np.quantile(x, q, axis=axis)

    if np.all(a == a[0]) and np.all(b == b[0]):
        d = statistic(a, b)
        return diff, d.copy(), d.copy(), "constant"
    if max(a.size, b.size) > settings.max_n:
        rng = np.random.default_rng(settings.seed)
        ra = order_stat_bootstrap(a, q, settings.resamples, rng)
        rb = order_stat_bootstrap(b, q, settings.resamples, rng)
        lo, hi = _percentile_interval(rb - ra, settings.confidence)
        return diff, lo, hi, "order-statistic"
    res = sps.bootstrap(
        (a, b),
        statistic,
        n_resamples=settings.resamples,
        confidence_level=settings.confidence,
        method=settings.method,
        vectorized=True,
        paired=False,
        batch=max(1, 4_000_000 // max(a.size, b.size)),
        rng=np.random.default_rng(settings.seed),
    )
    ci = res.confidence_interval
    return diff, np.atleast_1d(ci.low), np.atleast_1d(ci.high), "scipy"


def wilson_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (Wilson 1927); (nan, nan) when n == 0."""
    if n <= 0:
        return (math.nan, math.nan)
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def poisson_rate_ci(count: int, exposure: float, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) CI of a Poisson rate ``count / exposure``; (nan, nan) for no exposure."""
    if exposure <= 0:
        return (math.nan, math.nan)
    alpha = 1 - confidence
    lo = 0.0 if count == 0 else float(sps.chi2.ppf(alpha / 2, 2 * count)) / 2
    hi = float(sps.chi2.ppf(1 - alpha / 2, 2 * count + 2)) / 2
    return (lo / exposure, hi / exposure)
