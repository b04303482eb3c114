"""The hosted-API model without sockets: rate-limit shares, latency draws, fault rates."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.sim.cloud import RateLimiter, draw_faults, draw_itl, draw_ttft
from harness.sim.params import CloudParams, VllmParams


def refused_share(params: CloudParams, rate: float, duration: float, tokens: int = 10) -> float:
    """Share of evenly spaced requests (``rate``/s for ``duration`` s) answered 429."""
    lim = RateLimiter()
    n = int(rate * duration)
    refused = sum(lim.check(params, tokens, i / rate) is not None for i in range(n))
    return refused / n


@settings(max_examples=25, deadline=None)
@given(st.integers(60, 3000), st.floats(1.0, 100.0))
def test_429_share_matches_rpm_limit(rpm, rate):
    duration = 300.0
    params = CloudParams(rpm_limit=rpm)
    # Accepted: a minute's burst (the full bucket) plus the refill, at most all offered.
    accepted = min(rate * duration, rpm + rpm / 60 * duration)
    expected = 1 - accepted / int(rate * duration)
    assert refused_share(params, rate, duration) == pytest.approx(expected, abs=0.01)


def test_429_share_matches_tpm_limit():
    params = CloudParams(tpm_limit=60_000)  # 1000 tokens/s
    share = refused_share(params, rate=20, duration=600, tokens=100)  # 2000 tokens/s offered
    assert share == pytest.approx(1 - (60_000 + 1000 * 600) / (100 * 20 * 600), abs=0.01)


def test_retry_after_is_when_the_bucket_refills():
    params = CloudParams(rpm_limit=6)  # one request per 10 s
    lim = RateLimiter()
    for _ in range(6):
        assert lim.check(params, 1, 0.0) is None
    kind, wait = lim.check(params, 1, 1.0)
    assert kind == "requests" and wait == pytest.approx(9.0)
    assert lim.check(params, 1, 1.0 + wait - 0.01) is not None
    assert lim.check(params, 1, 1.0 + wait) is None


def test_latency_draws():
    rng = random.Random(0)
    p = CloudParams(queue_ms=0.0, prefill_per_token_ms=0.0)
    rtts = [draw_ttft(rng, p, 100) for _ in range(4000)]
    assert statistics.median(rtts) == pytest.approx(0.150, rel=0.03)
    q = sorted(rtts)
    assert 0.09 < q[len(q) // 20] and q[-len(q) // 20] < 0.26  # typical 100-300 ms
    heavy = CloudParams(rtt_ms=0.0, prefill_per_token_ms=0.0)
    qs = sorted(draw_ttft(rng, heavy, 0) for _ in range(4000))
    assert qs[int(0.99 * len(qs))] > 10 * qs[len(qs) // 2]  # heavy tail
    itls = [draw_itl(rng, p) for _ in range(4000)]
    assert statistics.mean(itls) == pytest.approx(0.012, rel=0.03)
    assert statistics.stdev(itls) / statistics.mean(itls) == pytest.approx(0.3, rel=0.1)
    fixed = CloudParams(ttft_ms=50, itl_ms=5, itl_jitter=0)
    assert draw_ttft(rng, fixed, 5000) == 0.05 and draw_itl(rng, fixed) == 0.005


def test_fault_rates():
    rng = random.Random(1)
    p = CloudParams(error_rate=0.1, rate_limited_rate=0.05, stall_rate=0.02, truncate_rate=0.03)
    draws = [draw_faults(rng, p, 50) for _ in range(20000)]

    def share(pred):
        return sum(map(pred, draws)) / len(draws)

    sd = math.sqrt(0.1 * 0.9 / len(draws))
    assert share(lambda f: f.error_status is not None) == pytest.approx(0.1, abs=4 * sd)
    assert share(lambda f: f.rate_limited) == pytest.approx(0.05, abs=0.006)
    assert share(lambda f: f.stall_at is not None) == pytest.approx(0.02, abs=0.004)
    assert share(lambda f: f.truncate_at is not None) == pytest.approx(0.03, abs=0.005)
    assert {f.error_status for f in draws} == {None, 500, 503}
    assert all(0 < f.truncate_at < 50 for f in draws if f.truncate_at is not None)
    # vLLM profile: 5xx injection only
    v = draw_faults(rng, VllmParams(error_rate=1.0), 10)
    assert v.error_status is not None and v.stall_at is None
