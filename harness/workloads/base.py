"""The unit of work handed to a target (``WorkItem``) and the ``Workload`` interface.

Workloads are indexable and deterministic: arrival ``i`` always gets the same item, so
mirrored arms, distributed workers and restarted runs agree on what was sent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from harness.config import ConfigError

_ORDER_SALT = 0x5EED_0DE5  # separates the cycle-order stream from item-content streams


@dataclass(frozen=True, slots=True)
class WorkItem:
    sample_id: str  # stable id of the workload item (pairs quality across arms)
    messages: tuple[dict[str, Any], ...] | None = None  # chat API (role/content dicts)
    prompt: str | None = None  # completions API; derived from messages when absent
    max_tokens: int = 128  # requested output tokens
    force_length: bool = False  # ask the server for exactly max_tokens (ignore_eos/min_tokens)
    slice: str = "all"  # workload slice for per-slice statistics
    workload: str = ""  # workload name
    reference_answer: str | None = None  # eval items: the exact expected answer
    conversation_id: str | None = None  # multi-turn: conversation and turn (0-based)
    turn: int | None = None
    expected_prompt_tokens: int | None = None  # generator's intended input length, if known
    # labels of the item (JSONL/eval ``tags``), e.g. ("pii",): a router's rules read them
    tags: tuple[str, ...] = ()

    def prompt_text(self) -> str:
        """The prompt as one string (completions API), joined from messages when needed."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(str(m.get("content", "")) for m in (self.messages or ()))

    def chat_messages(self) -> list[dict[str, Any]]:
        """The prompt as chat messages (chat API), wrapping a bare prompt as one user turn."""
        if self.messages is not None:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]


class WorkloadError(ConfigError):
    """A workload that cannot be used: the message names the file, the line and what was wrong."""


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for (seed, *keys): the same keys give the same stream anywhere."""
    return np.random.default_rng([int(k) % 2**64 for k in (seed, *keys)])


def cycle_permutation(n: int, seed: int, cycle: int) -> np.ndarray:
    """The pool order of one cycle: a seeded permutation of ``range(n)``, pure in its inputs."""
    return rng_for(seed, _ORDER_SALT, cycle).permutation(n)


class Workload(ABC):
    """An indexable, deterministic source of work items: arrival ``i`` gets ``item(i)``.

    ``item(i)`` must depend only on (config, seed, i), never on call order, so mirrored arms
    and distributed workers agree on what arrival ``i`` sends; and it must be cheap (build
    the pool up front). Indices past ``len(self)`` cycle through the pool again.
    """

    name: str

    @abstractmethod
    def __len__(self) -> int:
        """Number of distinct items in one cycle."""

    @abstractmethod
    def item(self, index: int) -> WorkItem:
        """The item for arrival ``index`` (any non-negative integer)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, items={len(self)})"


class PooledWorkload(Workload):
    """A workload over a fixed pool of items, walked in cycles.

    Without ``shuffle`` arrival ``i`` gets pool item ``i % len``. With ``shuffle`` each cycle
    (cycle 0 included) walks the pool in its own seeded permutation, so repeats of an item are
    spread out yet every index still maps to one item, whatever the call order.
    """

    def __init__(self, name: str, *, shuffle: bool, seed: int) -> None:
        self.name = name
        self.shuffle = shuffle
        self.seed = seed
        self._perm = lru_cache(maxsize=4)(self._permutation)

    @abstractmethod
    def pool_item(self, j: int) -> WorkItem:
        """Item ``j`` of the pool, ``0 <= j < len(self)``; pure in ``j``."""

    def pool_index(self, index: int) -> int:
        """The pool position arrival ``index`` maps to (cycling, with per-cycle shuffle)."""
        if index < 0:
            raise IndexError(f"workload {self.name!r}: negative item index {index}")
        cycle, pos = divmod(index, len(self))
        if not self.shuffle:
            return pos
        return int(self._perm(cycle)[pos])

    def item(self, index: int) -> WorkItem:
        return self.pool_item(self.pool_index(index))

    def _permutation(self, cycle: int) -> np.ndarray:
        return cycle_permutation(len(self), self.seed, cycle)


class ListWorkload(PooledWorkload):
    """A pool of items built up front (JSONL prompt sets, eval sets)."""

    def __init__(self, name: str, items: list[WorkItem], *, shuffle: bool, seed: int) -> None:
        if not items:
            raise WorkloadError(f"workload {name!r} has no items")
        super().__init__(name, shuffle=shuffle, seed=seed)
        self.items = tuple(items)

    def __len__(self) -> int:
        return len(self.items)

    def pool_item(self, j: int) -> WorkItem:
        return self.items[j]
