"""The statistic behind each classification: how the candidate differs from the baseline on
one metric, with two intervals and a test. One function per kind of sample, looked up in
:data:`STATISTICS`, so a sequential (anytime-valid) version for the month-long canary can
replace one without touching classification or scoring.

Every function returns a :class:`Change`: the estimate (candidate vs baseline, as a ratio
``candidate / baseline`` or a difference ``candidate - baseline``), and two two-sided
intervals of it (see :class:`Levels`):

- ``ci_ni`` at ``1 - 2 alpha``: its bound on the bad side tests non-inferiority (one-sided
  level ``1 - alpha``). GO needs *every* critical metric non-inferior, an intersection-union
  test (Berger 1982): its false-GO rate is at most ``alpha`` with no adjustment.
- ``ci`` at ``1 - 2 alpha / m`` for ``m`` metrics judged: its bound on the good side tests
  worse-than-margin (one-sided ``1 - alpha / m``). NO_GO follows from *any* metric shown
  worse, a union: Bonferroni over the ``m`` metrics keeps the false-NO_GO rate at most
  ``alpha`` (each metric within its margin is called worse with probability <= alpha / m).

Intervals by kind:

- **latency quantile** (:func:`quantile_change`): mirrored runs, the paired bootstrap of
  :func:`harness.analysis.paired.paired_quantile_diff_arrays` (pairs resampled together, in
  circular blocks over arrival time, block length from
  :func:`harness.analysis.paired.auto_block_len` unless ``judge.block_len`` is set);
  otherwise an independent bootstrap of each arm (order-statistic replicates,
  :func:`harness.analysis.stats.order_stat_bootstrap`). A relative margin is judged on the
  ratio of quantiles, bootstrapped as the difference of quantiles of log latencies (the log
  of a quantile is the quantile of the logs, up to interpolation between neighbouring order
  statistics). Test: exceedances of the pooled q-quantile ``c``, exact McNemar on the pairs
  ``(x > c, y > c)`` (paired) or Fisher's exact test (unpaired): a test on the tail itself,
  where a rank test of the whole distribution (Kayenta's Mann-Whitney) misses tail changes.
- **proportion** (:func:`proportion_change`: failures per logical request, pass/fail quality):
  paired, Newcombe's method 10 (:func:`harness.analysis.paired.paired_proportion_diff_ci`)
  and the exact McNemar test; unpaired, Newcombe's hybrid score interval for independent
  proportions (Newcombe 1998, Stat. Med. 17:873-890, method 10) and Fisher's exact test.
- **mean score** (:func:`mean_change`: graded scores, lengths): paired, the bootstrap of the
  mean paired difference and the Wilcoxon signed-rank test; unpaired, an independent
  bootstrap of the difference of means and the Mann-Whitney U test.
- **cost per task** (:func:`cost_change`): an independent bootstrap of each arm's mean cost
  per logical request; an arm priced by a projection (self-hosted) enters as a fixed value.
  Test: Welch's t-test (one-sample t against a fixed value).

The bootstrap intervals are percentile intervals at ``1 - 2 alpha`` (well resolved by the
replicates); the Bonferroni-level interval stretches each side's distance from the estimate
by ``z(1 - alpha / m) / z(1 - alpha)`` (the normal limit of the estimator, keeping the
interval's asymmetry), since a percentile at ``alpha / m`` rests on a handful of replicates.
The analytic intervals (Newcombe) are computed at both levels directly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from harness.analysis.paired import (
    CENSORED_STANDIN,
    auto_block_len,
    mcnemar_exact,
    paired_bootstrap_mean_diff,
    paired_proportion_diff_ci,
    paired_quantile_diff_arrays,
    wilcoxon_signed_rank,
)
from harness.analysis.stats import order_stat_bootstrap, sorted_quantiles, wilson_ci
from harness.judge.samples import BinarySample, CostSample, LatencySample, Sample, ScoreSample

#: Beyond this many values a mean's bootstrap replicates come from its normal limit.
MEAN_BOOTSTRAP_MAX_N = 5_000
#: Latencies at or below 0 (impossible, but guarded) are clipped to this before a log.
_TINY_S = 1e-9


@dataclass(frozen=True)
class Levels:
    """The two interval levels for ``m`` metrics judged at error rate ``alpha``."""

    alpha: float
    m: int

    @property
    def ni(self) -> float:
        """Two-sided level whose bad-side bound is the one-sided ``1 - alpha`` bound."""
        return 1 - 2 * self.alpha

    @property
    def worse(self) -> float:
        """Two-sided level whose good-side bound is the one-sided ``1 - alpha / m`` bound."""
        return 1 - 2 * self.alpha / max(self.m, 1)

    @property
    def stretch(self) -> float:
        """``z(1 - alpha / m) / z(1 - alpha)``: from the ``ni`` interval to the ``worse`` one."""
        return _stretch_factor(self.alpha, max(self.m, 1))


@functools.lru_cache(maxsize=256)
def _stretch_factor(alpha: float, m: int) -> float:
    return float(sps.norm.isf(alpha / m) / sps.norm.isf(alpha))


@dataclass(frozen=True)
class Resampling:
    resamples: int = 2000
    seed: int = 0
    block_len: int | None = None  # paired latency; None: automatic


@dataclass(frozen=True)
class Change:
    """How the candidate differs from the baseline on one metric (see module docstring)."""

    estimate: float
    scale: str  # "ratio" (candidate / baseline) | "difference" (candidate - baseline)
    ci: tuple[float, float]  # at Levels.worse
    ci_ni: tuple[float, float]  # at Levels.ni
    reference: float  # the baseline's value (relative margins on a difference scale)
    candidate_value: float
    test: str
    statistic: float | None
    p: float | None
    interval: str  # how the intervals were computed
    n: int
    detail: dict[str, Any] = field(default_factory=dict)


def _stretch(est: float, lo: float, hi: float, k: float) -> tuple[float, float]:
    """The interval ``(lo, hi)`` around ``est`` with each side's length times ``k``."""
    if not (math.isfinite(est) and not math.isnan(lo) and not math.isnan(hi)):
        return lo, hi
    return est - k * (est - lo), est + k * (hi - est)


