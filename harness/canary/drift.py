"""Drift detection on a canary's daily series: an online CUSUM per (arm, metric), an offline
change point to name the day, and attribution against the pinned self-hosted control arm.

Stages, in order (:func:`drift_section`):

1. **Series.** Each watched metric (``canary.drift.metrics``, :data:`SERIES`) is a daily
   series of one arm, read from the daily entries (:mod:`harness.canary.daily`) with the
   day's count ``n``: ``ttft_p99`` / ``e2e_p99`` (``request_ttft_s`` / ``request_e2e_s`` p99 of
   the day's answered requests, ``n`` of them: failures are watched by ``error_rate``, and a
   censored p99 would leave no figure on a day with over 1% failures), ``error_rate`` and
   ``retry_rate`` (proportions of the day's requests), ``quality`` (the headline accuracy
   scorer, the first of :data:`HEADLINE_SCORERS` the run has; ``quality:<scorer>`` names
   one), ``n`` scored answers.
2. **Standardise** (:func:`standardise`), on a variance-stabilised scale ``y``:
   proportions ``y = asin(sqrt((x n + 3/8) / (n + 3/4)))`` (Anscombe; variance
   ``1 / (4 (n + 1/2))`` whatever ``p``), latency quantiles ``y = log x``, scores ``y = x``.
   Day ``t`` is standardised against every earlier day (self-starting, Hawkins 1987,
   "Self-starting cusum charts for location and scale", *The Statistician* 36: 299-316),
   weighting days by their count (a day's variance is assumed ``proportional to 1 / n``):

   - ``binomial`` noise (binary quality scorers: items are drawn independently, so a pinned
     model's daily pass count is binomial): known variance ``v_t = 1 / (4 (n_t + 1/2))``,
     ``z_t = (y_t - mu_{t-1}) / sqrt(v_t + 1 / W_{t-1})`` with ``mu`` the inverse-variance
     weighted mean of the earlier days and ``W`` their total weight: exactly ``N(0, 1)`` and
     independent day to day under the model (recursive residuals). If the first
     ``baseline_days`` are overdispersed (Pearson ``chi2_{b-1}`` of them, p < 0.01) the
     series falls back to ``empirical``;
   - ``empirical`` noise (latency, error and retry rates: bursts and load make their spread
     unknown): the spread ``s`` is estimated from the earlier days (weighted, ``m - 1``
     degrees of freedom, never below a floor: binomial spread for proportions, 0.3 / sqrt(n)
     in log units for latency quantiles), ``T_t = (y_t - mu) / (s sqrt(1 / w_t + 1 / W))``
     and ``z_t = Phi^-1(F_{t, m-1}(T_t))``: the exact small-sample correction (Student t to
     normal) for normal days.

   The detector arms once ``baseline_days`` days are in. A monitored day then joins the
   reference clipped to :data:`CLIP_SD` of its sd, so that a large shift cannot drag the
   mean and spread after itself before the alarm (unclipped, a tripled p99 was missed).
   Standardising against only the first ``baseline_days`` days, frozen, was measured and
   rejected: with 5 AR(1) days the error of the baseline mean persists all month, so the
   threshold for 0.4% false alarms a month was ``h = 90`` instead of 11 and a 3-sd step on
   day 15 was caught in 13% of months (self-starting: 79% empirical, 99% binomial).
3. **Online detector**: two-sided CUSUM (Page 1954, "Continuous inspection schemes",
   *Biometrika* 41: 100-115) on ``z``: ``C+_t = max(0, C+_{t-1} + z_t - k)``,
   ``C-_t = max(0, C-_{t-1} - z_t - k)``, alarm on the first day ``max(C+, C-) > h``;
   :data:`K_REF` ``k = 0.5`` (tuned to a 1-sd shift of a day). A day without a value leaves
   the sums as they are.
4. **Threshold** ``h`` (:func:`threshold`), by simulation (seeded, cached per process):
   ``false_alarm_days`` is the expected number of days between false alarms of the **whole
   detector** (every watched series together), so each of the ``S`` watched series gets an
   in-control run length of ``false_alarm_days x S`` days and ``h`` is set so that a
   stationary series alarms within the planned month's ``H = max(30, days) - baseline_days``
   monitored days with probability ``1 - exp(-H / (false_alarm_days x S))`` (the chance a
   constant rate of one false alarm per that many days gives). The month-level chance of any
   false alarm is then ``1 - exp(-H / false_alarm_days)`` at most (independent series; series
   that move together alarm together, which only lowers it): 4% for 600 days and
   ``H = 25``; 24% for 90 days. ``binomial`` series are calibrated on independent normal
   days; ``empirical`` ones on the worst case assumed, AR(1) days with ``phi = 0.3``
   (:data:`ASSUMED_AR`) and no floor, so independent days alarm less often than stated.
   Stronger day-to-day dependence (e.g. a weekly pattern in latency) raises false alarms.
5. **Change day** (on alarm): the least-squares single change point of the series ``y``,
   days weighted as in the detector (``ruptures`` ``Binseg`` with a weighted ``l2`` cost,
   one break: the exact best split); when it falls after the alarm, the one among the days
   up to the alarm. **Size**: mean of the daily values after minus before (original
   units; ``relative`` = after / before - 1), with a Welch t interval that treats days as
   independent.
6. **Attribution** per metric: the split day is the API arm's change day (else the
   control's); ``difference`` = the API arm's change minus the control arm's change over
   it, from the paired daily differences (API - control, same day) after minus before, Welch
   t interval. :data:`ATTRIBUTIONS`: ``provider drift`` (the API arm alarmed, the control did
   not, or alarmed for a change of its own: the other direction or more than
   :data:`SHARED_CHANGE_DAYS` days apart; and the interval excludes 0), ``workload or harness
   drift`` (both alarmed for one change: same direction, change days close),
   ``control drift`` (only the control alarmed), ``inconclusive`` (the API arm alarmed, the
   control did not, the interval includes 0), ``none``.
7. **Version changes**: the days the dominant ``system_fingerprint`` / ``response_model`` of
   an arm changes, for reading beside the change days.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as sps

from harness.canary.daily import daily_frame
from harness.canary.settings import DriftConfig
from harness.config import ConfigError

#: CUSUM reference value (in standard deviations of a day): tuned to a 1-sd shift.
K_REF = 0.5
#: Day-to-day autocorrelation the empirical threshold allows for (AR(1) coefficient).
ASSUMED_AR = 0.3
#: The planned month: thresholds are calibrated for at least this many days.
PLANNED_DAYS = 30
#: A monitored day joins the reference (mean, spread) clipped to this many of its sds.
CLIP_SD = 3.0
#: Simulated paths per threshold and the seed they come from.
CALIBRATION_PATHS = 100_000
CALIBRATION_SEED = 11
#: Overdispersion test of a binomial series' first days (p below this: empirical noise).
#: Strict: a false switch costs that series most of its power (measured: 60% against 100%
#: for a 3-sd step), so only a clearly overdispersed start switches.
DISPERSION_P = 0.01
#: Headline accuracy scorers, in order of preference, for the metric ``quality``.
HEADLINE_SCORERS = ("exact_match", "numeric_match", "json_schema", "regex_match", "token_f1",
                    "similarity")  # fmt: skip
ATTRIBUTIONS = ("provider drift", "workload or harness drift", "control drift", "inconclusive",
                "none")  # fmt: skip
NOISES = ("binomial", "empirical")
TRANSFORMS = ("arcsine", "log", "identity")
FINGERPRINT_FIELDS = (("system_fingerprint", "system_fingerprints"),
                      ("response_model", "response_models"))  # fmt: skip


@dataclass(frozen=True)
class SeriesKind:
    """How one daily series is read and standardised."""

    value: str  # daily_frame metric holding the day's value
    count: str  # daily_frame metric holding the day's n
    transform: str  # TRANSFORMS
    noise: str  # NOISES
    floor: float  # least spread of sqrt(w) (y - mu) (the empirical path)


#: Watched metrics (besides ``quality`` / ``quality:<scorer>``, see :func:`series_kind`).
SERIES: dict[str, SeriesKind] = {
    "ttft_p99": SeriesKind("ttft_p99_answered", "ttft_n_answered", "log", "empirical", 0.3),
    "e2e_p99": SeriesKind("e2e_p99_answered", "e2e_n_answered", "log", "empirical", 0.3),
    "ttft_p50": SeriesKind("ttft_p50_answered", "ttft_n_answered", "log", "empirical", 0.3),
    "e2e_p50": SeriesKind("e2e_p50_answered", "e2e_n_answered", "log", "empirical", 0.3),
    "error_rate": SeriesKind("error_rate", "requests", "arcsine", "empirical", 1.0),
    "retry_rate": SeriesKind("retry_rate", "requests", "arcsine", "empirical", 1.0),
}


def series_kind(metric: str, scorer: str | None = None) -> SeriesKind:
    """The :class:`SeriesKind` of a watched metric; ``quality`` needs its ``scorer``."""
    if metric in SERIES:
        return SERIES[metric]
    if metric == "quality" or metric.startswith("quality:"):
        name = scorer or metric.partition(":")[2]
        from harness.quality.scorers import SCORERS

        kind = SCORERS[name].kind if name in SCORERS else "score"
        if kind == "binary":
            return SeriesKind(f"quality:{name}", f"quality_n:{name}", "arcsine", "binomial", 1.0)
        if kind == "length":
            return SeriesKind(f"quality:{name}", f"quality_n:{name}", "log", "empirical", 0.3)
        return SeriesKind(f"quality:{name}", f"quality_n:{name}", "identity", "empirical", 0.01)
    known = [*SERIES, "quality", "quality:<scorer>"]
    raise ConfigError(
        f"canary.drift.metrics: unknown metric {metric!r} (known: {', '.join(known)})"
    )


# ---------------------------------------------------------------- the vectorised core


def transform(x: np.ndarray, n: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """``(y, w)``: the variance-stabilised values and each day's weight (inverse variance up
    to a constant; the binomial ``4 (n + 1/2)`` for proportions). Invalid days are NaN."""
    x = np.asarray(x, np.float64)
    n = np.asarray(n, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if how == "arcsine":
            y = np.arcsin(np.sqrt(np.clip((x * n + 0.375) / (n + 0.75), 0.0, 1.0)))
            w = 4.0 * (n + 0.5)
        elif how == "log":
            y = np.where(x > 0, np.log(x), np.nan)
            w = n.copy()
        else:
            y = x.copy()
            w = n.copy()
    bad = ~(np.isfinite(y) & np.isfinite(w) & (w > 0))
    return np.where(bad, np.nan, y), np.where(bad, np.nan, w)


def _t_to_z(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """``Phi^-1(F_df(t))``, computed from the nearer tail (no rounding to 1)."""
    with np.errstate(invalid="ignore"):
        tail = special.stdtr(np.maximum(df, 1.0), -np.abs(t))
        z = -special.ndtri(np.maximum(tail, 1e-300))
    return np.sign(t) * z


def standardise(y: np.ndarray, w: np.ndarray, noise: str, baseline_days: int,
                floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Self-starting standardisation of ``S`` series of ``T`` days (module docstring, 2).

    ``y``, ``w``: (S, T) values and weights from :func:`transform` (NaN: no value that day).
    Returns ``(z, empirical)``: z-scores (NaN until ``baseline_days`` days are in, and on days
    without a value) and per series whether the empirical path was used (always for
    ``noise == "empirical"``; for ``binomial``, when the first days were overdispersed)."""
    y = np.atleast_2d(np.asarray(y, np.float64))
    w = np.atleast_2d(np.asarray(w, np.float64))
    n_s, n_t = y.shape
    valid = np.isfinite(y) & np.isfinite(w) & (w > 0)
    first = np.argmax(valid, axis=1)
    y0 = np.where(valid.any(axis=1), y[np.arange(n_s), first], 0.0)
    yc = np.where(valid, y - y0[:, None], 0.0)  # centred: no cancellation in the sums
    wv = np.where(valid, w, 0.0)
    sw = np.zeros(n_s)
    swy = np.zeros(n_s)
    swyy = np.zeros(n_s)
    m = np.zeros(n_s)
    empirical = np.full(n_s, noise == "empirical")
    decided = np.zeros(n_s, bool)
    z = np.full((n_s, n_t), np.nan)
    for t in range(n_t):
        v = valid[:, t]
        armed = v & (m >= baseline_days)
        y_upd = yc[:, t]
        if armed.any():
            with np.errstate(invalid="ignore", divide="ignore"):
                mu = swy / sw
                ss = np.maximum(swyy - sw * mu * mu, 0.0)  # sum of w (y - mu)^2
                if noise == "binomial":
                    new = armed & ~decided
                    if new.any():  # overdispersion of the first days (chi2 with m - 1 df)
                        p = sps.chi2.sf(ss[new], m[new] - 1)
                        empirical[new] = p < DISPERSION_P
                        decided |= new
                dev = yc[:, t] - mu
                sd = 1.0 / np.sqrt(wv[:, t])  # the day's sd (known variance) ...
                spread = np.sqrt(1.0 / wv[:, t] + 1.0 / sw)
                zt = dev / spread
                emp = armed & empirical
                if emp.any():
                    s = np.maximum(np.sqrt(ss[emp] / np.maximum(m[emp] - 1, 1.0)), floor)
                    zt[emp] = _t_to_z(zt[emp] / s, m[emp] - 1)
                    sd[emp] *= s  # ... or as estimated
                # the day joins the reference clipped to CLIP_SD of its sd: a large shift
                # cannot drag the reference after itself before the alarm
                lim = CLIP_SD * sd
                y_upd = np.where(armed, mu + np.clip(dev, -lim, lim), yc[:, t])
            z[:, t] = np.where(armed, zt, np.nan)
        y_upd = np.where(v, y_upd, 0.0)
        sw += wv[:, t]
        swy += wv[:, t] * y_upd
        swyy += wv[:, t] * y_upd**2
        m += v
    return z, empirical


