"""Statistics helpers: quantiles, confidence intervals of quantiles and means, binomial intervals.

Pure functions over numpy arrays, seeded, with explicit guards for tiny samples. Latency
tails are never summarised by mean +- 1.96 sigma.

**CI of one quantile: distribution-free order-statistic (binomial) interval** (Hahn & Meeker
1991, "Statistical Intervals", sec. 5.2; Conover 1999, "Practical Nonparametric Statistics",
sec. 3.2; the construction of ``scipy.stats.quantile_test(...).confidence_interval()``). For
the ``q`` quantile ``xi_q`` of a continuous distribution and the sorted sample
``x_(1) <= ... <= x_(n)``, the number of observations ``<= xi_q`` is ``B ~ Binomial(n, q)``, so
``P(x_(l) <= xi_q <= x_(u)) = P(l <= B <= u - 1)`` whatever the distribution. The interval is
equal-tailed: ``l = binom.ppf(alpha/2)`` and ``u = binom.isf(alpha/2) + 1`` (1-based), so that
``P(B < l) < alpha/2`` and ``P(B >= u) <= alpha/2``; its coverage is at least the nominal
level (conservative, by up to a few points where the binomial is coarse) for every ``n``. The
indices depend only on ``(n, q, confidence)``, so the cost is one sort plus O(1) per quantile
(10 million values: the sort). When ``n`` is too small a bound does not exist at the requested
confidence (the upper bound of p99 needs ``0.99**n <= alpha/2``, i.e. n >= 367 at 95%; of
p99.9, n >= 3,688): that bound is *not estimable* and returned as NaN (the other side is still
valid as a one-sided ``1 - alpha/2`` bound). It replaced the percentile bootstrap, which
under-covers in the tail (measured coverage of the nominal 95% CI of p99: 62% at n=100, 90%
at n=1,000; of p99.9: 8% at n=100, 63% at n=1,000; see tests/analysis/test_quantile_coverage.py).

**CI of the mean**: the percentile bootstrap, ``scipy.stats.bootstrap`` (vectorised, seeded)
up to ``max_n`` points; beyond, its normal limit ``mean +- z * sd/sqrt(n)`` with the
bootstrap's own variance (``sd`` with ddof=0).

**Differences of quantiles** between two samples (:func:`bootstrap_quantile_diff_ci`) keep the
percentile bootstrap (Efron & Tibshirani 1993, ch. 13; Rousselet, Pernet & Wilcox 2017 for the
shift function), with two ways to the same bootstrap distribution, chosen by sample size:

- up to ``max_n`` points: ``scipy.stats.bootstrap`` (percentile method);
- beyond: the *order-statistic bootstrap*, which draws the resampled quantile directly
  instead of building resamples. A resample's k-th smallest value (0-based) is
  ``x_sorted[floor(n * U_(k))]`` with ``U_(k) ~ Beta(k + 1, n - k)`` (order statistics of n
  uniforms) and ``U_(k+1) = U_(k) + (1 - U_(k)) * Beta(1, n - k - 1)``, so the type-7
  quantile of a resample costs O(1) per replicate after one sort: every point counts, and
  10 million rows take seconds (Hutson 1999, "Calculating nonparametric confidence
  intervals for quantiles using fractional order statistics", J. Applied Statistics).

The same tail caveat applies to those difference CIs (a percentile bootstrap of an extreme
quantile at small n is too narrow); they are not recalibrated here.

Clustered values (ITL: the gaps of one request are correlated, a slow request has slow
gaps) get the *cluster bootstrap* instead (Davison & Hinkley 1997, sec. 3.8; Field & Welsh
2007): whole clusters are resampled with replacement and their values pooled, so the CI
reflects the number of requests, not the number of gaps. It is vectorised as weighted
quantiles: the pooled values are sorted once, a replicate is a vector of cluster
multiplicities, and its type-7 quantile is read off the cumulative weights. Its cost grows
with the values of the clusters resampled, so callers pass a uniform random sample of
clusters (``ClusteredSample.n_total`` > clusters given); the replicate spread is then scaled
by ``sqrt(m / n)`` around the full-data estimate (the m-out-of-n bootstrap, Bickel, Gotze &
van Zwet 1997), valid for root-n consistent statistics such as quantiles and the mean. It is
a percentile bootstrap too, with the same tail caveat.
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
#: Elements (replicates x pooled values) held at once by the cluster bootstrap.
_CLUSTER_BATCH_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class BootstrapSettings:
    """How confidence intervals are computed (read from AnalysisConfig in one place)."""

    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0
    max_n: int = BOOTSTRAP_MAX_N
    method: str = "percentile"


@dataclass(frozen=True)
class ClusteredSample:
    """Values grouped in clusters (ITL: the gaps of one request), for the cluster bootstrap.

    ``values``: finite, cluster after cluster; ``lengths``: values per cluster (each >= 1);
    ``n_total``: clusters in the population this is a uniform random sample of (None: all).
    """

    values: np.ndarray
    lengths: np.ndarray
    n_total: int | None = None

    @property
    def n_clusters(self) -> int:
        return int(self.lengths.size)

    @property
    def subsampled(self) -> bool:
        return self.n_total is not None and self.n_total > self.n_clusters


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
    """:func:`quantiles` of an already sorted array in O(len(qs)) (same type-7 values).

    ``+inf`` values (censored observations, sorted last) are allowed: a quantile whose
    interpolation touches one is ``+inf``; one that lands exactly on a finite value is it.
    """
    n = xs.size
    if n == 0:
        return np.full(len(qs), np.nan)
    h = (n - 1) * np.asarray(qs, dtype=np.float64)
    j = np.floor(h).astype(np.int64)
    k = np.minimum(j + 1, n - 1)
    g = h - j
    lo, hi = xs[j], xs[k]
    with np.errstate(invalid="ignore"):
        out = np.where(g == 0, lo, lo + g * (hi - lo))
    return np.where(np.isposinf(lo) | (np.isposinf(hi) & (g > 0)), np.inf, out)


def subsample(values: np.ndarray, max_n: int, seed: int) -> np.ndarray:
    """A seeded uniform random subsample (without replacement) of at most ``max_n`` values."""
    v = np.asarray(values)
    if v.size <= max_n:
        return v
    rng = np.random.default_rng(seed)
    return v[rng.choice(v.size, size=max_n, replace=False)]


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


def order_statistic_ci_indices(
    n: int, qs: Sequence[float], confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """0-based indices into the sorted sample of the order-statistic CI bounds of ``qs``.

    Distribution-free, equal-tailed (see the module docstring): with ``B ~ Binomial(n, q)``,
    ``low = binom.ppf(alpha/2) - 1`` and ``high = binom.isf(alpha/2)`` (0-based), so each tail
    misses with probability at most ``alpha/2`` and the coverage is ``>= confidence``. A bound
    that does not exist at this ``n`` is *not estimable*: ``low`` is then -1, ``high`` is ``n``.
    The indices depend only on ``(n, q, confidence)`` (vectorised over ``qs``).
    """
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    q = np.asarray(qs, dtype=np.float64)
    half = (1 - confidence) / 2
    bd = sps.binom(int(n), q)
    lo = np.nan_to_num(bd.ppf(half), nan=0.0) - 1
    hi = np.nan_to_num(bd.isf(half), nan=float(n))
    lo = np.clip(lo, -1, n).astype(np.int64)
    hi = np.clip(hi, -1, n).astype(np.int64)
    return lo, hi


def order_statistic_quantiles_ci(
    sorted_values: np.ndarray, qs: Sequence[float], confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Order-statistic CIs ``(low, high)`` of the quantiles ``qs`` of a sorted finite sample.

    NaN marks a bound that is not estimable at this sample size (see
    :func:`order_statistic_ci_indices`).
    """
    xs = np.asarray(sorted_values, dtype=np.float64)
    n = xs.size
    li, hi = order_statistic_ci_indices(n, qs, confidence)
    lo_ok, hi_ok = li >= 0, hi < n
    low = np.where(lo_ok, xs[np.where(lo_ok, li, 0)], np.nan) if n else np.full(li.size, np.nan)
    high = np.where(hi_ok, xs[np.where(hi_ok, hi, 0)], np.nan) if n else np.full(hi.size, np.nan)
    return low, high


