"""Eval sets with reference answers (``workloads/eval/*.jsonl``), for paired quality checks.

Each line is ``{"id", "category", "prompt", "answer"}`` (all strings; optional
``max_tokens``). An item is sent as one user message holding ``prompt`` verbatim: the
simulator's reference-answers mode answers when the last user message, stripped, equals an
item's prompt, so the text must not be wrapped or templated. Items carry
``reference_answer=answer``, ``slice="eval:<category>"``, ``sample_id=id`` and a small
``max_tokens`` (line value, else ``workload.max_tokens``, else :data:`DEFAULT_EVAL_MAX_TOKENS`),
with ``force_length=False`` so answers end naturally.

``workload.path`` may name one file or a directory (all ``*.jsonl`` in it, sorted by name);
it defaults to :data:`DEFAULT_EVAL_PATH`. Ids must be unique across the files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.config import ConfigError, WorkloadConfig
from harness.workloads.base import ListWorkload, WorkItem, WorkloadError
from harness.workloads.common import resolve_path
from harness.workloads.jsonl import LineFields, check_unique, read_jsonl

DEFAULT_EVAL_PATH = "workloads/eval/basic_qa.jsonl"
DEFAULT_EVAL_MAX_TOKENS = 16
EVAL_KEYS = ("id", "category", "prompt", "answer", "max_tokens")


@dataclass(frozen=True, slots=True)
class EvalLine:
    """One checked line of an eval file."""

    sample_id: str
    category: str
    prompt: str
    answer: str
    max_tokens: int | None
    where: str  # file:line


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
        yield EvalLine(sample_id, category, prompt, answer, f.pos_int("max_tokens"), f.where)


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
                )
            )
    return ListWorkload(cfg.name, items, shuffle=cfg.shuffle, seed=cfg.seed)