def cusum(z: np.ndarray, k: float = K_REF) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided CUSUM sums ``(C+, C-)`` of (S, T) z-scores; a NaN day carries them over."""
    z = np.atleast_2d(z)
    up = np.zeros(z.shape)
    down = np.zeros(z.shape)
    cp = np.zeros(z.shape[0])
    cm = np.zeros(z.shape[0])
    for t in range(z.shape[1]):
        zt = z[:, t]
        ok = np.isfinite(zt)
        cp = np.where(ok, np.maximum(0.0, cp + np.where(ok, zt, 0.0) - k), cp)
        cm = np.where(ok, np.maximum(0.0, cm - np.where(ok, zt, 0.0) - k), cm)
        up[:, t], down[:, t] = cp, cm
    return up, down


def first_alarm(up: np.ndarray, down: np.ndarray, h: np.ndarray | float) -> np.ndarray:
    """Index of the first day ``max(C+, C-) > h`` per series; -1 when none."""
    stat = np.maximum(up, down)
    hit = stat > np.reshape(np.asarray(h, np.float64), (-1, 1))
    return np.where(hit.any(axis=1), np.argmax(hit, axis=1), -1)


@dataclass(frozen=True)
class Detection:
    """The detector's view of ``S`` series (arrays, one entry per series)."""

    z: np.ndarray  # (S, T) z-scores
    up: np.ndarray  # (S, T) C+
    down: np.ndarray  # (S, T) C-
    empirical: np.ndarray  # (S,) the empirical path was used
    h: np.ndarray  # (S,) threshold applied
    alarm: np.ndarray  # (S,) index of the first alarm day, -1 when none


