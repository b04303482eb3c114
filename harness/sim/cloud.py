"""Hosted-API model: latency draws, rate limits and fault decisions, pure and clock-free.

Latency of one request (seconds): TTFT = rtt + queue + prefill_per_token_ms * prompt tokens,
with rtt ~ lognormal(median rtt_ms, sigma rtt_sigma) and queue ~ lognormal(median queue_ms,
sigma queue_sigma) (a heavy tail: p99 = median * exp(2.33 sigma)); or exactly ``ttft_ms``
when it is set. Gaps between output tokens are gamma distributed with mean itl_ms and relative
std-dev itl_jitter (exactly itl_ms when itl_jitter is 0).

Rate limits are token buckets holding one minute of allowance (like OpenAI's limits, which
allow a burst of a minute's worth and refill continuously): requests cost 1 against
``rpm_limit`` and prompt + max_tokens against ``tpm_limit``. A refused request gets 429 with
``Retry-After`` = seconds until the bucket holds enough. A request that costs more than a
whole bucket can never go (wait ``inf``): the server answers it 429 without ``Retry-After``.

Every draw for one request (its faults, TTFT and token gaps) comes from that request's own
generator, seeded from the server seed and the request's arrival index, so one request's
draws never depend on another's.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .params import CloudParams, CommonParams


class TokenBucket:
    """``rate_per_min`` units per minute, holding at most one minute's worth."""

    def __init__(self, rate_per_min: float, now: float) -> None:
        self.rate = rate_per_min / 60.0
        self.capacity = rate_per_min
        self.level = rate_per_min
        self.t = now

    def _refill(self, now: float) -> None:
        if now > self.t:
            self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
            self.t = now

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` units are available (0 = now)."""
        self._refill(now)
        if self.level >= cost:
            return 0.0
        if cost > self.capacity or self.rate <= 0:
            return math.inf
        return (cost - self.level) / self.rate

    def take(self, cost: float, now: float) -> None:
        self._refill(now)
        self.level -= cost


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets; limits read from the params on
    every call, so an admin change applies at once (a changed limit starts a full bucket)."""

    def __init__(self) -> None:
        self._rpm: TokenBucket | None = None
        self._tpm: TokenBucket | None = None

    def _bucket(self, which: str, limit: float | None, now: float) -> TokenBucket | None:
        b = getattr(self, which)
        if limit is None:
            b = None
        elif b is None or b.capacity != limit:
            b = TokenBucket(limit, now)
        setattr(self, which, b)
        return b

    def check(self, params: CloudParams, tokens: int, now: float) -> tuple[str, float] | None:
        """``None`` (and charge the buckets) if the request may go, else (kind, retry_after_s)
        with kind ``requests`` or ``tokens``; retry_after_s is ``inf`` for a request larger
        than the whole bucket (it can never go)."""
        rpm = self._bucket("_rpm", params.rpm_limit, now)
        tpm = self._bucket("_tpm", params.tpm_limit, now)
        wait_r = rpm.wait_for(1, now) if rpm else 0.0
        wait_t = tpm.wait_for(tokens, now) if tpm else 0.0
        if wait_r > 0 or wait_t > 0:
            return ("requests", wait_r) if wait_r >= wait_t else ("tokens", wait_t)
        if rpm:
            rpm.take(1, now)
        if tpm:
            tpm.take(tokens, now)
        return None

    def remaining(self, now: float) -> tuple[int | None, int | None]:
        """Requests and tokens left in the buckets (rate-limit headers)."""
        out = []
        for b in (self._rpm, self._tpm):
            if b is None:
                out.append(None)
            else:
                b._refill(now)
                out.append(max(0, int(b.level)))
        return out[0], out[1]


def lognormal_ms(rng: random.Random, median_ms: float, sigma: float) -> float:
    """A lognormal draw in seconds with the given median (ms) and log-space sigma."""
    if median_ms <= 0:
        return 0.0
    if sigma <= 0:
        return median_ms / 1000.0
    return median_ms * math.exp(rng.gauss(0.0, sigma)) / 1000.0


def draw_ttft(rng: random.Random, p: CloudParams, prompt_tokens: int) -> float:
    """Seconds from request read to first token."""
    if p.ttft_ms is not None:
        return p.ttft_ms / 1000.0
    return (
        lognormal_ms(rng, p.rtt_ms, p.rtt_sigma)
        + lognormal_ms(rng, p.queue_ms, p.queue_sigma)
        + p.prefill_per_token_ms * prompt_tokens / 1000.0
    )


def draw_itl(rng: random.Random, p: CloudParams) -> float:
    """Seconds between two output tokens."""
    mean = p.itl_ms / 1000.0
    cv = p.itl_jitter
    if cv <= 0 or mean <= 0:
        return mean
    shape = 1.0 / (cv * cv)
    return rng.gammavariate(shape, mean / shape)


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong with one request (decided when it arrives)."""

    error_status: int | None = None  # answer with this 5xx
    rate_limited: bool = False  # answer 429 (injected, not from the buckets)
    stall_at: int | None = None  # stop before token k for stall_s
    truncate_at: int | None = None  # close the connection before token k


def draw_rejection(rng: random.Random, p: CommonParams) -> tuple[int | None, bool]:
    """(injected 5xx status or None, injected 429): decided before the request is accepted."""
    status = None
    if p.error_rate > 0 and rng.random() < p.error_rate:
        status = rng.choice(p.error_statuses)
    limited = p.rate_limited_rate > 0 and rng.random() < p.rate_limited_rate
    return status, limited


def draw_stream_faults(
    rng: random.Random, p: CommonParams, n_tokens: int
) -> tuple[int | None, int | None]:
    """(stall_at, truncate_at) for an accepted response of ``n_tokens`` tokens."""
    stall = trunc = None
    if isinstance(p, CloudParams):
        if p.stall_rate > 0 and rng.random() < p.stall_rate:
            stall = rng.randrange(max(1, n_tokens))
        if p.truncate_rate > 0 and rng.random() < p.truncate_rate:
            trunc = 1 + rng.randrange(max(1, n_tokens - 1)) if n_tokens > 1 else 0
    return stall, trunc


def draw_faults(rng: random.Random, p: CommonParams, n_tokens: int) -> Faults:
    """Independent draws for each configured fault rate (both phases at once)."""
    status, limited = draw_rejection(rng, p)
    return Faults(status, limited, *draw_stream_faults(rng, p, n_tokens))
