"""Reference answers: the simulator answers eval-set prompts right with a set probability.

Eval files are JSONL items ``{"id", "category", "prompt", "answer"}``. A request whose prompt
(the last user message, stripped) equals an item's ``prompt`` is answered with the item's
``answer`` when ``u(seed, item id) < accuracy``, otherwise with a plausible wrong answer: a
number off by a small nonzero amount, or another answer of the same category (a vocabulary
word when there is none). ``u`` is a fixed uniform draw per (server seed, item), so an item
right at accuracy 0.84 is also right at 0.92: lowering accuracy only flips items to wrong.
"""

from __future__ import annotations

import glob
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import orjson

from .tokens import VOCAB, request_rng

log = logging.getLogger(__name__)

_INT = re.compile(r"^-?\d+$")
_DEC = re.compile(r"^-?\d+\.(\d+)$")


def project_root() -> Path:
    """The checkout's root (the folder holding ``workloads/``), found from the package."""
    import harness

    return Path(harness.__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class EvalItem:
    id: str
    category: str
    prompt: str
    answer: str


class AnswerBook:
    """Eval items indexed by prompt; decides each item's answer for a seed and accuracy."""

    def __init__(self, items: list[EvalItem]) -> None:
        self.by_prompt = {it.prompt.strip(): it for it in items}
        self.by_category: dict[str, list[str]] = {}
        for it in items:
            answers = self.by_category.setdefault(it.category, [])
            if it.answer not in answers:
                answers.append(it.answer)

    def __len__(self) -> int:
        return len(self.by_prompt)

    @classmethod
    def load(cls, patterns: list[str], root: Path | None = None) -> AnswerBook:
        """Items from the JSONL files matching ``patterns`` (relative to ``root``, default the
        project root). Missing files give an empty book; malformed lines are skipped."""
        root = project_root() if root is None else root
        items: list[EvalItem] = []
        for pattern in patterns:
            full = pattern if Path(pattern).is_absolute() else str(root / pattern)
            for path in sorted(glob.glob(full)):
                items.extend(_read_items(Path(path)))
        return cls(items)

    def lookup(self, prompt: str) -> EvalItem | None:
        """The item whose prompt equals ``prompt`` (stripped), if any."""
        return self.by_prompt.get(prompt.strip())

    def answer(self, item: EvalItem, accuracy: float, seed: int) -> tuple[str, bool]:
        """(answer text, whether it is the reference answer) for ``item``."""
        u = request_rng(seed, "accuracy", item.id).random()
        if u < accuracy:
            return item.answer, True
        return self.wrong_answer(item, seed), False

    def wrong_answer(self, item: EvalItem, seed: int) -> str:
        """A plausible answer that differs from the reference."""
        rng = request_rng(seed, "wrong", item.id)
        ref = item.answer.strip()
        if _INT.match(ref):
            return str(int(ref) + rng.choice((-3, -2, -1, 1, 2, 3)))
        m = _DEC.match(ref)
        if m:
            places = len(m.group(1))
            step = 10.0**-places
            return f"{float(ref) + rng.choice((-2, -1, 1, 2)) * step:.{places}f}"
        others = [a for a in self.by_category.get(item.category, []) if a.strip() != ref]
        if others:
            return rng.choice(others)
        return rng.choice([w for w in VOCAB if w != ref.lower()])


def _read_items(path: Path) -> list[EvalItem]:
    items = []
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = orjson.loads(line)
                items.append(
                    EvalItem(
                        str(d["id"]), str(d.get("category", "")), d["prompt"], str(d["answer"])
                    )
                )
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                log.warning("%s:%d: skipped eval item (%s)", path, lineno, exc)
    return items