def detect(x: np.ndarray, n: np.ndarray, kind: SeriesKind, *, baseline_days: int,
           alpha: float, horizon: int, k: float = K_REF) -> Detection:  # fmt: skip
    """Run stages 2-4 on (S, T) daily values ``x`` with counts ``n``: the same code for one
    series of a report and for thousands in a calibration test. ``alpha``: the chance of a
    false alarm within ``horizon`` monitored days each series is allowed."""
    y, w = transform(x, n, kind.transform)
    z, empirical = standardise(y, w, kind.noise, baseline_days, kind.floor)
    up, down = cusum(z, k)
    h_emp = threshold("empirical", alpha, baseline_days, horizon, k)
    h_bin = threshold("binomial", alpha, baseline_days, horizon, k) if kind.noise == "binomial" \
        else h_emp  # fmt: skip
    h = np.where(empirical, h_emp, h_bin)
    return Detection(z, up, down, empirical, h, first_alarm(up, down, h))


# ---------------------------------------------------------------- calibration


@functools.lru_cache(maxsize=32)
def _null_maxima(noise: str, baseline_days: int, horizon: int, k: float) -> np.ndarray:
    """Sorted maxima of ``max(C+, C-)`` over ``horizon`` monitored days of
    :data:`CALIBRATION_PATHS` simulated stationary series, through :func:`standardise` and
    :func:`cusum`: ``binomial``: independent normal days of known variance; ``empirical``:
    AR(1) normal days, ``phi = ASSUMED_AR``, spread estimated with no floor."""
    code = NOISES.index(noise)
    rng = np.random.default_rng([CALIBRATION_SEED, code, baseline_days, horizon])
    n_t = baseline_days + horizon
    out = []
    chunk = 25_000
    for start in range(0, CALIBRATION_PATHS, chunk):
        s = min(chunk, CALIBRATION_PATHS - start)
        e = rng.standard_normal((s, n_t))
        if noise == "empirical":
            phi = ASSUMED_AR
            for t in range(1, n_t):
                e[:, t] = phi * e[:, t - 1] + math.sqrt(1 - phi * phi) * e[:, t]
        z, _ = standardise(e, np.ones((s, n_t)), "empirical" if noise == "empirical" else "known",
                           baseline_days, 0.0)  # fmt: skip
        up, down = cusum(z, k)
        out.append(np.maximum(up, down).max(axis=1))
    return np.sort(np.concatenate(out))


