"""Paired statistics: two arms measured on the same items (mirrored runs), compared item by item.

Pure functions over numpy arrays, seeded, with explicit guards for tiny samples. Conventions:
``x`` is the **baseline**, ``y`` the **candidate**, paired by position (``x[i]`` and ``y[i]``
are the same item or logical request), and every difference is ``candidate - baseline``.
Pass/fail counts follow the same order: ``n10`` = baseline pass & candidate fail, ``n01`` =
baseline fail & candidate pass.

What is here (each function's docstring has its formula and source):

- :func:`align_pairs`: match two arms on a key (``sample_id``, ``pair_id``), counting the
  unmatched items of each side instead of dropping them silently.
- Pass/fail: :func:`mcnemar_exact` (exact McNemar test on the discordant pairs) and
  :func:`paired_proportion_diff_ci` (Newcombe 1998 method 10). Per-arm Wilson intervals are
  :func:`harness.analysis.stats.wilson_ci`.
- Scores: :func:`wilcoxon_signed_rank` and :func:`paired_bootstrap_mean_diff`.
- Latency: :func:`paired_bootstrap_quantile_diff`, a bootstrap that resamples *pairs* (one
  index for both arms), optionally in circular blocks over time (:func:`auto_block_len`)
  for autocorrelated load, with censored values (``+inf``) handled as in
  :func:`harness.analysis.stats.sorted_quantiles`.
- Multiplicity: :func:`holm`. Planning: :func:`mde_paired_proportion`,
  :func:`n_for_paired_drop`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize as sopt
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as _sm_mcnemar
from statsmodels.stats.multitest import multipletests

from harness.analysis.stats import sorted_quantiles, wilson_ci

#: Fewer non-zero paired differences than this: the signed-rank test is not run (NaN). With
#: 5 the smallest exact two-sided p is 2/32 = 0.0625: no result could ever be significant.
MIN_NONZERO_WILCOXON = 6
#: Below this many pairs no bootstrap interval is computed (NaN bounds).
MIN_PAIRS_FOR_CI = 5
#: Largest number of pairs resampled in full; beyond it each replicate draws this many pairs
#: (in blocks) and its spread is rescaled by sqrt(m / n) (m-out-of-n bootstrap).
PAIRED_MAX_N = 5_000
#: Stand-in for a censored value (+inf) inside a bootstrap; bounds that only a stand-in can
#: produce are reported as unbounded (+-inf).
CENSORED_STANDIN = 1e12
#: Elements (replicates x pairs) resampled at once.
_BATCH_ELEMENTS = 2_000_000


# --------------------------------------------------------------------------------- alignment
def align_pairs(keys_a: np.ndarray, keys_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Indices ``(ia, ib)`` with ``keys_a[ia] == keys_b[ib]``, sorted by key, and the counts
    of keys of ``a`` without a match in ``b`` and of ``b`` without a match in ``a``.

    Keys must be unique on each side (one row per item or logical request): a duplicate
    raises ``ValueError``, since pairing it with one partner would be arbitrary. Sorted by
    key, so ``pair_id`` codes in schedule order give the pairs in arrival order (what a
    block bootstrap over time needs). The unmatched counts are for the caller to report.
    """
    a, b = np.asarray(keys_a), np.asarray(keys_b)
    for name, k in (("keys_a", a), ("keys_b", b)):
        if np.unique(k).size != k.size:
            raise ValueError(f"{name}: keys must be unique on each side (found duplicates)")
    _, ia, ib = np.intersect1d(a, b, assume_unique=True, return_indices=True)
    return ia.astype(np.int64), ib.astype(np.int64), int(a.size - ia.size), int(b.size - ib.size)


