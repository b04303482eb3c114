"""Load shapes: a rate multiplier ``m(t)`` over the experiment clock, for non-homogeneous arrivals.

The offered rate at experiment-clock time ``t`` is ``load.rate * m(t)``. Arrival processes
(:mod:`harness.load.arrivals`) draw unit-rate event times and map them through the inverse of
the cumulative multiplier ``M(t) = integral_0^t m(s) ds`` (time rescaling), so a Poisson
process stays Poisson with the shaped rate and a gamma process keeps its burstiness in
operational time. Each shape is a small class with three vectorised functions:
``multiplier`` (m), ``cumulative`` (M) and ``inverse`` (the smallest t with M(t) >= u; ``inf``
where the rate stays zero forever).

Shapes (``load.shape``):

- ``none``: m(t) = 1.
- ``ramp``: m rises linearly from ``ramp_from`` at t = 0 to 1 at the end of the run
  (``duration_s``), and stays 1 after; ``ramp_from > 1`` ramps down.
- ``steps``: piecewise constant, ``steps: [[t_s, mult], ...]``: from ``t_s`` on, the rate is
  ``mult * load.rate`` (``mult`` is a multiplier of ``rate``: with ``rate: 1`` the values are
  requests/s). Before the first step the multiplier is 1.
- ``diurnal``: a day-like cosine, trough at t = 0 (midnight) and peak at half the period:
  ``m(t) = f + (1 - f) * (1 - cos(2 pi t / P)) / 2`` with ``f = diurnal_min_frac`` and
  ``P = diurnal_period_s``; the mean multiplier is ``(1 + f) / 2``. With
  ``weekend_frac != 1`` a week is laid over it (``weekly``): the last two days of every
  seven-day week (the experiment starts on a Monday at midnight) carry ``weekend_frac`` times the
  weekday rate; ``diurnal_period_s`` must then divide the week.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from harness.config import ConfigError, LoadConfig


class RateShape(ABC):
    """A non-negative rate multiplier m(t), its integral M(t) and M's inverse."""

    @abstractmethod
    def multiplier(self, t: np.ndarray) -> np.ndarray:
        """m(t) for experiment-clock seconds ``t``."""

    @abstractmethod
    def cumulative(self, t: np.ndarray) -> np.ndarray:
        """M(t) = integral of m from 0 to ``t``."""

    @abstractmethod
    def inverse(self, u: np.ndarray) -> np.ndarray:
        """Smallest t with M(t) >= u (``inf`` when M never reaches u)."""


class FlatShape(RateShape):
    """m(t) = 1: the base rate throughout."""

    def multiplier(self, t: np.ndarray) -> np.ndarray:
        return np.ones_like(np.asarray(t, dtype=float))

    def cumulative(self, t: np.ndarray) -> np.ndarray:
        return np.asarray(t, dtype=float)

    def inverse(self, u: np.ndarray) -> np.ndarray:
        return np.asarray(u, dtype=float)


