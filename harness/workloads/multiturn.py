"""Multi-turn conversations whose history grows turn by turn.

The pool holds ``num_items`` conversations; conversation ``c`` has ``turns_min..turns_max``
user turns (seeded). The item for turn ``k`` (0-based) carries the whole history::

    [system prefix?], user_0, assistant_0, ..., user_{k-1}, assistant_{k-1}, user_k

User turns draw their length from ``input_tokens`` and assistant turns from
``output_tokens`` (the same draw is that turn's ``max_tokens``, with ``force_length``).
Assistant replies are synthetic, fixed words rather than what a server answered, so every
arm sees identical prompts and a server's prefix cache can reuse the previous turn's whole
prompt. A shared system prefix goes to ``shared_prefix_share`` of the conversations.

Order: conversations are taken in groups of ``interleave`` and the turns of a group
alternate (c0 t0, c1 t0, c2 t0, c3 t0, c0 t1, ...), skipping conversations that have ended,
so the turns of one conversation come in order and, under open-loop arrivals, about
``interleave`` arrival gaps apart. Nothing waits for the previous answer: a turn is sent at
its own arrival time even if the previous turn is still streaming or failed, so the gap is
what gives the previous turn time to finish. ``interleave=1``
walks one conversation at a time. ``len()`` is the total number of turns; with ``shuffle``
each cycle takes the conversations in a new seeded order (turn order is kept).

Items: ``conversation_id=<workload>:c<c>``, ``turn=k``, ``sample_id=<workload>:c<c>:t<k>``,
``slice=turn:<k>``, ``expected_prompt_tokens`` = words in all messages.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from harness.config import ConfigError, WorkloadConfig
from harness.workloads.base import WorkItem, Workload, rng_for
from harness.workloads.common import (
    assign_prefixes,
    prefix_enabled,
    prefix_texts,
    validate_generated,
)
from harness.workloads.lengths import sample_lengths
from harness.workloads.words import random_words

_TURNS_SALT = 0x7A25
_TEXT_SALT = 0xC0A7
_ORDER_SALT = 0x0DE2


class MultiTurnWorkload(Workload):
    """Conversations of growing history, ordered turn by turn (see the module docstring)."""

    def __init__(self, cfg: WorkloadConfig) -> None:
        validate_generated(cfg)
        if cfg.turns_min < 1 or cfg.turns_max < cfg.turns_min:
            raise ConfigError(
                f"workload.turns_min/turns_max: expected 1 <= turns_min <= turns_max, "
                f"got {cfg.turns_min!r}..{cfg.turns_max!r}"
            )
        if cfg.interleave < 1:
            raise ConfigError(f"workload.interleave: expected >= 1, got {cfg.interleave!r}")
        self.name = cfg.name
        self.seed = cfg.seed
        self.shuffle = cfg.shuffle
        self.interleave = cfg.interleave
        n = cfg.num_items
        rng = rng_for(cfg.seed, _TURNS_SALT)
        self.turns = rng.integers(cfg.turns_min, cfg.turns_max + 1, size=n)
        self.starts = np.concatenate([[0], np.cumsum(self.turns)[:-1]])
        total = int(self.turns.sum())
        self.user_lengths = sample_lengths(cfg.input_tokens, total, rng)
        self.reply_lengths = sample_lengths(cfg.output_tokens, total, rng)
        self.prefix_ids = assign_prefixes(cfg, n)
        self.prefixes = prefix_texts(cfg) if prefix_enabled(cfg) else []
        self.force_length = True if cfg.force_length is None else bool(cfg.force_length)
        self._total = total
        self._order = lru_cache(maxsize=2)(self._cycle_order)
        self._conversation = lru_cache(maxsize=512)(self._make_conversation)

    def __len__(self) -> int:
        return self._total

    @property
    def num_conversations(self) -> int:
        return len(self.turns)

    def locate(self, index: int) -> tuple[int, int]:
        """``(conversation, turn)`` of arrival ``index``."""
        if index < 0:
            raise IndexError(f"workload {self.name!r}: negative item index {index}")
        cycle, pos = divmod(index, self._total)
        convs, turns = self._order(cycle if self.shuffle else 0)
        return int(convs[pos]), int(turns[pos])

    def item(self, index: int) -> WorkItem:
        c, k = self.locate(index)
        history = self._conversation(c)
        # history: [system?] u0 a0 u1 a1 ...; turn k ends with u_k
        sys_n = 1 if self.prefix_ids[c] >= 0 else 0
        messages = history[: sys_n + 2 * k + 1]
        words = sum(len(m["content"].split()) for m in messages)
        return WorkItem(
            sample_id=f"{self.name}:c{c}:t{k}",
            messages=messages,
            max_tokens=int(self.reply_lengths[self.starts[c] + k]),
            force_length=self.force_length,
            slice=f"turn:{k}",
            workload=self.name,
            conversation_id=f"{self.name}:c{c}",
            turn=k,
            expected_prompt_tokens=words,
        )

    def _cycle_order(self, cycle: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat (conversation, turn) arrays of one cycle, interleaving groups of conversations."""
        n = self.num_conversations
        order = rng_for(self.seed, _ORDER_SALT, cycle).permutation(n) if self.shuffle else None
        conv_at = np.arange(n) if order is None else order
        reps = self.turns[conv_at]
        pos = np.repeat(np.arange(n), reps)  # position of the conversation in this cycle
        first = np.repeat(np.cumsum(reps) - reps, reps)
        turn = np.arange(self._total) - first
        group = pos // self.interleave
        idx = np.lexsort((pos, turn, group))  # by group, then turn, then position
        return conv_at[pos[idx]], turn[idx]

    def _make_conversation(self, c: int) -> tuple[dict[str, str], ...]:
        rng = rng_for(self.seed, _TEXT_SALT, c)
        msgs: list[dict[str, str]] = []
        pid = int(self.prefix_ids[c])
        if pid >= 0:
            msgs.append({"role": "system", "content": self.prefixes[pid]})
        s = int(self.starts[c])
        for k in range(int(self.turns[c])):
            msgs.append(
                {"role": "user", "content": random_words(rng, int(self.user_lengths[s + k]))}
            )
            msgs.append(
                {"role": "assistant", "content": random_words(rng, int(self.reply_lengths[s + k]))}
            )
        return tuple(msgs)