def _percentile(reps: np.ndarray, confidence: float) -> tuple[float, float]:
    half = (1 - confidence) / 2
    lo, hi = np.quantile(reps, [half, 1 - half])
    return float(lo), float(hi)


def _nan_change(scale: str, test: str, interval: str, n: int, **detail: Any) -> Change:
    nan = math.nan
    return Change(nan, scale, (nan, nan), (nan, nan), nan, nan, test, None, None, interval, n,
                  dict(detail))  # fmt: skip


# ---------------------------------------------------------------- latency quantiles


def _exceedance_test(
    x: np.ndarray, y: np.ndarray, q: float, paired: bool
) -> tuple[str, float, float]:
    """Test of equal exceedance of the pooled q-quantile (see module docstring)."""
    pooled = np.concatenate([x, y])
    c = float(sorted_quantiles(np.sort(pooled), [q])[0])
    ex, ey = x > c, y > c
    if paired:
        b, cc = int((ex & ~ey).sum()), int((~ex & ey).sum())
        return (f"exact McNemar on exceedances of the pooled p{_qname(q)} (b={b}, c={cc})",
                float(min(b, cc)), mcnemar_exact(b, cc))  # fmt: skip
    table = [[int(ey.sum()), int((~ey).sum())], [int(ex.sum()), int((~ex).sum())]]
    res = sps.fisher_exact(table)
    return (f"Fisher exact on exceedances of the pooled p{_qname(q)}",
            float(res.statistic), float(res.pvalue))  # fmt: skip


def _qname(q: float) -> str:
    return f"{100 * q:g}"


def _unbounded(b: np.ndarray, span: float) -> np.ndarray:
    """Bounds only a censored stand-in can produce (beyond the finite span) become +-inf."""
    b = np.where(b > span, np.inf, b)
    return np.where(b < -span, -np.inf, b)


