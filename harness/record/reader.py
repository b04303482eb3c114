"""Reading a run's Parquet datasets (``requests/`` and ``metrics/``) back for analysis.

A run directory holds part files written by one or more processes, possibly in Hive-style
subfolders (``requests/worker=0/part-000001.parquet``). This module finds them (recursively,
``*.parquet`` only, so ``*.tmp`` files never match; names that start with ``.`` or ``_`` are
ignored), reads only the columns asked for, and upgrades files written with an older
``harness.schema_version``: a column the file lacks is added as nulls of the current type (or
taken from a ``key=value`` folder name).
A file that is not Parquet, or Parquet that is not ours, raises :class:`ReaderError` naming it.

Low-cardinality string columns (arm, phase, status, ...) are read dictionary-encoded, which
keeps 10 million rows in a few hundred MB.

Compacted day partitions (:mod:`harness.record.compact`): in each folder, a file named in the
``harness.compacted_from`` metadata of a compacted file there is ignored (it was merged into
it), so a compaction killed at any point shows every row exactly once. A folder that can
change while it is read (a ``day=DDD`` partition, or one holding compacted files) is read
whole and listed again afterwards; if a compaction replaced files meanwhile it is read again,
so a report made while the canary runs sees neither a gap nor a duplicate. Flat (older,
unpartitioned) runs are read file by file, as before.

``days`` (:func:`iter_request_parts`, :func:`read_requests`) reads only the ``day=DDD``
partitions asked for. Files outside any day partition (unpartitioned runs) cannot be pruned
that way and are all read: a caller that wants one day filters those rows by ``t_virtual``
(:meth:`harness.canary.clock.ExperimentClock.days_of`), which gives the same rows as the
partition for a partitioned run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.record.compact import COMPACT_RE, DAY_RE, day_of_dir, live_names
from harness.record.schema import METRICS_SCHEMA, REQUEST_SCHEMA, SCHEMA_VERSION

#: Columns read dictionary-encoded (few distinct values, many rows).
DICTIONARY_COLUMNS = (
    "run_id",
    "experiment",
    "arm",
    "target_kind",
    "model",
    "client",
    "workload",
    "slice",
    "phase",
    "status",
    "error_type",
    "tokens_source",
    "finish_reason",
    "route",
    "route_reason",
    "name",
    "labels",
)

#: Columns a file must have to be recognised as one of ours (besides the metadata key).
_REQUIRED = {"requests": ("arm", "status"), "metrics": ("arm", "name", "value")}


class ReaderError(ValueError):
    """A run's data cannot be read; the message names the file and what is wrong."""


def _folders(directory: Path, days: Sequence[int] | None = None) -> list[tuple[Path, list[str]]]:
    """Each folder under ``directory`` (recursive, hidden ``.``/``_`` ones skipped) with its
    file names; with ``days``, ``day=DDD`` folders of other days are pruned."""
    want = None if days is None else {int(d) for d in days}
    out = []
    for folder, dirs, files in os.walk(directory):
        keep = []
        for d in dirs:
            if d.startswith((".", "_")):
                continue
            m = DAY_RE.match(d) if want is not None else None
            if m is not None and int(m["day"]) not in want:
                continue
            keep.append(d)
        dirs[:] = sorted(keep)
        out.append((Path(folder), files))
    return sorted(out, key=lambda item: item[0])


def _live(folder: Path, names: list[str] | None = None) -> list[str]:
    """The folder's live ``*.parquet`` names (see :func:`~harness.record.compact.live_names`);
    lists the folder again when a compacted file vanished meanwhile."""
    for _ in range(_RETRIES):
        if names is None:
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                return []
        try:
            return [n for n in live_names(folder, names) if (folder / n).is_file()]
        except FileNotFoundError:
            names = None
        except ValueError as exc:
            raise ReaderError(str(exc)) from exc
    raise ReaderError(f"{folder}: its files kept changing while being listed")


#: How often a folder is listed (or read) again when a compaction changes it meanwhile.
_RETRIES = 8


