"""Eval sets with reference answers (``workloads/eval/*.jsonl``), for paired quality checks.

Each line is ``{"id", "category", "prompt", "answer"}`` (all strings; optional
``max_tokens``, and for scoring (:mod:`harness.quality`): ``difficulty`` (a number in [0, 1],
the simulator's item hardness), ``format`` (the expected form of the answer, one of
:data:`FORMATS`; default from the answer, :func:`infer_format`), ``schema`` (a JSON schema
the answer must satisfy; implies format ``json``), ``regex`` (a pattern the output must
match), ``tolerance`` (absolute tolerance of a numeric answer, >= 0) and ``scorers`` (a list
of scorer names replacing the defaults for the item's format)), and ``tags`` (a list of
labels, e.g. ``["pii"]``, that a router arm's rules read: :mod:`harness.routing`). An item is sent as one user
message holding ``prompt`` verbatim: the simulator's reference-answers mode answers when the last user message, stripped, equals an
item's prompt, so the text must not be wrapped or templated. Items carry
``reference_answer=answer``, ``slice="eval:<category>"``, ``sample_id=id`` and a small
``max_tokens`` (line value, else ``workload.max_tokens``, else :data:`DEFAULT_EVAL_MAX_TOKENS`),
with ``force_length=False`` so answers end naturally.

``workload.path`` may name one file or a directory (all ``*.jsonl`` in it, sorted by name);
it defaults to :data:`DEFAULT_EVAL_PATH`. Ids must be unique across the files.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import ConfigError, WorkloadConfig
from harness.workloads.base import ListWorkload, WorkItem, WorkloadError
from harness.workloads.common import resolve_path
from harness.workloads.jsonl import LineFields, check_unique, read_jsonl

DEFAULT_EVAL_PATH = "workloads/eval/basic_qa.jsonl"
DEFAULT_EVAL_MAX_TOKENS = 16
EVAL_KEYS = (
    "id",
    "category",
    "prompt",
    "answer",
    "max_tokens",
    "difficulty",
    "format",
    "schema",
    "regex",
    "tolerance",
    "scorers",
    "tags",
)
#: Expected forms of an answer: a bare number, yes/no, a short phrase (a few words on one
#: line), a JSON value (with ``schema``: valid against it), or free text.
FORMATS = ("number", "yesno", "short", "json", "text")
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def infer_format(answer: str, schema: dict[str, Any] | None = None) -> str:
    """The default ``format`` of an item: ``json`` with a schema, ``number`` for a numeric
    answer, ``yesno`` for yes/no, otherwise ``short``."""
    if schema is not None:
        return "json"
    a = answer.strip()
    if _NUMBER.match(a):
        return "number"
    if a.lower() in ("yes", "no"):
        return "yesno"
    return "short"


@dataclass(frozen=True, slots=True)
class EvalLine:
    """One checked line of an eval file."""

    sample_id: str
    category: str
    prompt: str
    answer: str
    max_tokens: int | None
    where: str  # file:line
    difficulty: float | None = None  # in [0, 1]; None: not given
    format: str = "short"  # one of FORMATS (given, or infer_format)
    schema: dict[str, Any] | None = None  # JSON schema (format json)
    regex: str | None = None  # the output must match it (re.search)
    tolerance: float | None = None  # absolute tolerance of a numeric answer
    scorers: tuple[str, ...] | None = None  # scorer names replacing the format's defaults
    tags: tuple[str, ...] = ()  # labels (e.g. "pii"): a router's rules read them


def _number(f: LineFields, key: str, lo: float, hi: float | None) -> float | None:
    v = f.obj.get(key)
    if v is None:
        return None
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or v < lo or (hi is not None and v > hi):
        want = f"a number in [{lo:g}, {hi:g}]" if hi is not None else f"a number >= {lo:g}"
        raise f.error(f"field {key!r} must be {want}, got {v!r:.60}")
    return float(v)


def schema_key(schema: dict[str, Any]) -> str:
    """A schema as canonical JSON: the cache key of :func:`schema_validator`."""
    return json.dumps(schema, sort_keys=True)


@functools.lru_cache(maxsize=256)
def schema_validator(key: str) -> Any:
    """A ``jsonschema`` validator for the schema whose :func:`schema_key` is ``key`` (the
    dialect named by ``$schema``, else the latest); cached: eval files repeat a few schemas
    over many items. Raises ``jsonschema.SchemaError`` for an invalid schema."""
    from jsonschema import validators  # only for files with schemas

    schema = json.loads(key)
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _schema_problem(key: str) -> str | None:
    from jsonschema import SchemaError

    try:
        schema_validator(key)
    except SchemaError as exc:
        return exc.message
    return None


def _answer_problem(key: str, value: Any) -> str | None:
    """Why ``value`` fails the (valid) schema, or None."""
    err = next(iter(schema_validator(key).iter_errors(value)), None)
    return None if err is None else err.message


def _scoring_fields(f: LineFields, answer: str) -> dict[str, Any]:
    """The optional scoring fields of a line, checked (errors name file:line and the key)."""
    schema = f.obj.get("schema")
    if schema is not None:
        if not isinstance(schema, dict):
            raise f.error(f"field 'schema' must be a JSON schema object, got {schema!r:.60}")
        problem = _schema_problem(schema_key(schema))
        if problem:
            raise f.error(f"field 'schema' is not a valid JSON schema: {problem}")
    fmt = f.str_("format")
    if fmt is None:
        fmt = infer_format(answer, schema)
    elif fmt not in FORMATS:
        raise f.error(f"field 'format': {fmt!r} is not one of {', '.join(FORMATS)}")
    if schema is not None and fmt != "json":
        raise f.error(f"field 'format': an item with a 'schema' has format 'json', not {fmt!r}")
    if fmt in ("number", "yesno") and infer_format(answer) != fmt:
        raise f.error(f"field 'answer': {answer!r:.40} is not a valid answer of format {fmt!r}")
    if fmt == "json":
        try:
            value = json.loads(answer)
        except json.JSONDecodeError as exc:
            raise f.error(f"field 'answer' is not valid JSON (format json): {exc.msg}") from None
        if schema is not None:
            problem = _answer_problem(schema_key(schema), value)
            if problem:
                raise f.error(f"field 'answer' does not satisfy its 'schema': {problem}")
    regex = f.str_("regex")
    if regex is not None:
        try:
            re.compile(regex)
        except re.error as exc:
            raise f.error(f"field 'regex' does not compile: {exc}") from None
        if not re.search(regex, answer):
            raise f.error(f"field 'regex' {regex!r:.60} does not match the item's own answer")
    scorers = f.obj.get("scorers")
    if scorers is not None:
        if (
            not isinstance(scorers, list)
            or not scorers
            or not all(isinstance(x, str) and x for x in scorers)
        ):
            raise f.error(f"field 'scorers' must be a non-empty list of names, got {scorers!r:.60}")
        scorers = tuple(scorers)
    return {
        "difficulty": _number(f, "difficulty", 0.0, 1.0),
        "format": fmt,
        "schema": schema,
        "regex": regex,
        "tolerance": _number(f, "tolerance", 0.0, None),
        "scorers": scorers,
    }


def read_eval_file(file: Path, ids: dict[str, str] | None = None) -> Iterator[EvalLine]:
    """The items of ``file``, each line checked (:class:`WorkloadError` naming ``file:line``);
    ``ids`` (id -> where first seen) enforces unique ids across files. Also used by the
    simulator's reference-answer book, so both read eval files by the same rules."""
    ids = {} if ids is None else ids
    for lineno, obj in read_jsonl(file):
        f = LineFields(file, lineno, obj)
        f.check_typos(EVAL_KEYS)
        sample_id = f.id_(required=True)
        assert sample_id is not None
        check_unique(ids, sample_id, f.where)
        category = f.str_("category", required=True)
        prompt = f.str_("prompt", required=True)
        answer = f.str_("answer", required=True, nonempty=False)
        assert category is not None and prompt is not None and answer is not None
        yield EvalLine(
            sample_id,
            category,
            prompt,
            answer,
            f.pos_int("max_tokens"),
            f.where,
            **_scoring_fields(f, answer),
            tags=f.tags(),
        )


