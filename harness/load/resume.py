"""Resuming a run in place: ``harness experiment experiment=NAME resume=RUN_ID`` (or ``latest``).

A month-long canary must survive restarts. Resuming reuses the run directory, its manifest
and its experiment clock: the schedule continues from now (arrivals already past are
skipped, see :func:`harness.load.engine.arrivals_from`), new part files are numbered after
the existing ones, and the time between the previous segment's last sign of life and the new
start is recorded as harness downtime in the manifest, never as errors of an arm.

The checks, each a :class:`~harness.config.ConfigError` naming what to fix (one line, exit 2):
the run directory exists; its manifest is readable; it did not complete; no live process
holds it (:class:`~harness.record.manifest.RunLock`); it is an open-loop run; and the config
composed now equals the stored one except :data:`MAY_DIFFER` (both sides redacted the same
way), the first differing key named. ``resume=latest`` picks the newest run of the
experiment (by ``started_at``) that did not complete.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.canary.clock import ExperimentClock
from harness.config import ConfigError, check_simple_name
from harness.record.manifest import RunLock, RunManifest, iso_from_ns, redact

#: Top-level config keys a resumed segment may change.
MAY_DIFFER = ("resume", "run_id", "progress_interval_s")

_MISSING = object()


def find_run(reports_dir: Path, experiment: str, resume: str) -> Path:
    """The run directory ``resume`` names: a run id, or ``latest`` (newest not completed)."""
    exp_dir = Path(reports_dir) / experiment
    if resume != "latest":
        check_simple_name("resume", resume, "it names a run directory (a run id, or latest)")
        run_dir = exp_dir / resume
        if not run_dir.is_dir():
            raise ConfigError(
                f"resume: no run {resume!r} of experiment {experiment!r} in {reports_dir} "
                f"({run_dir} does not exist)"
            )
        return run_dir
    candidates: list[tuple[str, str, Path]] = []
    for path in exp_dir.glob("*/manifest.json") if exp_dir.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("status") == "completed":
            continue
        candidates.append((str(data.get("started_at") or ""), path.parent.name, path.parent))
    if not candidates:
        raise ConfigError(
            f"resume: latest: experiment {experiment!r} has no run that did not complete "
            f"in {exp_dir}"
        )
    return max(candidates)[2]


def open_resumable(run_dir: Path) -> tuple[RunManifest, RunLock]:
    """The run's manifest and its lock, once the run is known to be resumable."""
    run_id = run_dir.name
    try:
        manifest = RunManifest.load(run_dir)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"resume: run {run_id!r}: cannot read its manifest: {exc}") from None
    if not isinstance(manifest.data, dict) or not isinstance(manifest.data.get("config"), dict):
        raise ConfigError(
            f"resume: run {run_id!r}: {manifest.path} holds no stored config (not a run manifest)"
        )
    status = manifest.data.get("status")
    if status == "completed":
        raise ConfigError(
            f"resume: run {run_id!r} completed at {manifest.data.get('ended_at')}: nothing to "
            "resume (start a new run without resume=)"
        )
    lock = RunLock(run_dir)
    if not lock.acquire():
        who = lock.holder()
        raise ConfigError(
            f"resume: run {run_id!r} is still running (process {who or '?'} holds {lock.path})"
        )
    return manifest, lock


def _normal(tree: Any) -> Any:
    """A config tree as JSON would give it back (what the manifest stores)."""
    return json.loads(json.dumps(tree, default=str, allow_nan=True))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return not isinstance(b, bool) and float(a) == float(b)
    return a == b


def first_difference(
    stored: Any, current: Any, *, ignore: tuple[str, ...] = MAY_DIFFER, prefix: str = ""
) -> tuple[str, Any, Any] | None:
    """The first key (dotted, in the current config's order) whose values differ.

    ``(key, stored_value, current_value)``, a missing side given as :data:`_MISSING`; None
    when equal. ``ignore`` names top-level keys that may differ.
    """
    if isinstance(stored, dict) and isinstance(current, dict):
        keys = list(current) + [k for k in stored if k not in current]
        for key in keys:
            if not prefix and key in ignore:
                continue
            name = f"{prefix}{key}"
            a, b = stored.get(key, _MISSING), current.get(key, _MISSING)
            if a is _MISSING or b is _MISSING:
                return name, a, b
            diff = first_difference(a, b, ignore=ignore, prefix=name + ".")
            if diff is not None:
                return diff
        return None
    if isinstance(stored, list) and isinstance(current, list) and len(stored) == len(current):
        if all(
            first_difference(a, b, ignore=(), prefix="") is None
            for a, b in zip(stored, current, strict=True)
        ):
            return None
        return prefix.rstrip("."), stored, current
    if _same(stored, current):
        return None
    return prefix.rstrip("."), stored, current


def check_same_config(stored: dict[str, Any], current: dict[str, Any], run_id: str) -> None:
    """The config composed now must be the stored one (redacted alike) but for MAY_DIFFER."""
    diff = first_difference(_normal(stored), _normal(redact(current)))
    if diff is None:
        return
    key, was, now = diff

    def show(v: Any) -> str:
        return "absent" if v is _MISSING else json.dumps(v, default=str)[:80]

    raise ConfigError(
        f"{key}: {show(now)} differs from {show(was)} in run {run_id!r}'s stored config: resume "
        f"with the same experiment and overrides (only {', '.join(MAY_DIFFER)} may change)"
    )


def _max_ns(path: Path, columns: tuple[str, ...]) -> int | None:
    """Largest value of the timestamp ``columns`` in one Parquet file (statistics first)."""
    try:
        pf = pq.ParquetFile(path)
    except Exception:  # e.g. a part being replaced by compaction: its rows are elsewhere
        return None
    md = pf.metadata
    best: int | None = None
    unread: list[str] = []  # columns some row group has no statistics for
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for j in range(rg.num_columns):
            col = rg.column(j)
            if col.path_in_schema not in columns:
                continue
            st = col.statistics
            value = st.max_raw if st is not None and st.has_min_max else None
            if isinstance(value, int):
                best = value if best is None else max(best, value)
            elif rg.num_rows and col.path_in_schema not in unread:
                unread.append(col.path_in_schema)
    if unread:
        try:
            table = pf.read(columns=unread)
        except Exception:
            return best
        for name in unread:
            m = pc.max(table.column(name).cast("int64")).as_py()
            if m is not None:
                best = int(m) if best is None else max(best, int(m))
    return best


def last_sign_of_life_ns(run_dir: Path) -> int | None:
    """The latest time any recorded row shows (request ends/sends, /metrics scrapes)."""
    from harness.record.reader import list_parts

    best: int | None = None
    for sub, cols in (("requests", ("t_end", "t_sent", "t_scheduled")), ("metrics", ("t",))):
        for path in list_parts(Path(run_dir) / sub):
            m = _max_ns(path, cols)
            if m is not None:
                best = m if best is None else max(best, m)
    return best


def downtime_entry(clock: ExperimentClock, from_ns: int, to_ns: int) -> dict[str, Any]:
    """One ``downtime`` entry: the wall gap, its length on the experiment clock, its days."""
    wall_s = max(0.0, (to_ns - from_ns) / 1e9)
    return {
        "from": iso_from_ns(from_ns),
        "to": iso_from_ns(to_ns),
        "from_ns": int(from_ns),
        "to_ns": int(to_ns),
        "wall_s": round(wall_s, 3),
        "virtual_s": round(wall_s * clock.time_scale, 3),
        "from_day": clock.day_of(clock.virtual_ns(from_ns)),
        "to_day": clock.day_of(clock.virtual_ns(to_ns)),
    }
