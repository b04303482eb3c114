"""Reference answers: the simulator answers eval-set prompts right with a set probability,
with item difficulty shared across servers, and injectable behaviour drifts.

Eval files are JSONL items ``{"id", "category", "prompt", "answer"}`` (optional
``difficulty`` in [0, 1]), read and checked by the workloads' reader
(:func:`harness.workloads.eval.read_eval_file`: a malformed line is an error naming
``file:line``, never skipped). A request whose prompt (the last user message, stripped)
equals an item's ``prompt`` is answered with the item's ``answer`` when the item is right,
otherwise with a plausible wrong answer: a number off by a small nonzero amount, another
answer of the same category (for a JSON object, one with the same keys), or a vocabulary
word when there is none.

**Right or wrong** (a Gaussian copula, so errors correlate across arms as between real
models: hard items are hard for every server). Each item has a latent hardness ``z``, the
same on every server and seed: ``z = eta`` (a standard normal draw from the item id), or,
with a ``difficulty`` d, ``z = (Phi^-1(d) + eta) / sqrt(2)``. A server with seed ``s`` draws
its own ``e ~ N(0, 1)`` per item and computes ``u = Phi(sqrt(rho) z + sqrt(1 - rho) e)``
with ``rho = item_correlation``; the item is right when ``u < accuracy``. ``u`` is uniform
when ``z`` is standard normal (items without difficulty, or difficulties spread evenly over
(0, 1) as the shipped generator writes them), so the expected share right is ``accuracy``;
two servers' latents correlate by ``rho`` (``rho = 0``: independent errors, the old
behaviour; ``rho = 1``: at equal accuracy every server misses the same items). ``u`` is
fixed per (seed, item), so an item right at accuracy 0.84 is also right at 0.92: lowering
accuracy only flips items to wrong.

**Behaviour drifts**, each decided by its own fixed draw per (seed, item), so raising a rate
only adds affected items: ``refusal_rate`` (the reply is :data:`REFUSAL`, whatever the
item), ``format_break_rate`` (the answer, right or wrong, comes wrapped in prose, or as
truncated JSON for a JSON answer) and ``verbosity`` (a multiplier of the reply's length: a
reply of ``k`` words gets ``k * verbosity`` tokens on average, rounded up or down at random,
the extra ones vocabulary words after the answer; below 1 the answer is never cut). Non-eval requests
refuse at ``refusal_rate`` too and their natural length median is multiplied by
``verbosity`` (see :mod:`harness.sim.server`).
"""

from __future__ import annotations

import glob
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

from harness.config import project_root

from .tokens import VOCAB, request_rng

_INT = re.compile(r"^-?\d+$")
_DEC = re.compile(r"^-?\d+\.(\d+)$")
_NORMAL = NormalDist()
#: The text of a refusal (what a refusal scorer must recognise).
REFUSAL = "I can't help with that."
#: Prose put before an answer whose format breaks (a JSON answer may be truncated instead).
FORMAT_PREFIX = "Sure! Here is the answer:"


