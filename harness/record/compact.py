"""Compaction of day partitions: many small part files become one file per day, arm and prefix.

A month-long canary writes request rows day-partitioned (:class:`~harness.record.writer.
RequestWriter` with a day clock): ``requests/day=DDD/arm=ARM/<prefix>-part-<seq>.parquet``, a
new part every flush interval, so a month would leave tens of thousands of small files.
:func:`compact_partition` merges one partition folder's files of one prefix (every
``<prefix>-part-*.parquet`` plus the previous ``<prefix>-compact-g<N>.parquet``, if any) into
``<prefix>-compact-g<N+1>.parquet``: rows sorted by ``t_scheduled`` (then ``request_id``,
``attempt``), :data:`~harness.record.schema.REQUEST_SCHEMA` with its version metadata, and the
names of the files it replaces in the Parquet key-value metadata
``harness.compacted_from`` (a JSON list).

Crash safety without a journal. The steps are: write a hidden temporary file, fsync it, rename
it into place (the commit point), fsync the folder, delete the sources, fsync the folder. A
reader ignores every file named in the ``compacted_from`` of a compacted file in the same
folder (:func:`live_names`; earlier generations, and what they replaced, are listed too, so
they are superseded the same way), hence at every point in between it sees each row exactly once: before the rename
the sources (the temporary file is hidden), after it the compacted file (the sources that
are still there are ignored). :func:`recover` deletes what a kill left behind (listed sources
still present, stray temporary files); the compactor runs it before it starts. This relies on
a file name never being reused in a folder: part numbers continue after every part a prefix
ever wrote, including those only named in a ``compacted_from`` (:func:`max_part_seq`), and a
generation number is one more than the highest in the folder.

One compactor per folder at a time: a compaction holds an exclusive ``flock`` on the folder
(advisory; a second compactor, e.g. ``harness report`` while the canary runs, skips or waits),
so two compactions can never both delete sources the other did not merge. Part writers take
no lock: a part appears atomically (rename) and is either merged or left for the next
generation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

try:  # advisory folder locks (POSIX); elsewhere compactions are not serialised
    import fcntl
except ImportError:  # pragma: no cover - not on this platform
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Parquet key-value metadata key: JSON list of the file names a compacted file replaces.
COMPACTED_FROM = b"harness.compacted_from"

PART_RE = re.compile(r"^(?P<prefix>.+)-part-(?P<seq>\d+)\.parquet$")
COMPACT_RE = re.compile(r"^(?P<prefix>.+)-compact-g(?P<gen>\d+)\.parquet$")
#: Temporary files: ``.<final name>.tmp`` for parts (the writer) and compacted files.
PART_TEMP_RE = re.compile(r"^\.(?P<prefix>.+)-part-\d+\.parquet\.tmp$")
COMPACT_TEMP_RE = re.compile(r"^\.(?P<prefix>.+)-compact-g\d+\.parquet\.tmp$")
DAY_RE = re.compile(r"^day=(?P<day>-?\d+)$")

#: A part writer's temporary file older than this is a leftover of a killed writer (a live
#: one renames its temporary within a second).
STALE_TEMP_S = 300.0

#: The steps of a compaction, in order; a test hook is called after each one.
STEPS = ("temp_written", "renamed", "dir_synced", "source_deleted", "done")


class CompactionBusy(RuntimeError):
    """Another compactor holds the partition folder's lock."""


def day_dir_name(day: int) -> str:
    """The folder of experiment-clock day ``day``: ``day=007`` (zero-padded to 3 digits)."""
    return f"day={day:03d}"


def day_of_dir(path: Path, root: Path) -> int | None:
    """The ``day=DDD`` of a folder (relative to ``root``), or None outside any day partition."""
    for part in Path(path).relative_to(root).parts:
        m = DAY_RE.match(part)
        if m:
            return int(m["day"])
    return None


# -- what a folder holds ---------------------------------------------------------------------

_SOURCES_CACHE: dict[tuple[str, int, int], frozenset[str]] = {}


def compacted_sources(path: Path) -> frozenset[str]:
    """The file names a compacted file replaces (its ``harness.compacted_from``).

    Cached by path, size and mtime (a compacted file is written once, never modified).
    Raises FileNotFoundError when the file is gone (a later generation superseded it).
    """
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    hit = _SOURCES_CACHE.get(key)
    if hit is not None:
        return hit
    try:
        meta = pq.read_metadata(path).metadata or {}
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        if not os.path.exists(path):
            raise FileNotFoundError(str(path)) from exc
        raise ValueError(f"{path}: a compacted file whose footer cannot be read ({exc})") from exc
    raw = meta.get(COMPACTED_FROM)
    try:
        names = frozenset(json.loads(raw)) if raw else frozenset()
    except ValueError as exc:
        raise ValueError(f"{path}: harness.compacted_from is not a JSON list ({exc})") from exc
    if len(_SOURCES_CACHE) > 20_000:
        _SOURCES_CACHE.clear()
    _SOURCES_CACHE[key] = names
    return names