# --------------------------------------------------------------------------------- pass/fail
def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` and ``c``.

    Under H0 (equal marginal pass rates) a discordant pair is equally likely to go either
    way, so ``min(b, c) ~ Binomial(b + c, 1/2)`` and ``p = min(1, 2 * P(B <= min(b, c)))``
    (McNemar 1947; the exact conditional form, Agresti 2013, "Categorical Data Analysis",
    sec. 11.1). ``b + c == 0`` gives 1.0. Conservative: its size is below alpha, especially
    with few discordant pairs. Computed by
    ``statsmodels.stats.contingency_tables.mcnemar(exact=True)``.
    """
    if b < 0 or c < 0:
        raise ValueError("mcnemar_exact: counts must be >= 0")
    if b + c == 0:
        return 1.0
    return float(_sm_mcnemar([[0, int(b)], [int(c), 0]], exact=True).pvalue)


def paired_proportion_diff_ci(
    n11: int, n10: int, n01: int, n00: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``(estimate, low, high)`` of ``p_candidate - p_baseline`` from paired pass/fail counts.

    ``n11`` both pass, ``n10`` baseline pass & candidate fail, ``n01`` baseline fail &
    candidate pass, ``n00`` both fail; ``n`` their sum. ``estimate = (n01 - n10) / n``.

    Newcombe (1998), "Improved confidence intervals for the difference between binomial
    proportions based on paired data", Stat. Med. 17:2635-2650, **method 10** (square-and-add
    of Wilson score intervals with a correlation correction). With ``p1 = (n11 + n01) / n``
    (candidate) and ``p2 = (n11 + n10) / n`` (baseline), ``(l1, u1)`` and ``(l2, u2)`` their
    Wilson intervals::

        low  = est - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
        high = est + sqrt((p2 - l2)^2 - 2 phi (p2 - l2)(u1 - p1) + (u1 - p1)^2)

    ``phi`` is the correlation of the two indicators, ``A / sqrt(e f g h)`` with the margins
    ``e, f, g, h``, where ``A = n11 n00 - n10 n01`` is replaced by ``A - n/2`` if
    ``A > n/2``, by 0 if ``0 <= A <= n/2`` (kept if negative), and ``phi = 0`` when a margin
    is 0 (Newcombe's correction; as in Fagerland, Lydersen & Laake 2017, "Statistical
    Analysis of Contingency Tables", sec. 8.5). ``n == 0`` gives NaN for all three.
    """
    counts = (n11, n10, n01, n00)
    if min(counts) < 0:
        raise ValueError("paired_proportion_diff_ci: counts must be >= 0")
    n = sum(counts)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    est = (n01 - n10) / n
    p1, p2 = (n11 + n01) / n, (n11 + n10) / n
    l1, u1 = wilson_ci(n11 + n01, n, confidence)
    l2, u2 = wilson_ci(n11 + n10, n, confidence)
    margins = [n11 + n01, n10 + n00, n11 + n10, n01 + n00]
    phi = 0.0
    if min(margins) > 0:
        a = n11 * n00 - n10 * n01
        a = a - n / 2 if a > n / 2 else (0.0 if a >= 0 else a)
        phi = a / math.sqrt(float(np.prod(np.asarray(margins, dtype=np.float64))))
    d1 = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    d2 = (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2
    return (est, max(-1.0, est - math.sqrt(max(d1, 0.0))), min(1.0, est + math.sqrt(max(d2, 0.0))))


# ------------------------------------------------------------------------------------ scores
def _paired(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired arrays must be 1-d of equal length (got {x.shape}, {y.shape})")
    return x, y


def wilcoxon_signed_rank(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test of ``d = y - x`` (H0: symmetric
    about 0), by ``scipy.stats.wilcoxon(d, zero_method="pratt")``.

    Pratt's treatment of zeros (Pratt 1959; Conover 1999, sec. 5.7): zero differences are
    ranked with the others and then dropped, which keeps the test consistent when many
    pairs tie (scores such as exact match are often equal on both arms). Pairs with a NaN
    on either side are ignored. NaN when fewer than :data:`MIN_NONZERO_WILCOXON` non-zero
    differences remain (no p-value below 0.05 would be possible).
    """
    x, y = _paired(x, y)
    d = y - x
    d = d[np.isfinite(d)]
    if np.count_nonzero(d) < MIN_NONZERO_WILCOXON:
        return math.nan
    return float(sps.wilcoxon(d, zero_method="pratt").pvalue)


def _percentile(reps: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = 1 - confidence
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2], axis=-1)
    return lo, hi


def paired_bootstrap_mean_diff(
    x: np.ndarray,
    y: np.ndarray,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(mean(y - x), low, high)``: percentile bootstrap CI of the mean paired difference.

    Pairs are resampled with replacement (Efron & Tibshirani 1993, "An Introduction to the
    Bootstrap", ch. 13 and sec. 14.3), i.e. the differences ``d_i = y_i - x_i`` are; the
    interval is the ``alpha/2`` and ``1 - alpha/2`` quantiles of the resampled means. NaN
    pairs are ignored; fewer than :data:`MIN_PAIRS_FOR_CI` pairs give NaN bounds.
    """
    x, y = _paired(x, y)
    d = y - x
    d = d[np.isfinite(d)]
    if d.size == 0:
        return (math.nan, math.nan, math.nan)
    est = float(d.mean())
    if d.size < MIN_PAIRS_FOR_CI:
        return (est, math.nan, math.nan)
    if np.all(d == d[0]):
        return (est, est, est)
    rng = np.random.default_rng(seed)
    n = d.size
    means = np.empty(resamples)
    batch = max(1, _BATCH_ELEMENTS // n)
    for s in range(0, resamples, batch):
        k = min(batch, resamples - s)
        means[s : s + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    lo, hi = _percentile(means, confidence)
    return (est, float(lo), float(hi))


# ----------------------------------------------------------------------------------- latency
def _ranks_acf_ready(v: np.ndarray) -> np.ndarray:
    """Ranks (ties averaged; +inf ranks last): robust to heavy tails and censored values."""
    return sps.rankdata(np.where(np.isnan(v), np.nanmedian(v) if np.isfinite(v).any() else 0, v))


def _pw_moments(v: np.ndarray) -> tuple[float, float]:
    """``(G, lr)`` of one series by Politis & White's flat-top lag window: ``G = sum_k |k|
    R(k)`` and the long-run variance ``lr = sum_k R(k)`` (both sums over all lags)."""
    n = v.size
    e = v - v.mean()
    var0 = float(e @ e) / n
    if var0 == 0:
        return 0.0, 0.0
    kn = max(5, int(math.sqrt(math.log10(n))))
    m_max = int(math.ceil(math.sqrt(n))) + kn
    m_max = min(m_max, n - 2)
    f = np.fft.rfft(e, 2 * n)  # autocovariances by FFT: O(n log n) for any n
    acv = np.fft.irfft(f * np.conj(f), 2 * n)[: m_max + 1] / n
    rho = acv / var0
    crit = 2 * math.sqrt(math.log10(n) / n)
    m_hat = None
    for k in range(1, m_max - kn + 2):
        if np.all(np.abs(rho[k : k + kn]) < crit):
            m_hat = k - 1
            break
    big_m = min(2 * max(m_hat, 1), m_max) if m_hat is not None else m_max
    ks = np.arange(1, big_m + 1)
    lam = np.where(ks / big_m <= 0.5, 1.0, 2 * (1 - ks / big_m))
    g = 2 * float(np.sum(lam * ks * acv[1 : big_m + 1]))
    lr = acv[0] + 2 * float(np.sum(lam * acv[1 : big_m + 1]))
    return g, lr


def _politis_white(v: np.ndarray) -> float:
    """Politis & White (2004) optimal *circular* block length for one series (with the
    correction of Patton, Politis & White 2009)."""
    g, lr = _pw_moments(v)
    if lr <= 0:
        return 1.0
    d_cb = 4 / 3 * lr**2
    return ((2 * g * g) / d_cb) ** (1 / 3) * v.size ** (1 / 3)


def block_bias_factor(x: np.ndarray, y: np.ndarray, block_len: int) -> float:
    """Factor that undoes the downward bias of a block bootstrap's spread.

    A block of length ``L`` keeps the autocovariances within it, with weights ``1 - |k|/L``,
    so the block-bootstrap variance of a mean-like statistic is about ``lr - G / L`` instead
    of the long-run ``lr`` (Hall, Horowitz & Jing 1995, "On blocking rules for the bootstrap
    with dependent data", Biometrika 82:561; ``G`` and ``lr`` as in :func:`auto_block_len`).
    Returns ``sqrt(lr / (lr - max(G, 0) / L))``, the largest over the rank series of ``x``,
    ``y`` and ``y - x``, capped at 2; 1 for ``L <= 1`` or fewer than 12 pairs.
    """
    x, y = _paired(x, y)
    if block_len <= 1 or x.size < 12:
        return 1.0
    rx, ry = _ranks_acf_ready(x), _ranks_acf_ready(y)
    out = 1.0
    g, lr = _pw_moments(ry - rx)
    if lr > 0:
        kept = max(lr - max(g, 0.0) / block_len, lr / 4)
        out = math.sqrt(lr / kept)
    return out


def auto_block_len(x: np.ndarray, y: np.ndarray) -> int:
    """Block length for the circular block bootstrap of pairs in time order.

    Politis & White (2004), "Automatic block-length selection for the dependent bootstrap",
    Econometric Reviews 23:53-70, with the correction of Patton, Politis & White (2009):
    ``b = (2 G^2 / D)^(1/3) n^(1/3)``, ``G = sum_k lambda(k/M) |k| R(k)``,
    ``D = 4/3 (sum_k lambda(k/M) R(k))^2`` (circular blocks), ``lambda`` the flat-top
    window and ``M`` twice the first lag after which ``K_n = max(5, sqrt(log10 n))``
    autocorrelations are all within ``+-2 sqrt(log10(n)/n)``. It is computed on the ranks of
    ``x`` and of ``y`` (a quantile depends on the data through indicators, and ranks are
    immune to +inf and heavy tails) and of ``y - x``'s ranks, and the largest is used, so
    autocorrelation in either arm's series is respected. Rounded, at least 1, at most
    ``n / 3``; 1 below 12 pairs.
    """
    x, y = _paired(x, y)
    n = x.size
    if n < 12:
        return 1
    rx, ry = _ranks_acf_ready(x), _ranks_acf_ready(y)
    b = max(_politis_white(rx), _politis_white(ry), _politis_white(ry - rx))
    return int(min(max(1, round(b)), max(1, n // 3)))


def _sorted_quantiles_rows(s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Type-7 quantiles of each row of a row-sorted 2-d array (shape ``(rows, len(q))``)."""
    n = s.shape[1]
    h = (n - 1) * q
    j = np.floor(h).astype(np.int64)
    k = np.minimum(j + 1, n - 1)
    g = h - j
    lo, hi = s[:, j], s[:, k]
    return lo + g * (hi - lo)


def _block_indices(
    rng: np.random.Generator, rows: int, n: int, m: int, block_len: int
) -> np.ndarray:
    """``(rows, m)`` indices into a series of length ``n``: circular blocks of ``block_len``
    consecutive indices with uniform starts (Politis & Romano 1992), truncated to ``m``;
    ``block_len == 1`` is the ordinary i.i.d. bootstrap of pairs."""
    dt = np.int32 if n + block_len < 2**31 else np.int64
    if block_len <= 1:
        return rng.integers(0, n, size=(rows, m), dtype=dt)
    k = -(-m // block_len)
    starts = rng.integers(0, n, size=(rows, k, 1), dtype=dt)
    idx = starts + np.arange(block_len, dtype=dt)
    idx[idx >= n] -= n  # wrap around (circular blocks)
    return idx.reshape(rows, k * block_len)[:, :m]


def t_widening(n: int, block_len: int, confidence: float) -> float:
    """Factor ``t_{1-alpha/2, k-1} / z_{1-alpha/2}`` with ``k = n // block_len`` blocks.

    A block bootstrap estimates the spread of a statistic from about ``k`` (nearly)
    independent blocks, and it is biased low for strongly autocorrelated series at small
    ``n`` (the autocovariance beyond a block is lost; Lahiri 2003, ch. 3). Treating the
    bootstrap spread like a variance estimate with ``k - 1`` degrees of freedom, as batch
    means do (Schmeiser 1982, "Batch size effects in the analysis of simulation output",
    Oper. Res. 30:556), widens the interval by this factor around the estimate: about 1 for
    i.i.d. pairs (``k = n``), 1.17 at the Bonferroni level 1 - 0.05/6 with 15 blocks.
    """
    k = max(2, int(n) // max(1, int(block_len)))
    a = 1 - confidence
    return float(sps.t.isf(a / 2, k - 1) / sps.norm.isf(a / 2))


def paired_quantile_diff_arrays(
    x: np.ndarray,
    y: np.ndarray,
    qs: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    block_len: int | None = None,
    max_n: int = PAIRED_MAX_N,
    small_sample: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Array form of :func:`paired_bootstrap_quantile_diff`: ``(diff, low, high, method)``.

    ``method``: ``paired`` (pairs resampled independently), ``paired-block`` (circular
    blocks over time), ``-subsample`` appended when replicates draw ``max_n`` of ``n``
    pairs and are rescaled (m-out-of-n bootstrap, Bickel, Gotze & van Zwet 1997: the spread
    of ``sqrt(m)(theta*_m - theta_n)`` stands for that of ``sqrt(n)(theta_n - theta)``),
    ``constant``, or ``none`` (fewer than :data:`MIN_PAIRS_FOR_CI` pairs: NaN bounds).
    ``small_sample``: widen the percentile interval around the estimate by
    :func:`t_widening` (the number of blocks as degrees of freedom) times
    :func:`block_bias_factor` (the block bootstrap's known variance bias).
    """
    x, y = _paired(x, y)
    keep = ~(np.isnan(x) | np.isnan(y))
    if not keep.all():
        x, y = x[keep], y[keep]
    q = np.asarray(qs, dtype=np.float64)
    n = x.size
    nan = np.full(q.size, np.nan)
    if n == 0:
        return nan.copy(), nan.copy(), nan.copy(), "none"
    qx, qy = sorted_quantiles(np.sort(x), q), sorted_quantiles(np.sort(y), q)
    with np.errstate(invalid="ignore"):
        diff = qy - qx
    if n < MIN_PAIRS_FOR_CI:
        return diff, nan.copy(), nan.copy(), "none"
    if np.all(x == x[0]) and np.all(y == y[0]):
        return diff, diff.copy(), diff.copy(), "constant"
    xs = np.where(np.isposinf(x), CENSORED_STANDIN, x)
    ys = np.where(np.isposinf(y), CENSORED_STANDIN, y)
    m = min(n, max_n)
    bl = 1 if block_len is None else max(1, min(int(block_len), m // 3))
    rng = np.random.default_rng(seed)
    reps = np.empty((resamples, q.size))
    batch = max(1, _BATCH_ELEMENTS // m)
    for s in range(0, resamples, batch):
        k = min(batch, resamples - s)
        idx = _block_indices(rng, k, n, m, bl)
        bx, by = xs[idx], ys[idx]  # fresh arrays: sorted in place
        bx.sort(axis=1)
        by.sort(axis=1)
        reps[s : s + k] = _sorted_quantiles_rows(by, q) - _sorted_quantiles_rows(bx, q)
    method = "paired-block" if bl > 1 else "paired"
    if m < n:
        centre = sorted_quantiles(np.sort(ys), q) - sorted_quantiles(np.sort(xs), q)
        reps = centre + math.sqrt(m / n) * (reps - centre)
        method += "-subsample"
    lo, hi = _percentile(reps.T, confidence)
    lo, hi = _unbounded(lo, x, y), _unbounded(hi, x, y)
    if small_sample:  # finite bounds around a finite estimate (censored ones: as they are)
        w = t_widening(n, bl, confidence) * block_bias_factor(x, y, bl)
        with np.errstate(invalid="ignore"):
            lo = np.where(np.isfinite(diff) & np.isfinite(lo), diff - w * (diff - lo), lo)
            hi = np.where(np.isfinite(diff) & np.isfinite(hi), diff + w * (hi - diff), hi)
    return diff, lo, hi, method


def _unbounded(b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bounds only a censored stand-in can produce become +-inf: a difference of quantiles of
    finite values never exceeds the span of the finite values of both arms."""
    fin = np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)]])
    if fin.size == 0:
        return np.where(np.isnan(b), b, np.nan)
    span = float(fin.max() - fin.min())
    b = np.where(b > span, np.inf, b)
    return np.where(b < -span, -np.inf, b)


def paired_bootstrap_quantile_diff(
    x: np.ndarray,
    y: np.ndarray,
    quantiles: Sequence[float] = (0.5, 0.95, 0.99),
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    block_len: int | None = None,
) -> dict[float, tuple[float, float, float]]:
    """``{q: (Q_y(q) - Q_x(q), low, high)}``: paired bootstrap CIs of quantile differences.

    Each replicate draws one set of indices and takes both arms' values at them, so the
    pairing (the same logical request sent to both arms at the same moment, under the same
    load) is kept, and the replicate's statistic is the difference of the type-7 quantiles
    of the two resampled arms; the interval is the percentile interval of the replicates
    (Efron & Tibshirani 1993, sec. 14.3 and ch. 13). With ``block_len`` > 1 the indices come
    in circular blocks of consecutive pairs (the circular block bootstrap, Politis & Romano
    1992; Lahiri 2003, "Resampling Methods for Dependent Data", ch. 2), so autocorrelation
    over time (queues that build and drain) is kept inside each block; pass
    :func:`auto_block_len` for a data-driven choice. Inputs must be in time order then.

    Censored values (``+inf``: failed or timed-out requests, longer than anything observed)
    take part in every rank. The point estimate uses
    :func:`harness.analysis.stats.sorted_quantiles`: a quantile whose interpolation touches
    a censored value is ``+inf``, so the difference is ``+inf``, ``-inf`` or NaN (both
    censored). Inside the bootstrap ``+inf`` is replaced by :data:`CENSORED_STANDIN`, and a
    bound only that stand-in can produce is returned as ``+-inf`` (unbounded), as in
    :mod:`harness.analysis.compare`. More than :data:`PAIRED_MAX_N` pairs: m-out-of-n
    replicates (see :func:`paired_quantile_diff_arrays`).
    """
    diff, lo, hi, _ = paired_quantile_diff_arrays(
        x, y, quantiles, confidence, resamples, seed, block_len
    )
    return {
        float(q): (float(d), float(a), float(b))
        for q, d, a, b in zip(quantiles, diff, lo, hi, strict=True)
    }


# ------------------------------------------------------------------------------ multiplicity
def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm (1979) step-down adjusted p-values, by
    ``statsmodels.stats.multitest.multipletests(method="holm")``.

    Sorted ascending ``p_(1) <= ... <= p_(m)``: ``adj_(i) = max_{j <= i} min(1, (m - j + 1)
    p_(j))``; rejecting where ``adj <= alpha`` controls the family-wise error rate at
    ``alpha`` under any dependence. NaN entries (tests that could not be run) are passed
    through and do not count in ``m``.
    """
    p = np.asarray(list(pvalues), dtype=np.float64)
    out = np.full(p.size, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return [float(v) for v in out]


# ---------------------------------------------------------------------------------- planning
def _independent_discordance(p_base: float, drop: float) -> float:
    """Discordance ``P(pairs disagree)`` when the two arms' errors are independent."""
    p_cand = p_base - drop
    return p_base * (1 - p_cand) + p_cand * (1 - p_base)


def _n_required(drop: float, psi: float, alpha: float, power: float) -> float:
    za = float(sps.norm.isf(alpha / 2))
    zb = float(sps.norm.ppf(power))
    return (za * math.sqrt(psi) + zb * math.sqrt(max(psi - drop * drop, 0.0))) ** 2 / drop**2


def n_for_paired_drop(
    p_base: float,
    drop: float,
    alpha: float = 0.05,
    power: float = 0.8,
    discordance: float | None = None,
) -> int:
    """Paired items needed for the two-sided McNemar test at ``alpha`` to detect a drop of
    the pass rate from ``p_base`` to ``p_base - drop`` with probability ``power``.

    Connor (1987), "Sample size for testing differences in proportions for the paired-sample
    design", Biometrics 43:207-211 (the McNemar normal approximation)::

        n = (z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2

    with ``delta = drop`` and ``psi = P(discordant pair)``. ``discordance`` gives ``psi``;
    None assumes the arms' errors are independent, ``psi = p_b (1 - p_c) + p_c (1 - p_b)``.
    Errors that correlate (hard items are hard for both arms) mean a smaller ``psi`` and
    fewer items. Example: 0.90 -> 0.80 at 90% power needs 270 items with independent errors
    (``psi = 0.26``) and 259 with ``psi = 0.25`` (the issue's "about 260"); the minimum
    ``psi = delta`` (the candidate fails a superset of the baseline's failures) needs 101.
    """
    if not 0 < drop <= p_base <= 1:
        raise ValueError("n_for_paired_drop: need 0 < drop <= p_base <= 1")
    psi = _independent_discordance(p_base, drop) if discordance is None else float(discordance)
    if not drop <= psi <= 1:
        raise ValueError("n_for_paired_drop: discordance must lie in [drop, 1]")
    return int(math.ceil(_n_required(drop, psi, alpha, power) - 1e-9))


def mde_paired_proportion(
    n: int,
    p_base: float,
    alpha: float = 0.05,
    power: float = 0.8,
    discordance: float | None = None,
) -> float:
    """Smallest drop of a pass rate from ``p_base`` that ``n`` paired items detect (McNemar,
    two-sided ``alpha``) with probability ``power``: the inverse of
    :func:`n_for_paired_drop` (same formula and discordance assumption), solved for
    ``delta`` by Brent's method. NaN when even a drop to 0 (or, with a fixed
    ``discordance``, a drop equal to it) is not detectable with ``n`` items.
    """
    if n <= 0 or not 0 < p_base <= 1:
        return math.nan
    hi = p_base if discordance is None else min(p_base, float(discordance))

    def psi(d: float) -> float:
        return _independent_discordance(p_base, d) if discordance is None else float(discordance)

    def f(d: float) -> float:
        return _n_required(d, psi(d), alpha, power) - n

    if f(hi) > 0:
        return math.nan
    lo = 1e-9
    if f(lo) <= 0:
        return lo
    return float(sopt.brentq(f, lo, hi, xtol=1e-10))
