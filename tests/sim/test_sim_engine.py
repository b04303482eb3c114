"""The vLLM engine model in virtual time: latency shape, saturation knee, KV cache,
preemption, prefix caching, determinism. No sockets; each simulation takes milliseconds."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.sim.engine import Arrival, Engine, Sequence, simulate
from harness.sim.params import VllmParams

EXACT = VllmParams(step_jitter=0.0)
SMALL = VllmParams(step_jitter=0.0, max_num_seqs=32)


def one(params: VllmParams, prompt_len: int, output_len: int = 2):
    return simulate(params, [Arrival(0.0, prompt_len, output_len)]).results[0]


def poisson(rate: float, duration: float, prompt_len: int, output_len: int, seed: int = 0):
    rng = random.Random(seed)
    t, out = 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t > duration:
            return out
        out.append(Arrival(t, prompt_len, output_len))


def test_idle_latency_matches_documented_reference():
    r = one(EXACT, 1000, 20)
    # api overhead 20 ms + one prefill step (10 + 0.04 * 1000 + attention) ms
    assert abs(r.ttft - (0.020 + 0.010 + 0.040 + 1000 * 0.00002 / 1000)) < 1e-9
    itl = (r.e2e - r.ttft) / 19
    assert 0.010 <= itl <= 0.0105


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20000), st.integers(1, 20000))
def test_ttft_rises_with_prompt_length(a, b):
    short, long_ = sorted((a, b))
    t_short, t_long = one(EXACT, short).ttft, one(EXACT, long_).ttft
    assert t_short <= t_long
    if long_ - short >= 100:
        assert t_long - t_short >= 0.9 * 0.04e-3 * (long_ - short)  # 0.04 ms / prompt token


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 200), st.integers(1, 50), st.integers(1, 40), st.integers(0, 3))
def test_every_request_finishes_with_its_length(n, prompt, out, seed):
    params = dataclasses.replace(SMALL, kv_cache_tokens=4096, step_jitter=0.05)
    rng = random.Random(seed)
    arrivals = [
        Arrival(rng.uniform(0, 1), prompt * rng.randint(1, 20), rng.randint(1, out))
        for _ in range(n)
    ]
    res = simulate(params, arrivals, seed=seed)
    assert sorted(r.output_len for r in res.results) == sorted(a.output_len for a in arrivals)
    assert all(0 < r.ttft <= r.e2e for r in res.results)
    assert res.max_running <= params.max_num_seqs
    assert res.max_kv_usage <= 1.0


def test_knee_ttft_climbs_and_throughput_plateaus():
    rates = [5, 20, 80, 160, 320]
    runs = {r: simulate(SMALL, poisson(r, 20, 200, 50, seed=1)) for r in rates}

    def p50_ttft(res):
        return sorted(x.ttft for x in res.results)[len(res.results) // 2]

    thr = {r: runs[r].throughput for r in rates}
    ttft = {r: p50_ttft(runs[r]) for r in rates}
    # Below capacity the engine keeps up: output tokens/s ~ offered and TTFT stays low.
    assert abs(thr[5] - 5 * 50) / (5 * 50) < 0.15
    assert ttft[5] < 0.1 and ttft[20] < 0.15
    # Past the knee: throughput flat (within 10%) while TTFT keeps climbing.
    assert abs(thr[320] - thr[160]) / thr[160] < 0.10
    assert abs(thr[160] - thr[80]) / thr[80] < 0.10
    assert ttft[80] > 5 * ttft[20]
    assert ttft[320] > 1.5 * ttft[160] > 1.5 * ttft[80]
    assert runs[320].max_running == SMALL.max_num_seqs and runs[320].max_waiting > 100


def test_decode_step_grows_with_batch():
    def itl(batch):
        res = simulate(EXACT, [Arrival(0.0, 10, 50) for _ in range(batch)])
        r = res.results[0]
        return (r.e2e - r.ttft) / 49

    assert itl(1) < itl(64) < itl(256)
    assert 0.024 < itl(256) < 0.03  # 10 + 0.06 * 256 ms plus attention


def test_preemption_when_kv_is_full():
    params = dataclasses.replace(EXACT, kv_cache_tokens=2048, max_num_seqs=64)
    arrivals = [Arrival(0.0, 100, 400) for _ in range(20)]  # needs 10,000 tokens of KV
    res = simulate(params, arrivals)
    assert res.preemptions > 0
    assert any(r.preemptions for r in res.results)
    assert all(r.output_len == 400 for r in res.results)
    assert res.max_kv_usage <= 1.0
    roomy = simulate(dataclasses.replace(params, kv_cache_tokens=20000), arrivals)
    assert roomy.preemptions == 0
    assert roomy.duration < res.duration  # recomputation costs time


def test_abort_frees_kv():
    eng = Engine(EXACT)
    seqs = [Sequence(i, 500, 100) for i in range(3)]
    for s in seqs:
        eng.add(s)
    t = 0.0
    for _ in range(5):
        step = eng.schedule(t)
        t += step.duration
        eng.finish_step(step, t)
    assert eng.used_blocks > 0
    step = eng.schedule(t)
    eng.abort(seqs[0])  # mid-step: the step must skip it
    t += step.duration
    sampled, _ = eng.finish_step(step, t)
    assert seqs[0] not in sampled
    for s in seqs[1:]:
        eng.abort(s)
    assert eng.used_blocks == 0 and not eng.has_work


def test_prefix_cache_hits_cut_ttft_and_report_cached_tokens():
    a = Arrival(0.0, 2000, 5, prefix="sys", prefix_len=1500)
    b = Arrival(1.0, 2000, 5, prefix="sys", prefix_len=1500)
    c = Arrival(2.0, 2000, 5, prefix="other", prefix_len=1500)
    res = simulate(EXACT, [a, b, c]).results
    assert res[0].cached_tokens == 0
    assert res[1].cached_tokens == 1488  # full 16-token blocks of the shared 1500
    assert res[2].cached_tokens == 0
    assert res[0].ttft - res[1].ttft > 0.05  # 1488 tokens * 0.04 ms
    off = simulate(dataclasses.replace(EXACT, enable_prefix_caching=False), [a, b]).results
    assert off[1].cached_tokens == 0


def test_same_seed_same_run():
    arrivals = poisson(40, 5, 300, 40, seed=3)
    params = VllmParams(max_num_seqs=16)  # default jitter on
    r1, r2 = simulate(params, arrivals, seed=5), simulate(params, arrivals, seed=5)
    assert r1.results == r2.results
    assert simulate(params, arrivals, seed=6).results != r1.results
