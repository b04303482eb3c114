"""The scores table of a run: ``RUN_DIR/scores/scores.parquet``, one row per (run_id, arm,
sample_id, request_id, attempt, scorer).

What is scored: the **final attempt** of each logical request (``arm``, ``request_id``) that
carries a reference answer. A final attempt that succeeded is scored by every scorer that
applies to its item (:func:`harness.quality.scorers.scorers_for`); one that failed is not
scored and counts as **unanswered**; one the harness cancelled (drain, Ctrl-C) counts as
neither. Rows come from the analysed phases (``analysis.include_phases``, default
``main``), like every other figure of the report.

Item details (format, schema, regex, tolerance) come from the run's eval file
(``config.workload.path`` in the manifest, read by :func:`harness.workloads.eval.read_eval_file`),
matched on ``sample_id``; an item the file no longer has, or whose answer changed since the
run, is scored from the row alone (reference from ``reference_answer``, category from the
``eval:<category>`` slice, format inferred from the answer) with a note.

``output_text`` recorded as ``hash`` or ``drop`` (``record.output_text``) cannot be scored:
:class:`ScoreError` says so. The table's Parquet metadata holds its schema version, the
per-arm counts (requests, answered, unanswered, cancelled), notes, and a fingerprint of its
inputs (the request part files, the eval file, the scorer set): :func:`ensure_scores` reuses
the file while the fingerprint matches and rescores otherwise; ``harness score RUN_DIR``
(:func:`score_run`) always rescores.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.quality.scorers import SCORERS, ItemSpec, scorers_for, unknown_scorers
from harness.workloads.eval import infer_format

#: Version of the scores table layout (bump when a column changes meaning).
SCORES_SCHEMA_VERSION = 1
#: Bump when a scorer's definition changes, so cached tables are rescored.
SCORERS_VERSION = 1
SCORES_FILE = Path("scores") / "scores.parquet"

SCORES_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("arm", pa.string()),
        pa.field("sample_id", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("attempt", pa.int32()),
        pa.field("pair_id", pa.string()),
        pa.field("category", pa.string()),
        pa.field("scorer", pa.string()),
        pa.field("kind", pa.string()),  # binary | score | length
        pa.field("value", pa.float64()),
    ]
)
_ROW_COLUMNS = (
    "run_id",
    "arm",
    "request_id",
    "attempt",
    "pair_id",
    "sample_id",
    "slice",
    "status",
    "error_type",
    "output_text",
    "reference_answer",
    "completion_tokens",
)


class ScoreError(ValueError):
    """A run cannot be scored; the message says why and what to change."""


@dataclass
class ArmCounts:
    """Logical requests with a reference answer, by outcome of their final attempt."""

    requests: int = 0  # cancelled ones excluded
    answered: int = 0  # final attempt ok: scored
    unanswered: int = 0  # final attempt failed: not scored
    cancelled: int = 0  # cancelled by the harness: neither

    def as_dict(self) -> dict[str, int]:
        return {
            k: int(getattr(self, k)) for k in ("requests", "answered", "unanswered", "cancelled")
        }


@dataclass
class Scores:
    """A run's scores table with its counts and notes."""

    table: pa.Table
    counts: dict[str, ArmCounts] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fingerprint: str = ""
    items: dict[str, ItemSpec] = field(default_factory=dict)  # sample_id -> item (categories)

    @property
    def n_rows(self) -> int:
        return self.table.num_rows


# ------------------------------------------------------------------ inputs


def _manifest(run_dir: Path) -> dict[str, Any]:
    from harness.analysis.data import read_manifest

    return read_manifest(run_dir)


def _phases(manifest: dict[str, Any]) -> list[str]:
    from harness.analysis.data import analysis_from_manifest

    return list(analysis_from_manifest(manifest, "manifest.json").include_phases)