@functools.lru_cache(maxsize=256)
def threshold(noise: str, alpha: float, baseline_days: int, horizon: int,
              k: float = K_REF) -> float:  # fmt: skip
    """``h`` such that a stationary series of this noise alarms within ``horizon`` monitored
    days with probability ``alpha`` (simulated, :func:`_null_maxima`)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    maxima = _null_maxima(noise, int(baseline_days), int(horizon), float(k))
    return float(np.quantile(maxima, 1.0 - alpha))


def series_alpha(false_alarm_days: float, n_series: int, horizon: int) -> float:
    """Per-series chance of a false alarm within ``horizon`` monitored days when the whole
    detector (``n_series`` series) raises one false alarm per ``false_alarm_days`` days."""
    return 1.0 - math.exp(-horizon / (false_alarm_days * max(1, n_series)))


def horizon_days(n_days: int, baseline_days: int) -> int:
    """Monitored days of the planned month: ``max(PLANNED_DAYS, n_days) - baseline_days``."""
    return max(PLANNED_DAYS, n_days) - baseline_days


# ---------------------------------------------------------------- offline: day, size


@functools.lru_cache(maxsize=1)
def _weighted_l2() -> type:
    """A ``ruptures`` cost: weighted squared error about the weighted segment mean, so a
    day counts by its weight (inverse variance) as in the detector. Signal columns:
    ``[y, w]``."""
    from ruptures.base import BaseCost

    class CostWeightedL2(BaseCost):
        model = "weighted_l2"
        min_size = 2

        def fit(self, signal: np.ndarray) -> CostWeightedL2:
            self.signal = signal
            y, w = signal[:, 0], signal[:, 1]
            self._w = np.r_[0.0, np.cumsum(w)]
            self._wy = np.r_[0.0, np.cumsum(w * y)]
            self._wyy = np.r_[0.0, np.cumsum(w * y * y)]
            return self

        def error(self, start: int, end: int) -> float:
            w = self._w[end] - self._w[start]
            wy = self._wy[end] - self._wy[start]
            return float(self._wyy[end] - self._wyy[start] - wy * wy / w)

    return CostWeightedL2


def change_point(y: np.ndarray, w: np.ndarray | None = None, last: int | None = None
                 ) -> int | None:  # fmt: skip
    """Index of the first day after the least-squares single change point of ``y`` (days with
    a value only; weighted by ``w`` when given; ``last``: the change is at or before this
    index), via ``ruptures`` ``Binseg`` with one break (the exact best split)."""
    import ruptures as rpt

    w = np.ones_like(y) if w is None else np.asarray(w, np.float64)
    idx = np.flatnonzero(np.isfinite(y) & np.isfinite(w) & (w > 0))
    if last is not None:
        idx = idx[idx <= last]
    if idx.size < 4:
        return None
    signal = np.column_stack([y[idx], w[idx] / w[idx].mean()])
    algo = rpt.Binseg(custom_cost=_weighted_l2()(), min_size=2, jump=1).fit(signal)
    bkp = algo.predict(n_bkps=1)[0]
    return int(idx[bkp]) if bkp < idx.size else None


def name_change(y: np.ndarray, w: np.ndarray, alarm: int) -> int | None:
    """The change day (index) of a series that alarmed on day index ``alarm``: the single
    change point of the whole series (it names the day best), or of the days up to the alarm
    when the whole series puts it after the alarm."""
    j = change_point(y, w)
    if j is None or j > alarm:
        j = change_point(y, w, last=alarm)
    return j


def welch(before: np.ndarray, after: np.ndarray, confidence: float
          ) -> tuple[float | None, list[float | None]]:  # fmt: skip
    """``mean(after) - mean(before)`` with a Welch t interval (days independent);
    no interval below 2 values a side."""
    a = np.asarray(after, np.float64)
    b = np.asarray(before, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return None, [None, None]
    d = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return d, [None, None]
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return d, [d, d]
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    q = float(sps.t.ppf((1 + confidence) / 2, df))
    return d, [d - q * se, d + q * se]


# ---------------------------------------------------------------- the section


def _series_table(frame: pd.DataFrame, days: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    """(arm, metric) -> values on ``days`` (NaN where missing), from the tidy frame."""
    if frame.empty:
        return {}
    pos = np.searchsorted(days, frame["day"].to_numpy(np.int64))
    values = frame["value"].to_numpy(np.float64)
    out = {}
    for key, idx in frame.groupby(["arm", "metric"], sort=False).indices.items():
        v = np.full(days.size, np.nan)
        v[pos[idx]] = values[idx]
        out[key] = v
    return out


def _get(table: dict[tuple[str, str], np.ndarray], arm: str, metric: str, n_days: int
         ) -> np.ndarray:  # fmt: skip
    """One arm's series; an ``..._answered`` figure falls back to the plain one (entries
    written without it)."""
    v = table.get((arm, metric))
    if v is None and metric.endswith("_answered"):
        v = table.get((arm, metric.removesuffix("_answered")))
    return v if v is not None else np.full(n_days, np.nan)


def headline_scorer(frame: pd.DataFrame) -> str | None:
    """The first of :data:`HEADLINE_SCORERS` the daily figures have."""
    have = set(frame["metric"].unique())
    return next((s for s in HEADLINE_SCORERS if f"quality:{s}" in have), None)


def _watched(cfg: DriftConfig, frame: pd.DataFrame) -> list[tuple[str, SeriesKind, str | None]]:
    out = []
    for metric in cfg.metrics:
        scorer = None
        if metric == "quality":
            scorer = headline_scorer(frame)
            if scorer is None:
                continue  # no scores: nothing to watch
        elif metric.startswith("quality:"):
            scorer = metric.partition(":")[2]
        out.append((metric, series_kind(metric, scorer), scorer))
    return out


def fingerprint_changes(entries: list[dict]) -> list[dict[str, Any]]:
    """Days an arm's dominant ``system_fingerprint`` / ``response_model`` (most attempts;
    ties by name) differs from its previous day's."""
    out = []
    arms = list(dict.fromkeys(a for e in entries for a in (e.get("arms") or {})))
    for arm in arms:
        for field, key in FINGERPRINT_FIELDS:
            prev = None
            for e in entries:
                counts = ((e.get("arms") or {}).get(arm) or {}).get(key) or {}
                if not counts:
                    continue
                top = min(counts, key=lambda v: (-counts[v], v))
                if prev is not None and top != prev:
                    out.append({"arm": arm, "field": field, "day": int(e["day"]), "from": prev,
                                "to": top})  # fmt: skip
                prev = top
    return out


