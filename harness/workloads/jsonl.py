"""JSONL prompt sets: one JSON object per line, checked line by line.

Line format (blank lines are skipped)::

    {"prompt": "Summarise ..."}                                   # completions-style prompt
    {"messages": [{"role": "system", "content": "..."},
                  {"role": "user", "content": "..."}]}            # chat messages
    optional: "id" (string or integer), "max_tokens" (integer >= 1),
              "slice" or "category" (string), "answer" or "reference" (string)

Exactly one of ``prompt`` / ``messages`` is required. ``sample_id`` is ``id`` when given,
else ``<workload>:<line>``; ids must be unique. ``max_tokens`` falls back to
``workload.max_tokens``, then to a seeded draw from ``workload.output_tokens``. Unknown keys
are ignored unless they look like a misspelling of a known key (``max_token``), which is an
error. Every problem raises :class:`WorkloadError` naming ``file:line``.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.config import ConfigError, WorkloadConfig
from harness.workloads.base import ListWorkload, WorkItem, WorkloadError, rng_for
from harness.workloads.common import resolve_path
from harness.workloads.lengths import sample_lengths, validate_length_dist

ROLES = ("system", "developer", "user", "assistant", "tool")
JSONL_KEYS = (
    "prompt",
    "messages",
    "id",
    "max_tokens",
    "slice",
    "category",
    "answer",
    "reference",
    "tags",
)
_MAXTOK_SALT = 0x3A7


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of ``path`` (1-based lines).

    Raises :class:`WorkloadError` for a missing or unreadable file, bad UTF-8, a line that is
    not JSON or not an object, and a file with no objects at all.
    """
    if not path.is_file():
        raise WorkloadError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read: {exc}") from exc
    count = 0
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise WorkloadError(f"{path}:{lineno}: not valid UTF-8 ({exc.reason})") from exc
        if lineno == 1:
            text = text.lstrip("\ufeff")
        if not text:
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkloadError(
                f"{path}:{lineno}: malformed JSON at column {exc.colno}: {exc.msg}"
            ) from exc
        if not isinstance(obj, dict):
            raise WorkloadError(
                f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
            )
        count += 1
        yield lineno, obj
    if count == 0:
        raise WorkloadError(f"{path}: empty file (no JSON objects)")


class LineFields:
    """Typed access to one line's fields; errors name the file, the line and the key."""

    def __init__(self, path: Path, lineno: int, obj: dict[str, Any]) -> None:
        self.where = f"{path}:{lineno}"
        self.obj = obj

    def error(self, msg: str) -> WorkloadError:
        return WorkloadError(f"{self.where}: {msg}")

    def str_(self, key: str, *, required: bool = False, nonempty: bool = True) -> str | None:
        if key not in self.obj or self.obj[key] is None:
            if required:
                raise self.error(f"missing required field {key!r}")
            return None
        v = self.obj[key]
        if not isinstance(v, str):
            raise self.error(f"field {key!r} must be a string, got {type(v).__name__}: {v!r:.60}")
        if nonempty and not v.strip():
            raise self.error(f"field {key!r} is empty")
        return v

    def id_(self, key: str = "id", *, required: bool = False) -> str | None:
        v = self.obj.get(key)
        if v is None:
            if required:
                raise self.error(f"missing required field {key!r}")
            return None
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise self.error(f"field {key!r} must be a string or integer, got {v!r:.60}")
        s = str(v)
        if not s.strip():
            raise self.error(f"field {key!r} is empty")
        return s

    def pos_int(self, key: str) -> int | None:
        v = self.obj.get(key)
        if v is None:
            return None
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise self.error(f"field {key!r} must be an integer >= 1, got {v!r}")
        return v

    def messages(self, key: str = "messages") -> tuple[dict[str, str], ...]:
        v = self.obj[key]
        if not isinstance(v, list) or not v:
            raise self.error(f"field {key!r} must be a non-empty list of messages, got {v!r:.60}")
        out = []
        for k, m in enumerate(v):
            if not isinstance(m, dict):
                raise self.error(f"{key}[{k}] must be an object with 'role' and 'content'")
            role, content = m.get("role"), m.get("content")
            if role not in ROLES:
                raise self.error(f"{key}[{k}].role: {role!r} is not one of {', '.join(ROLES)}")
            if not isinstance(content, str):
                raise self.error(f"{key}[{k}].content must be a string, got {content!r:.60}")
            out.append({"role": role, "content": content})
        return tuple(out)

    def tags(self, key: str = "tags") -> tuple[str, ...]:
        """Optional labels of the item (e.g. ``["pii"]``): a list of non-empty strings."""
        v = self.obj.get(key)
        if v is None:
            return ()
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise self.error(f"field {key!r} must be a list of non-empty strings, got {v!r:.60}")
        return tuple(v)

    def check_typos(self, known: tuple[str, ...]) -> None:
        for key in self.obj:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
            if close:
                raise self.error(f"unknown field {key!r} (did you mean {close[0]!r}?)")


