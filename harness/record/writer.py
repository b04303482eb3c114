"""Buffered, crash-safe Parquet part writer.

Rows are buffered in memory and flushed to a new part file at least every
``flush_interval_s`` seconds (or every ``flush_rows`` rows). Each flush writes a
hidden temporary file, fsyncs it and renames it into place atomically, so a reader never
sees a half-written part and a SIGKILL loses at most the rows of the last interval.
Parts are named ``<prefix>-part-<seq>.parquet``: ``w0`` for a local run; in a distributed run
the master writes one prefix per worker, ``w<index>``, from the rows the workers send it
(:mod:`harness.record.shipping`). A month-long canary's :class:`RequestWriter` partitions its
parts by experiment-clock day and arm and compacts each finished day into one file
(:mod:`harness.record.compact`).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq

from harness import redaction
from harness.canary.clock import ExperimentClock
from harness.record.compact import (
    PART_RE,
    CompactionBusy,
    compact_partition,
    day_dir_name,
    day_of_dir,
    max_part_seq,
    partition_dirs,
    recover,
)
from harness.record.schema import (
    METRICS_SCHEMA,
    REQUEST_COLUMNS,
    REQUEST_SCHEMA,
    RequestRecord,
)

log = logging.getLogger(__name__)


def warm_up_parquet() -> None:
    """Pay pyarrow's one-off Parquet/zstd initialisation (~0.4 s) before traffic starts."""
    table = pa.table({"x": pa.array([1], pa.int64())})
    pq.write_table(table, pa.BufferOutputStream(), compression="zstd")