def _check(cfg: DriftConfig) -> None:
    if not (isinstance(cfg.false_alarm_days, int | float) and cfg.false_alarm_days > 0):
        raise ConfigError(
            f"canary.drift.false_alarm_days: must be a number of days > 0, got "
            f"{cfg.false_alarm_days!r}"
        )
    if not (isinstance(cfg.baseline_days, int) and cfg.baseline_days >= 3):
        raise ConfigError(
            f"canary.drift.baseline_days: must be an integer >= 3 (a spread needs 2 degrees "
            f"of freedom), got {cfg.baseline_days!r}"
        )
    if not 0 < cfg.confidence < 1:
        raise ConfigError(f"canary.drift.confidence: must be in (0, 1), got {cfg.confidence!r}")


def drift_section(entries: list[dict], *, api_arm: str | None, control_arm: str | None,
                  cfg: DriftConfig) -> dict[str, Any]:  # fmt: skip
    """The ``drift`` section (module docstring): settings and thresholds, one entry per
    watched (arm, metric) series, attribution per metric, version changes."""
    _check(cfg)
    frame = daily_frame(entries)
    days = np.array(sorted({int(e["day"]) for e in entries}), np.int64)
    b = int(cfg.baseline_days)
    horizon = horizon_days(int(days.size), b)
    arms = [a for a in (api_arm, control_arm) if a]
    watched = _watched(cfg, frame)
    n_series = len(arms) * len(watched)
    alpha = series_alpha(float(cfg.false_alarm_days), n_series, horizon)
    versions = fingerprint_changes(entries)
    out: dict[str, Any] = {
        "false_alarm_days": float(cfg.false_alarm_days),
        "baseline_days": b,
        "k": K_REF,
        "h": {},
        "series_watched": n_series,
        "arl_per_series_days": float(cfg.false_alarm_days) * max(1, n_series),
        "horizon_days": horizon,
        "p_false_alarm_series": alpha,
        "p_false_alarm_month": 1.0 - math.exp(-horizon / float(cfg.false_alarm_days)),
        "assumed_ar": ASSUMED_AR,
        "series": [],
        "attribution": [],
        "fingerprint_changes": versions,
    }
    if days.size == 0:
        return out
    for noise in NOISES:
        out["h"][noise] = threshold(noise, alpha, b, horizon)
    table = _series_table(frame, days)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for metric, kind, scorer in watched:
        x = np.stack([_get(table, arm, kind.value, days.size) for arm in arms])
        n = np.stack([_get(table, arm, kind.count, days.size) for arm in arms])
        det = detect(x, n, kind, baseline_days=b, alpha=alpha, horizon=horizon)
        y, w = transform(x, n, kind.transform)
        for r, arm in enumerate(arms):
            entry = _series_entry(arm, metric, scorer, days, x[r], y[r], w[r], det, r, cfg,
                                  versions)  # fmt: skip
            results[(arm, metric)] = entry
            out["series"].append(entry)
    if api_arm and control_arm:
        for metric, kind, _ in watched:
            xa = _get(table, api_arm, kind.value, days.size)
            xc = _get(table, control_arm, kind.value, days.size)
            out["attribution"].append(
                _attribute(
                    metric,
                    days,
                    xa,
                    xc,
                    results[(api_arm, metric)],
                    results[(control_arm, metric)],
                    cfg,
                )  # fmt: skip
            )
    return out


