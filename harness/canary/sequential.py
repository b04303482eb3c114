"""Anytime-valid daily verdicts: the canary judge applied every experiment-clock day to the
cumulative data (days ``0..d``) without inflating its false alarms, beside what a naive
daily fixed-sample judge says on the same data.

**Why.** The judge (:mod:`harness.judge`) holds each claim's error rate at ``alpha`` for *one*
look at the data. Applied every day of a month to the data so far, a fixed-sample test gets
thirty chances to be wrong: a metric that sits exactly at its margin is called worse on some
day far more often than ``alpha`` (``tests/canary/test_sequential.py`` measures it).

**What changes.** Only the statistic. The judge's stages are reused as they are
(:func:`harness.judge.judge.plan`, its sample-size floors :func:`~harness.judge.judge.n_required`,
:func:`harness.judge.classify.classify`, :func:`harness.judge.decide.decide`), so a verdict
means the same thing: Pass needs the bad-side bound inside the margin, High/Low the
good-side bound beyond it, NO_GO a critical metric shown worse (or the score ceiling below
marginal). Each interval becomes a **confidence sequence** (CS): a sequence of intervals that
covers the true change at *every* sample size at once with probability ``>= 1 - a``
(Ville's inequality for a nonnegative supermartingale), so looking every day, or after every
request, costs nothing. The levels are the judge's: the bad-side bound at ``a = alpha``
(``ci_ni``: GO needs every critical metric non-inferior, an intersection-union test, so a
false GO on *any* day has probability ``<= alpha``) and the good-side bound at
``a = alpha / m`` (``ci``: Bonferroni over ``m`` metrics, so a false NO_GO on any day has
probability ``<= alpha``), with ``m`` fixed for the whole month: every metric with data in
the run, whether or not it has reached its floor on a given day.

**Confidence sequences** (one-sided, each bound at its own level ``a``; ``t_opt`` is the
sample size at which a bound is tightest, :data:`DEFAULT_T_OPT`, a design constant chosen
before the data):

- **Means** (:func:`mean_bounds`): paired differences ``d_i = y_i - x_i`` (failures per
  logical request; pass/fail or graded quality per *item*, see *Repeated items*), or each arm's mean
  (unpaired, each at ``a / 2``, union bound). The asymptotic CS of Waudby-Smith, Arnold, Wu,
  Ramdas & Ramdas, "Time-uniform central limit theory and asymptotic confidence
  sequences", Ann. Statist. (2024), with the one-sided (half-normal) normal-mixture
  boundary of Howard, Ramdas, McAuliffe & Sekhon (2021), "Time-uniform, nonparametric,
  nonasymptotic confidence sequences", Ann. Statist. 49(2)::

      lower_t = mean_t - sd_t * u_t * sqrt(t + 1/rho^2) / t,   upper_t = mean_t + (same)
      u_t solves  2 Phi(u) exp(u^2 / 2) = sqrt(1 + rho^2 t) / a
      rho^2 = (-2 ln a + ln(1 - 2 ln a)) / t_opt

  (the mixture ``int_{lambda>0} exp(lambda S - lambda^2 V / 2) dN(0, rho^2)`` equals
  ``2 / sqrt(1 + rho^2 V) exp(S^2 / 2(V + 1/rho^2)) Phi(S / sqrt(V + 1/rho^2))``; it reaches
  ``1 / a`` exactly on the boundary, with ``S`` the standardised sum and ``V = t``). ``sd_t``
  is the sample standard deviation; for pass/fail data it is regularised with one prior
  observation at the largest variance (``(sum (d - mean)^2 + (range/2)^2) / (t + 1)``), so
  that a day with no discordant pair yet does not give a zero-width interval.
- **Serial dependence** (:func:`inflation`): requests are not independent (queues that build
  and drain, error bursts). Each series (a paired difference, an arm's latencies at its
  quantile, an arm's costs) has its variance inflation ``kappa >= 1`` estimated by batch
  means in arrival order; a mean's ``sd_t`` is multiplied by ``sqrt(kappa)``, a quantile's
  count is treated as ``t / kappa`` independent observations. This makes the bounds
  asymptotic rather than exact; measured on AR(1) latencies (0.9 from one request to the
  next, 30 daily looks, each one-sided bound at 5%): p50 misses in 4%, p95 in 5-8%, p99
  in 8-12% (without it: 30-50%); independent data: ``kappa`` = 1 and the exact bound.
- **Quantiles** (:func:`quantile_bounds`): the CS of Howard & Ramdas (2022), "Sequential
  estimation of quantiles with applications to A/B-testing and best-arm identification",
  Bernoulli 28(3), built from the count ``K_t = #{i <= t: x_i < xi_q}``, a sum of i.i.d.
  Bernoulli(``<= q``) indicators: the one-sided beta-binomial mixture martingale::

      M_t(k) = [B(A + k, B + t - k) P(theta > q | A + k, B + t - k)]
               / [B(A, B) P(theta > q | A, B) q^k (1 - q)^(t - k)]

  (a Beta(A, B) prior truncated to ``theta > q``, ``A = q r``, ``B = (1 - q) r``,
  ``r = t_opt / c - 1`` with ``c = -2 ln a + ln(1 - 2 ln a)``: the normal mixture's tuning).
  ``M_t`` increases with ``k``; the first ``k`` where it reaches ``1 / a`` is the threshold
  ``k_t``, and ``P(exists t: K_t >= k_t) <= a``: the ``k_t``-th order statistic is an upper
  bound of ``xi_q`` at every ``t`` at once. The lower bound is the same construction on the
  count above the quantile (``1 - q``). Exact (no asymptotics) for independent latencies,
  whatever their distribution, ties and censored ``+inf`` values included. A change of a
  quantile (ratio for a relative margin,
  difference otherwise) takes each arm's bound at ``a / 2`` (union bound), paired or not:
  conservative against the judge's paired bootstrap, but valid without modelling the
  pairing.
- **Cost per task**: each sampled arm's mean (as above, at ``a / 2`` when both are sampled),
  a projected arm's fixed value as it is; ratio of the bounds.

**Repeated items.** A month-long canary cycles its eval set (600 items asked 9-12 times per
arm), and a temperature-0 model (the simulator too) answers every repeat of an item alike:
the repeats are perfectly dependent, and dependence at a lag of a whole pass is invisible
to :func:`inflation`. One paired difference per *request* counted each repeat as new
evidence (``n`` nine times too large; measured: 18% of A/A months at a zero margin had a
false NO_GO on some day, against ``alpha`` = 5%). Quality is therefore judged per **item**
(``sample_id``): the estimand is the mean over items of each item's paired difference (the
naive judge's, the same per-item means aligned on ``sample_id``), and the sequence's unit
is the item: on day ``d`` the observations are the per-item means ``(mean_c_j - mean_b_j)``
of the items seen on both arms by then (:meth:`ItemScores.sequential`, in the order the
items were first seen on both arms, which is what :func:`inflation` reads), ``t`` their
number, and the CS is over items with the sample variance of these per-item means (each
item's own variance included). The sequence advances when a new item is first seen on both
arms; a repeat moves only its item's mean, by nothing when answers are deterministic (then
this is exactly the CS of each item's first paired observation), so repeats add no
information they do not carry. When answers vary between repeats (temperature > 0) the
running means are not a martingale; their spread is part of the variance used, and A/A
months measured this way stay far below ``alpha``. A change mid-month still shows: it moves
the per-item means, as it moves the naive judge's. The price is honest: the quality bounds
stop narrowing once every item has been seen (about ``items / requests per day`` days).

Failures and cost stay per logical request, as the judge's own statistics are: their
estimand is the rate (the mean cost) over the traffic as it was asked, repeats included.
Given the items asked, one request's failure is a fresh draw of load and infrastructure
(timeouts, 5xx, shed requests: serial dependence, which :func:`inflation` reads in arrival
order), and an item that fails or costs the same on every repeat has a fixed conditional
mean, not noise, so the sample variance (which counts the spread between items) is
conservative for that estimand; with mirrored traffic both arms ask the same items, so what
an item does to both (a long prompt's cost, a timeout on a long answer) cancels in the
paired failure difference and moves both arms' cost bounds alike.

**Data** (:func:`month_of`): per logical request (cancelled ones left out, as the judge does)
its experiment-clock day (of its arrival, from ``t_virtual``), latency, failure and pair
code; per scored request its quality values (``scores/scores.parquet``), item, and the day
and arrival order of its request, joined on ``(arm, request_id)`` to the loaded rows
(:func:`_score_days`: the ids read with ``RunData.request_parts``, row-aligned with the
loaded data, day view included, and checked against it). Both verdicts read quality per
item; the naive one is the judge as it is (:func:`harness.judge.judge.judge` on
:func:`harness.judge.preprocess`-style inputs). Arrays are built once, in day order; each
look takes prefixes.

Every metric of the judge is judged sequentially: latency quantiles, failure rate, quality
(binary, graded, length) and cost per task (a projected self-hosted cost is the run's
projection on every day). The sequential verdict has no p-values (``p: None``) and no
smallest-detectable-change lines. The naive column runs the judge's bootstrap at
:data:`NAIVE_MAX_RESAMPLES` replicates at most; finished days can be reused (``reuse``).

**Calibration** (``tests/canary/test_sequential.py``, synthetic months of
:func:`synthetic_month` through these stages, 150-300 items a day per arm, 30 looks): an A/A
month at the margin (one critical pass/fail metric, margin 0) ends with a NO_GO on some day
in 2.0% of 300 months anytime-valid against 22.7% naive; with the default metrics and
margins, 0 of 100 A/A months have a NO_GO (76% GO by day 29); a 10-point accuracy drop from
day 15 is NO_GO by day 29 in 85% of 60 months (median day 27: the cumulative change on day
``d`` is ``10 (d - 14) / (d + 1)`` points, 2.9 on day 20, inside the 3-point margin), a
20-point drop by day 20 in 95% (median day 19). A cycled eval set (300 items, 100 requests a
day, every repeat answered alike, independent errors, zero margin): 0 of 400 A/A months
have a NO_GO on any day (one difference per request: 18%); with 600 items cycled, a
20-point drop from day 15 is NO_GO by day 29 in 77% of 30 months, a 10-point drop in none
(the change of the mean over 600 items, 5 points by day 29, is within what 600 items can
bound at ``alpha / m``). A month of 100,000 requests: 0.3 s for the 30
anytime-valid looks, about 15 s with the naive column.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import special as spc

from harness.analysis.paired import align_pairs
from harness.analysis.stats import sorted_quantiles
from harness.canary.clock import ExperimentClock
from harness.judge.judge import (
    MetricResult,
    Verdict,
    classify_ready,
    decide_results,
    fixed_statistic,
    floors,
    plan,
)
from harness.judge.samples import (
    ArmRef,
    BinarySample,
    CostSample,
    JudgeInputs,
    LatencySample,
    QualityScorer,
    Sample,
    ScoreSample,
)
from harness.judge.settings import LATENCY_MEASURES, JudgeConfig
from harness.judge.statistics import Change, Levels, Resampling

if TYPE_CHECKING:
    from harness.analysis.data import RunData

#: Sample size at which the confidence sequences are tightest (a design constant: a month
#: of a canary at a few hundred requests per day; the width grows only like
#: ``sqrt(log(t / t_opt))`` away from it).
DEFAULT_T_OPT = 3000
#: Bisection steps of :func:`mixture_u` (to float precision).
_BISECT_STEPS = 64

# ---------------------------------------------------------------- boundaries


def _tuning(a: float) -> float:
    """``c = -2 ln a + ln(1 - 2 ln a)``: Howard et al.'s choice making the mixture tightest
    at ``t_opt`` (``rho^2 = c / t_opt``)."""
    la = math.log(a)
    return -2.0 * la + math.log(1.0 - 2.0 * la)


def _log_phi(u: np.ndarray) -> np.ndarray:
    return spc.log_ndtr(u)


def mixture_u(t: np.ndarray | float, a: float, t_opt: float = DEFAULT_T_OPT) -> np.ndarray:
    """``u`` with ``2 Phi(u) exp(u^2 / 2) = sqrt(1 + rho^2 t) / a`` (see module docstring),
    by bisection on ``[0, sqrt(2 L)]`` where ``L`` is the log of the right side (the left
    side is increasing, ``1`` at ``u = 0`` and at least ``exp(u^2 / 2)`` beyond)."""
    if not 0 < a < 1:
        raise ValueError(f"mixture_u: level must be in (0, 1), got {a!r}")
    t = np.asarray(t, np.float64)
    rho2 = _tuning(a) / t_opt
    target = 0.5 * np.log1p(rho2 * t) - math.log(a)
    lo, hi = np.zeros_like(target), np.sqrt(2.0 * target)
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        above = math.log(2.0) + _log_phi(mid) + 0.5 * mid * mid >= target
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    return hi


def _u_scalar(t: float, a: float, t_opt: float) -> float:
    """:func:`mixture_u` for one ``t``: Newton's method from ``sqrt(2 L)`` (the left side's
    log is convex and increasing, so the iterates fall monotonically onto the root)."""
    target = 0.5 * math.log1p(_tuning(a) / t_opt * t) - math.log(a)
    u = math.sqrt(2.0 * target)
    for _ in range(50):
        cdf = 0.5 * math.erfc(-u / math.sqrt(2.0))
        g = math.log(2.0 * cdf) + 0.5 * u * u - target
        step = g / (math.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi) / cdf + u)
        u -= step
        if abs(step) < 1e-12:
            break
    return u


@functools.lru_cache(maxsize=65536)
def _radius_factor(t: int, a: float, t_opt: float) -> float:
    """``u_t sqrt(t + 1/rho^2) / t``: the CS half-width in units of the standard deviation."""
    rho2 = _tuning(a) / t_opt
    return _u_scalar(float(t), a, t_opt) * math.sqrt(t + 1.0 / rho2) / t


def mean_bounds(n: int, mean: float, sd: float, a: float, t_opt: float = DEFAULT_T_OPT
                ) -> tuple[float, float]:  # fmt: skip
    """One-sided bounds ``(lower, upper)`` of a mean after ``n`` observations, each a CS at
    level ``a`` (module docstring: asymptotic CS, half-normal mixture boundary)."""
    if n <= 0 or not math.isfinite(mean) or math.isnan(sd):
        return math.nan, math.nan
    if math.isinf(sd):  # one observation and no prior: no bound yet
        return -math.inf, math.inf
    r = sd * _radius_factor(int(n), float(a), float(t_opt))
    return mean - r, mean + r


def _moments(v: np.ndarray, prior_var: float = 0.0) -> tuple[int, float, float]:
    """``(n, mean, sd)``; ``prior_var`` adds one prior observation of that variance."""
    n = int(v.size)
    if n == 0:
        return 0, math.nan, math.nan
    mean = float(v.mean())
    ss = float(np.square(v - mean).sum())
    if prior_var > 0:
        return n, mean, math.sqrt((ss + prior_var) / (n + 1))
    return n, mean, math.sqrt(ss / (n - 1)) if n > 1 else math.inf


#: Fewest batches for a batch-means variance (below it the inflation is taken as 1).
MIN_BATCHES = 10


def inflation(v: np.ndarray, var_iid: float | None = None) -> float:
    """``kappa >= 1``: how much serial dependence inflates the variance of a sum of ``v``
    (in arrival order) over its i.i.d. value, by non-overlapping batch means with batches
    of ``ceil(sqrt(t))`` (Flegal & Jones 2010, "Batch means and spectral variance estimators
    in Markov chain Monte Carlo", Ann. Statist. 38(2)), their variance taken from successive
    differences (von Neumann's mean square successive difference), so that a change of the
    mean mid-month (what the canary is for) does not read as noise::

        kappa = max(1, b * sum_j (B_{j+1} - B_j)^2 / (2 (nb - 1)) / var_iid)

    ``var_iid``: the i.i.d. variance of one value (None: the sample variance). Never below
    1: the bounds are never narrower than the i.i.d. ones."""
    t = int(v.size)
    b = math.ceil(math.sqrt(t)) if t else 0
    nb = t // b if b else 0
    if nb < MIN_BATCHES:
        return 1.0
    used = v[: nb * b]
    var = float(used.var(ddof=1)) if var_iid is None else var_iid
    if not var > 0:
        return 1.0
    means = used.reshape(nb, b).mean(axis=1)
    lrv = b * float(np.square(np.diff(means)).sum()) / (2 * (nb - 1))
    return max(1.0, lrv / var) if math.isfinite(lrv) else 1.0


def _log_mplus(k: np.ndarray, t: np.ndarray, p: float, big_a: float, big_b: float
               ) -> np.ndarray:  # fmt: skip
    """log of the one-sided beta-binomial mixture ``M_t(k)`` (module docstring)."""
    a1, b1 = big_a + k, big_b + (t - k)
    with np.errstate(divide="ignore"):
        num = spc.betaln(a1, b1) + np.log(spc.betaincc(a1, b1, p))
        den = spc.betaln(big_a, big_b) + math.log(spc.betaincc(big_a, big_b, p))
    return num - den - k * math.log(p) - (t - k) * math.log1p(-p)


def binomial_thresholds(t: np.ndarray | int, p: float, a: float, t_opt: float = DEFAULT_T_OPT
                        ) -> np.ndarray:  # fmt: skip
    """Per ``t``: the smallest ``k`` with ``M_t(k) >= 1 / a`` (``t + 1`` when none), so that
    a sum ``K_t`` of independent Bernoulli(``<= p``) indicators reaches ``k_t`` at *some*
    ``t`` with probability at most ``a`` (Ville). Vectorised bisection over ``k``."""
    if not (0 < p < 1 and 0 < a < 1):
        raise ValueError(f"binomial_thresholds: p and a must be in (0, 1), got {p!r}, {a!r}")
    t = np.asarray(t, np.int64)
    r = max(t_opt / _tuning(a) - 1.0, 1.0)
    big_a, big_b = p * r, (1 - p) * r
    target = -math.log(a)
    lo = np.full(t.shape, -1, np.int64)  # M(lo) < target (k = -1: nothing yet)
    hi = t + 1  # "M(hi) >= target" (t + 1: never)
    while True:
        open_ = hi - lo > 1
        if not open_.any():
            break
        mid = (lo + hi) // 2
        safe = np.where(open_, mid, 0)
        tt = np.where(open_, t, 0)
        ok = _log_mplus(safe.astype(np.float64), tt.astype(np.float64), p, big_a, big_b) >= target
        ok &= open_
        hi = np.where(ok, mid, hi)
        lo = np.where(open_ & ~ok, mid, lo)
    return hi


@functools.lru_cache(maxsize=65536)
def _threshold(t: int, p: float, a: float, t_opt: float) -> int:
    """:func:`binomial_thresholds` for one ``t`` (scalar arithmetic, from the normal
    approximation's guess: a few evaluations instead of ``log2 t``)."""
    r = max(t_opt / _tuning(a) - 1.0, 1.0)
    big_a, big_b = p * r, (1 - p) * r
    target = -math.log(a)
    log_p, log_q = math.log(p), math.log1p(-p)
    den = math.lgamma(big_a) + math.lgamma(big_b) - math.lgamma(big_a + big_b)
    den += math.log(float(spc.betaincc(big_a, big_b, p)))

    def crosses(k: int) -> bool:
        a1, b1 = big_a + k, big_b + (t - k)
        tail = float(spc.betaincc(a1, b1, p))
        if tail <= 0.0:
            return False
        num = math.lgamma(a1) + math.lgamma(b1) - math.lgamma(a1 + b1) + math.log(tail)
        return num - den - k * log_p - (t - k) * log_q >= target

    if t <= 0 or not crosses(t):
        return t + 1
    guess = t * p + math.sqrt(p * (1 - p)) * _radius_factor(max(t, 1), a, t_opt) * t
    k0 = min(max(int(math.ceil(guess)), 0), t)
    if crosses(k0):  # walk down until it does not cross
        hi, step = k0, 1
        lo = hi - step
        while lo >= 0 and crosses(lo):
            hi, step = lo, step * 2
            lo = hi - step
        lo = max(lo, -1)
    else:  # walk up until it crosses (it does at t)
        lo, step = k0, 1
        hi = min(lo + step, t)
        while not crosses(hi):
            lo, step = hi, step * 2
            hi = min(lo + step, t)
    while hi - lo > 1:  # crosses(hi), not crosses(lo) (or lo = -1)
        mid = (lo + hi) // 2
        if crosses(mid):
            hi = mid
        else:
            lo = mid
    return hi


def quantile_bounds(xs: np.ndarray, q: float, a: float, t_opt: float = DEFAULT_T_OPT,
                    kappa: float = 1.0) -> tuple[float, float]:  # fmt: skip
    """One-sided bounds ``(lower, upper)`` of the ``q`` quantile from the sorted sample
    ``xs`` (``+inf`` = censored allowed), each a CS at level ``a`` (Howard & Ramdas 2022;
    module docstring): ``upper = x_(k)`` with ``k`` the threshold of the count below the
    quantile, ``lower = x_(t - k' + 1)`` with ``k'`` that of the count above it; ``+-inf``
    while too few observations bound it.

    ``kappa`` (:func:`inflation` of the indicators): serially dependent observations count
    as ``t / kappa`` independent ones, the threshold's excess over ``t q`` scaled back by
    ``kappa`` (the sd of the count grows by ``sqrt(kappa)``); 1 gives the exact bound."""
    t = int(xs.size)
    if t == 0:
        return math.nan, math.nan

    def count_threshold(p: float) -> int:
        """The count (of values below, or above, the quantile) that is never reached."""
        if kappa <= 1.0:
            return _threshold(t, p, float(a), float(t_opt))
        te = max(int(t / kappa), 1)
        ke = _threshold(te, p, float(a), float(t_opt))
        return t + 1 if ke > te else math.ceil(t * p + kappa * (ke - te * p) - 1e-9)

    k_up, k_dn = count_threshold(float(q)), count_threshold(float(1 - q))
    upper = float(xs[max(k_up, 1) - 1]) if k_up <= t else math.inf
    j = t - k_dn
    lower = float(xs[j]) if j >= 0 else -math.inf
    return lower, upper


# ---------------------------------------------------------------- statistics


def _ratio(num: float, den: float) -> float:
    """``num / den`` for non-negative bounds: ``0 / x = 0``, ``x / 0 = inf``, ``inf / inf``
    undefined (NaN)."""
    if math.isnan(num) or math.isnan(den) or (math.isinf(num) and math.isinf(den)):
        return math.nan
    if num == 0:
        return 0.0
    if den == 0:
        return math.inf
    return num / den


def _diff(a: float, b: float) -> float:
    if math.isinf(a) and math.isinf(b) and (a > 0) == (b > 0):
        return math.nan
    return a - b


def _change(est: float, scale: str, bounds: dict[str, tuple[float, float]], reference: float,
            cand: float, interval: str, n: int, **detail: Any) -> Change:  # fmt: skip
    lo_w, _ = bounds["worse_lo"]
    _, hi_w = bounds["worse_hi"]
    lo_ni, _ = bounds["ni_lo"]
    _, hi_ni = bounds["ni_hi"]
    return Change(est, scale, (lo_w, hi_w), (lo_ni, hi_ni), reference, cand,
                  "none (anytime-valid confidence sequence)", None, None, interval, n,
                  {"sequential": True, **detail})  # fmt: skip


def _nan(scale: str, n: int) -> Change:
    nan = math.nan
    return Change(nan, scale, (nan, nan), (nan, nan), nan, nan, "none", None, None, "none", n,
                  {"sequential": True})  # fmt: skip


def _level_pairs(levels: Levels) -> tuple[float, float]:
    """``(a_worse, a_ni)``: the one-sided level of the good-side bound (``alpha / m``) and
    of the bad-side bound (``alpha``)."""
    return levels.alpha / max(levels.m, 1), levels.alpha


def _two_sample(bounds_of: Callable[[np.ndarray, float], tuple[float, float]],
                x: np.ndarray, y: np.ndarray, levels: Levels, combine: str
                ) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Bounds of ``y vs x`` (``combine``: ``ratio`` or ``difference``) from each arm's
    bounds at half the level (union bound)."""
    aw, ani = _level_pairs(levels)
    out = {}
    for key, a in (("worse", aw), ("ni", ani)):
        lx, ux = bounds_of(x, a / 2)
        ly, uy = bounds_of(y, a / 2)
        if combine == "ratio":
            lo, hi = _ratio(max(ly, 0.0), ux), _ratio(uy, max(lx, 0.0))
        else:
            lo, hi = _diff(ly, ux), _diff(uy, lx)
        out[f"{key}_lo"] = (lo, math.nan)
        out[f"{key}_hi"] = (math.nan, hi)
    return out


def quantile_change(sample: LatencySample, q: float, relative: bool, levels: Levels,
                    r: Resampling | None = None, *, t_opt: float = DEFAULT_T_OPT
                    ) -> Change:  # fmt: skip
    """Anytime-valid change of the ``q`` quantile of a latency: the ratio of the arms'
    quantiles (``relative``) or their difference, bounded by each arm's quantile CS at
    half the level. Same inputs and scale as :func:`harness.judge.statistics.quantile_change`."""
    x, y = sample.values()
    scale = "ratio" if relative else "difference"
    n = int(min(x.size, y.size))
    if n == 0:
        return _nan(scale, 0)
    key = ("sequential_sorted",)
    if key not in sample.cache:
        sample.cache[key] = (np.sort(x), np.sort(y))
    xs, ys = sample.cache[key]
    qx = float(sorted_quantiles(xs, [q])[0])
    qy = float(sorted_quantiles(ys, [q])[0])
    est = _ratio(qy, qx) if relative else _diff(qy, qx)
    # serial dependence of each arm's indicators at its own quantile (arrival order)
    kappa = {id(xs): inflation((x <= qx).astype(np.float64), q * (1 - q)),
             id(ys): inflation((y <= qy).astype(np.float64), q * (1 - q))}  # fmt: skip

    def bounds_of(v: np.ndarray, a: float) -> tuple[float, float]:
        return quantile_bounds(v, q, a, t_opt, kappa[id(v)])

    b = _two_sample(bounds_of, xs, ys, levels, scale)
    how = ("quantile confidence sequence of each arm (beta-binomial mixture, Howard & Ramdas "
           "2022), union bound" + (": ratio of quantiles" if relative else ""))  # fmt: skip
    return _change(est, scale, b, qx, qy, how, n, paired=sample.paired,
                   unmatched=list(sample.unmatched), t_opt=t_opt,
                   inflation=[kappa[id(xs)], kappa[id(ys)]])  # fmt: skip


def _mean_change(x: np.ndarray, y: np.ndarray, paired: bool, levels: Levels, prior_var: float,
                 t_opt: float, what: str, unmatched: Sequence[int]) -> Change:  # fmt: skip
    aw, ani = _level_pairs(levels)
    if paired:
        d = y - x
        n, mean, sd = _moments(d, prior_var)
        if n == 0:
            return _nan("difference", 0)
        k = inflation(d)
        sd *= math.sqrt(k)
        b = {}
        for key, a in (("worse", aw), ("ni", ani)):
            lo, hi = mean_bounds(n, mean, sd, a, t_opt)
            b[f"{key}_lo"], b[f"{key}_hi"] = (lo, math.nan), (math.nan, hi)
        how = f"asymptotic confidence sequence of paired differences ({what})"
        return _change(mean, "difference", b, float(x.mean()), float(y.mean()), how, n,
                       paired=True, unmatched=list(unmatched), t_opt=t_opt,
                       inflation=[k])  # fmt: skip
    n = int(min(x.size, y.size))
    if n == 0:
        return _nan("difference", 0)
    arm_var = prior_var / 4  # an arm's values span half the range of a difference

    def bounds_of(v: np.ndarray, a: float) -> tuple[float, float]:
        k, mu, sd = _moments(v, arm_var)
        return mean_bounds(k, mu, sd * math.sqrt(inflation(v)), a, t_opt)

    b = _two_sample(bounds_of, x, y, levels, "difference")
    how = f"asymptotic confidence sequence of each arm's mean ({what}), union bound"
    return _change(float(y.mean() - x.mean()), "difference", b, float(x.mean()),
                   float(y.mean()), how, n, paired=False, t_opt=t_opt)  # fmt: skip


def proportion_change(sample: BinarySample, relative: bool, levels: Levels,
                      r: Resampling | None = None, *, t_opt: float = DEFAULT_T_OPT
                      ) -> Change:  # fmt: skip
    """Anytime-valid change of a rate (``p_candidate - p_baseline``): the CS of the mean of
    paired differences of the 0/1 indicators (unpaired: of each arm's rate)."""
    x, y = sample.values()
    bx, by = (x > 0.5).astype(np.float64), (y > 0.5).astype(np.float64)
    return _mean_change(bx, by, sample.paired, levels, 1.0, t_opt, "0/1 outcomes",
                        sample.unmatched)  # fmt: skip


def mean_change(
    sample: ScoreSample,
    relative: bool,
    levels: Levels,
    r: Resampling | None = None,
    *,
    t_opt: float = DEFAULT_T_OPT,
) -> Change:
    """Anytime-valid change of a mean score or length (``mean_candidate - mean_baseline``)."""
    x, y = sample.values()
    return _mean_change(x, y, sample.paired, levels, 0.0, t_opt, "scores", sample.unmatched)


@dataclass(frozen=True)
class ItemMeans(ScoreSample):
    """A quality scorer's per-item means of each arm, paired on the item, in the order the
    items were first seen on both arms (:meth:`ItemScores.sequential`). ``prior_var``: the
    variance of the regularising prior observation (1 for pass/fail values: a difference
    spans ``[-1, 1]``; 0 for graded scores and lengths)."""

    prior_var: float = 0.0


def item_mean_change(
    sample: ItemMeans,
    relative: bool,
    levels: Levels,
    r: Resampling | None = None,
    *,
    t_opt: float = DEFAULT_T_OPT,
) -> Change:
    """Anytime-valid change of mean quality over items: the CS of the mean of the per-item
    paired differences, one per item, whatever its number of repeats (module docstring,
    *Repeated items*). For 0/1 values seen once per item it is :func:`proportion_change`."""
    x, y = sample.values()  # paired on the item
    return _mean_change(x, y, True, levels, sample.prior_var, t_opt,
                        "per-item means", sample.unmatched)  # fmt: skip


def cost_change(
    sample: CostSample,
    relative: bool,
    levels: Levels,
    r: Resampling | None = None,
    *,
    t_opt: float = DEFAULT_T_OPT,
) -> Change:
    """Anytime-valid change of the mean cost per task (ratio when ``relative``): each sampled
    arm's mean CS (at half the level when both are sampled), a projected arm fixed."""
    scale = "ratio" if relative else "difference"
    sides: list[np.ndarray | float] = []
    for arr, fixed in ((sample.baseline, sample.baseline_fixed),
                       (sample.candidate, sample.candidate_fixed)):  # fmt: skip
        if arr is not None and arr.size:
            sides.append(np.asarray(arr, np.float64))
        elif fixed is not None and math.isfinite(fixed):
            sides.append(float(fixed))
        else:
            return _nan(scale, 0)
    sampled = sum(1 for s in sides if not isinstance(s, float))
    split = 2 if sampled == 2 else 1

    def bounds_of(side: np.ndarray | float, a: float) -> tuple[float, float]:
        if isinstance(side, float):
            return side, side
        k, mu, sd = _moments(side)
        return mean_bounds(k, mu, sd * math.sqrt(inflation(side)), a / split, t_opt)

    def mean(side: np.ndarray | float) -> float:
        return side if isinstance(side, float) else float(side.mean())

    bx, by = sides
    mx, my = mean(bx), mean(by)
    est = _ratio(my, mx) if relative else my - mx
    if relative and mx == 0:
        return _nan(scale, sample.n)
    aw, ani = _level_pairs(levels)
    b = {}
    for key, a in (("worse", aw), ("ni", ani)):
        lx, ux = bounds_of(bx, a)
        ly, uy = bounds_of(by, a)
        if relative:
            lo, hi = _ratio(max(ly, 0.0), ux), _ratio(uy, max(lx, 0.0))
        else:
            lo, hi = ly - ux, uy - lx
        b[f"{key}_lo"], b[f"{key}_hi"] = (lo, math.nan), (math.nan, hi)
    how = "asymptotic confidence sequence of each sampled arm's mean cost per request"
    return _change(est, scale, b, mx, my, how, sample.n, paired=False, t_opt=t_opt)


#: Sample type -> anytime-valid statistic (the signature of
#: :data:`harness.judge.statistics.STATISTICS`, plus ``t_opt``).
SEQUENTIAL_STATISTICS: dict[type, Callable[..., Change]] = {
    BinarySample: proportion_change,
    ScoreSample: mean_change,
    ItemMeans: item_mean_change,
    CostSample: cost_change,
}
SEQUENTIAL_LATENCY_STATISTIC: Callable[..., Change] = quantile_change


def sequential_change_of(sample: Sample, quantile: float | None, relative: bool,
                         levels: Levels, t_opt: float = DEFAULT_T_OPT) -> Change:  # fmt: skip
    """Dispatch like :func:`harness.judge.statistics.change_of`, to the sequential versions."""
    if isinstance(sample, LatencySample):
        assert quantile is not None
        return SEQUENTIAL_LATENCY_STATISTIC(sample, quantile, relative, levels, t_opt=t_opt)
    return SEQUENTIAL_STATISTICS[type(sample)](sample, relative, levels, t_opt=t_opt)


# ---------------------------------------------------------------- one look


def metrics_with_data(cfg: JudgeConfig, inputs: JudgeInputs) -> int:
    """``m``: the metrics with a sample and at least one observation in ``inputs`` (the
    whole month: fixed across the month's looks, see the module docstring)."""
    planned, _ = plan(cfg, inputs)
    m = 0
    for p in planned:
        if p.error or p.sample is None:
            continue
        n = p.sample.n
        if isinstance(p.sample, CostSample) and p.sample.baseline is None \
                and p.sample.candidate is None:  # fmt: skip
            n = 1
        m += n > 0
    return max(m, 1)


def judge_sequential(inputs: JudgeInputs, cfg: JudgeConfig, *, m: int | None = None,
                     t_opt: float = DEFAULT_T_OPT) -> Verdict:  # fmt: skip
    """The judge's stages on ``inputs`` with the anytime-valid statistics, at levels for
    ``m`` metrics (None: :func:`metrics_with_data` of ``inputs``)."""
    return _verdict(inputs, cfg, sequential=True, m=m, t_opt=t_opt)


def judge_fixed(inputs: JudgeInputs, cfg: JudgeConfig) -> Verdict:
    """The fixed-sample judge's verdict: the stages, statistics and levels of
    :func:`harness.judge.judge.judge` (``m`` = the metrics that reached their floors), without
    its Holm p-values and smallest-detectable-change lines, which do not enter the decision
    (statsmodels' Holm runs ``gc.collect()`` and the lines a root search: most of a look's
    time). Same decision, score, reasons and classifications."""
    return _verdict(inputs, cfg, sequential=False)


def _verdict(inputs: JudgeInputs, cfg: JudgeConfig, *, sequential: bool, m: int | None = None,
             t_opt: float = DEFAULT_T_OPT) -> Verdict:  # fmt: skip
    planned, notes = plan(cfg, inputs)
    results, ready = floors(cfg, planned)
    if sequential:
        levels = Levels(cfg.alpha, metrics_with_data(cfg, inputs) if m is None else m)

        def statistic(p: Any) -> Change:
            relative = p.spec.margin_type == "relative"
            return sequential_change_of(p.sample, p.spec.quantile, relative, levels, t_opt)
    else:
        levels = Levels(cfg.alpha, len(ready))
        statistic = fixed_statistic(levels, Resampling(cfg.resamples, cfg.seed, cfg.block_len))
    classify_ready(ready, statistic)
    d = decide_results(results, cfg)
    return Verdict(d.decision, d.score, d.score_ceiling, d.reasons, results, inputs.baseline,
                   inputs.candidate, cfg, levels, [], [*inputs.notes, *notes])  # fmt: skip


# ---------------------------------------------------------------- a month of data


@dataclass(frozen=True)
class DaySeries:
    """Both arms' observations of one quantity (or several, ``values`` by key) in day order.

    Paired: entry ``i`` of both arms is one pair, ``day`` its day (both arms' arrays share
    it), ``unmatched_days`` the days of each arm's observations without a partner. Unpaired:
    each arm its own ``days``."""

    paired: bool
    baseline: dict[str, np.ndarray]
    candidate: dict[str, np.ndarray]
    day_b: np.ndarray
    day_c: np.ndarray
    unmatched_days: tuple[np.ndarray, np.ndarray] = (np.empty(0, np.int64),
                                                     np.empty(0, np.int64))  # fmt: skip

    @staticmethod
    def build(paired: bool, base: dict[str, np.ndarray], cand: dict[str, np.ndarray],
              day_b: np.ndarray, day_c: np.ndarray,
              unmatched: tuple[np.ndarray, np.ndarray] | None = None) -> DaySeries:  # fmt: skip
        """Sort each side by day (stable: arrival order within a day is kept)."""
        ob = np.argsort(day_b, kind="stable")
        oc = ob if paired else np.argsort(day_c, kind="stable")
        um = unmatched or (np.empty(0, np.int64), np.empty(0, np.int64))
        return DaySeries(paired, {k: v[ob] for k, v in base.items()},
                         {k: v[oc] for k, v in cand.items()}, np.asarray(day_b)[ob],
                         np.asarray(day_c)[oc], (np.sort(um[0]), np.sort(um[1])))  # fmt: skip

    def through(self, day: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                         tuple[int, int]]:  # fmt: skip
        """Each arm's values of days ``<= day`` and the unmatched counts."""
        kb = int(np.searchsorted(self.day_b, day, side="right"))
        kc = kb if self.paired else int(np.searchsorted(self.day_c, day, side="right"))
        ua = int(np.searchsorted(self.unmatched_days[0], day, side="right"))
        ub = int(np.searchsorted(self.unmatched_days[1], day, side="right"))
        return ({k: v[:kb] for k, v in self.baseline.items()},
                {k: v[:kc] for k, v in self.candidate.items()}, (ua, ub))  # fmt: skip


@dataclass(frozen=True)
class ItemScores:
    """One scorer's values per scored request of each arm, with the item (``sample_id``
    code), day and arrival order (``seq_*``: any increasing key, comparable across the
    arms; None: the arrays' order): the per-item means of the data so far, which both
    verdicts read."""

    kind: str
    items_b: np.ndarray
    values_b: np.ndarray
    day_b: np.ndarray
    items_c: np.ndarray
    values_c: np.ndarray
    day_c: np.ndarray
    n_items: int
    seq_b: np.ndarray | None = None
    seq_c: np.ndarray | None = None

    def _means(self, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """``(both, mean_b, mean_c, unmatched)`` per item code on days ``<= day``."""

        def means(items: np.ndarray, vals: np.ndarray, days: np.ndarray):
            keep = days <= day
            cnt = np.bincount(items[keep], minlength=self.n_items)
            tot = np.bincount(items[keep], weights=vals[keep], minlength=self.n_items)
            return cnt > 0, tot / np.maximum(cnt, 1)

        hb, mb = means(self.items_b, self.values_b, self.day_b)
        hc, mc = means(self.items_c, self.values_c, self.day_c)
        return hb & hc, mb, mc, (int((hb & ~hc).sum()), int((hc & ~hb).sum()))

    def through(self, day: int) -> BinarySample | ScoreSample:
        """Per-item means of days ``<= day`` aligned on the item (as
        :func:`harness.judge.preprocess.quality_samples` does for the whole run): the naive
        judge's sample."""
        both, mb, mc, unmatched = self._means(day)
        x, y = mb[both], mc[both]
        binary = self.kind == "binary" and bool(np.isin(x, (0.0, 1.0)).all()
                                                and np.isin(y, (0.0, 1.0)).all())  # fmt: skip
        cls = BinarySample if binary else ScoreSample
        return cls(x, y, paired=True, unmatched=unmatched)

    @functools.cached_property
    def arrival_order(self) -> np.ndarray:
        """Item codes by the arrival of their first observation on *both* arms (day, then
        ``seq``): on any day the items seen on both arms are a prefix of it."""
        none = np.iinfo(np.int64).max

        def first(items: np.ndarray, days: np.ndarray, seq: np.ndarray | None) -> np.ndarray:
            s = np.arange(items.size, dtype=np.int64) if seq is None else seq.astype(np.int64)
            key = (days.astype(np.int64) << 40) | (s & ((1 << 40) - 1))
            out = np.full(self.n_items, none, np.int64)
            np.minimum.at(out, items, key)
            return out

        key = np.maximum(first(self.items_b, self.day_b, self.seq_b),
                         first(self.items_c, self.day_c, self.seq_c))  # fmt: skip
        return np.argsort(key, kind="stable")

    def sequential(self, day: int, prior_var: float) -> ItemMeans:
        """The anytime-valid verdict's sample: the same per-item means, in
        :attr:`arrival_order` (the order :func:`inflation` reads)."""
        both, mb, mc, unmatched = self._means(day)
        order = self.arrival_order
        order = order[both[order]]
        return ItemMeans(mb[order], mc[order], paired=True, unmatched=unmatched,
                         prior_var=prior_var)  # fmt: skip


@dataclass
class QualitySeries:
    """One scorer over the month, per item (``sample_id``): both verdicts judge the change
    of the mean over items of each item's paired difference (module docstring, *Repeated
    items*)."""

    kind: str
    direction: str
    per_item: ItemScores

    @functools.cached_property
    def binary(self) -> bool:
        """A pass/fail scorer whose every value is 0 or 1 (a rate, not a mean score)."""
        sides = (self.per_item.values_b, self.per_item.values_c)
        return self.kind == "binary" and all(bool(np.isin(v, (0.0, 1.0)).all()) for v in sides)

    def sequential_sample(self, day: int) -> ItemMeans:
        """Per-item means of days ``<= day``, paired on the item, one observation per item
        (pass/fail: regularised like a rate, see :func:`item_mean_change`)."""
        return self.per_item.sequential(day, 1.0 if self.binary else 0.0)


@dataclass
class Month:
    """A run's judged data, built once, in day order; :meth:`inputs` gives a look's inputs."""

    baseline: ArmRef
    candidate: ArmRef
    days: list[int]
    requests: DaySeries | None  # keys: LATENCY_MEASURES and "failed"
    quality: dict[str, QualitySeries] = field(default_factory=dict)
    cost: DaySeries | None = None  # key "usd"; an arm priced by projection has none
    cost_fixed: tuple[float | None, float | None] = (None, None)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def counts(self, day: int) -> tuple[int, int]:
        """Logical requests of each arm on days ``<= day`` (paired or not)."""
        if self.requests is None:
            return 0, 0
        b, c, (ua, ub) = self.requests.through(day)
        nb, nc = b["failed"].size, c["failed"].size
        return (nb + ua, nc + ub) if self.requests.paired else (nb, nc)

    def inputs(self, day: int, *, per_item: bool = False) -> JudgeInputs:
        """The judge's inputs on days ``<= day``: quality per item, as :class:`ItemMeans`
        in arrival order (sequential) or as the fixed-sample judge reads it (``per_item``)."""
        out = JudgeInputs(self.baseline, self.candidate, errors=dict(self.errors),
                          notes=list(self.notes))  # fmt: skip
        if self.requests is not None:
            b, c, um = self.requests.through(day)
            p = self.requests.paired
            out.latency = {m: LatencySample(b[m], c[m], paired=p, unmatched=um, measure=m)
                           for m in LATENCY_MEASURES}  # fmt: skip
            out.failures = BinarySample(b["failed"], c["failed"], paired=p, unmatched=um)
        for name, qs in self.quality.items():
            smp: BinarySample | ScoreSample = (qs.per_item.through(day) if per_item
                                               else qs.sequential_sample(day))  # fmt: skip
            out.quality[name] = QualityScorer(qs.kind, qs.direction, smp)
        fb, fc = self.cost_fixed
        if self.cost is not None or fb is not None or fc is not None:
            xb = xc = None
            if self.cost is not None:
                b, c, _ = self.cost.through(day)
                xb, xc = b.get("usd"), c.get("usd")
            out.cost = CostSample(xb if fb is None else None, xc if fc is None else None, fb, fc)
        return out


# ---------------------------------------------------------------- verdicts over days


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _offenders(v: Verdict) -> list[str]:
    return [r.name for r in v.metrics if r.classification in ("High", "Low")]


def _metric_brief(r: MetricResult) -> dict[str, Any]:
    c = r.change
    return {
        "classification": r.classification,
        "reason": r.reason,
        "n": r.n,
        "estimate": None if c is None else _finite(c.estimate),
        "ci": None if c is None else [_finite(v) for v in c.ci],
        "ci_ni": None if c is None else [_finite(v) for v in c.ci_ni],
    }


#: Bootstrap replicates of the naive daily verdicts at most (the run's ``judge.resamples``
#: when lower): the fixed judge's paired bootstrap costs about 2 s per look at 2,000 on a
#: month of 50,000 pairs, and the naive column is a comparison, re-run every day.
NAIVE_MAX_RESAMPLES = 500


#: Version of the statistics in :func:`_settings_key`: a report's entries computed by an
#: earlier version are judged again, not reused (2: quality per item, not per request).
METHOD_VERSION = 2


def _settings_key(*parts: Any) -> str:
    import hashlib

    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def month_verdicts(month: Month, cfg: JudgeConfig, days: Iterable[int] | None = None, *,
                   alpha: float | None = None, naive: bool = True,
                   naive_resamples: int | None = NAIVE_MAX_RESAMPLES,
                   t_opt: float = DEFAULT_T_OPT,
                   reuse: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One entry per day (see :func:`daily_verdicts`): the anytime-valid verdict on days
    ``<= d`` and, with ``naive``, the fixed-sample judge on the same data (its bootstrap at
    ``min(cfg.resamples, naive_resamples)`` replicates; None: ``cfg.resamples``).

    ``reuse``: entries of an earlier call; one whose day, counts per arm and settings are the
    ones of this look is returned as it is (a finished day's verdict does not change), so a
    report refreshed every day computes only the new days."""
    seq_cfg = cfg if alpha is None else replace(cfg, alpha=float(alpha))
    naive_cfg = cfg
    if naive_resamples is not None and cfg.resamples > naive_resamples:
        naive_cfg = replace(cfg, resamples=int(naive_resamples))
    look_days = sorted({int(d) for d in (month.days if days is None else days)})
    last = max(month.days) if month.days else (look_days[-1] if look_days else 0)
    m = metrics_with_data(seq_cfg, month.inputs(last))
    key = _settings_key(METHOD_VERSION, seq_cfg, naive_cfg if naive else None, m, t_opt)
    old = {int(e["day"]): e for e in reuse or () if e.get("settings_key") == key}
    arm_b, arm_c = month.baseline.arm, month.candidate.arm
    out: list[dict[str, Any]] = []
    for d in look_days:
        nb, nc = month.counts(d)
        counts = {arm_b: nb, arm_c: nc} if arm_b != arm_c else {arm_b: nb}
        if d in old and old[d].get("n") == counts:
            out.append(old[d])
            continue
        v = judge_sequential(month.inputs(d), seq_cfg, m=m, t_opt=t_opt)
        entry: dict[str, Any] = {
            "day": d,
            "decision": v.decision,
            "score": _finite(v.score),
            "score_ceiling": _finite(v.score_ceiling),
            "reasons": list(v.reasons),
            "offenders": _offenders(v),
            "naive_decision": None,
            "naive_score": None,
            "naive_reasons": [],
            "naive_offenders": [],
            "n": counts,
            "alpha": seq_cfg.alpha,
            "metrics_judged": m,
            "metrics": {r.name: _metric_brief(r) for r in v.metrics},
            "settings_key": key,
        }
        if naive:
            nv = judge_fixed(month.inputs(d, per_item=True), naive_cfg)
            entry.update(naive_decision=nv.decision, naive_score=_finite(nv.score),
                         naive_reasons=list(nv.reasons), naive_offenders=_offenders(nv))  # fmt: skip
        out.append(entry)
    return out


def first_day(verdicts: Sequence[dict[str, Any]], decision: str = "NO_GO",
              key: str = "decision") -> int | None:  # fmt: skip
    """The first day whose ``key`` (``decision`` or ``naive_decision``) is ``decision``."""
    for v in verdicts:
        if v.get(key) == decision:
            return int(v["day"])
    return None


# ---------------------------------------------------------------- a run -> Month (I/O edge)


def _row_days(data: RunData, clock: ExperimentClock) -> np.ndarray:
    """Experiment-clock day of each row of ``data``: ``data.day`` when it was computed with
    this clock, else from ``t_virtual`` (or ``t_scheduled`` mapped onto the clock)."""
    day = getattr(data, "day", None)
    if day is not None and getattr(data, "clock", None) == clock:
        return np.asarray(day, np.int64)
    c = data.cols
    t0 = data.t0_ns or 0
    n = data.n_rows
    if "t_virtual" in c:
        ns = t0 + np.nan_to_num(c["t_virtual"], nan=-1e18) * 1e9
        bad = np.isnan(c["t_virtual"])
    else:
        wall = t0 + np.nan_to_num(c["t_scheduled"], nan=-1e18) * 1e9
        ns = clock.origin_ns + (wall - clock.origin_ns) * clock.time_scale
        bad = np.isnan(c["t_scheduled"])
    days = np.floor((ns - clock.origin_ns) / (clock.day_s * 1e9)).astype(np.int64)
    return np.where(bad, -1, days) if n else np.empty(0, np.int64)


def _arm_requests(data: RunData, arm: str, row_day: np.ndarray) -> dict[str, np.ndarray]:
    """Per logical request of ``arm`` (cancelled ones left out, as the judge does): pair
    code, day of its first attempt, latencies and failure."""
    from harness.analysis.requests import CANCELLED, FAILED, logical_requests

    lr = logical_requests(data)
    keep = (lr.arm == data.arms.index(arm)) & (lr.outcome != CANCELLED)
    first = lr.first[keep]
    pair = getattr(data, "pair", None)
    out = {"pair": pair[first] if pair is not None else np.full(first.size, -1),
           "day": row_day[first], "index": np.flatnonzero(keep),
           "failed": (lr.outcome[keep] == FAILED).astype(np.float64)}  # fmt: skip
    for measure, fld in (("request_ttft_s", "ttft_s"), ("tpot_s", "tpot_s"),
                         ("request_e2e_s", "e2e_s")):  # fmt: skip
        out[measure] = getattr(lr, fld)[keep].astype(np.float64)
    return out


_REQ_KEYS = (*LATENCY_MEASURES, "failed")


def _request_series(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> DaySeries:
    """Paired on pair codes when every request has one (mirrored), else unpaired."""
    if a["pair"].size and b["pair"].size and (a["pair"] >= 0).all() and (b["pair"] >= 0).all():
        ia, ib, _, _ = align_pairs(a["pair"], b["pair"])
        ma = np.ones(a["pair"].size, bool)
        ma[ia] = False
        mb = np.ones(b["pair"].size, bool)
        mb[ib] = False
        day = np.maximum(a["day"][ia], b["day"][ib])
        return DaySeries.build(True, {k: a[k][ia] for k in _REQ_KEYS},
                               {k: b[k][ib] for k in _REQ_KEYS}, day, day,
                               (a["day"][ma], b["day"][mb]))  # fmt: skip
    return DaySeries.build(False, {k: a[k] for k in _REQ_KEYS}, {k: b[k] for k in _REQ_KEYS},
                           a["day"], b["day"])  # fmt: skip


class PartsChanged(ValueError):
    """The request part files no longer hold the rows of the loaded run."""


def _score_days(data: RunData, row_day: np.ndarray) -> Any:
    """``(arm, request_id) -> (day, seq)``: the experiment-clock day of the request's first
    attempt (``row_day``, the day of each row of ``data``) and its first row (arrival
    order). The scores table names requests by id and RunData keeps codes only, so the ids
    are read with :meth:`~harness.analysis.data.RunData.request_parts`, row-aligned with the
    loaded rows (same phases, same days); the ``arm`` column read with them must match
    ``data``'s row by row (else the parts changed since they were loaded:
    :class:`PartsChanged`, and the month has no quality)."""
    import pyarrow as pa

    arms, ids = [], []
    for part in data.request_parts(("arm", "request_id")):
        if part.num_rows:
            arms.append(part.column("arm").cast(pa.string()))
            ids.append(part.column("request_id").cast(pa.string()))
    n = sum(len(c) for c in ids)
    if n != data.n_rows:
        raise PartsChanged(f"request parts hold {n} rows, the loaded run {data.n_rows}: the "
                         "run changed since it was loaded")  # fmt: skip
    if not n:
        return pa.table({"arm": pa.array([], pa.string()), "request_id": pa.array([], pa.string()),
                         "day": pa.array([], pa.int64()), "seq": pa.array([], pa.int64())})  # fmt: skip
    arm_col = pa.chunked_array(arms)
    code, names = _codes(arm_col)
    null = data.arms.index("(unknown)") if "(unknown)" in data.arms else -3  # load_run's
    lut = np.array([data.arms.index(v) if v in data.arms else -2 for v in names] + [null])
    if not np.array_equal(lut[code], data.arm.astype(np.int64)):
        raise PartsChanged("request parts do not line up with the loaded run (arm column "
                         "differs): the run changed since it was loaded")  # fmt: skip
    t = pa.table({"arm": arm_col, "request_id": pa.chunked_array(ids),
                  "day": pa.array(np.asarray(row_day, np.int64)),
                  "seq": pa.array(np.arange(n, dtype=np.int64))})  # fmt: skip
    dated = t.filter(pa.array(np.asarray(row_day) >= 0))
    agg = dated.group_by(["arm", "request_id"]).aggregate([("day", "min"), ("seq", "min")])
    return pa.table({"arm": agg.column("arm"), "request_id": agg.column("request_id"),
                     "day": agg.column("day_min"), "seq": agg.column("seq_min")})  # fmt: skip


def _codes(col: Any) -> tuple[np.ndarray, list[str]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(col.cast(pa.string())).combine_chunks()
    idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return idx, [str(v) for v in enc.dictionary.to_pylist()]


def quality_series(table: Any, day_map: Any, arm_b: str, arm_c: str,
                   view_days: Sequence[int] | None = None) -> dict[str, QualitySeries]:  # fmt: skip
    """Per scorer present on either arm: its month per item (``sample_id``), each scored
    request with its day and arrival order (``day_map``: :func:`_score_days`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from harness.quality.scorers import SCORERS

    t = table.select(["arm", "request_id", "sample_id", "scorer", "value"])
    t = t.set_column(0, "arm", t.column("arm").cast(pa.string()))
    t = t.set_column(1, "request_id", t.column("request_id").cast(pa.string()))
    if "seq" not in day_map.column_names:  # a bare (arm, request_id, day) map
        day_map = day_map.append_column("seq", pa.array(np.arange(day_map.num_rows)))
    t = t.join(day_map.select(["arm", "request_id", "day", "seq"]),
               keys=["arm", "request_id"], join_type="inner")  # fmt: skip
    day = t.column("day").to_numpy(zero_copy_only=False).astype(np.int64)
    keep = day >= 0
    if view_days is not None:
        keep &= np.isin(day, np.asarray(list(view_days), np.int64))
    t = t.filter(pa.array(keep))
    day = day[keep]
    seq = t.column("seq").to_numpy(zero_copy_only=False).astype(np.int64)
    arm_code, arm_names = _codes(t.column("arm"))
    scorer_code, scorer_names = _codes(t.column("scorer"))

    def code(names: list[str], v: str) -> int:
        return names.index(v) if v in names else -2

    is_b, is_c = arm_code == code(arm_names, arm_b), arm_code == code(arm_names, arm_c)
    items, item_names = _codes(t.column("sample_id"))
    vals = pc.fill_null(t.column("value"), math.nan).to_numpy(zero_copy_only=False)
    vals = vals.astype(np.float64)
    fin = np.isfinite(vals) & (items >= 0)
    out: dict[str, QualitySeries] = {}
    for name, sc in SCORERS.items():
        this = scorer_code == code(scorer_names, name)
        sb, scc = this & is_b & fin, this & is_c & fin
        if not sb.any() and not scc.any():
            continue
        per_item = ItemScores(sc.kind, items[sb], vals[sb], day[sb], items[scc], vals[scc],
                              day[scc], len(item_names), seq[sb], seq[scc])  # fmt: skip
        out[name] = QualitySeries(sc.kind, sc.better or "either", per_item)
    return out


def _cost_month(data: RunData, arm_b: str, arm_c: str, req: dict[str, dict[str, np.ndarray]]
                ) -> tuple[DaySeries | None, tuple[float | None, float | None]]:  # fmt: skip
    """Per-request USD of API arms (with the day of each request), projected arms fixed."""
    from harness.judge.preprocess import cost_sample

    cs = cost_sample(data, arm_b, data, arm_c)
    if cs is None:
        return None, (None, None)
    arrays = {}
    for arm, arr in ((arm_b, cs.baseline), (arm_c, cs.candidate)):
        if arr is None:
            continue
        day = req[arm]["day"]
        if arr.size != day.size:
            raise ValueError(f"cost of arm {arm!r}: {arr.size} per-request costs for "
                             f"{day.size} requests")  # fmt: skip
        arrays[arm] = (np.asarray(arr, np.float64)[day >= 0], day[day >= 0])
    none = (np.empty(0), np.empty(0, np.int64))
    (xb, db), (xc, dc) = arrays.get(arm_b, none), arrays.get(arm_c, none)
    base, cand = {"usd": xb}, {"usd": xc}
    series = DaySeries.build(False, base, cand, db, dc)
    return series, (cs.baseline_fixed, cs.candidate_fixed)


def month_of(data: RunData, clock: ExperimentClock, cfg: JudgeConfig, scores: Any = None) -> Month:
    """A run's :class:`Month`: its baseline and candidate arms (:func:`pick_arms`), requests,
    quality (``scores``: the run's :class:`harness.quality.score.Scores`, read or written
    when None) and cost, each with its experiment-clock day."""
    from pathlib import Path

    from harness.config import ConfigError
    from harness.judge.preprocess import arm_kinds
    from harness.judge.settings import pick_arms
    from harness.quality.score import ScoreError, ensure_scores, has_references

    arm_b, arm_c = pick_arms(cfg, arm_kinds(data))
    row_day = _row_days(data, clock)
    req = {a: _arm_requests(data, a, row_day) for a in (arm_b, arm_c)}
    # requests without a day (no t_virtual / t_scheduled) are left out
    dated = {a: {k: v[r["day"] >= 0] for k, v in r.items()} for a, r in req.items()}
    requests = _request_series(dated[arm_b], dated[arm_c])
    days = sorted({int(d) for a in dated.values() for d in np.unique(a["day"])})
    kinds = arm_kinds(data)
    refs = [ArmRef(data.run_id, a, str(data.run_dir), kinds.get(a)) for a in (arm_b, arm_c)]
    month = Month(refs[0], refs[1], days, requests)
    if requests.paired is False and getattr(data, "pair", None) is not None:
        month.notes.append("Latency and failures compared as independent samples: the run "
                           "did not mirror its traffic (no pair_id on every request).")  # fmt: skip
    try:
        phases = list(data.analysis.include_phases)
        if scores is None and has_references(Path(data.run_dir), phases):
            scores = ensure_scores(Path(data.run_dir), phases)
        if scores is not None:
            view = getattr(data, "days", None)
            table = getattr(scores, "table", scores)
            month.quality = quality_series(table, _score_days(data, row_day), arm_b, arm_c, view)
    except (ScoreError, PartsChanged) as exc:
        month.errors["quality"] = str(exc)
    try:
        month.cost, month.cost_fixed = _cost_month(data, arm_b, arm_c, req)
    except (ConfigError, ValueError) as exc:
        month.errors["cost_per_task"] = str(exc)
    return month


def daily_verdicts(data: RunData, clock: ExperimentClock, *, judge_cfg: JudgeConfig | None = None,
                   days: Iterable[int] | None = None, scores: Any = None, naive: bool = True,
                   naive_resamples: int | None = NAIVE_MAX_RESAMPLES,
                   reuse: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """For each experiment-clock day ``d`` (``days``, else every day with requests) the
    verdict on the cumulative rows of days ``<= d``::

        {"day", "decision" (anytime-valid GO | NO_GO | INCONCLUSIVE), "score",
         "score_ceiling", "reasons", "offenders" (metrics shown worse), "naive_decision"
         (the fixed-sample judge on the same data: what peeking would say), "naive_score",
         "naive_reasons", "naive_offenders", "n" (logical requests per arm), "alpha",
         "metrics_judged" (m), "metrics" (name -> classification, reason, n, estimate, ci,
         ci_ni), "settings_key"}

    ``judge_cfg``: the judge's settings (None: the run's own, :func:`settings_of`); the
    sequential verdict uses ``canary.sequential.alpha`` when the run sets it. ``scores``:
    the run's scores (None: read, or written when missing or stale). ``naive_resamples``
    and ``reuse``: see :func:`month_verdicts` (pass the previous report's entries)."""
    from harness.judge.preprocess import settings_of

    cfg = judge_cfg if judge_cfg is not None else settings_of(data)
    seq = ((data.manifest.get("config") or {}).get("canary") or {}).get("sequential") or {}
    alpha = seq.get("alpha") if isinstance(seq, dict) else None
    month = month_of(data, clock, cfg, scores)
    return month_verdicts(month, cfg, days, alpha=alpha, naive=naive,
                          naive_resamples=naive_resamples, reuse=reuse)  # fmt: skip


# ---------------------------------------------------------------- synthetic months


def synthetic_month(seed: int, *, days: int = 30, per_day: Sequence[int] | int = 200,
                    change_day: int | None = None, run: Any = None, changed: Any = None,
                    items: int | None = None) -> Month:  # fmt: skip
    """A month of a synthetic mirrored canary for calibration: the generative model of
    :func:`harness.judge.calibration.synthetic_inputs` (shared AR(1) load, stalls, item
    hardness, failures, costs) over ``sum(per_day)`` requests, day ``d`` holding
    ``per_day[d]`` of them, each request a fresh item. ``run`` (a
    :class:`~harness.judge.calibration.SyntheticRun`, default: two models of equal accuracy
    with independent errors, an A/A of one model sampled twice) holds before
    ``change_day``; from it on, ``changed`` does (same seed, so the same load, items and
    draws: only what ``changed`` changes differs).

    ``items``: an eval set of that many items cycled through instead (each pass a fresh
    shuffle, as a month-long canary repeats its eval set), answered the same on every
    repeat (a temperature-0 model: the quality values of an item's first request; from
    ``change_day``, ``changed``'s answers to it); latency, failures and cost stay per
    request."""
    from harness.judge.calibration import SyntheticRun, synthetic_inputs

    sizes = np.full(days, per_day) if isinstance(per_day, int) else np.asarray(per_day)
    if sizes.size != days:
        raise ValueError(f"synthetic_month: per_day has {sizes.size} entries for {days} days")
    total = int(sizes.sum())
    run = replace(run or SyntheticRun(same_model=False), n=total)
    inp = synthetic_inputs(seed, run)
    day = np.repeat(np.arange(days), sizes)
    late = np.zeros(total, bool)
    if change_day is not None and changed is not None:
        late = day >= change_day
        alt = synthetic_inputs(seed, replace(changed, n=total))
    else:
        alt = inp

    def mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(late, b, a)

    req_b = {m: inp.latency[m].baseline for m in LATENCY_MEASURES}
    req_c = {m: mix(inp.latency[m].candidate, alt.latency[m].candidate)
             for m in LATENCY_MEASURES}  # fmt: skip
    assert inp.failures is not None and alt.failures is not None
    req_b["failed"] = inp.failures.baseline
    req_c["failed"] = mix(inp.failures.candidate, alt.failures.candidate)
    requests = DaySeries.build(True, req_b, req_c, day, day)
    quality = {}
    if items is None:
        item, n_items = np.arange(total), total
    else:
        if not 0 < items <= total:
            raise ValueError(f"synthetic_month: items must be in [1, {total}], got {items!r}")
        rng = np.random.default_rng([seed, 0x17E45])
        passes = [rng.permutation(items) for _ in range(-(-total // items))]
        item, n_items = np.concatenate(passes)[:total], items
    for name, qs in inp.quality.items():
        x = qs.sample.baseline[item]
        y = mix(qs.sample.candidate[item], alt.quality[name].sample.candidate[item])
        per_item = ItemScores(qs.kind, item, x, day, item, y, day, n_items)
        quality[name] = QualitySeries(qs.kind, qs.direction, per_item)
    assert inp.cost is not None and inp.cost.baseline is not None
    assert inp.cost.candidate is not None and alt.cost is not None
    cost = DaySeries.build(False, {"usd": inp.cost.baseline},
                           {"usd": mix(inp.cost.candidate, alt.cost.candidate)}, day, day)  # fmt: skip
    return Month(inp.baseline, inp.candidate, list(range(days)), requests, quality, cost)
