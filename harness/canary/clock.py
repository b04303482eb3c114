"""The experiment clock: where experiment time 0 is, how fast it runs, and its days.

A month-long canary runs on an experiment clock: ``t_virtual = origin + (t_wall - origin) *
time_scale`` (UTC ns). In real time (``time_scale`` 1) it is the wall clock; with simulator
targets an accelerated clock compresses the month (``time_scale`` 3600: a day in 24 s). The
origin is the first segment's start (``t0_ns``); a resumed run keeps it, so the schedule
continues from now and the time the harness was down is a gap on the same clock.

Day ``d`` of the experiment is ``[origin + d * day_s, origin + (d + 1) * day_s)`` on the
experiment clock. Every record carries ``t_virtual``, so its day is known without the wall
clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DAY_S = 86400.0


@dataclass(frozen=True)
class ExperimentClock:
    origin_ns: int  # experiment time 0 (UTC ns): the first segment's t0
    time_scale: float = 1.0  # experiment-clock seconds per wall second
    day_s: float = DAY_S  # length of an experiment-clock day, seconds

    def virtual_ns(self, wall_ns: int) -> int:
        """The experiment-clock time (UTC ns) of wall-clock time ``wall_ns``."""
        return self.origin_ns + int(round((wall_ns - self.origin_ns) * self.time_scale))

    def wall_ns(self, virtual_ns: int) -> int:
        """The wall-clock time (UTC ns) at which the experiment clock reads ``virtual_ns``."""
        return self.origin_ns + int(round((virtual_ns - self.origin_ns) / self.time_scale))

    def elapsed_s(self, virtual_ns: int) -> float:
        """Experiment-clock seconds since the origin."""
        return (virtual_ns - self.origin_ns) / 1e9

    def day_of(self, virtual_ns: int) -> int:
        """The experiment-clock day (0-based) of one ``t_virtual``."""
        return int((virtual_ns - self.origin_ns) // int(round(self.day_s * 1e9)))

    def days_of(self, virtual_ns: Any) -> np.ndarray:
        """Days of an array of ``t_virtual`` (int64 ns, or datetime64[ns]); -1 for NaT/null."""
        arr = np.asarray(virtual_ns)
        if np.issubdtype(arr.dtype, np.datetime64):
            nat = np.isnat(arr)
            ns = arr.astype("datetime64[ns]").astype(np.int64)
        else:
            ns = arr.astype(np.int64)
            nat = np.zeros(ns.shape, dtype=bool)
        days = (ns - self.origin_ns) // int(round(self.day_s * 1e9))
        return np.where(nat, -1, days)

    def day_start_ns(self, day: int) -> int:
        """Experiment-clock start (UTC ns) of day ``day``."""
        return self.origin_ns + int(round(day * self.day_s * 1e9))

    def to_dict(self) -> dict[str, Any]:
        return {"origin_ns": self.origin_ns, "time_scale": self.time_scale, "day_s": self.day_s}


def clock_from_manifest(manifest: dict[str, Any]) -> ExperimentClock | None:
    """The run's experiment clock: ``manifest.clock`` (month-long runs) or, for older runs,
    the load's ``t0_ns`` and ``config.load.time_scale``; None when the run never started."""
    clock = manifest.get("clock")
    if isinstance(clock, dict) and clock.get("origin_ns") is not None:
        return ExperimentClock(
            origin_ns=int(clock["origin_ns"]),
            time_scale=float(clock.get("time_scale") or 1.0),
            day_s=float(clock.get("day_s") or DAY_S),
        )
    t0 = manifest.get("t0_ns")
    if t0 is None:
        return None
    config = manifest.get("config") or {}
    scale = float(((config.get("load") or {}).get("time_scale")) or 1.0)
    day_s = float(((config.get("canary") or {}).get("day_s")) or DAY_S)
    return ExperimentClock(origin_ns=int(t0), time_scale=scale, day_s=day_s)
