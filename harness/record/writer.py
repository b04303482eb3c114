"""Buffered, crash-safe Parquet part writer.

Rows are buffered in memory and flushed to a new part file at least every
``flush_interval_s`` seconds (or every ``flush_rows`` rows). Each flush writes a
hidden temporary file, fsyncs it and renames it into place atomically, so a reader never
sees a half-written part and a SIGKILL loses at most the rows of the last interval.
Parts are named ``<prefix>-part-<seq>.parquet``: ``w0`` for a local run; in a distributed run
the master writes one prefix per worker, ``w<index>``, from the rows the workers send it
(:mod:`harness.record.shipping`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from harness import redaction
from harness.record.schema import (
    METRICS_SCHEMA,
    REQUEST_COLUMNS,
    REQUEST_SCHEMA,
    RequestRecord,
)


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
        """Continue numbering after existing parts (a resumed run must not overwrite)."""
        seqs = []
        for p in self.directory.glob(f"{self.prefix}-part-*.parquet"):
            try:
                seqs.append(int(p.stem.rsplit("-", 1)[1]))
            except (IndexError, ValueError):
                continue
        return max(seqs, default=0) + 1

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
        cols = {name: [r.get(name) for r in rows] for name in self.schema.names}
        if self.text_columns and redaction.active():
            scrub = redaction.redact_values
            for name in self.text_columns:
                cols[name] = [scrub(v) if v else v for v in cols[name]]
        table = pa.Table.from_pydict(cols, schema=self.schema)
        final = self.directory / f"{self.prefix}-part-{seq:06d}.parquet"
        tmp = self.directory / f".{final.name}.tmp"
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


class RequestWriter(PartWriter):
    """A :class:`PartWriter` for :class:`RequestRecord` rows into ``RUN_DIR/requests``."""

    #: What a server sent back may echo a key (an error quoting the Authorization header).
    text_columns = ("output_text", "error_message")

    def __init__(self, run_dir: Path, **kwargs: Any) -> None:
        super().__init__(Path(run_dir) / "requests", REQUEST_SCHEMA, **kwargs)

    def add_record(self, record: RequestRecord) -> None:
        self.add({name: getattr(record, name) for name in REQUEST_COLUMNS})

    def add_records(self, records: Iterable[RequestRecord]) -> None:
        for r in records:
            self.add_record(r)


class MetricsWriter(PartWriter):
    """A :class:`PartWriter` for scraped ``/metrics`` samples into ``RUN_DIR/metrics``."""

    def __init__(self, run_dir: Path, **kwargs: Any) -> None:
        super().__init__(Path(run_dir) / "metrics", METRICS_SCHEMA, **kwargs)
