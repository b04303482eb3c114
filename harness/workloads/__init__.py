"""Prompt sources: synthetic lengths, JSONL sets, shared prefixes, multi-turn, eval sets.

``build_workload(cfg, root)`` picks the workload class for ``cfg.kind``; every workload is
indexable and deterministic (``item(i)`` for arrival ``i``), see :mod:`.base`.
Adding a kind is adding an entry to :data:`WORKLOAD_KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.config import ConfigError, WorkloadConfig
from harness.workloads.base import WorkItem, Workload, WorkloadError
from harness.workloads.eval import load_eval_workload
from harness.workloads.jsonl import load_jsonl_workload
from harness.workloads.multiturn import MultiTurnWorkload
from harness.workloads.synthetic import SyntheticWorkload

WORKLOAD_KINDS: dict[str, Callable[[WorkloadConfig, Path], Workload]] = {
    "synthetic": lambda cfg, root: SyntheticWorkload(cfg),
    "jsonl": load_jsonl_workload,
    "multiturn": lambda cfg, root: MultiTurnWorkload(cfg),
    "eval": load_eval_workload,
}


def build_workload(cfg: WorkloadConfig, root: Path) -> Workload:
    """The workload ``cfg`` describes; relative paths are taken from the project ``root``."""
    builder = WORKLOAD_KINDS.get(cfg.kind)
    if builder is None:
        raise ConfigError(f"workload.kind: {cfg.kind!r} is not one of {', '.join(WORKLOAD_KINDS)}")
    return builder(cfg, Path(root))


__all__ = [
    "WORKLOAD_KINDS",
    "WorkItem",
    "Workload",
    "WorkloadError",
    "build_workload",
]