def bootstrap_quantiles_ci(
    values: np.ndarray, qs: Sequence[float], settings: BootstrapSettings, *, presorted: bool = False
) -> tuple[np.ndarray, np.ndarray, str]:
    """CIs of the quantiles ``qs`` (order-statistic intervals) and of the mean (bootstrap).

    Returns ``(low, high, method)`` where ``low``/``high`` have ``len(qs) + 1`` entries (the
    last one is the mean). The quantiles' CIs are the distribution-free order-statistic
    intervals of :func:`order_statistic_quantiles_ci` at ``settings.confidence``; a NaN bound
    there is *not estimable* at this sample size (e.g. the upper bound of p99 below 367
    values at 95%). The mean's CI is the percentile bootstrap (``scipy.stats.bootstrap``) up
    to ``settings.max_n`` values and its normal limit beyond (zero width for a constant
    sample). ``method``: ``order-statistic``, or ``none`` below :data:`MIN_N_FOR_CI` values
    (every bound NaN). ``presorted``: ``values`` is already sorted and finite (saves a sort).
    The name is kept for its callers.
    """
    v = np.asarray(values, dtype=np.float64) if presorted else finite(values)
    k = len(qs) + 1
    q = np.asarray(qs, dtype=np.float64)
    if v.size < MIN_N_FOR_CI:
        return np.full(k, np.nan), np.full(k, np.nan), "none"
    xs = v if presorted else np.sort(v)
    q_lo, q_hi = order_statistic_quantiles_ci(xs, q, settings.confidence)
    m = float(v.mean())
    if not math.isfinite(m):  # +inf values (censored, given presorted): no mean CI here
        m_lo = m_hi = math.nan
    elif xs[0] == xs[-1]:  # constant sample: every resample has the same mean
        m_lo = m_hi = m
    elif v.size > settings.max_n:
        z = float(sps.norm.ppf(0.5 + settings.confidence / 2))
        half = z * float(v.std()) / math.sqrt(v.size)
        m_lo, m_hi = m - half, m + half
    else:
        res = sps.bootstrap(
            (v,),
            np.mean,
            n_resamples=settings.resamples,
            confidence_level=settings.confidence,
            method=settings.method,
            vectorized=True,
            batch=max(1, 4_000_000 // v.size),
            rng=np.random.default_rng(settings.seed),
        )
        m_lo, m_hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return np.append(q_lo, m_lo), np.append(q_hi, m_hi), "order-statistic"


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


def cluster_bootstrap(
    values: np.ndarray,
    lengths: np.ndarray,
    qs: Sequence[float],
    resamples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Cluster-bootstrap replicates of the pooled type-7 quantiles ``qs`` and the pooled mean.

    Each replicate draws as many clusters as there are, with replacement, and pools their
    values. Returns shape ``(len(qs) + 1, resamples)`` (last row: the mean). Vectorised: the
    values are sorted once; a replicate's weights are its cluster multiplicities, and the
    k-th smallest pooled value is the first sorted value whose cumulative weight exceeds k.
    """
    x = np.asarray(values, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    m = lengths.size
    cid = np.repeat(np.arange(m), lengths)
    order = np.argsort(x, kind="stable")
    xs, cs = x[order], cid[order]
    sums = np.bincount(cid, weights=x, minlength=m)
    q = np.asarray(qs, dtype=np.float64)
    out = np.empty((q.size + 1, resamples))
    g_n = xs.size
    batch = max(1, min(resamples, _CLUSTER_BATCH_ELEMENTS // max(g_n, m)))
    # Cumulative weights of a whole batch fit int32 unless clusters are huge.
    dt = np.int32 if batch * m * int(lengths.max(initial=1)) < 2**31 - 1 else np.int64
    for start in range(0, resamples, batch):
        b = min(batch, resamples - start)
        rows = np.arange(b, dtype=np.int64)
        picks = rng.integers(0, m, size=(b, m)) + (rows * m)[:, None]
        w = np.bincount(picks.ravel(), minlength=b * m).reshape(b, m).astype(dt)
        n = w.astype(np.int64) @ lengths  # pooled size of each replicate (>= m >= 1)
        out[-1, start : start + b] = (w @ sums) / n
        # One running sum over the batch: row r starts at the pooled sizes of rows < r.
        flat = np.cumsum(w[:, cs].ravel(), dtype=dt)
        before = (np.cumsum(n) - n)[:, None]
        h = (n - 1)[:, None] * q[None, :]
        j = np.floor(h).astype(np.int64)
        k = np.minimum(j + 1, (n - 1)[:, None])
        # The value of order statistic p of row r: first index whose running sum exceeds p.
        idx = np.searchsorted(flat, (np.stack([j, k]) + before).ravel(), side="right")
        idx = idx.reshape(2, b, q.size) - (rows * g_n)[:, None]
        lo, hi = xs[idx[0]], xs[idx[1]]
        out[:-1, start : start + b] = (lo + (h - j) * (hi - lo)).T
    return out


def _cluster_replicates(
    sample: ClusteredSample,
    qs: np.ndarray,
    settings: BootstrapSettings,
    rng: np.random.Generator,
    centre: np.ndarray | None,
) -> np.ndarray:
    """Replicates of (quantiles, mean); rescaled around ``centre`` when clusters were sampled."""
    reps = cluster_bootstrap(sample.values, sample.lengths, qs, settings.resamples, rng)
    if sample.subsampled:
        v = np.sort(np.asarray(sample.values, np.float64))
        own = np.append(sorted_quantiles(v, qs), v.mean())
        c = own if centre is None else np.asarray(centre, np.float64)
        scale = math.sqrt(sample.n_clusters / float(sample.n_total))  # type: ignore[arg-type]
        reps = c[:, None] + scale * (reps - own[:, None])
    return reps


def _cluster_method(sample: ClusteredSample) -> str:
    return "cluster-subsample" if sample.subsampled else "cluster"


def cluster_quantiles_ci(
    sample: ClusteredSample,
    qs: Sequence[float],
    settings: BootstrapSettings,
    *,
    centre: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Cluster-bootstrap percentile CIs of pooled quantiles ``qs`` and of the pooled mean.

    Like :func:`bootstrap_quantiles_ci` (``len(qs) + 1`` bounds, the mean last), for values
    that come in correlated clusters. ``centre``: the full-data estimates (quantiles then
    mean) when ``sample`` is a subsample of clusters. ``method``: ``cluster``,
    ``cluster-subsample`` (m-out-of-n, see the module docstring), ``constant`` or ``none``
    (fewer than :data:`MIN_N_FOR_CI` clusters).
    """
    q = np.asarray(qs, dtype=np.float64)
    k = q.size + 1
    v = np.asarray(sample.values, np.float64)
    if sample.n_clusters < MIN_N_FOR_CI:
        return np.full(k, np.nan), np.full(k, np.nan), "none"
    if np.all(v == v[0]):
        point = np.full(k, v[0])
        return point, point.copy(), "constant"
    reps = _cluster_replicates(sample, q, settings, np.random.default_rng(settings.seed), centre)
    lo, hi = _percentile_interval(reps, settings.confidence)
    return lo, hi, _cluster_method(sample)


def cluster_quantile_diff_ci(
    baseline: ClusteredSample,
    other: ClusteredSample,
    qs: Sequence[float],
    settings: BootstrapSettings,
    *,
    centres: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Cluster-bootstrap CIs of ``Q_other(q) - Q_baseline(q)`` (each side resampled by cluster,
    independently). ``centres``: full-data quantiles of each side when a side is a subsample.
    Returns ``(low, high, method)``."""
    q = np.asarray(qs, dtype=np.float64)
    nan = np.full(q.size, np.nan)
    if min(baseline.n_clusters, other.n_clusters) < MIN_N_FOR_CI:
        return nan, nan.copy(), "none"
    va, vb = np.asarray(baseline.values, np.float64), np.asarray(other.values, np.float64)
    if np.all(va == va[0]) and np.all(vb == vb[0]):
        d = np.full(q.size, vb[0] - va[0])
        return d, d.copy(), "constant"
    rng = np.random.default_rng(settings.seed)
    ca, cb = (None, None) if centres is None else centres

    def full(c: np.ndarray | None) -> np.ndarray | None:
        return None if c is None else np.append(np.asarray(c, np.float64), np.nan)

    ra = _cluster_replicates(baseline, q, settings, rng, full(ca))[:-1]
    rb = _cluster_replicates(other, q, settings, rng, full(cb))[:-1]
    lo, hi = _percentile_interval(rb - ra, settings.confidence)
    method = "cluster-subsample" if baseline.subsampled or other.subsampled else "cluster"
    return lo, hi, method


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