def eval_path(manifest: dict[str, Any], root: Path | None = None) -> Path | None:
    """The eval file (or directory) the run's workload read, if it was an eval workload."""
    from harness.config import project_root
    from harness.workloads.eval import DEFAULT_EVAL_PATH

    wl = ((manifest.get("config") or {}).get("workload")) or {}
    if wl.get("kind") != "eval":
        return None
    raw = Path(wl.get("path") or DEFAULT_EVAL_PATH)
    return raw if raw.is_absolute() else (root or project_root()) / raw


def load_items(path: Path | None) -> tuple[dict[str, ItemSpec], list[str]]:
    """``(sample_id -> ItemSpec, notes)`` from an eval file or directory; a missing path gives
    no items and a note (the rows alone are scored then). A malformed file raises its
    ``WorkloadError`` (naming ``file:line``); an unknown name in an item's ``scorers`` list is
    a :class:`ScoreError` naming the line."""
    from harness.workloads.eval import eval_files, read_eval_file

    if path is None:
        return {}, []
    if not path.exists():
        return {}, [f"eval file {path} not found: items scored from the recorded rows alone"]
    items: dict[str, ItemSpec] = {}
    ids: dict[str, str] = {}
    for file in eval_files(path):
        for line in read_eval_file(file, ids):
            if line.scorers is not None:
                bad = unknown_scorers(line.scorers)
                if bad:
                    raise ScoreError(
                        f"{line.where}: field 'scorers': unknown scorer(s) {bad}; known: "
                        f"{', '.join(SCORERS)}"
                    )
            items[line.sample_id] = ItemSpec(
                sample_id=line.sample_id,
                category=line.category,
                reference=line.answer,
                format=line.format,
                schema=line.schema,
                regex=line.regex,
                tolerance=line.tolerance,
                scorers=line.scorers,
            )
    return items, []


def _row_item(sample_id: str, slice_: str | None, reference: str) -> ItemSpec:
    cat = slice_[5:] if slice_ and slice_.startswith("eval:") else (slice_ or "all")
    return ItemSpec(sample_id, cat, reference, infer_format(reference))


