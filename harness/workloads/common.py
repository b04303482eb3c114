"""Pieces shared by the generated workloads: config checks, shared prefixes, slices, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.config import ConfigError, WorkloadConfig
from harness.workloads.base import WorkloadError, rng_for
from harness.workloads.lengths import validate_length_dist
from harness.workloads.words import random_words

SLICE_BY = ("auto", "prefix", "input_len", "none")
_PREFIX_SALT = 0xF1E1D  # stream of the shared prefixes' words
_ASSIGN_SALT = 0xA551  # stream that picks which items carry a prefix


def validate_generated(cfg: WorkloadConfig) -> None:
    """Check the settings of the generated workloads (synthetic, multiturn)."""
    if cfg.num_items < 1:
        raise ConfigError(f"workload.num_items: expected an integer >= 1, got {cfg.num_items!r}")
    validate_length_dist(cfg.input_tokens, "workload.input_tokens")
    validate_length_dist(cfg.output_tokens, "workload.output_tokens")
    if cfg.shared_prefix_tokens < 0:
        raise ConfigError(
            f"workload.shared_prefix_tokens: expected >= 0, got {cfg.shared_prefix_tokens!r}"
        )
    if not 0.0 <= cfg.shared_prefix_share <= 1.0:
        raise ConfigError(
            f"workload.shared_prefix_share: expected a fraction in [0, 1], "
            f"got {cfg.shared_prefix_share!r}"
        )
    if cfg.num_prefixes < 1:
        raise ConfigError(f"workload.num_prefixes: expected >= 1, got {cfg.num_prefixes!r}")
    if cfg.slice_by not in SLICE_BY:
        raise ConfigError(
            f"workload.slice_by: {cfg.slice_by!r} is not one of {', '.join(SLICE_BY)}"
        )


def prefix_enabled(cfg: WorkloadConfig) -> bool:
    return cfg.shared_prefix_tokens > 0 and cfg.shared_prefix_share > 0


def prefix_texts(cfg: WorkloadConfig) -> list[str]:
    """The ``num_prefixes`` shared prefixes, ``shared_prefix_tokens`` words each."""
    return [
        random_words(rng_for(cfg.seed, _PREFIX_SALT, p), cfg.shared_prefix_tokens)
        for p in range(cfg.num_prefixes)
    ]


def assign_prefixes(cfg: WorkloadConfig, n: int) -> np.ndarray:
    """Prefix id per item (-1: none). Exactly ``round(share * n)`` items get one, at seeded
    positions, and the prefixes are used in turn so each is shared by as many items."""
    out = np.full(n, -1, dtype=np.int64)
    if not prefix_enabled(cfg):
        return out
    k = int(round(cfg.shared_prefix_share * n))
    chosen = np.sort(rng_for(cfg.seed, _ASSIGN_SALT).permutation(n)[:k])
    out[chosen] = np.arange(k) % cfg.num_prefixes
    return out


def length_bucket(n: int) -> str:
    """Power-of-two input-length bucket label: 200 -> ``in:129-256``, 256 -> ``in:129-256``."""
    hi = 1 << max(0, int(n - 1).bit_length())
    lo = hi // 2 + 1 if hi > 1 else 1
    return f"in:{lo}-{hi}"


def resolve_path(path: str | None, root: Path, key: str = "workload.path") -> Path:
    """An absolute path for ``path`` (relative paths are taken from the project root)."""
    if not path:
        raise ConfigError(f"{key}: required for this workload kind")
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = root / p
    if not p.exists():
        raise WorkloadError(f"{key}: {p} does not exist")
    return p
