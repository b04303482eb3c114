"""One process-wide clock: precise monotonic gaps, reported as UTC nanoseconds.

Every timestamp the clients record is ``time.perf_counter_ns()`` (monotonic, sub-microsecond)
translated to wall-clock UTC through a single ``time.time_ns()`` anchor taken when this module
is imported. Gaps between two timestamps are therefore exact perf-counter differences, never
disturbed by NTP steps, while absolute values stay comparable across processes to within the
wall clock's accuracy.

The load runner should take ``t_scheduled`` from :func:`now_ns` (or convert its own perf
readings with :func:`wall_ns`) so that ``queue_delay_s = t_sent - t_scheduled`` compares
readings of the same clock.
"""

from __future__ import annotations

import time

_perf_ns = time.perf_counter_ns
_BASE_WALL_NS: int = time.time_ns()
_BASE_PERF_NS: int = _perf_ns()
_OFFSET_NS: int = _BASE_WALL_NS - _BASE_PERF_NS


def perf_ns() -> int:
    """The raw monotonic reading (``time.perf_counter_ns``), for hot paths."""
    return _perf_ns()


def wall_ns(perf: int) -> int:
    """Convert a :func:`perf_ns` reading to UTC nanoseconds since the epoch."""
    return perf + _OFFSET_NS


def perf_from_wall(wall: int) -> int:
    """Convert UTC nanoseconds (from :func:`now_ns`) back to this process's perf counter."""
    return wall - _OFFSET_NS


def now_ns() -> int:
    """The current time as UTC nanoseconds on the anchored clock."""
    return _perf_ns() + _OFFSET_NS
