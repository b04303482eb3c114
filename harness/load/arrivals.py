"""Open-loop arrival processes and the run's send schedule (absolute offsets from the start).

Each arrival process is a small class with one job: say when the next requests are due.
Processes yield send offsets in seconds from the run start, in non-decreasing numpy blocks
(cheap: millions of offsets per second), seeded by ``(load.seed, stream)`` so every process
of a distributed run, and every rerun, computes the same schedule. A :class:`Schedule` cuts
the stream at ``load.duration_s`` and ``load.max_requests``. Senders sleep to each absolute
offset (never to a relative gap), so lateness never accumulates into a lower offered rate.

Processes (``load.arrival``):

- ``constant``: arrivals at ``k / rate`` for k = 0, 1, ... (the first at the start).
- ``poisson``: i.i.d. exponential gaps with mean ``1 / rate`` (CV 1).
- ``gamma``: i.i.d. gamma gaps with shape ``burstiness`` and scale ``1 / (rate * burstiness)``:
  mean ``1 / rate``, CV ``1 / sqrt(burstiness)``; 1 is Poisson, < 1 burstier, > 1 smoother
  (vLLM's ``--burstiness``).
- ``trace``: replay timestamps from ``load.trace_path`` (see :func:`read_trace`).

Shapes (:mod:`harness.load.shapes`) modulate the rate by time rescaling: the renewal
process runs at unit rate in operational time ``tau`` and arrival ``k`` is sent at the
``t`` where the cumulative shaped rate reaches ``tau_k``, i.e. ``Lambda(t) = tau_k`` with
``Lambda(t) = rate * M(t * s) / s``, ``M`` the shape's cumulative multiplier and ``s`` =
``load.time_scale``. A Poisson process stays Poisson with rate ``rate * m(t * s)``.

Clocks: offsets, ``duration_s``, ``warmup_s``, ``cooldown_s`` and ``rate`` are wall-clock
(what the targets see). Shape times (``steps``, ``diurnal_period_s``) and trace timestamps
are on the experiment clock, ``t_virtual = offset * time_scale``: with ``time_scale: 720`` a
24 h diurnal period passes in 2 wall minutes and a trace replays 720x faster.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from harness.config import ConfigError, LoadConfig
from harness.load.shapes import FlatShape, RateShape, build_shape

FIRST_BLOCK = 1024  # small first block: short runs stay cheap
BLOCK = 65536
_SALT = 0xA7714A1
TRACE_COLUMNS = ("t", "timestamp", "time", "offset_s")


class ArrivalError(ConfigError):
    """An arrival trace that cannot be replayed: the message names the file and line."""


class ArrivalProcess(ABC):
    """When is the next request due? Yields send offsets (s) in non-decreasing blocks."""

    @abstractmethod
    def blocks(self) -> Iterator[np.ndarray]:
        """Offsets in seconds from the run start, block by block (possibly without end)."""

    @abstractmethod
    def expected_count(self, horizon_s: float) -> float:
        """Expected number of arrivals with offset < ``horizon_s``."""


class RenewalArrivals(ArrivalProcess):
    """A renewal process (i.i.d. gaps of mean 1 in operational time) at ``rate`` and shaped."""

    def __init__(
        self, rate: float, *, shape: RateShape, time_scale: float, seed: int, stream: int
    ) -> None:
        self.rate = float(rate)
        self.shape = shape
        self.time_scale = float(time_scale)
        self.seed_key = [int(seed) % 2**64, _SALT, int(stream) % 2**64]

    @abstractmethod
    def unit_gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` i.i.d. gaps with mean 1 (unit rate)."""

    def operational_blocks(self) -> Iterator[np.ndarray]:
        """Unit-rate event times tau_1 < tau_2 < ..., block by block."""
        rng = np.random.default_rng(self.seed_key)
        carry, n = 0.0, FIRST_BLOCK
        while True:
            tau = carry + np.cumsum(self.unit_gaps(rng, n))
            carry = float(tau[-1])
            yield tau
            n = BLOCK

    def to_offsets(self, tau: np.ndarray) -> np.ndarray:
        """Wall offsets of operational times: solve ``rate * M(t * s) / s = tau`` for t."""
        if isinstance(self.shape, FlatShape):
            return tau / self.rate
        s = self.time_scale
        return self.shape.inverse(tau * (s / self.rate)) / s

    def blocks(self) -> Iterator[np.ndarray]:
        for tau in self.operational_blocks():
            t = self.to_offsets(tau)
            if not np.isfinite(t[-1]):  # the shaped rate dropped to zero for good
                yield t[np.isfinite(t)]
                return
            yield t

    def cumulative_rate(self, horizon_s: float) -> float:
        """Lambda(horizon) = expected arrivals in [0, horizon)."""
        s = self.time_scale
        return self.rate * float(self.shape.cumulative(np.array(horizon_s * s))) / s

    def expected_count(self, horizon_s: float) -> float:
        return self.cumulative_rate(horizon_s)