def _independent_quantile_diff(x: np.ndarray, y: np.ndarray, qs: list[float], confidence: float,
                               r: Resampling) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Independent bootstrap of ``Q_y(q) - Q_x(q)``: each arm's replicates drawn from its own
    order statistics (:func:`order_stat_bootstrap`); +inf enters as a stand-in."""
    xs, ys = np.sort(x), np.sort(y)
    with np.errstate(invalid="ignore"):
        diff = sorted_quantiles(ys, qs) - sorted_quantiles(xs, qs)
    rng = np.random.default_rng(r.seed)
    sx = np.where(np.isposinf(xs), CENSORED_STANDIN, xs)
    sy = np.where(np.isposinf(ys), CENSORED_STANDIN, ys)
    reps = order_stat_bootstrap(sy, qs, r.resamples, rng) - order_stat_bootstrap(
        sx, qs, r.resamples, rng
    )
    half = (1 - confidence) / 2
    lo, hi = np.quantile(reps, [half, 1 - half], axis=1)
    fin = np.concatenate([xs[np.isfinite(xs)], ys[np.isfinite(ys)]])
    span = float(fin.max() - fin.min()) if fin.size else 0.0
    return diff, _unbounded(lo, span), _unbounded(hi, span)


def quantile_change(sample: LatencySample, q: float, relative: bool, levels: Levels,
                    r: Resampling) -> Change:  # fmt: skip
    """Change of the ``q`` quantile of a latency (ratio when ``relative``, else seconds)."""
    x, y = sample.values()
    scale = "ratio" if relative else "difference"
    n = int(min(x.size, y.size))
    if n == 0:
        return _nan_change(scale, "none", "none", n)
    qs = sorted({*sample.quantiles, q})
    key = ("quantiles", tuple(qs), relative, levels.ni, r)
    if key not in sample.cache:
        if relative:
            tx, ty = np.log(np.maximum(x, _TINY_S)), np.log(np.maximum(y, _TINY_S))
        else:
            tx, ty = x, y
        if sample.paired:
            bl = r.block_len if r.block_len is not None else auto_block_len(tx, ty)
            diff, lo, hi, method = paired_quantile_diff_arrays(
                tx, ty, qs, levels.ni, r.resamples, r.seed, bl
            )
            how = f"{method} bootstrap of pairs (block length {bl}), percentile"
        else:
            diff, lo, hi = _independent_quantile_diff(tx, ty, qs, levels.ni, r)
            how = "independent bootstrap of each arm (order statistics), percentile"
        sample.cache[key] = (diff, lo, hi, how)
    diff, lo, hi, how = sample.cache[key]
    i = qs.index(q)
    d, lo_ni, hi_ni = float(diff[i]), float(lo[i]), float(hi[i])
    lo_w, hi_w = _stretch(d, lo_ni, hi_ni, levels.stretch)
    qx = float(sorted_quantiles(np.sort(x), [q])[0])
    qy = float(sorted_quantiles(np.sort(y), [q])[0])
    test, stat, p = _exceedance_test(x, y, q, sample.paired)
    if relative:
        d, lo_ni, hi_ni, lo_w, hi_w = (float(np.exp(v)) for v in (d, lo_ni, hi_ni, lo_w, hi_w))
        how += " (on log latencies: ratio of quantiles)"
    return Change(d, scale, (lo_w, hi_w), (lo_ni, hi_ni), qx, qy, test, stat, p, how, n,
                  {"paired": sample.paired, "unmatched": list(sample.unmatched)})  # fmt: skip


# ---------------------------------------------------------------- proportions


def _newcombe_independent(k1: int, n1: int, k2: int, n2: int, confidence: float
                          ) -> tuple[float, float, float]:  # fmt: skip
    """``p1 - p2`` (p1 = k1/n1, the candidate) with Newcombe's hybrid score interval: Wilson
    intervals ``(l_i, u_i)`` of each proportion, ``low = d - sqrt((p1 - l1)^2 + (u2 - p2)^2)``,
    ``high = d + sqrt((u1 - p1)^2 + (p2 - l2)^2)`` (Newcombe 1998, method 10)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_ci(k1, n1, confidence)
    l2, u2 = wilson_ci(k2, n2, confidence)
    d = p1 - p2
    return (
        d,
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def proportion_change(sample: BinarySample, relative: bool, levels: Levels,
                      r: Resampling) -> Change:  # fmt: skip
    """Change of a rate (failures, passes): the difference ``p_candidate - p_baseline``."""
    x, y = sample.values()
    bx, by = x > 0.5, y > 0.5
    if sample.paired:
        n = int(bx.size)
        if n == 0:
            return _nan_change("difference", "none", "none", 0)
        n11, n10 = int((bx & by).sum()), int((bx & ~by).sum())
        n01, n00 = int((~bx & by).sum()), int((~bx & ~by).sum())
        est, lo_ni, hi_ni = paired_proportion_diff_ci(n11, n10, n01, n00, levels.ni)
        _, lo_w, hi_w = paired_proportion_diff_ci(n11, n10, n01, n00, levels.worse)
        return Change(est, "difference", (lo_w, hi_w), (lo_ni, hi_ni), float(bx.mean()),
                      float(by.mean()), f"exact McNemar (b={n10}, c={n01})", float(min(n10, n01)),
                      mcnemar_exact(n10, n01), "Newcombe paired score interval (method 10)", n,
                      {"paired": True, "n11": n11, "n10": n10, "n01": n01, "n00": n00,
                       "unmatched": list(sample.unmatched)})  # fmt: skip
    if bx.size == 0 or by.size == 0:
        return _nan_change("difference", "none", "none", 0)
    k1, n1, k2, n2 = int(by.sum()), int(by.size), int(bx.sum()), int(bx.size)
    est, lo_ni, hi_ni = _newcombe_independent(k1, n1, k2, n2, levels.ni)
    _, lo_w, hi_w = _newcombe_independent(k1, n1, k2, n2, levels.worse)
    res = sps.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]])
    return Change(est, "difference", (lo_w, hi_w), (lo_ni, hi_ni), k2 / n2, k1 / n1,
                  "Fisher exact", float(res.statistic), float(res.pvalue),
                  "Newcombe hybrid score interval (independent, method 10)", min(n1, n2),
                  {"paired": False, "candidate": [k1, n1], "baseline": [k2, n2]})  # fmt: skip


