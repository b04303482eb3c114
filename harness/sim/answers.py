"""Reference answers: the simulator answers eval-set prompts right with a set probability.

Eval files are JSONL items ``{"id", "category", "prompt", "answer"}``, read and checked by the
workloads' reader (:func:`harness.workloads.eval.read_eval_file`: a malformed line is an error
naming ``file:line``, never skipped). A request whose prompt (the last user message, stripped)
equals an item's ``prompt`` is answered with the item's ``answer`` when ``u(seed, item id) < accuracy``, otherwise with a plausible wrong answer: a
number off by a small nonzero amount, or another answer of the same category (a vocabulary
word when there is none). ``u`` is a fixed uniform draw per (server seed, item), so an item
right at accuracy 0.84 is also right at 0.92: lowering accuracy only flips items to wrong.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from harness.config import project_root

from .tokens import VOCAB, request_rng

_INT = re.compile(r"^-?\d+$")
_DEC = re.compile(r"^-?\d+\.(\d+)$")


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
        project root). A pattern matching no file adds nothing; a malformed file raises
        :class:`harness.workloads.base.WorkloadError` (a ``ValueError``) naming the line."""
        from harness.workloads.eval import read_eval_file  # numpy: only when answers are on

        root = project_root() if root is None else root
        items: list[EvalItem] = []
        ids: dict[str, str] = {}
        for pattern in patterns:
            full = pattern if Path(pattern).is_absolute() else str(root / pattern)
            for path in sorted(glob.glob(full)):
                for line in read_eval_file(Path(path), ids):
                    items.append(EvalItem(line.sample_id, line.category, line.prompt, line.answer))
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