def list_parts(directory: Path) -> list[Path]:
    """``*.parquet`` files under ``directory`` (recursive, sorted), skipping ``.``/``_`` names
    and files a compacted file in the same folder replaced."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    out = []
    for folder, names in _folders(directory):
        out.extend(folder / n for n in _live(folder, names))
    return sorted(out)


def partition_days(run_dir: Path) -> list[int]:
    """The experiment-clock days a run's ``requests/`` has ``day=DDD`` partitions for (sorted;
    empty for an unpartitioned run)."""
    root = Path(run_dir) / "requests"
    days = set()
    for folder, _names in _folders(root) if root.is_dir() else []:
        day = day_of_dir(folder, root)
        if day is not None:
            days.add(day)
    return sorted(days)


def file_schema_version(path: Path) -> int | None:
    """The ``harness.schema_version`` a part file was written with (None when absent)."""
    meta = _open(path).schema_arrow.metadata or {}
    raw = meta.get(b"harness.schema_version")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _open(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ReaderError(f"{path}: not a readable Parquet file ({exc})") from exc


def _hive_values(path: Path, root: Path) -> dict[str, str]:
    out = {}
    for part in path.relative_to(root).parts[:-1]:
        if "=" in part:
            k, _, v = part.partition("=")
            out[k] = v
    return out


def _target_type(schema: pa.Schema, name: str) -> pa.DataType:
    t = schema.field(name).type
    if name in DICTIONARY_COLUMNS and pa.types.is_string(t):
        return pa.dictionary(pa.int32(), pa.string())
    return t


def _read_part(
    path: Path,
    root: Path,
    kind: str,
    schema: pa.Schema,
    columns: Sequence[str],
) -> pa.Table:
    """Read ``columns`` of one part file, upgraded to ``schema`` (missing columns -> nulls)."""
    pf = _open(path)
    present = set(pf.schema_arrow.names)
    meta = pf.schema_arrow.metadata or {}
    if b"harness.schema_version" not in meta and not all(c in present for c in _REQUIRED[kind]):
        raise ReaderError(
            f"{path}: not a harness {kind} file (no harness.schema_version metadata and no "
            f"{'/'.join(_REQUIRED[kind])} columns; has {sorted(present)[:8]})"
        )
    to_read = [c for c in columns if c in present]
    dict_cols = [c for c in to_read if c in DICTIONARY_COLUMNS]
    try:
        table = pq.read_table(path, columns=to_read, read_dictionary=dict_cols)
    except (pa.ArrowException, OSError) as exc:
        raise ReaderError(f"{path}: cannot read columns {to_read} ({exc})") from exc
    hive = _hive_values(path, root)
    arrays = []
    for name in columns:
        target = _target_type(schema, name)
        if name in present:
            col = table.column(name)
        elif name in hive:
            col = pa.chunked_array([pa.array([hive[name]] * table.num_rows, pa.string())])
        else:
            col = pa.chunked_array([pa.nulls(table.num_rows, target)])
        if not col.type.equals(target):
            try:
                col = col.cast(target)
            except (pa.ArrowException, ValueError) as exc:
                raise ReaderError(
                    f"{path}: column {name!r} has type {col.type}, expected {target} ({exc})"
                ) from exc
        arrays.append(col)
    if not columns:  # only a row count was asked for
        return pa.table({"_": pa.nulls(pf.metadata.num_rows)}).drop_columns(["_"])
    return pa.Table.from_arrays(arrays, names=list(columns))


def _phase_mask(table: pa.Table, phases: Sequence[str]) -> pa.ChunkedArray:
    """Rows whose phase is in ``phases``; a null phase (files older than the column) is main."""
    phase = table.column("phase").cast(pa.string())
    filled = pc.fill_null(phase, "main")
    return pc.is_in(filled, value_set=pa.array(list(phases), pa.string()))


def _check_columns(schema: pa.Schema, columns: Sequence[str], what: str) -> None:
    unknown = [c for c in columns if c not in schema.names]
    if unknown:
        raise ReaderError(f"unknown {what} column(s) {unknown}; known: {schema.names}")


def _changing(folder: Path, root: Path, names: list[str]) -> bool:
    """Whether a compaction may replace this folder's files while it is read."""
    return day_of_dir(folder, root) is not None or any(COMPACT_RE.match(n) for n in names)


def _no_compaction_between(before: list[str], after: list[str]) -> bool:
    """Whether two listings of a folder show that no compaction committed in between: every
    file read is still live and no compacted file is new. New parts alone (the writer goes
    on) do not matter: the first listing was then a consistent snapshot."""
    now = set(after)
    was = set(before)
    return was <= now and not any(COMPACT_RE.match(n) and n not in was for n in now)