def parse_prompt_line(f: LineFields) -> tuple[tuple[dict[str, str], ...] | None, str | None]:
    """``(messages, prompt)`` of a JSONL prompt line: exactly one of the two is set."""
    has_p, has_m = f.obj.get("prompt") is not None, f.obj.get("messages") is not None
    if has_p and has_m:
        raise f.error("give either 'prompt' or 'messages', not both")
    if has_m:
        return f.messages(), None
    if has_p:
        return None, f.str_("prompt")
    raise f.error("missing required field 'prompt' (or 'messages')")


def check_unique(ids: dict[str, str], sample_id: str, where: str) -> None:
    if sample_id in ids:
        raise WorkloadError(f"{where}: duplicate id {sample_id!r} (first at {ids[sample_id]})")
    ids[sample_id] = where


def default_max_tokens(cfg: WorkloadConfig, n: int) -> list[int]:
    """Per-line fallback output lengths: ``cfg.max_tokens`` or seeded ``output_tokens`` draws."""
    if cfg.max_tokens is not None:
        if cfg.max_tokens < 1:
            raise ConfigError(f"workload.max_tokens: expected >= 1, got {cfg.max_tokens!r}")
        return [cfg.max_tokens] * n
    validate_length_dist(cfg.output_tokens, "workload.output_tokens")
    return sample_lengths(cfg.output_tokens, n, rng_for(cfg.seed, _MAXTOK_SALT)).tolist()


def load_jsonl_workload(cfg: WorkloadConfig, root: Path) -> ListWorkload:
    """Build a JSONL prompt-set workload from ``cfg.path``."""
    path = resolve_path(cfg.path, root)
    lines = list(read_jsonl(path))
    fallback = default_max_tokens(cfg, len(lines))
    force = False if cfg.force_length is None else bool(cfg.force_length)
    items: list[WorkItem] = []
    ids: dict[str, str] = {}
    for k, (lineno, obj) in enumerate(lines):
        f = LineFields(path, lineno, obj)
        f.check_typos(JSONL_KEYS)
        messages, prompt = parse_prompt_line(f)
        sample_id = f.id_() or f"{cfg.name}:{lineno}"
        check_unique(ids, sample_id, f.where)
        slice_ = f.str_("slice") or f.str_("category") or "all"
        answer = f.str_("answer", nonempty=False)
        if answer is None:
            answer = f.str_("reference", nonempty=False)
        items.append(
            WorkItem(
                sample_id=sample_id,
                messages=messages,
                prompt=prompt,
                max_tokens=f.pos_int("max_tokens") or int(fallback[k]),
                force_length=force,
                slice=slice_,
                workload=cfg.name,
                reference_answer=answer,
                tags=f.tags(),
            )
        )
    return ListWorkload(cfg.name, items, shuffle=cfg.shuffle, seed=cfg.seed)