def eval_files(path: Path) -> list[Path]:
    """The eval files under ``path``: itself, or the sorted ``*.jsonl`` of a directory."""
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise WorkloadError(f"{path}: directory has no *.jsonl eval files")
        return files
    return [path]


def load_eval_workload(cfg: WorkloadConfig, root: Path) -> ListWorkload:
    """Build an eval-set workload from ``cfg.path`` (default :data:`DEFAULT_EVAL_PATH`)."""
    path = resolve_path(cfg.path or DEFAULT_EVAL_PATH, root)
    if cfg.max_tokens is not None and cfg.max_tokens < 1:
        raise ConfigError(f"workload.max_tokens: expected >= 1, got {cfg.max_tokens!r}")
    default_max = cfg.max_tokens or DEFAULT_EVAL_MAX_TOKENS
    force = False if cfg.force_length is None else bool(cfg.force_length)
    items: list[WorkItem] = []
    ids: dict[str, str] = {}
    for file in eval_files(path):
        for line in read_eval_file(file, ids):
            items.append(
                WorkItem(
                    sample_id=line.sample_id,
                    messages=({"role": "user", "content": line.prompt},),
                    prompt=line.prompt,
                    max_tokens=line.max_tokens or default_max,
                    force_length=force,
                    slice=f"eval:{line.category}",
                    workload=cfg.name,
                    reference_answer=line.answer,
                    tags=line.tags,
                )
            )
    return ListWorkload(cfg.name, items, shuffle=cfg.shuffle, seed=cfg.seed)