def _read_folder(
    folder: Path, root: Path, names: list[str], cols: list[str]
) -> list[tuple[Path, pa.Table]]:
    """Read a folder a compaction may change: all its live files, then list it again; read
    again if a compaction committed meanwhile (a file vanished, or a new generation came:
    the first listing may have missed both the new file and the sources it replaced)."""
    live = _live(folder, names)
    for _ in range(_RETRIES):
        tables = []
        try:
            for n in live:
                t = _read_part(folder / n, root, "requests", REQUEST_SCHEMA, cols)
                tables.append((folder / n, t))
        except ReaderError:
            if all((folder / n).exists() for n in live):
                raise  # a real read error, not a file a compaction replaced
            live = _live(folder)
            continue
        again = _live(folder)
        if _no_compaction_between(live, again):
            return tables
        live = again
    raise ReaderError(f"{folder}: its files kept changing while being read")


def iter_request_parts(
    run_dir: Path,
    columns: Sequence[str] | None = None,
    phases: Sequence[str] | None = ("main",),
    days: Sequence[int] | None = None,
) -> Iterator[pa.Table]:
    """Yield one upgraded, phase-filtered table per part file (bounded memory for big runs).

    ``days``: read only those experiment-clock days' ``day=DDD`` partitions (files outside
    any day partition are still read; see the module docstring). A day partition is read
    whole before its tables are yielded (one day of one arm: bounded too).
    """
    root = Path(run_dir) / "requests"
    cols = list(columns) if columns is not None else list(REQUEST_SCHEMA.names)
    _check_columns(REQUEST_SCHEMA, cols, "request")
    read_cols = cols if phases is None or "phase" in cols else [*cols, "phase"]
    if not root.is_dir():
        return

    def finish(t: pa.Table) -> pa.Table:
        if phases is not None:
            t = t.filter(_phase_mask(t, phases))
            if "phase" not in cols:
                t = t.drop_columns(["phase"])
        return t

    for folder, names in _folders(root, days):
        if _changing(folder, root, names):
            for _path, t in _read_folder(folder, root, names, read_cols):
                yield finish(t)
            continue
        for n in _live(folder, names):
            yield finish(_read_part(folder / n, root, "requests", REQUEST_SCHEMA, read_cols))


def _empty(schema: pa.Schema, cols: Sequence[str]) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array([], _target_type(schema, c)) for c in cols], names=list(cols)
    )


def read_requests(
    run_dir: Path,
    columns: Sequence[str] | None = None,
    phases: Sequence[str] | None = ("main",),
    days: Sequence[int] | None = None,
) -> pa.Table:
    """All request rows of a run (``RUN_DIR/requests/**.parquet``) as one Arrow table.

    ``columns``: the columns to read (default: all of :data:`REQUEST_SCHEMA`), in that order.
    ``phases``: keep rows whose ``phase`` is in it (a null phase counts as ``main``); None
    keeps every row. ``days``: only those ``day=DDD`` partitions (an unpartitioned run's
    files are all read: filter by ``t_virtual``). Low-cardinality string columns come back
    dictionary-encoded. A run with no part files gives an empty table with the requested
    columns.
    """
    cols = list(columns) if columns is not None else list(REQUEST_SCHEMA.names)
    parts = list(iter_request_parts(run_dir, cols, phases, days))
    if not parts:
        return _empty(REQUEST_SCHEMA, cols)
    return pa.concat_tables(parts)


def read_metrics(run_dir: Path, columns: Sequence[str] | None = None) -> pa.Table | None:
    """The scraped server metrics (``RUN_DIR/metrics/**.parquet``), or None when there are none."""
    root = Path(run_dir) / "metrics"
    cols = list(columns) if columns is not None else list(METRICS_SCHEMA.names)
    _check_columns(METRICS_SCHEMA, cols, "metrics")
    paths = list_parts(root)
    if not paths:
        return None
    return pa.concat_tables(_read_part(p, root, "metrics", METRICS_SCHEMA, cols) for p in paths)


__all__ = [
    "DICTIONARY_COLUMNS",
    "ReaderError",
    "SCHEMA_VERSION",
    "file_schema_version",
    "iter_request_parts",
    "list_parts",
    "partition_days",
    "read_metrics",
    "read_requests",
]