def _series_entry(arm: str, metric: str, scorer: str | None, days: np.ndarray, x: np.ndarray,
                  y: np.ndarray, w: np.ndarray, det: Detection, r: int, cfg: DriftConfig,
                  versions: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    i = int(det.alarm[r])
    stat = np.maximum(det.up[r], det.down[r])
    e: dict[str, Any] = {
        "arm": arm,
        "metric": metric,
        "scorer": scorer,
        "noise": "empirical" if det.empirical[r] else "binomial",
        "h": float(det.h[r]),
        "alarm": i >= 0,
        "alarm_day": int(days[i]) if i >= 0 else None,
        "direction": None,
        "change_day": None,
        "before": None,
        "after": None,
        "size": None,
        "relative": None,
        "ci": [None, None],
        "ci_method": "Welch t over days",
        "n_days": int(np.isfinite(y).sum()),
        "max_statistic": float(np.nanmax(stat)) if stat.size else 0.0,
        "version_change": None,
    }
    if i < 0:
        return e
    e["direction"] = "up" if det.up[r, i] > det.h[r] else "down"
    j = name_change(y, w, i)
    if j is None:
        return e
    e["change_day"] = int(days[j])
    before, after = x[:j], x[j:]
    size, ci = welch(before, after, cfg.confidence)
    mb, ma = np.nanmean(before), np.nanmean(after)
    e.update({"before": float(mb), "after": float(ma), "size": size, "ci": ci,
              "relative": float(ma / mb - 1) if mb else None})  # fmt: skip
    near = [v for v in versions if v["arm"] == arm and abs(v["day"] - e["change_day"]) <= 1]
    e["version_change"] = near[0] if near else None
    return e


#: Days apart the two arms' change points may be and still be one shared change.
SHARED_CHANGE_DAYS = 2


def shared_change(api: dict[str, Any], ctl: dict[str, Any]) -> bool:
    """Both arms' alarms are one change (of the workload or the harness): the same
    direction, change days at most :data:`SHARED_CHANGE_DAYS` apart. Otherwise they are two
    events (e.g. the control's p99 settling after a slow first day, the API's rising on day
    15), and the API arm's is judged on its own against the control."""
    a, c = api.get("change_day"), ctl.get("change_day")
    if a is None or c is None:
        return True  # no day to tell them apart: both changed
    return api.get("direction") == ctl.get("direction") and abs(a - c) <= SHARED_CHANGE_DAYS


def _attribute(metric: str, days: np.ndarray, xa: np.ndarray, xc: np.ndarray,
               api: dict[str, Any], ctl: dict[str, Any], cfg: DriftConfig) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {"metric": metric, "split_day": None, "api_change": None,
                           "control_change": None, "difference": None, "ci": [None, None],
                           "ci_method": "Welch t over days of the paired daily difference "
                                        "(API - control)", "kind": "none"}  # fmt: skip
    split = api["change_day"] if api["alarm"] else ctl["change_day"] if ctl["alarm"] else None
    if split is None:
        if api["alarm"] or ctl["alarm"]:
            out["kind"] = "workload or harness drift" if api["alarm"] and ctl["alarm"] else (
                "inconclusive" if api["alarm"] else "control drift")  # fmt: skip
        return out
    after = days >= split

    def change(x: np.ndarray) -> float | None:
        return welch(x[~after], x[after], cfg.confidence)[0]

    diff = xa - xc
    d, ci = welch(diff[~after], diff[after], cfg.confidence)
    out.update({"split_day": int(split), "api_change": change(xa), "control_change": change(xc),
                "difference": d, "ci": ci})  # fmt: skip
    excludes0 = ci[0] is not None and (ci[0] > 0 or ci[1] < 0)
    if api["alarm"] and ctl["alarm"] and shared_change(api, ctl):
        out["kind"] = "workload or harness drift"
    elif api["alarm"]:
        out["kind"] = "provider drift" if excludes0 else "inconclusive"
    else:
        out["kind"] = "control drift"
    return out


def plotted(section: dict[str, Any]) -> list[dict[str, Any]]:
    """The series entries that alarmed, with a change day (for marking plots)."""
    return [s for s in section.get("series", []) if s.get("alarm") and s.get("change_day")]