def superseded_names(directory: Path, names: Iterable[str]) -> frozenset[str]:
    """Names in ``names`` (one folder's files) listed by a compacted file among them."""
    names = list(names)
    out: set[str] = set()
    for n in names:
        if COMPACT_RE.match(n):
            out |= compacted_sources(Path(directory) / n)
    return frozenset(out.intersection(names))


def live_names(directory: Path, names: Iterable[str]) -> list[str]:
    """The visible ``*.parquet`` names of one folder minus those a compacted file replaces.

    ``names`` are the folder's entries; hidden (``.``/``_``) and non-Parquet names are
    dropped. Raises FileNotFoundError when a compacted file vanished meanwhile (list again).
    """
    visible = sorted(n for n in names if n.endswith(".parquet") and not n.startswith((".", "_")))
    if not any(COMPACT_RE.match(n) for n in visible):
        return visible
    gone = superseded_names(directory, visible)
    return [n for n in visible if n not in gone]


def max_part_seq(root: Path, prefix: str) -> int:
    """The highest part number ``prefix`` ever used under ``root`` (recursively): part files
    present and parts only named in a compacted file's ``compacted_from`` (0: none)."""
    best = 0
    root = Path(root)
    if not root.is_dir():
        return 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        for n in files:
            m = PART_RE.match(n)
            if m is not None and m["prefix"] == prefix:
                best = max(best, int(m["seq"]))
                continue
            m = COMPACT_RE.match(n)
            if m is not None and m["prefix"] == prefix:
                try:
                    listed = compacted_sources(Path(folder) / n)
                except FileNotFoundError:  # superseded meanwhile: its successor lists its parts
                    continue
                for src in listed:
                    sm = PART_RE.match(src)
                    if sm is not None and sm["prefix"] == prefix:
                        best = max(best, int(sm["seq"]))
    return best


def partition_dirs(root: Path, *, include_flat: bool = False) -> list[Path]:
    """Folders under ``root`` that hold Parquet files inside a ``day=DDD`` partition (with
    ``include_flat``: every folder holding Parquet files, ``root`` itself included)."""
    root = Path(root)
    out = []
    if not root.is_dir():
        return out
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        if not any(n.endswith(".parquet") for n in files):
            continue
        path = Path(folder)
        if include_flat or day_of_dir(path, root) is not None:
            out.append(path)
    return sorted(out)


# -- locks and durability ------------------------------------------------------------------