class PartWriter:
    """Append rows (dicts keyed by schema column) and flush them to Parquet part files.

    Not thread-safe: add rows and call :meth:`take` from one thread (or one gevent hub);
    :meth:`write_batch` may run elsewhere.

    ``text_columns`` (free text a server sent back) lose every registered secret value
    (:func:`harness.redaction.redact_values`) when written; nothing is done while no secret
    is registered in the process.
    """

    text_columns: tuple[str, ...] = ()
    #: :meth:`write_batch` does file I/O (fsync): owners run it off the event loop.
    blocking_io = True

    def __init__(
        self,
        directory: Path,
        schema: pa.Schema,
        *,
        prefix: str = "w0",
        flush_interval_s: float = 2.0,
        flush_rows: int = 5000,
        clock: Callable[[], float] = time.monotonic,
        auto_flush: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.prefix = prefix
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self._clock = clock
        self._buffer: list[dict[str, Any]] = []
        self.auto_flush = auto_flush  # False: the owner flushes (e.g. off the event loop)
        self._last_flush = clock()
        self._seq = self._next_free_seq()
        self.rows_written = 0
        self.parts_written = 0
        self._closed = False

    def _next_free_seq(self) -> int:
        """Continue numbering after every part this prefix ever wrote, anywhere under the
        folder (day partitions too), including parts a compaction merged and deleted: a
        resumed run must never reuse a part's name (:func:`harness.record.compact.max_part_seq`).
        """
        return max_part_seq(self.directory, self.prefix) + 1

    def add(self, row: dict[str, Any]) -> None:
        if self._closed:
            raise RuntimeError(f"writer for {self.directory} is closed")
        self._buffer.append(row)
        if self.auto_flush and len(self._buffer) >= self.flush_rows:
            self.flush()

    def extend(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.add(row)

    def due(self) -> bool:
        """True when buffered rows should be flushed (interval passed or too many rows)."""
        return bool(self._buffer) and (
            len(self._buffer) >= self.flush_rows
            or self._clock() - self._last_flush >= self.flush_interval_s
        )

    def maybe_flush(self) -> bool:
        """Flush if the interval has passed; call this from a periodic timer."""
        if self.due():
            self.flush()
            return True
        return False

    def take(self) -> tuple[list[dict[str, Any]], int] | None:
        """Detach the buffered rows and reserve their part number (cheap; no I/O).

        Pair with :meth:`write_batch`, which may then run in another thread, so a slow disk
        (fsync) never stalls the event loop that keeps sending requests.
        """
        self._last_flush = self._clock()
        if not self._buffer:
            return None
        rows, self._buffer = self._buffer, []
        seq, self._seq = self._seq, self._seq + 1
        return rows, seq

    def requeue(self, rows: list[dict[str, Any]]) -> None:
        """Put rows of a failed :meth:`write_batch` back in front of the buffer."""
        self._buffer[:0] = rows

    def write_batch(self, rows: list[dict[str, Any]], seq: int) -> Path:
        """Write one part file atomically: temporary file, fsync, rename."""
        return self._write_part(rows, self.directory, seq)

    def _write_part(self, rows: list[dict[str, Any]], directory: Path, seq: int) -> Path:
        cols = {name: [r.get(name) for r in rows] for name in self.schema.names}
        if self.text_columns and redaction.active():
            scrub = redaction.redact_values
            for name in self.text_columns:
                cols[name] = [scrub(v) if v else v for v in cols[name]]
        table = pa.Table.from_pydict(cols, schema=self.schema)
        final = directory / f"{self.prefix}-part-{seq:06d}.parquet"
        tmp = directory / f".{final.name}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        self.rows_written += len(rows)
        self.parts_written += 1
        return final

    def flush(self) -> Path | None:
        batch = self.take()
        return None if batch is None else self.write_batch(*batch)

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True

    @property
    def pending(self) -> int:
        return len(self._buffer)


#: Default compaction grace: flush intervals after rows of a later day were first written.
COMPACT_GRACE_FLUSHES = 3
#: A partition with this many uncompacted parts is compacted even while its day runs, so a
#: real-time day (a part every flush: 43,200 a day) never piles up files, and no compaction
#: reads more than this many parts (plus the previous generation) at once.
COMPACT_MAX_PARTS = 64


@dataclass
class _Pending:
    """A partition with parts not yet compacted (this writer's prefix)."""

    since: float  # when the first of them was written (writer clock)
    parts: int  # how many
    retry_at: float = 0.0  # after a failed compaction: not before


def _arm_dir(arm: Any) -> str:
    """``arm=NAME``: arm names are simple names (validated); anything else is %-escaped."""
    name = str(arm)
    if not _SIMPLE.match(name):
        name = quote(name, safe="").replace(".", "%2E").replace("_", "%5F")
    return f"arm={name}"


_SIMPLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RequestWriter(PartWriter):
    """A :class:`PartWriter` for :class:`RequestRecord` rows into ``RUN_DIR/requests``.

    **Day partitions** (month-long canaries: ``partition_by_day``, implied by a ``day_clock``).
    The clock's origin is only known once the run's t0 is fixed, so a writer built with
    ``partition_by_day=True`` writes flat parts until :meth:`set_day_clock` gives it (the
    engine calls it in ``set_t0``, the master's collector at t0; no row is recorded before).
    Each batch is then split by experiment-clock day and arm, and written to
    ``requests/day=DDD/arm=ARM/<prefix>-part-<seq>.parquet``: the day of the request, its
    ``t_arrival`` on the experiment clock (every attempt of a request in one partition; else
    ``t_virtual``, else ``t_scheduled`` on the clock; a row with none, or before the
    origin, goes to day 0). One batch's files share its part number (they are
    in different folders); numbers continue after every part the prefix ever wrote.

    **Compaction** runs inside :meth:`write_batch` (owners run it off the event loop): day
    ``D`` of an arm is merged into one file (:func:`harness.record.compact.compact_partition`)
    once rows of a later day have been written and ``compact_grace_s`` (default three flush
    intervals) has passed, so late rows of ``D`` (a slow request scheduled at 23:59) land
    first; also, while the day runs, whenever ``compact_max_parts`` parts piled up (a day in
    real time), so a compaction never reads more than that many parts. A part written into a day already compacted (a row later still) makes that day
    due again, ``compact_grace_s`` after it, and is merged into the next generation.
    :meth:`close` compacts every partition still holding parts: a run ends with one file per
    day, arm and prefix. Partitions of this prefix left uncompacted by a killed earlier
    segment are found on the first write and compacted the same way. A failed compaction
    is logged and counted (``compaction_errors``) and never fails the write: the parts are
    intact and the next attempt merges them.
    """

    #: What a server sent back may echo a key (an error quoting the Authorization header).
    text_columns = ("output_text", "error_message")

    def __init__(
        self,
        run_dir: Path,
        *,
        day_clock: ExperimentClock | None = None,
        partition_by_day: bool | None = None,
        compact_grace_s: float | None = None,
        compact_max_parts: int = COMPACT_MAX_PARTS,
        **kwargs: Any,
    ) -> None:
        super().__init__(Path(run_dir) / "requests", REQUEST_SCHEMA, **kwargs)
        #: Whether a day clock partitions (None: whether one is given here).
        self.partition_by_day = (
            day_clock is not None if partition_by_day is None else partition_by_day
        )
        self.day_clock: ExperimentClock | None = None
        self.compact_grace_s = (
            float(compact_grace_s)
            if compact_grace_s is not None
            else COMPACT_GRACE_FLUSHES * self.flush_interval_s
        )
        self.compact_max_parts = max(2, int(compact_max_parts))
        self._started = False  # partitioned: recovery and leftover scan done
        self._dirty: dict[tuple[int, str], _Pending] = {}  # (day, arm folder) -> its parts
        self._day_reached: dict[int, float] = {}  # day -> when its first rows were written
        self._max_day = -1
        self.compactions = 0  # compacted files written
        self.compacted_files = 0  # files they merged
        self.compaction_errors = 0
        if day_clock is not None:
            self.set_day_clock(day_clock)

    def set_day_clock(self, clock: ExperimentClock | None) -> None:
        """The experiment clock, once the run's t0 is fixed: with ``partition_by_day``, the
        batches written from now on are split by its days (otherwise it is ignored).

        Cheap (no I/O): call it on the event loop.
        """
        self.day_clock = clock if self.partition_by_day else None

    def add_record(self, record: RequestRecord) -> None:
        self.add({name: getattr(record, name) for name in REQUEST_COLUMNS})

    def add_records(self, records: Iterable[RequestRecord]) -> None:
        for r in records:
            self.add_record(r)

    # -- partitioned writes --------------------------------------------------------------

    def _folder(self, key: tuple[int, str]) -> Path:
        """``requests/day=DDD/arm=ARM`` of a partition key ``(day, arm folder name)``."""
        return self.directory / day_dir_name(key[0]) / key[1]

    def _split(
        self, rows: list[dict[str, Any]], clock: ExperimentClock
    ) -> dict[tuple[int, str], list[dict[str, Any]]]:
        origin = clock.origin_ns
        day_ns = int(round(clock.day_s * 1e9))
        groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for r in rows:
            # the request's day: its arrival on the experiment clock, so every attempt (a
            # retry, a router's second leg) lands in its request's partition
            t = r.get("t_arrival")
            if t is not None:
                t = clock.virtual_ns(int(t))
            else:
                t = r.get("t_virtual")
            if t is None:
                t = r.get("t_scheduled")
                t = clock.virtual_ns(int(t)) if t is not None else None
            day = max(0, (int(t) - origin) // day_ns) if t is not None else 0
            groups.setdefault((day, _arm_dir(r.get("arm"))), []).append(r)
        return groups

    def write_batch(self, rows: list[dict[str, Any]], seq: int) -> Path:
        """Write one batch: one part file, or with a day clock one per (day, arm).

        If writing a partitioned batch fails midway, ``rows`` is left holding only the rows
        not written (the caller requeues that same list), so a retry never duplicates one.
        """
        clock = self.day_clock
        if clock is None:
            return self._write_part(rows, self.directory, seq)
        if not self._started:
            self._start_partitioned()
        groups = self._split(rows, clock)
        first: Path | None = None
        written: set[tuple[int, str]] = set()
        try:
            for key, group in groups.items():
                folder = self._folder(key)
                folder.mkdir(parents=True, exist_ok=True)
                path = self._write_part(group, folder, seq)
                written.add(key)
                first = first or path
                now = self._clock()
                self._dirty.setdefault(key, _Pending(now, 0)).parts += 1
                if key[0] > self._max_day:
                    self._max_day = key[0]
                    self._day_reached.setdefault(key[0], now)
        except BaseException:
            rows[:] = [r for key, group in groups.items() if key not in written for r in group]
            raise
        self.compact_due()
        assert first is not None
        return first

    def _start_partitioned(self) -> None:
        """First partitioned write: clean this prefix's leftovers, find uncompacted days."""
        self._started = True
        try:
            recover(self.directory, prefix=self.prefix, stale_temp_s=0.0)
        except OSError as exc:
            log.warning("recovering %s before compaction failed: %s", self.directory, exc)
        now = self._clock()
        for folder in partition_dirs(self.directory):
            day = day_of_dir(folder, self.directory)
            # our layout only: requests/day=DDD/arm=ARM/
            if day is None or folder.parent != self.directory / day_dir_name(day):
                continue
            n_parts = sum(
                1
                for n in os.listdir(folder)
                if (m := PART_RE.match(n)) is not None and m["prefix"] == self.prefix
            )
            if n_parts:
                self._dirty.setdefault((day, folder.name), _Pending(now, 0)).parts += n_parts

    def _boundary(self, day: int) -> float | None:
        """When rows of a day after ``day`` were first written (None: not yet)."""
        later = [t for d, t in self._day_reached.items() if d > day]
        return min(later) if later else None

    def compact_due(self, *, final: bool = False) -> int:
        """Compact the partitions that are due (``final``: every one still holding parts);
        returns how many compacted files were written. Never raises."""
        if not self._dirty:
            return 0
        now = self._clock()
        done = 0
        for key, pending in sorted(self._dirty.items()):
            if not final:
                if now < pending.retry_at:
                    continue
                boundary = self._boundary(key[0])
                day_over = (
                    boundary is not None
                    and now >= max(boundary, pending.since) + self.compact_grace_s
                )
                if not day_over and pending.parts < self.compact_max_parts:
                    continue
            folder = self._folder(key)
            try:
                result = compact_partition(folder, self.prefix, wait_s=10.0 if final else 0.0)
            except CompactionBusy:
                continue  # another compactor (e.g. `harness report`) has it: retry later
            except Exception:
                self.compaction_errors += 1
                pending.retry_at = now + max(self.compact_grace_s, 1.0)
                log.exception("compacting %s (prefix %s) failed; will retry", folder, self.prefix)
                continue
            del self._dirty[key]
            if result is not None:
                done += 1
                self.compactions += 1
                self.compacted_files += len(result.sources)
        return done

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        if self.day_clock is not None:
            if not self._started:
                self._start_partitioned()
            self.compact_due(final=True)


class MetricsWriter(PartWriter):
    """A :class:`PartWriter` for scraped ``/metrics`` samples into ``RUN_DIR/metrics``."""

    def __init__(self, run_dir: Path, **kwargs: Any) -> None:
        super().__init__(Path(run_dir) / "metrics", METRICS_SCHEMA, **kwargs)