class ConstantArrivals(RenewalArrivals):
    """Evenly spaced: arrival k at operational time k (wall ``k / rate`` unshaped)."""

    def unit_gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.ones(n)

    def operational_blocks(self) -> Iterator[np.ndarray]:
        k, n = 0, FIRST_BLOCK
        while True:  # exact integers: no drift from summing gaps
            yield np.arange(k, k + n, dtype=float)
            k, n = k + n, BLOCK

    def expected_count(self, horizon_s: float) -> float:
        lam = self.cumulative_rate(horizon_s)  # arrivals at tau = 0, 1, ... below lam
        return float(math.ceil(lam)) if horizon_s > 0 else 0.0


class PoissonArrivals(RenewalArrivals):
    """Exponential gaps: a Poisson process (CV of gaps 1)."""

    def unit_gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_exponential(n)


class GammaArrivals(RenewalArrivals):
    """Gamma gaps with shape ``burstiness`` and mean 1: CV ``1 / sqrt(burstiness)``."""

    def __init__(self, rate: float, burstiness: float, **kw: object) -> None:
        super().__init__(rate, **kw)  # type: ignore[arg-type]
        self.burstiness = float(burstiness)

    def unit_gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_gamma(self.burstiness, n) / self.burstiness


class TraceArrivals(ArrivalProcess):
    """Replays recorded timestamps (experiment clock, relative to the first) at ``time_scale``."""

    def __init__(self, times: np.ndarray, *, time_scale: float = 1.0) -> None:
        self.offsets = np.asarray(times, dtype=float) / float(time_scale)

    def blocks(self) -> Iterator[np.ndarray]:
        for k in range(0, len(self.offsets), BLOCK):
            yield self.offsets[k : k + BLOCK]

    def expected_count(self, horizon_s: float) -> float:
        return float(np.searchsorted(self.offsets, horizon_s, side="left"))


def read_trace(path: Path) -> np.ndarray:
    """Timestamps (seconds) from a trace file, relative to the first one.

    - ``.jsonl`` / ``.ndjson``: one object per line with a number ``"t"``.
    - anything else (``.csv``, ``.txt``): one number per line, or CSV with a header naming a
      column ``t``, ``timestamp``, ``time`` or ``offset_s`` (other columns are ignored).

    Blank lines and lines starting with ``#`` are skipped. Timestamps must be finite and
    non-decreasing; any other problem raises :class:`ArrivalError` naming ``file:line``.
    """
    if not path.is_file():
        raise ArrivalError(f"{path}: no such trace file")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArrivalError(f"{path}: cannot read trace: {exc}") from exc
    is_json = path.suffix.lower() in (".jsonl", ".ndjson")
    values: list[float] = []
    column: int | None = None
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        if is_json:
            value = _json_t(line, where)
        else:
            fields = [f.strip() for f in line.split(",")]
            if column is None:
                column = _header_column(fields, where)
                if column >= 0:
                    continue  # this line was the header
                column = 0
            if column >= len(fields):
                raise ArrivalError(f"{where}: expected at least {column + 1} columns, got {line!r}")
            try:
                value = float(fields[column])
            except ValueError:
                raise ArrivalError(
                    f"{where}: expected a timestamp in seconds, got {fields[column]!r}"
                ) from None
        if not math.isfinite(value):
            raise ArrivalError(f"{where}: timestamp {value!r} is not a finite number")
        if values and value < values[-1]:
            raise ArrivalError(
                f"{where}: timestamps must not decrease: {value:g} after {values[-1]:g}"
            )
        values.append(value)
    if not values:
        raise ArrivalError(f"{path}: empty trace (no timestamps)")
    arr = np.asarray(values, dtype=float)
    return arr - arr[0]


def _json_t(line: str, where: str) -> float:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ArrivalError(f"{where}: malformed JSON at column {exc.colno}: {exc.msg}") from exc
    if not isinstance(obj, dict) or "t" not in obj:
        raise ArrivalError(f'{where}: expected an object with a number "t", got {line[:60]!r}')
    t = obj["t"]
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise ArrivalError(f'{where}: "t" must be a number of seconds, got {t!r}')
    return float(t)


def _header_column(fields: list[str], where: str) -> int:
    """Index of the timestamp column if ``fields`` is a header row, -1 if it is data."""
    try:
        float(fields[0])
        return -1
    except ValueError:
        pass
    names = [f.lower() for f in fields]
    for name in TRACE_COLUMNS:
        if name in names:
            return names.index(name)
    raise ArrivalError(
        f"{where}: expected a number or a CSV header with a column named one of "
        f"{', '.join(TRACE_COLUMNS)}; got {','.join(fields)!r}"
    )


