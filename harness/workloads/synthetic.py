"""Synthetic prompts with controlled input/output token lengths and optional shared prefixes.

A pool of ``num_items`` items is drawn at build time (lengths and prefix assignment); the
text of item ``j`` is generated on demand from its own seeded stream, so building is cheap
even for long prompts and ``item(i)`` is pure in ``i``.

- Input length: ``input_tokens`` is the length of the whole prompt in words, the shared
  prefix included, so ``prefix`` and ``noprefix`` items have the same length distribution
  and differ only in what a prefix cache can reuse. Each word is one cl100k/o200k token and
  one simulator token (see :mod:`harness.workloads.words`). When a drawn length leaves fewer
  than ``MIN_UNIQUE_WORDS`` after the prefix, the unique part is ``MIN_UNIQUE_WORDS`` long.
- Shared prefix: exactly ``round(shared_prefix_share * num_items)`` items start with a system
  message holding one of ``num_prefixes`` fixed prefixes of ``shared_prefix_tokens`` words.
- Distinct prompts: every user message starts with its own random words, so no two items
  share a first cache block by accident (the pool repeats after ``num_items`` arrivals).
- Output length: ``max_tokens`` from ``output_tokens`` with ``force_length=True``.
- Slices (``slice_by``): ``prefix`` -> ``prefix``/``noprefix``; ``input_len`` -> power-of-two
  bucket of the prompt length (``in:129-256``); ``none`` -> ``all``; ``auto`` -> ``prefix``
  when a shared prefix is configured, else ``input_len`` when lengths vary, else ``all``.
"""

from __future__ import annotations

from functools import lru_cache

from harness.config import WorkloadConfig
from harness.workloads.base import PooledWorkload, WorkItem, rng_for
from harness.workloads.common import (
    assign_prefixes,
    length_bucket,
    prefix_enabled,
    prefix_texts,
    validate_generated,
)
from harness.workloads.lengths import sample_lengths
from harness.workloads.words import random_words

MIN_UNIQUE_WORDS = 8
_LENGTH_SALT = 0x1E6
_TEXT_SALT = 0x7E47


class SyntheticWorkload(PooledWorkload):
    """Random-word prompts with lengths drawn from ``input_tokens`` / ``output_tokens``."""

    def __init__(self, cfg: WorkloadConfig) -> None:
        validate_generated(cfg)
        super().__init__(cfg.name, shuffle=cfg.shuffle, seed=cfg.seed)
        n = cfg.num_items
        rng = rng_for(cfg.seed, _LENGTH_SALT)
        self.input_lengths = sample_lengths(cfg.input_tokens, n, rng)
        self.output_lengths = sample_lengths(cfg.output_tokens, n, rng)
        self.prefix_ids = assign_prefixes(cfg, n)
        self.prefixes = prefix_texts(cfg) if prefix_enabled(cfg) else []
        self.prefix_words = cfg.shared_prefix_tokens
        self.force_length = True if cfg.force_length is None else bool(cfg.force_length)
        self.slice_mode = _slice_mode(cfg)
        self._item = lru_cache(maxsize=2048)(self._make_item)

    def __len__(self) -> int:
        return len(self.input_lengths)

    def pool_item(self, j: int) -> WorkItem:
        return self._item(j)

    def _make_item(self, j: int) -> WorkItem:
        total = int(self.input_lengths[j])
        pid = int(self.prefix_ids[j])
        messages: list[dict[str, str]] = []
        if pid >= 0:
            messages.append({"role": "system", "content": self.prefixes[pid]})
            unique = max(total - self.prefix_words, MIN_UNIQUE_WORDS)
            total = self.prefix_words + unique
        else:
            unique = total
        messages.append(
            {"role": "user", "content": random_words(rng_for(self.seed, _TEXT_SALT, j), unique)}
        )
        if self.slice_mode == "prefix":
            slice_ = "prefix" if pid >= 0 else "noprefix"
        elif self.slice_mode == "input_len":
            slice_ = length_bucket(total)
        else:
            slice_ = "all"
        return WorkItem(
            sample_id=f"{self.name}:{j}",
            messages=tuple(messages),
            max_tokens=int(self.output_lengths[j]),
            force_length=self.force_length,
            slice=slice_,
            workload=self.name,
            expected_prompt_tokens=total,
        )


def _slice_mode(cfg: WorkloadConfig) -> str:
    if cfg.slice_by != "auto":
        return cfg.slice_by
    if prefix_enabled(cfg):
        return "prefix"
    d = cfg.input_tokens
    if d.dist != "fixed" and d.std > 0:
        return "input_len"
    return "none"
