"""Request rows over locust's worker -> master messages: distributed runs need no shared disk.

A locust worker (spawned by the master, or started on another machine) writes nothing to
disk. Its :class:`RowShipper` buffers the rows its engine records and sends them to the
master as ``harness_rows`` messages on the writer's cadence (``record.flush_interval_s`` /
``record.flush_rows``), so a worker killed mid-run loses at most the rows of one interval.
Each message is ``{"worker", "seq", "columns", "rows"}``: the rows as value lists in
``columns`` order (a third of the size of dicts; a worker on another schema version still
lines up by name), at most ``max_rows`` rows and about ``max_bytes`` bytes, so a flush with
long ``output_text`` becomes several messages. ``seq`` numbers a worker's messages 1, 2, 3...

The master's :class:`RowCollector` keeps one :class:`~harness.record.writer.RequestWriter` per
worker (prefix ``w<index>``: the part files a worker used to write itself), drops a message
whose ``seq`` it has already seen (a resend), counts messages that never arrived (a gap in
``seq``, or fewer than the worker says it sent), and remembers when each worker's last rows
came (the manifest of a run that lost a worker says so). With ``partition_by_day`` (a canary)
the writers split parts by experiment-clock day and arm once :meth:`RowCollector.set_day_clock`
gives the clock (at t0) and compact finished days inside ``write_batch``, so off the loop too. One worker's messages arrive in the
order sent (one ZeroMQ connection), so every row a worker sent before ``harness_done`` is in
the collector when the master handles that message.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gevent.lock

from harness import redaction
from harness.canary.clock import ExperimentClock
from harness.record.schema import REQUEST_COLUMNS, RequestRecord
from harness.record.writer import RequestWriter

log = logging.getLogger(__name__)

#: The locust message type that carries rows from a worker to the master.
ROWS_MESSAGE = "harness_rows"

_TEXT = tuple(REQUEST_COLUMNS.index(c) for c in RequestWriter.text_columns)
_LONG = (*_TEXT, REQUEST_COLUMNS.index("reference_answer"))
_ITL = REQUEST_COLUMNS.index("itl_s")


def _row_bytes(values: list[Any]) -> int:
    """About how many bytes a row takes in a message: the long texts and ITL list dominate."""
    n = 600  # ~50 short fields
    for j in _LONG:
        if values[j]:
            n += len(values[j])
    if values[_ITL]:
        n += 9 * len(values[_ITL])
    return n


class RowShipper:
    """The worker side: buffer rows, send them to the master in numbered messages.

    Used by :class:`~harness.load.engine.LoadEngine` in place of a
    :class:`~harness.record.writer.RequestWriter` (the same ``add_record`` / ``due`` /
    ``flush`` / ``close`` / ``rows_written`` / ``pending``). ``send(message)`` runs on the
    event loop (``blocking_io`` is False: a ZeroMQ socket belongs to its thread); locust's
    send retries for a few seconds, then raises, and the unsent messages stay queued, in order,
    for the next flush. Text columns lose every registered secret before they leave the
    process (the master may not know this worker's keys).
    """

    blocking_io = False

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        *,
        worker: int,
        flush_interval_s: float = 2.0,
        flush_rows: int = 5000,
        max_rows: int = 1000,
        max_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self.worker = int(worker)
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.max_rows = max(1, int(max_rows))
        self.max_bytes = max(1, int(max_bytes))
        self._clock = clock
        self._last_flush = clock()
        self._buffer: list[list[Any]] = []
        self._outbox: deque[dict[str, Any]] = deque()  # sealed, not yet sent, oldest first
        self._sending = gevent.lock.Semaphore()  # one sender at a time keeps `seq` in order
        self._seq = 0
        self.rows_written = 0  # rows sent
        self.parts_written = 0  # messages sent
        self._closed = False
        self._abandoned = False

    def add_record(self, record: RequestRecord) -> None:
        if self._closed:
            if self._abandoned:  # the master is gone: a request ending now has nowhere to go
                return
            raise RuntimeError(f"row shipper of worker {self.worker} is closed")
        self._buffer.append([getattr(record, name) for name in REQUEST_COLUMNS])

    @property
    def pending(self) -> int:
        """Rows recorded but not yet sent (buffered or in unsent messages)."""
        return len(self._buffer) + sum(len(m["rows"]) for m in self._outbox)

    @property
    def last_seq(self) -> int:
        """``seq`` of the last message sent (0: none)."""
        return self._seq - len(self._outbox)

    def due(self) -> bool:
        """True when rows should be sent (interval passed, too many rows, or unsent messages)."""
        return bool(self._outbox) or (
            bool(self._buffer)
            and (
                len(self._buffer) >= self.flush_rows
                or self._clock() - self._last_flush >= self.flush_interval_s
            )
        )

    def _seal(self) -> None:
        """Cut the buffer into messages (scrubbed, numbered) at the end of the outbox."""
        self._last_flush = self._clock()
        rows, self._buffer = self._buffer, []
        scrub = redaction.redact_values if redaction.active() else None
        chunk: list[list[Any]] = []
        size = 0
        for values in rows:
            if scrub is not None:
                for j in _TEXT:
                    if values[j]:
                        values[j] = scrub(values[j])
            n = _row_bytes(values)
            if chunk and (len(chunk) >= self.max_rows or size + n > self.max_bytes):
                self._push(chunk)
                chunk, size = [], 0
            chunk.append(values)
            size += n
        if chunk:
            self._push(chunk)

    def _push(self, rows: list[list[Any]]) -> None:
        self._seq += 1
        self._outbox.append(
            {
                "worker": self.worker,
                "seq": self._seq,
                "columns": list(REQUEST_COLUMNS),
                "rows": rows,
            }
        )

    def flush(self) -> int:
        """Send every buffered row and unsent message, in order; returns the rows sent.

        Waits for a send in progress in another greenlet, so when it returns every row
        recorded before the call has been handed to the socket. Raises what ``send`` raised.
        """
        self._seal()
        sent = 0
        with self._sending:
            while self._outbox:
                message = self._outbox[0]
                self._send(message)
                self._outbox.popleft()
                sent += len(message["rows"])
                self.rows_written += len(message["rows"])
                self.parts_written += 1
        return sent

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True

    def abandon(self) -> int:
        """Drop every row not yet sent, and any recorded later (the master is gone); returns
        how many were dropped now."""
        dropped = self.pending
        self._buffer = []
        self._outbox.clear()
        self._closed = self._abandoned = True
        return dropped


@dataclass
class WorkerRows:
    """What the master received from one worker."""

    rows: int = 0
    messages: int = 0
    last_seq: int = 0
    duplicates: int = 0  # messages seen twice (dropped)
    missing: int = 0  # messages skipped over by a gap in seq (never arrived)
    last_rows_ns: int | None = None  # wall clock (UTC ns) when its last rows arrived


class RowCollector:
    """The master side: one :class:`RequestWriter` per worker, fed by ``harness_rows``.

    :meth:`receive` only buffers (cheap: it runs in locust's message loop); :meth:`flush`
    writes due parts through ``run(write_batch, (rows, seq))``, e.g. gevent's thread pool,
    so a Parquet write never blocks the master's event loop. ``on_writer`` sees each writer
    once, when created (the master installs its disk-full guard there).
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        flush_interval_s: float = 2.0,
        flush_rows: int = 5000,
        partition_by_day: bool = False,
        on_writer: Callable[[RequestWriter], None] | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.partition_by_day = partition_by_day
        self.day_clock: ExperimentClock | None = None
        self.closed = False
        self.late_rows = 0  # rows that came after close() (not written)
        self._on_writer = on_writer
        self._clock_ns = clock_ns
        self.writers: dict[int, RequestWriter] = {}
        self.received: dict[int, WorkerRows] = {}
        self._known = frozenset(REQUEST_COLUMNS)

    def writer(self, worker: int) -> RequestWriter:
        w = self.writers.get(worker)
        if w is None:
            w = RequestWriter(
                self.run_dir,
                prefix=f"w{worker}",
                flush_interval_s=self.flush_interval_s,
                flush_rows=self.flush_rows,
                auto_flush=False,  # parts are written by flush(), off the event loop
                partition_by_day=self.partition_by_day,
            )
            w.set_day_clock(self.day_clock)
            if self._on_writer is not None:
                self._on_writer(w)
            self.writers[worker] = w
        return w

    def set_day_clock(self, clock: ExperimentClock | None) -> None:
        """The experiment clock, at t0: with ``partition_by_day`` every writer (those to come
        too) splits its parts by day and arm and compacts finished days."""
        self.day_clock = clock
        for w in self.writers.values():
            w.set_day_clock(clock)

    def receive(self, data: Any) -> int:
        """Buffer one message's rows; returns how many were added (0 for a resend).

        Raises ValueError naming the field when the message is not a rows message.
        """
        worker, seq, columns, rows = _parse(data)
        got = self.received.setdefault(worker, WorkerRows())
        if seq <= got.last_seq:
            got.duplicates += 1
            return 0
        got.missing += seq - got.last_seq - 1
        got.last_seq = seq
        got.messages += 1
        got.rows += len(rows)
        got.last_rows_ns = self._clock_ns()
        if self.closed:
            self.late_rows += len(rows)
            log.warning("worker %d sent %d rows after the writers closed", worker, len(rows))
            return 0
        names = [(j, name) for j, name in enumerate(columns) if name in self._known]
        writer = self.writer(worker)
        for values in rows:
            writer.add({name: values[j] for j, name in names})
        return len(rows)

    def missing(self, worker: int, sent_seq: int | None = None) -> int:
        """Messages of ``worker`` that never arrived (``sent_seq``: the last it says it sent)."""
        got = self.received.get(worker, WorkerRows())
        late = max(0, int(sent_seq) - got.last_seq) if sent_seq is not None else 0
        return got.missing + late

    def flush(
        self,
        run: Callable[[Callable[..., Any], tuple[Any, ...]], Any] | None = None,
        *,
        only_if_due: bool = False,
    ) -> None:
        """Write the buffered rows (each worker's due ones) as parts; raises the first error
        after putting that batch back, so the next flush retries it."""
        run = run or (lambda fn, args: fn(*args))
        for writer in list(self.writers.values()):
            if only_if_due and not writer.due():
                continue
            batch = writer.take()
            if batch is None:
                continue
            try:
                run(writer.write_batch, batch)
            except Exception:
                writer.requeue(batch[0])
                raise

    def close(
        self, run: Callable[[Callable[..., Any], tuple[Any, ...]], Any] | None = None
    ) -> None:
        """Write every buffered row, then close each writer through ``run`` (e.g. gevent's
        thread pool): with day partitions that is the final compaction, off the event loop.
        Raises the first write error (its batch put back, as :meth:`flush`)."""
        run = run or (lambda fn, args: fn(*args))
        self.flush(run)
        self.closed = True
        for writer in list(self.writers.values()):
            run(writer.close, ())

    def summary(self) -> dict[int, dict[str, Any]]:
        return {w: asdict(r) for w, r in sorted(self.received.items())}


def _parse(data: Any) -> tuple[int, int, list[str], list[list[Any]]]:
    if not isinstance(data, dict):
        raise ValueError(f"{ROWS_MESSAGE}: expected a mapping, got {type(data).__name__}")
    worker, seq = data.get("worker"), data.get("seq")
    if not isinstance(worker, int) or isinstance(worker, bool) or worker < 0:
        raise ValueError(f"{ROWS_MESSAGE}.worker: expected a worker index >= 0, got {worker!r}")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError(f"{ROWS_MESSAGE}.seq: expected an integer >= 1, got {seq!r}")
    columns, rows = data.get("columns"), data.get("rows")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise ValueError(f"{ROWS_MESSAGE}.columns: expected a list of column names")
    if not isinstance(rows, list) or not all(
        isinstance(r, list) and len(r) == len(columns) for r in rows
    ):
        raise ValueError(
            f"{ROWS_MESSAGE}.rows: expected lists of {len(columns)} values (one per column)"
        )
    return worker, seq, columns, rows