class RampShape(RateShape):
    """m rises linearly from ``start`` at t = 0 to 1 at ``over_s``, then stays 1."""

    def __init__(self, start: float, over_s: float) -> None:
        self.start = float(start)
        self.over_s = float(over_s)
        self._m_end = self.over_s * (1.0 + self.start) / 2.0  # M(over_s)

    def multiplier(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        frac = np.clip(t / self.over_s, 0.0, 1.0)
        return self.start + (1.0 - self.start) * frac

    def cumulative(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        tc = np.minimum(t, self.over_s)
        inside = self.start * tc + (1.0 - self.start) * tc * tc / (2.0 * self.over_s)
        return inside + np.maximum(t - self.over_s, 0.0)

    def inverse(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=float)
        uc = np.minimum(u, self._m_end)
        # root of (1 - s) t^2 / (2R) + s t - u = 0, in the cancellation-free form 2u / (s + sqrt(.))
        disc = np.sqrt(np.maximum(self.start**2 + 2.0 * (1.0 - self.start) * uc / self.over_s, 0))
        denom = self.start + disc
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(uc > 0, 2.0 * uc / np.where(denom > 0, denom, 1.0), 0.0)
        return np.where(
            u > self._m_end, self.over_s + (u - self._m_end), np.minimum(t, self.over_s)
        )


class StepsShape(RateShape):
    """Piecewise-constant multiplier: ``mults[j]`` from ``times[j]`` on (1 before the first)."""

    def __init__(self, times: list[float], mults: list[float]) -> None:
        b, m = list(times), list(mults)
        if not b or b[0] > 0:
            b, m = [0.0, *b], [1.0, *m]
        self.breaks = np.asarray(b, dtype=float)
        self.mults = np.asarray(m, dtype=float)
        seg = np.diff(self.breaks) * self.mults[:-1]
        self.cum = np.concatenate([[0.0], np.cumsum(seg)])  # M at each break

    def multiplier(self, t: np.ndarray) -> np.ndarray:
        j = np.searchsorted(self.breaks, np.asarray(t, dtype=float), side="right") - 1
        return self.mults[np.maximum(j, 0)]

    def cumulative(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        j = np.maximum(np.searchsorted(self.breaks, t, side="right") - 1, 0)
        return self.cum[j] + (t - self.breaks[j]) * self.mults[j]

    def inverse(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=float)
        # side="right" skips zero-rate segments (equal M at their ends) to the last of them
        j = np.maximum(np.searchsorted(self.cum, u, side="right") - 1, 0)
        m = self.mults[j]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = self.breaks[j] + (u - self.cum[j]) / np.where(m > 0, m, 1.0)
        stuck = (m == 0) & (u > self.cum[j])  # a final zero-rate segment never reaches u
        return np.where(stuck, np.inf, np.where(m > 0, t, self.breaks[j]))


class DiurnalShape(RateShape):
    """Cosine day: trough ``min_frac`` at t = 0, peak 1 at ``period_s / 2``."""

    _GRID = 2048  # table points per period for the initial guess of the inverse

    def __init__(self, period_s: float, min_frac: float) -> None:
        self.period_s = float(period_s)
        self.a = float(min_frac)
        self.b = (1.0 - self.a) / 2.0
        self.omega = 2.0 * math.pi / self.period_s
        self._per_period = (self.a + self.b) * self.period_s  # M(P)
        self._tgrid = np.linspace(0.0, self.period_s, self._GRID + 1)
        self._mgrid = self.cumulative(self._tgrid)

    def multiplier(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        return self.a + self.b * (1.0 - np.cos(self.omega * t))

    def cumulative(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        return (self.a + self.b) * t - (self.b / self.omega) * np.sin(self.omega * t)

    def inverse(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=float)
        q = np.floor(u / self._per_period)
        r = u - q * self._per_period  # M is periodic-plus-linear: solve within one period
        k = np.clip(np.searchsorted(self._mgrid, r, side="right") - 1, 0, self._GRID - 1)
        lo, hi = self._tgrid[k], self._tgrid[k + 1]
        t = np.interp(r, self._mgrid, self._tgrid)
        tol = 1e-12 * np.maximum(1.0, np.abs(r))
        for _ in range(60):  # safeguarded Newton inside the grid cell [lo, hi]
            f = self.cumulative(t) - r
            if np.all(np.abs(f) <= tol):
                break
            lo = np.where(f < 0, t, lo)
            hi = np.where(f > 0, t, hi)
            m = self.multiplier(t)
            with np.errstate(invalid="ignore", divide="ignore"):
                step = t - f / m
            t = np.where((m > 0) & (step > lo) & (step < hi), step, (lo + hi) / 2.0)
        return q * self.period_s + t


class WeeklyShape(RateShape):
    """A day shape times a weekly pattern: day ``k`` of each week (``day_s`` long) has weight
    ``weights[k]`` (> 0). The inner shape must repeat within a week (its period divides it), so
    ``M`` is periodic-plus-linear over the week and the inverse is solved within one day."""

    def __init__(self, inner: RateShape, day_s: float, weights: list[float]) -> None:
        self.inner = inner
        self.day_s = float(day_s)
        self.w = np.asarray(weights, dtype=float)
        self.week_s = self.day_s * len(self.w)
        edges = np.arange(len(self.w) + 1) * self.day_s
        self._d_edges = inner.cumulative(edges)  # inner M at each day start of week 0
        per_day = np.diff(self._d_edges) * self.w
        self._cum = np.concatenate([[0.0], np.cumsum(per_day)])  # M at each day start
        self._per_week = float(self._cum[-1])
        self._inner_week = float(self._d_edges[-1] - self._d_edges[0])

    def _day(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q = np.floor(t / self.week_s)
        r = t - q * self.week_s
        k = np.clip((r // self.day_s).astype(int), 0, len(self.w) - 1)
        return q, r, k

    def multiplier(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        _, _, k = self._day(t)
        return self.inner.multiplier(t) * self.w[k]

    def cumulative(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        q, r, k = self._day(t)
        within = self.inner.cumulative(r) - self._d_edges[k]
        return q * self._per_week + self._cum[k] + self.w[k] * within

    def inverse(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=float)
        q = np.floor(u / self._per_week)
        r = u - q * self._per_week
        k = np.clip(np.searchsorted(self._cum, r, side="right") - 1, 0, len(self.w) - 1)
        target = self._d_edges[k] + (r - self._cum[k]) / self.w[k]
        t = self.inner.inverse(target)
        return q * self.week_s + np.clip(t, k * self.day_s, (k + 1) * self.day_s)


WEEK_DAYS = 7
DAY_S = 86400.0


def _flat(load: LoadConfig, run_s: float) -> RateShape:
    return FlatShape()


def _ramp(load: LoadConfig, run_s: float) -> RateShape:
    if not (math.isfinite(load.ramp_from) and load.ramp_from >= 0):
        raise ConfigError(f"load.ramp_from: expected a number >= 0, got {load.ramp_from!r}")
    if not math.isfinite(run_s):
        raise ConfigError("load.shape=ramp: needs a finite load.duration_s to ramp over")
    return RampShape(load.ramp_from, run_s)


def _steps(load: LoadConfig, run_s: float) -> RateShape:
    if not load.steps:
        raise ConfigError("load.steps: shape=steps needs a list like [[0, 1.0], [60, 2.0]]")
    times, mults = [], []
    for k, step in enumerate(load.steps):
        vals = (
            None if isinstance(step, str | bytes) or not hasattr(step, "__iter__") else list(step)
        )
        try:
            if vals is None or len(vals) != 2:
                raise ValueError
            t, m = float(vals[0]), float(vals[1])
        except (TypeError, ValueError):
            raise ConfigError(
                f"load.steps[{k}]: expected [t_s, multiplier] numbers, got {step!r}"
            ) from None
        if not (math.isfinite(t) and t >= 0):
            raise ConfigError(f"load.steps[{k}]: time {vals[0]!r} must be a number >= 0")
        if times and t <= times[-1]:
            raise ConfigError(f"load.steps[{k}]: times must increase, {t:g} follows {times[-1]:g}")
        if not (math.isfinite(m) and m >= 0):
            raise ConfigError(f"load.steps[{k}]: multiplier {vals[1]!r} must be a number >= 0")
        times.append(t)
        mults.append(m)
    return StepsShape(times, mults)


def _diurnal(load: LoadConfig, run_s: float) -> RateShape:
    if not (math.isfinite(load.diurnal_period_s) and load.diurnal_period_s > 0):
        raise ConfigError(
            f"load.diurnal_period_s: expected a positive number, got {load.diurnal_period_s!r}"
        )
    if not 0.0 <= load.diurnal_min_frac <= 1.0:
        raise ConfigError(
            f"load.diurnal_min_frac: expected a fraction in [0, 1], got {load.diurnal_min_frac!r}"
        )
    day = DiurnalShape(load.diurnal_period_s, load.diurnal_min_frac)
    frac = load.weekend_frac
    if frac == 1.0:
        return day
    if not (math.isfinite(frac) and frac > 0):
        raise ConfigError(f"load.weekend_frac: expected a number > 0, got {frac!r}")
    week_s = WEEK_DAYS * DAY_S
    periods = week_s / load.diurnal_period_s
    if abs(periods - round(periods)) > 1e-9:
        raise ConfigError(
            f"load.diurnal_period_s: {load.diurnal_period_s:g} s does not divide the week "
            f"({week_s:g} s), needed with load.weekend_frac={frac:g}"
        )
    return WeeklyShape(day, DAY_S, [1.0] * 5 + [frac] * 2)


SHAPES: dict[str, Callable[[LoadConfig, float], RateShape]] = {
    "none": _flat,
    "ramp": _ramp,
    "steps": _steps,
    "diurnal": _diurnal,
}


def build_shape(load: LoadConfig, run_s: float) -> RateShape:
    """The shape ``load.shape`` names; ``run_s``: the run's length on the experiment clock."""
    maker = SHAPES.get(load.shape)
    if maker is None:
        raise ConfigError(f"load.shape: {load.shape!r} is not one of {', '.join(SHAPES)}")
    return maker(load, run_s)