class Schedule:
    """A run's arrivals: a process cut at ``horizon_s`` and after ``max_requests`` arrivals."""

    def __init__(
        self, process: ArrivalProcess, *, horizon_s: float, max_requests: int | None
    ) -> None:
        self.process = process
        self.horizon_s = float(horizon_s)
        self.max_requests = max_requests

    def blocks(self) -> Iterator[np.ndarray]:
        """Offsets in non-decreasing numpy blocks, already cut at the end of the run."""
        left = math.inf if self.max_requests is None else self.max_requests
        if left <= 0:
            return
        for block in self.process.blocks():
            cut = int(np.searchsorted(block, self.horizon_s, side="left"))
            done = cut < len(block)
            if cut >= left:
                cut, done = int(left), True
            if cut:
                yield block[:cut]
            left -= cut
            if done:
                return

    def offsets(self) -> Iterator[float]:
        """Absolute send offsets in seconds from the run start, non-decreasing."""
        for block in self.blocks():
            yield from block.tolist()

    def for_worker(self, worker_index: int, workers: int) -> Iterator[tuple[int, float]]:
        """``(arrival index, offset)`` of the arrivals with ``index % workers == worker_index``."""
        if not 0 <= worker_index < workers:
            raise ValueError(f"worker_index {worker_index} not in [0, {workers})")
        base = 0
        for block in self.blocks():
            first = (worker_index - base) % workers
            idx = np.arange(base + first, base + len(block), workers)
            yield from zip(idx.tolist(), block[first::workers].tolist(), strict=True)
            base += len(block)

    def expected_count(self) -> float | None:
        """Expected number of arrivals in the run (exact for constant and trace)."""
        if math.isinf(self.horizon_s):
            if self.max_requests is not None:
                return float(self.max_requests)
            if isinstance(self.process, TraceArrivals):
                return float(len(self.process.offsets))
            return None
        n = self.process.expected_count(self.horizon_s)
        return n if self.max_requests is None else min(n, float(self.max_requests))


def _renewal_kw(load: LoadConfig, root: Path, stream: int) -> dict:
    if not (math.isfinite(load.rate) and load.rate > 0):
        raise ConfigError(f"load.rate: expected a positive number of requests/s, got {load.rate!r}")
    run_virtual = load.duration_s * load.time_scale
    return {
        "shape": build_shape(load, run_virtual),
        "time_scale": load.time_scale,
        "seed": load.seed,
        "stream": stream,
    }


def _constant(load: LoadConfig, root: Path, stream: int) -> ArrivalProcess:
    return ConstantArrivals(load.rate, **_renewal_kw(load, root, stream))


def _poisson(load: LoadConfig, root: Path, stream: int) -> ArrivalProcess:
    return PoissonArrivals(load.rate, **_renewal_kw(load, root, stream))


def _gamma(load: LoadConfig, root: Path, stream: int) -> ArrivalProcess:
    if not (math.isfinite(load.burstiness) and load.burstiness > 0):
        raise ConfigError(f"load.burstiness: expected a positive number, got {load.burstiness!r}")
    return GammaArrivals(load.rate, load.burstiness, **_renewal_kw(load, root, stream))


def _trace(load: LoadConfig, root: Path, stream: int) -> ArrivalProcess:
    if not load.trace_path:
        raise ConfigError("load.trace_path: required for arrival=trace")
    if load.shape != "none":
        raise ConfigError(f"load.shape: {load.shape!r} cannot reshape a trace; use shape=none")
    path = Path(load.trace_path).expanduser()
    if not path.is_absolute():
        path = root / path
    return TraceArrivals(read_trace(path), time_scale=load.time_scale)


ARRIVALS: dict[str, Callable[[LoadConfig, Path, int], ArrivalProcess]] = {
    "constant": _constant,
    "poisson": _poisson,
    "gamma": _gamma,
    "trace": _trace,
}


def build_schedule(load: LoadConfig, root: Path, *, stream: int = 0) -> Schedule:
    """The run's open-loop schedule; ``stream`` picks an independent sub-seed (e.g. per arm).

    Deterministic in ``(load, stream)``: every process computes the same offsets.
    """
    maker = ARRIVALS.get(load.arrival)
    if maker is None:
        raise ConfigError(f"load.arrival: {load.arrival!r} is not one of {', '.join(ARRIVALS)}")
    if not (load.time_scale > 0 and math.isfinite(load.time_scale)):
        raise ConfigError(f"load.time_scale: expected a positive number, got {load.time_scale!r}")
    if not load.duration_s > 0:
        raise ConfigError(f"load.duration_s: expected a positive number, got {load.duration_s!r}")
    if load.max_requests is not None and load.max_requests < 0:
        raise ConfigError(f"load.max_requests: expected >= 0, got {load.max_requests!r}")
    if math.isinf(load.duration_s) and load.max_requests is None and load.arrival != "trace":
        raise ConfigError("load.duration_s: infinite duration needs load.max_requests")
    process = maker(load, Path(root), stream)
    return Schedule(process, horizon_s=load.duration_s, max_requests=load.max_requests)


def phase_of(offset: float, load: LoadConfig) -> str:
    """``warmup`` before ``warmup_s``, ``cooldown`` in the last ``cooldown_s``, else ``main``."""
    if offset < load.warmup_s:
        return "warmup"
    if load.cooldown_s > 0 and offset >= load.duration_s - load.cooldown_s:
        return "cooldown"
    return "main"