def _phi_inv(u: float) -> float:
    return _NORMAL.inv_cdf(min(max(u, 1e-12), 1.0 - 1e-12))


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@dataclass(frozen=True, slots=True)
class EvalItem:
    id: str
    category: str
    prompt: str
    answer: str
    difficulty: float | None = None

    @property
    def hardness(self) -> float:
        """The latent ``z`` (standard normal over the items), the same on every server."""
        eta = _phi_inv(request_rng("item-hardness", self.id).random())
        if self.difficulty is None:
            return eta
        return (_phi_inv(self.difficulty) + eta) / math.sqrt(2.0)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the simulator says to one eval prompt."""

    text: str  # the answer text (the reference, a wrong answer, broken, or a refusal)
    correct: bool  # the item was answered right (before refusal / format breakage)
    refused: bool
    broken: bool  # the format broke (prose around the answer, truncated JSON)
    extra_tokens: int  # vocabulary tokens after ``text`` (verbosity)


class AnswerBook:
    """Eval items indexed by prompt; decides each item's answer for a seed and accuracy."""

    def __init__(self, items: list[EvalItem]) -> None:
        self.by_prompt = {it.prompt.strip(): it for it in items}
        self.by_category: dict[str, list[str]] = {}
        for it in items:
            answers = self.by_category.setdefault(it.category, [])
            if it.answer not in answers:
                answers.append(it.answer)
        self._hardness = {it.id: it.hardness for it in items}

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
                    items.append(
                        EvalItem(
                            line.sample_id, line.category, line.prompt, line.answer, line.difficulty
                        )
                    )
        return cls(items)

    def lookup(self, prompt: str) -> EvalItem | None:
        """The item whose prompt equals ``prompt`` (stripped), if any."""
        return self.by_prompt.get(prompt.strip())

    def latent_u(self, item: EvalItem, seed: int, item_correlation: float) -> float:
        """The item's uniform ``u`` on a server with ``seed`` (right when ``u < accuracy``)."""
        rho = min(max(item_correlation, 0.0), 1.0)
        u_own = request_rng(seed, "accuracy", item.id).random()
        if rho == 0.0:
            return u_own
        z = self._hardness.get(item.id)
        if z is None:
            z = item.hardness
        return _phi(math.sqrt(rho) * z + math.sqrt(1.0 - rho) * _phi_inv(u_own))

    def answer(
        self, item: EvalItem, accuracy: float, seed: int, item_correlation: float = 0.0
    ) -> tuple[str, bool]:
        """(answer text, whether it is the reference answer) for ``item``."""
        if self.latent_u(item, seed, item_correlation) < accuracy:
            return item.answer, True
        return self.wrong_answer(item, seed), False

    def reply(
        self,
        item: EvalItem,
        seed: int,
        *,
        accuracy: float,
        item_correlation: float = 0.0,
        refusal_rate: float = 0.0,
        format_break_rate: float = 0.0,
        verbosity: float = 1.0,
    ) -> Reply:
        """The whole reply to ``item``: right or wrong, then refusal, format breakage and
        verbosity (see the module docstring), each from its own draw per (seed, item)."""
        text, correct = self.answer(item, accuracy, seed, item_correlation)
        refused = broken = False
        if refusal_rate > 0 and request_rng(seed, "refusal", item.id).random() < refusal_rate:
            text, refused = REFUSAL, True
        elif format_break_rate > 0 and request_rng(seed, "format", item.id).random() < (
            format_break_rate
        ):
            text, broken = self.broken_format(item, text, seed), True
        extra = 0
        if verbosity != 1.0:
            k = len(text.split()) or 1
            target = k * verbosity
            whole = math.floor(target)
            frac = target - whole
            if frac > 0 and request_rng(seed, "verbosity", item.id).random() < frac:
                whole += 1
            extra = max(0, whole - k)
        return Reply(text, correct, refused, broken, extra)

    def broken_format(self, item: EvalItem, text: str, seed: int) -> str:
        """``text`` with its format broken: a JSON object truncated (half of the items) or any
        answer after :data:`FORMAT_PREFIX`."""
        stripped = text.strip()
        if stripped.startswith("{") and request_rng(seed, "format-style", item.id).random() < 0.5:
            return stripped[:-1].rstrip()  # no closing brace: not JSON any more
        return f"{FORMAT_PREFIX} {stripped}"

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
        keys = _json_keys(ref)
        if keys is not None:  # a JSON object: another answer with the same keys
            same = [a for a in others if _json_keys(a) == keys]
            others = same or others
        if others:
            return rng.choice(others)
        return rng.choice([w for w in VOCAB if w != ref.lower()])


def _json_keys(text: str) -> frozenset[str] | None:
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return frozenset(value) if isinstance(value, dict) else None
