"""Retry policy: which failed attempts are retried, and how long to wait before the next one.

Backoff before attempt ``n`` (1 = first retry) is ``min(base * 2**(n-1), max)``, scaled by a
jitter factor ``1 + jitter * U(-1, 1)`` drawn from a RNG seeded by (run seed, arm, request id,
attempt): the same run replays the same waits regardless of how greenlets interleave. A
``retry-after-ms`` header (OpenAI and the simulator send it) or ``Retry-After`` (delta-seconds
or HTTP-date) replaces the computed backoff when
``honor_retry_after`` is set.
"""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime
from typing import Any

from harness.config import RetryConfig


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now)


def retry_after_from(headers: Any) -> float | None:
    """Seconds to wait from response headers: ``retry-after-ms`` (OpenAI, more precise) first,
    then ``Retry-After``. ``headers`` is any mapping with lower-case-insensitive ``get``."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def should_retry(cfg: RetryConfig, error_type: str | None, attempt: int) -> bool:
    """Whether attempt ``attempt`` (0-based) that failed with ``error_type`` gets another try."""
    return error_type is not None and error_type in cfg.retry_on and attempt + 1 < cfg.max_attempts


def backoff_s(
    cfg: RetryConfig,
    next_attempt: int,
    *,
    retry_after_s: float | None = None,
    seed: int = 0,
    key: str = "",
    cap_s: float | None = None,
) -> float:
    """Wait before ``next_attempt`` (1 = first retry), per the module docstring."""
    if cfg.honor_retry_after and retry_after_s is not None:
        delay = retry_after_s
    else:
        delay = min(cfg.backoff_base_s * 2 ** (next_attempt - 1), cfg.backoff_max_s)
        if cfg.jitter:
            rng = random.Random(f"{seed}:{key}:{next_attempt}")
            delay *= 1.0 + cfg.jitter * rng.uniform(-1.0, 1.0)
    if cap_s is not None:
        delay = min(delay, cap_s)
    return max(0.0, delay)