@contextlib.contextmanager
def _folder_lock(directory: Path, wait_s: float) -> Iterator[int]:
    """Hold an exclusive advisory lock on ``directory``; yields the folder's fd (for fsync).

    Raises :class:`CompactionBusy` when another compactor holds it past ``wait_s``. Polls
    instead of blocking, so a caller on a gevent loop never hangs in a syscall.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        if fcntl is not None:
            deadline = time.monotonic() + max(0.0, wait_s)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise CompactionBusy(
                            f"{directory}: another compaction is running"
                        ) from None
                    time.sleep(0.05)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _fsync_dir(fd: int) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot fsync a folder
        os.fsync(fd)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


# -- recovery ------------------------------------------------------------------------------


@dataclass
class RecoverStats:
    """What :func:`recover` deleted."""

    sources_deleted: int = 0  # files a committed compacted file had replaced
    temps_deleted: int = 0  # stray temporary files (killed compactions and writers)
    busy: int = 0  # folders skipped: another compactor holds them

    def add(self, other: RecoverStats) -> None:
        self.sources_deleted += other.sources_deleted
        self.temps_deleted += other.temps_deleted
        self.busy += other.busy


def _recover_folder(
    directory: Path, fd: int, prefix: str | None, stale_temp_s: float | None
) -> RecoverStats:
    """Clean one folder; the caller holds its lock."""
    stats = RecoverStats()
    names = os.listdir(directory)
    for n in names:
        m = COMPACT_TEMP_RE.match(n)
        if m is not None and (prefix is None or m["prefix"] == prefix):
            stats.temps_deleted += _unlink(directory / n)  # under the lock: no live compaction
            continue
        m = PART_TEMP_RE.match(n)
        if m is not None and stale_temp_s is not None and (prefix is None or m["prefix"] == prefix):
            with contextlib.suppress(FileNotFoundError):
                age = time.time() - os.stat(directory / n).st_mtime
                if age >= stale_temp_s:
                    stats.temps_deleted += _unlink(directory / n)
    for n in names:
        m = COMPACT_RE.match(n)
        if m is None or (prefix is not None and m["prefix"] != prefix):
            continue
        try:
            listed = compacted_sources(directory / n)
        except FileNotFoundError:
            continue
        for src in sorted(listed):
            if src != n and src in names:
                stats.sources_deleted += _unlink(directory / src)
    if stats.sources_deleted or stats.temps_deleted:
        _fsync_dir(fd)
    return stats


def recover(
    requests_dir: Path,
    *,
    prefix: str | None = None,
    stale_temp_s: float | None = STALE_TEMP_S,
) -> RecoverStats:
    """Delete what killed compactions (and writers) left under ``requests_dir``.

    In every folder: files named in a compacted file's ``compacted_from`` that are still
    there (the kill came after the commit), compaction temporaries (the kill came before
    it), and part-writer temporaries older than ``stale_temp_s`` (None: keep them; 0: every
    one, for a writer cleaning its own ``prefix`` at start). ``prefix`` limits all of this to
    one prefix's files. Folders another compactor holds are skipped (counted as ``busy``).
    Safe at any time: what it deletes is never read.
    """
    stats = RecoverStats()
    root = Path(requests_dir)
    if not root.is_dir():
        return stats
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        has_compact = any(COMPACT_RE.match(n) for n in files)
        has_temp = any(n.endswith(".tmp") for n in files)
        if not (has_compact or has_temp):
            continue
        path = Path(folder)
        try:
            with _folder_lock(path, 0.0) as fd:
                stats.add(_recover_folder(path, fd, prefix, stale_temp_s))
        except CompactionBusy:
            stats.busy += 1
        except FileNotFoundError:
            continue
    return stats


# -- compaction ----------------------------------------------------------------------------


@dataclass
class CompactResult:
    """One compaction: ``sources`` (names in ``directory``) merged into ``output``."""

    directory: Path
    prefix: str
    output: Path
    generation: int
    sources: list[str]
    rows: int
    seconds: float


@dataclass
class CompactStats:
    """What :func:`compact_all` did."""

    partitions: int = 0  # compactions done (one per folder and prefix)
    files_in: int = 0  # files merged (parts and earlier generations)
    rows: int = 0  # rows in the files written
    busy: int = 0  # folders skipped: another compactor holds them
    seconds: float = 0.0
    recovered: RecoverStats = field(default_factory=RecoverStats)
    results: list[CompactResult] = field(default_factory=list)

    def add(self, result: CompactResult) -> None:
        self.partitions += 1
        self.files_in += len(result.sources)
        self.rows += result.rows
        self.results.append(result)


def _read_source(path: Path) -> pa.Table:
    """One source file as a table of exactly :data:`REQUEST_SCHEMA` (older versions upgraded)."""
    from harness.record.reader import _read_part
    from harness.record.schema import REQUEST_SCHEMA

    with pq.ParquetFile(path) as pf:  # one small file: no dataset layer, no thread pool
        table = pf.read(use_threads=False)
    if table.schema.equals(REQUEST_SCHEMA, check_metadata=False):
        return table.replace_schema_metadata(REQUEST_SCHEMA.metadata)
    upgraded = _read_part(path, path.parent, "requests", REQUEST_SCHEMA, REQUEST_SCHEMA.names)
    arrays = [upgraded.column(f.name).cast(f.type) for f in REQUEST_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=REQUEST_SCHEMA)


def compact_partition(
    directory: Path,
    prefix: str,
    *,
    wait_s: float = 0.0,
    hook: Callable[[str], None] | None = None,
) -> CompactResult | None:
    """Merge ``directory``'s live files of ``prefix`` into its next compacted generation.

    Returns None when there is nothing to merge (no part files and at most one compacted
    file). Raises :class:`CompactionBusy` when another compactor holds the folder past
    ``wait_s``. ``hook(step)`` is called after each of :data:`STEPS` (``source_deleted``
    once per deleted source): tests inject crashes there.
    """
    from harness.record.schema import REQUEST_SCHEMA

    directory = Path(directory)
    started = time.perf_counter()
    step = hook or (lambda _step: None)
    with _folder_lock(directory, wait_s) as fd:
        _recover_folder(directory, fd, prefix, None)
        names = os.listdir(directory)
        live = live_names(directory, names)
        parts = [n for n in live if (m := PART_RE.match(n)) and m["prefix"] == prefix]
        gens = [n for n in live if (m := COMPACT_RE.match(n)) and m["prefix"] == prefix]
        if not parts and len(gens) <= 1:
            return None
        generation = 1 + max(
            (int(m["gen"]) for n in names if (m := COMPACT_RE.match(n)) and m["prefix"] == prefix),
            default=0,
        )
        sources = sorted(gens) + sorted(parts)
        table = pa.concat_tables([_read_source(directory / n) for n in sources])
        table = table.sort_by(
            [("t_scheduled", "ascending"), ("request_id", "ascending"), ("attempt", "ascending")]
        )
        # what earlier generations replaced is listed again, so a source a killed compaction
        # left behind stays superseded even once its generation is gone
        replaced = set(sources)
        for n in gens:
            replaced |= compacted_sources(directory / n)
        meta = dict(REQUEST_SCHEMA.metadata or {})
        meta[COMPACTED_FROM] = json.dumps(sorted(replaced)).encode()
        table = table.replace_schema_metadata(meta)
        final = directory / f"{prefix}-compact-g{generation}.parquet"
        tmp = directory / f".{final.name}.tmp"
        try:
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        step("temp_written")
        os.replace(tmp, final)  # the commit point: from here the sources are superseded
        step("renamed")
        _fsync_dir(fd)
        step("dir_synced")
        for n in sources:
            _unlink(directory / n)
            step("source_deleted")
        _fsync_dir(fd)
        step("done")
    return CompactResult(
        directory=directory,
        prefix=prefix,
        output=final,
        generation=generation,
        sources=sources,
        rows=table.num_rows,
        seconds=time.perf_counter() - started,
    )


def prefixes_to_compact(directory: Path) -> list[str]:
    """Prefixes with something to merge in ``directory``: a part file, or several live
    compacted files."""
    live = live_names(directory, os.listdir(directory))
    parts = {m["prefix"] for n in live if (m := PART_RE.match(n))}
    gens: dict[str, int] = {}
    for n in live:
        m = COMPACT_RE.match(n)
        if m is not None:
            gens[m["prefix"]] = gens.get(m["prefix"], 0) + 1
    return sorted(parts | {p for p, k in gens.items() if k > 1})


def compact_all(
    requests_dir: Path,
    *,
    prefixes: Iterable[str] | None = None,
    include_flat: bool = False,
    wait_s: float = 0.0,
) -> CompactStats:
    """Recover, then compact every day partition under ``requests_dir`` for every prefix.

    ``requests_dir`` is a run's ``requests/`` folder (a run folder is accepted too).
    ``prefixes`` limits it to those prefixes; ``include_flat`` also compacts folders outside
    any ``day=`` partition (an unpartitioned run's files are left alone by default). Folders
    another compactor holds (a live canary compacting that day) are skipped and counted as
    ``busy``; run it again later. Never loses or duplicates a row, whenever it is killed.
    """
    started = time.perf_counter()
    root = Path(requests_dir)
    if (root / "requests").is_dir() and not root.name == "requests":
        root = root / "requests"
    wanted = set(prefixes) if prefixes is not None else None
    stats = CompactStats()
    stats.recovered = recover(root)
    for folder in partition_dirs(root, include_flat=include_flat):
        try:
            todo = prefixes_to_compact(folder)
        except FileNotFoundError:  # a compacted file superseded meanwhile: one more look
            todo = prefixes_to_compact(folder)
        for prefix in todo:
            if wanted is not None and prefix not in wanted:
                continue
            try:
                result = compact_partition(folder, prefix, wait_s=wait_s)
            except CompactionBusy:
                stats.busy += 1
                continue
            if result is not None:
                stats.add(result)
    stats.seconds = time.perf_counter() - started
    if stats.partitions:
        log.info(
            "compacted %d partition(s): %d files -> %d, %d rows in %.2f s",
            stats.partitions,
            stats.files_in,
            stats.partitions,
            stats.rows,
            stats.seconds,
        )
    return stats


__all__ = [
    "COMPACTED_FROM",
    "CompactResult",
    "CompactStats",
    "CompactionBusy",
    "RecoverStats",
    "STEPS",
    "compact_all",
    "compact_partition",
    "compacted_sources",
    "day_dir_name",
    "live_names",
    "max_part_seq",
    "partition_dirs",
    "recover",
]