# ---------------------------------------------------------------- means (scores, lengths, cost)


def _mean_reps(v: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of the mean of ``v`` (normal limit beyond MEAN_BOOTSTRAP_MAX_N)."""
    n = v.size
    if n > MEAN_BOOTSTRAP_MAX_N:
        return float(v.mean()) + float(v.std()) / math.sqrt(n) * rng.standard_normal(resamples)
    out = np.empty(resamples)
    batch = max(1, 2_000_000 // max(n, 1))
    for s in range(0, resamples, batch):
        k = min(batch, resamples - s)
        out[s : s + k] = v[rng.integers(0, n, size=(k, n))].mean(axis=1)
    return out


def mean_change(sample: ScoreSample, relative: bool, levels: Levels, r: Resampling) -> Change:
    """Change of a mean score or length: the difference ``mean_candidate - mean_baseline``."""
    x, y = sample.values()
    if sample.paired:
        n = int(x.size)
        if n == 0:
            return _nan_change("difference", "none", "none", 0)
        est, lo_ni, hi_ni = paired_bootstrap_mean_diff(x, y, levels.ni, r.resamples, r.seed)
        p = wilcoxon_signed_rank(x, y)
        stat = None
        if not math.isnan(p):
            stat = float(sps.wilcoxon(y - x, zero_method="pratt").statistic)
        lo_w, hi_w = _stretch(est, lo_ni, hi_ni, levels.stretch)
        return Change(est, "difference", (lo_w, hi_w), (lo_ni, hi_ni), float(x.mean()),
                      float(y.mean()), "Wilcoxon signed-rank (Pratt)", stat,
                      None if math.isnan(p) else p, "bootstrap of paired differences, percentile",
                      n, {"paired": True, "unmatched": list(sample.unmatched)})  # fmt: skip
    n = int(min(x.size, y.size))
    if n == 0:
        return _nan_change("difference", "none", "none", 0)
    rng = np.random.default_rng(r.seed)
    reps = _mean_reps(y, r.resamples, rng) - _mean_reps(x, r.resamples, rng)
    est = float(y.mean() - x.mean())
    lo_ni, hi_ni = _percentile(reps, levels.ni)
    lo_w, hi_w = _stretch(est, lo_ni, hi_ni, levels.stretch)
    u = sps.mannwhitneyu(y, x, alternative="two-sided")
    return Change(est, "difference", (lo_w, hi_w), (lo_ni, hi_ni), float(x.mean()),
                  float(y.mean()), "Mann-Whitney U", float(u.statistic), float(u.pvalue),
                  "independent bootstrap of each arm's mean, percentile", n,
                  {"paired": False})  # fmt: skip


def cost_change(sample: CostSample, relative: bool, levels: Levels, r: Resampling) -> Change:
    """Change of the cost per task (mean USD per logical request): a ratio when ``relative``."""
    scale = "ratio" if relative else "difference"
    sides = []
    for arr, fixed in ((sample.baseline, sample.baseline_fixed),
                       (sample.candidate, sample.candidate_fixed)):  # fmt: skip
        if arr is not None and arr.size:
            sides.append(np.asarray(arr, np.float64))
        elif fixed is not None and math.isfinite(fixed):
            sides.append(float(fixed))
        else:
            return _nan_change(scale, "none", "none", 0)
    rng = np.random.default_rng(r.seed)

    def reps(side: np.ndarray | float) -> np.ndarray:
        if isinstance(side, float):
            return np.full(r.resamples, side)
        return _mean_reps(side, r.resamples, rng)

    def mean(side: np.ndarray | float) -> float:
        return side if isinstance(side, float) else float(side.mean())

    bx, by = sides
    mx, my = mean(bx), mean(by)
    rx, ry = reps(bx), reps(by)
    with np.errstate(divide="ignore", invalid="ignore"):
        est = my / mx if relative else my - mx
        rr = ry / rx if relative else ry - rx
    if not math.isfinite(est):
        return _nan_change(scale, "none", "none", sample.n, reason="baseline costs nothing")
    lo_ni, hi_ni = _percentile(rr, levels.ni)
    lo_w, hi_w = _stretch(est, lo_ni, hi_ni, levels.stretch)
    arrays = [s for s in sides if not isinstance(s, float)]
    if any(float(np.ptp(a)) <= 1e-12 * max(float(np.abs(a).max()), 1e-300) for a in arrays):
        test, stat, p = "none (a sampled arm's costs are all equal)", None, None
    elif len(arrays) == 2:
        t = sps.ttest_ind(by, bx, equal_var=False)
        test, stat, p = "Welch t-test", float(t.statistic), float(t.pvalue)
    elif len(arrays) == 1:
        other = by if isinstance(bx, np.ndarray) else bx
        t = sps.ttest_1samp(arrays[0], float(other))
        test, stat, p = (
            "one-sample t-test against the projected cost",
            float(t.statistic),
            float(t.pvalue),
        )
    else:
        test, stat, p = "none (both arms priced by projection)", None, None
    if stat is not None and not math.isfinite(stat):
        stat, p = None, None
    how = ("independent bootstrap of each arm's mean cost per request, percentile"
           + ("; fixed: " + ", ".join(n for n, s in (("baseline", bx), ("candidate", by))
                                      if isinstance(s, float)) if len(arrays) < 2 else ""))  # fmt: skip
    return Change(est, scale, (lo_w, hi_w), (lo_ni, hi_ni), mx, my, test, stat, p, how, sample.n,
                  {"paired": False})  # fmt: skip


#: Sample type -> statistic. Replace an entry (e.g. with a confidence-sequence version) to
#: change how that kind of metric is judged; everything downstream reads only the Change.
STATISTICS: dict[type, Callable[..., Change]] = {
    BinarySample: proportion_change,
    ScoreSample: mean_change,
    CostSample: cost_change,
}
#: The latency statistic (replaceable like the entries of STATISTICS).
LATENCY_STATISTIC: Callable[..., Change] = quantile_change


def change_of(sample: Sample, quantile: float | None, relative: bool, levels: Levels,
              r: Resampling) -> Change:  # fmt: skip
    """Dispatch: latency samples take their quantile, the others go by :data:`STATISTICS`."""
    if isinstance(sample, LatencySample):
        assert quantile is not None
        return LATENCY_STATISTIC(sample, quantile, relative, levels, r)
    return STATISTICS[type(sample)](sample, relative, levels, r)