def fingerprint(run_dir: Path, path: Path | None, phases: list[str]) -> str:
    """A hash of what the scores depend on: the request part files (path, size, mtime),
    the eval file(s), the analysed phases and the scorer set."""
    from harness.record.reader import list_parts

    h = hashlib.sha256()
    h.update(f"v{SCORES_SCHEMA_VERSION}.{SCORERS_VERSION}|{','.join(SCORERS)}|{phases}".encode())
    root = Path(run_dir) / "requests"
    files = list_parts(root)
    if path is not None and path.exists():
        files += sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    for f in files:
        try:
            st = f.stat()
        except FileNotFoundError:  # compacted away since listed (a running canary)
            continue
        h.update(f"|{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def has_references(run_dir: Path, phases: list[str] | None = None) -> bool:
    """Whether any request row carries a reference answer (read one column, stop early)."""
    from harness.record.reader import iter_request_parts

    for part in iter_request_parts(run_dir, ("reference_answer",), phases):
        if part.num_rows and pc.sum(pc.is_valid(part.column("reference_answer"))).as_py():
            return True
    return False


def _reference_rows(run_dir: Path, phases: list[str]) -> pa.Table:
    """The rows with a reference answer, the columns scoring needs."""
    from harness.record.reader import REQUEST_SCHEMA, iter_request_parts

    parts = []
    for part in iter_request_parts(run_dir, _ROW_COLUMNS, phases):
        keep = pc.is_valid(part.column("reference_answer"))
        if pc.any(keep).as_py():
            parts.append(part.filter(keep))
    if not parts:
        return pa.Table.from_arrays(
            [pa.array([], REQUEST_SCHEMA.field(c).type) for c in _ROW_COLUMNS],
            names=list(_ROW_COLUMNS),
        )
    return pa.concat_tables(parts, promote_options="permissive")


# ------------------------------------------------------------------ scoring


def _final_attempts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last attempt of each logical request (``arm``, ``request_id``); rows without a
    request id count as requests of their own."""
    final: dict[tuple[Any, ...], dict[str, Any]] = {}
    for k, r in enumerate(rows):
        key = (r["arm"], r["request_id"] if r["request_id"] is not None else f"#{k}")
        cur = final.get(key)
        if cur is None or (r["attempt"] or 0) >= (cur["attempt"] or 0):
            final[key] = r
    return list(final.values())


def score_rows(
    rows: list[dict[str, Any]], items: dict[str, ItemSpec]
) -> tuple[pa.Table, dict[str, ArmCounts], list[str]]:
    """Score request rows (dicts with :data:`_ROW_COLUMNS`): ``(table, counts per arm,
    notes)``. Pure: the I/O is in :func:`score_run`."""
    cols: dict[str, list[Any]] = {f.name: [] for f in SCORES_SCHEMA}
    counts: dict[str, ArmCounts] = {}
    changed: set[str] = set()
    unknown: set[str] = set()
    for r in sorted(_final_attempts(rows), key=lambda r: (r["arm"], r["request_id"] or "")):
        c = counts.setdefault(r["arm"], ArmCounts())
        if r["status"] != "ok":
            if r["error_type"] == "cancelled":
                c.cancelled += 1
                continue
            c.requests += 1
            c.unanswered += 1
            continue
        c.requests += 1
        c.answered += 1
        sid = r["sample_id"] or ""
        ref = r["reference_answer"]
        item = items.get(sid)
        if item is None:
            if items:
                unknown.add(sid)
            item = _row_item(sid, r["slice"], ref)
        elif item.reference != ref:
            changed.add(sid)
            item = _row_item(sid, r["slice"], ref)
        text = r["output_text"] if r["output_text"] is not None else ""
        ntok = r["completion_tokens"]
        for s in scorers_for(item):
            v = s.score(text, item, ntok)
            if v is None or not math.isfinite(v):
                continue
            cols["run_id"].append(r["run_id"])
            cols["arm"].append(r["arm"])
            cols["sample_id"].append(sid)
            cols["request_id"].append(r["request_id"])
            cols["attempt"].append(int(r["attempt"] or 0))
            cols["pair_id"].append(r["pair_id"])
            cols["category"].append(item.category)
            cols["scorer"].append(s.name)
            cols["kind"].append(s.kind)
            cols["value"].append(float(v))
    notes = []
    if changed:
        notes.append(
            f"{len(changed)} item(s) changed their answer in the eval file since the run "
            f"(e.g. {sorted(changed)[0]!r}): scored against the recorded reference_answer"
        )
    if unknown:
        notes.append(
            f"{len(unknown)} sample_id(s) not in the eval file (e.g. {sorted(unknown)[0]!r}): "
            "scored from the recorded row (format inferred from the answer)"
        )
    return pa.Table.from_pydict(cols, schema=SCORES_SCHEMA), counts, notes


def _check_text_mode(manifest: dict[str, Any], table: pa.Table) -> None:
    mode = ((manifest.get("config") or {}).get("record") or {}).get("output_text", "keep")
    if mode in ("hash", "drop"):
        raise ScoreError(
            f"cannot score: the run recorded output_text as {mode!r} (record.output_text="
            f"{mode}), so the answers are gone; rerun with record.output_text=keep"
        )
    ok = pc.equal(table.column("status").cast(pa.string()), "ok")
    texts = table.column("output_text").filter(ok)
    if len(texts) and pc.all(pc.is_null(texts)).as_py():
        raise ScoreError(
            "cannot score: no successful request recorded its output_text (dropped by "
            "config?); rerun with record.output_text=keep"
        )


def score_run(run_dir: Path, *, write: bool = True, phases: list[str] | None = None) -> Scores:
    """Score a run directory from its request rows (see the module docstring) and, with
    ``write``, save ``RUN_DIR/scores/scores.parquet``. ``phases``: the analysed phases
    (default: the run's ``analysis.include_phases``). Raises :class:`ScoreError` when
    nothing can be scored (no reference answers, output text not recorded)."""
    run_dir = Path(run_dir)
    manifest = _manifest(run_dir)
    phases = _phases(manifest) if phases is None else list(phases)
    path = eval_path(manifest)
    fp = fingerprint(run_dir, path, phases)
    table = _reference_rows(run_dir, phases)
    if table.num_rows == 0:
        raise ScoreError(
            f"{run_dir}: no request rows with a reference answer (an eval workload, e.g. "
            "workload=eval_canary, records them)"
        )
    _check_text_mode(manifest, table)
    items, notes = load_items(path)
    rows = table.to_pylist()
    for r in rows:  # dictionary-encoded columns come back as plain strings already
        r["arm"] = str(r["arm"])
    scored, counts, more = score_rows(rows, items)
    scores = Scores(scored, counts, notes + more, fp, items)
    if write:
        write_scores(run_dir, scores)
    return scores


def write_scores(run_dir: Path, scores: Scores) -> Path:
    """Write the table atomically (a temporary file renamed into place)."""
    out = Path(run_dir) / SCORES_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        b"harness.scores_schema_version": str(SCORES_SCHEMA_VERSION).encode(),
        b"harness.scorers_version": str(SCORERS_VERSION).encode(),
        b"harness.scores.fingerprint": scores.fingerprint.encode(),
        b"harness.scores.counts": json.dumps(
            {a: c.as_dict() for a, c in scores.counts.items()}
        ).encode(),
        b"harness.scores.notes": json.dumps(scores.notes).encode(),
    }
    table = scores.table.replace_schema_metadata(meta)
    tmp = out.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out)
    return out


def read_scores(run_dir: Path) -> Scores | None:
    """The saved table with its counts and notes, or None when there is none (or it was
    written by another layout version)."""
    path = Path(run_dir) / SCORES_FILE
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError):
        return None
    meta = table.schema.metadata or {}
    if meta.get(b"harness.scores_schema_version") != str(SCORES_SCHEMA_VERSION).encode():
        return None
    try:
        raw_counts = json.loads(meta.get(b"harness.scores.counts", b"{}"))
        notes = json.loads(meta.get(b"harness.scores.notes", b"[]"))
    except json.JSONDecodeError:
        return None
    counts = {a: ArmCounts(**c) for a, c in raw_counts.items()}
    fp = meta.get(b"harness.scores.fingerprint", b"").decode()
    return Scores(table.replace_schema_metadata(None), counts, list(notes), fp)


def ensure_scores(run_dir: Path, phases: list[str] | None = None) -> Scores:
    """The run's scores: the saved table while its fingerprint matches the inputs, else a
    fresh :func:`score_run` (written). Raises :class:`ScoreError` like it."""
    run_dir = Path(run_dir)
    manifest = _manifest(run_dir)
    phases = _phases(manifest) if phases is None else list(phases)
    saved = read_scores(run_dir)
    if saved is not None and saved.fingerprint == fingerprint(run_dir, eval_path(manifest), phases):
        return saved
    return score_run(run_dir, phases=phases)


def item_values(table: pa.Table, arm: str, scorer: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """One arm's values of one scorer **per item**: ``(sample_ids, values, info)``, sorted by
    sample_id. An item scored several times (the workload cycled) gets the mean of its
    values; ``info`` has ``occurrences`` (rows) and ``repeated_items``."""
    mask = pc.and_(pc.equal(table.column("arm"), arm), pc.equal(table.column("scorer"), scorer))
    sub = table.filter(mask)
    ids = np.asarray(sub.column("sample_id").to_pylist(), dtype=object)
    vals = sub.column("value").to_numpy(zero_copy_only=False).astype(np.float64)
    if ids.size == 0:
        return ids.astype(str), vals, {"occurrences": 0, "repeated_items": 0}
    uniq, inv, n = np.unique(ids.astype(str), return_inverse=True, return_counts=True)
    means = np.bincount(inv, weights=vals, minlength=uniq.size) / n
    return uniq, means, {"occurrences": int(ids.size), "repeated_items": int((n > 1).sum())}


def scores_for(data: Any) -> Scores | None:
    """The scores of a :class:`~harness.analysis.data.RunData`, the one place every report
    consumer (quality section, judge inputs, canary figures) gets them: None when the run has
    no reference answers, else :func:`ensure_scores` (raises :class:`ScoreError` like it).

    In a day's view (``data.days`` set: ``load_run(days=...)``) the table keeps only the
    score rows of the loaded rows (key ``arm``, ``request_id``, ``attempt``) and the per-arm
    counts are recounted over the loaded rows, so a day's report never mixes in the rest of
    the month. Cached on ``data``."""
    key = ("scores_for",)
    if key in data.cache:
        return data.cache[key]
    run_dir = Path(data.run_dir)
    phases = list(data.analysis.include_phases)
    if not has_references(run_dir, phases):
        data.cache[key] = None
        return None
    scores = ensure_scores(run_dir, phases)
    if getattr(data, "days", None) is not None:
        scores = _restrict(scores, data)
    data.cache[key] = scores
    return scores


def _restrict(scores: Scores, data: Any) -> Scores:
    """``scores`` restricted to the rows of ``data`` (a day's view), counts recounted."""
    keys = data.row_keys()
    names = ["arm", "request_id", "attempt"]
    table = scores.table
    if keys is None:
        table = table.slice(0, 0)
    elif table.num_rows:
        order = pa.array(np.arange(table.num_rows, dtype=np.int64))
        table = table.append_column("_order", order)
        table = table.join(keys.group_by(names).aggregate([]), keys=names, join_type="left semi")
        table = table.sort_by("_order").drop_columns("_order").cast(SCORES_SCHEMA)
    day_note = (f"Restricted to the loaded rows of experiment-clock day(s) "
                f"{', '.join(map(str, data.days))}.")  # fmt: skip
    return Scores(table, _view_counts(data), [*scores.notes, day_note], scores.fingerprint,
                  scores.items)  # fmt: skip


def _view_counts(data: Any) -> dict[str, ArmCounts]:
    """Per arm, the logical requests with a reference answer among ``data``'s rows, by the
    outcome of their final attempt (as :func:`score_rows` counts them)."""
    cols = ("arm", "request_id", "attempt", "status", "error_type", "reference_answer")
    frames = []
    for part in data.request_parts(cols):
        keep = pc.is_valid(part.column("reference_answer"))
        if part.num_rows and pc.any(keep).as_py():
            frames.append(part.filter(keep).drop_columns("reference_answer").to_pandas())
    counts: dict[str, ArmCounts] = {}
    if not frames:
        return counts
    import pandas as pd

    df = pd.concat(frames, ignore_index=True)
    df["arm"] = df["arm"].astype(str)
    df["attempt"] = df["attempt"].fillna(0)
    rid = df["request_id"].astype(object)
    df["rid"] = rid.where(rid.notna(), "#" + df.index.astype(str))
    final = df.sort_values("attempt", kind="stable").drop_duplicates(["arm", "rid"], keep="last")
    status = final["status"].astype(str)
    cancelled = (status != "ok") & (final["error_type"].astype(object) == "cancelled")
    for arm, grp in final.assign(ok=status == "ok", cancelled=cancelled).groupby("arm"):
        n_cancel = int(grp["cancelled"].sum())
        answered = int(grp["ok"].sum())
        counts[str(arm)] = ArmCounts(requests=len(grp) - n_cancel, answered=answered,
                                     unanswered=len(grp) - n_cancel - answered,
                                     cancelled=n_cancel)  # fmt: skip
    return counts
