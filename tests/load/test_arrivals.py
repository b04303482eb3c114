"""Arrival processes: statistics with fixed seeds, exact constant/trace replay, determinism."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.config import ConfigError, LoadConfig
from harness.load.arrivals import ArrivalError, build_schedule, phase_of, read_trace

ROOT = Path(__file__).resolve().parents[2]


def offsets(**kw) -> np.ndarray:
    return np.fromiter(build_schedule(LoadConfig(**kw), ROOT).offsets(), dtype=float)


def test_poisson_gaps_are_exponential():
    t = offsets(arrival="poisson", rate=50.0, duration_s=400.0, seed=3)
    gaps = np.diff(np.concatenate([[0.0], t]))
    assert abs(gaps.mean() - 1 / 50) < 0.02 * (1 / 50)
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.03
    assert stats.kstest(gaps, "expon", args=(0, 1 / 50)).pvalue > 0.01
    assert abs(len(t) - 20000) < 4 * math.sqrt(20000)  # Poisson count over the duration


@pytest.mark.parametrize("shape", [0.25, 1.0, 4.0])
def test_gamma_burstiness_sets_the_cv(shape):
    t = offsets(arrival="gamma", rate=20.0, burstiness=shape, duration_s=1000.0, seed=5)
    gaps = np.diff(t)
    assert abs(gaps.mean() - 0.05) < 0.03 * 0.05
    assert abs(gaps.std() / gaps.mean() - 1 / math.sqrt(shape)) < 0.05 / math.sqrt(shape)
    assert stats.kstest(gaps, "gamma", args=(shape, 0, 0.05 / shape)).pvalue > 0.01


def test_constant_is_exact():
    t = offsets(arrival="constant", rate=4.0, duration_s=10.0)
    assert np.array_equal(t, np.arange(40) / 4.0)
    sched = build_schedule(LoadConfig(arrival="constant", rate=4.0, duration_s=10.0), ROOT)
    assert sched.expected_count() == 40
    assert len(offsets(arrival="constant", rate=3.0, duration_s=10.0)) == 30
    assert len(offsets(arrival="constant", rate=1 / 3, duration_s=10.0)) == 4  # 0, 3, 6, 9


def test_schedule_ends_at_duration_and_is_monotone():
    for arrival in ("constant", "poisson", "gamma"):
        t = offsets(arrival=arrival, rate=100.0, duration_s=30.0, burstiness=0.3)
        assert t[0] >= 0 and t[-1] < 30.0
        assert np.all(np.diff(t) >= 0)


def test_max_requests_is_honoured():
    assert len(offsets(rate=100.0, duration_s=60.0, max_requests=123)) == 123
    assert len(offsets(rate=100.0, duration_s=60.0, max_requests=5000)) < 5000 * 1.3
    assert len(offsets(rate=1000.0, duration_s=1e9, max_requests=70000)) == 70000
    assert len(offsets(rate=100.0, max_requests=0)) == 0
    inf = build_schedule(LoadConfig(rate=5.0, duration_s=math.inf, max_requests=10), ROOT)
    assert len(list(inf.offsets())) == 10 and inf.expected_count() == 10


def test_deterministic_per_seed_and_stream():
    load = LoadConfig(arrival="gamma", burstiness=0.5, rate=30.0, duration_s=100.0, seed=9)
    a = list(build_schedule(load, ROOT).offsets())
    assert a == list(build_schedule(load, ROOT).offsets())
    s = build_schedule(load, ROOT, stream=0)
    assert list(s.offsets()) == list(s.offsets())  # iterating twice restarts the stream
    b = list(build_schedule(load, ROOT, stream=1).offsets())
    assert a != b and abs(len(a) - len(b)) < 0.2 * len(a)
    load.seed = 10
    assert list(build_schedule(load, ROOT).offsets()) != a


def test_independent_streams_of_deterministic_arrivals_are_identical(tmp_path):
    """README (Arrivals): under ``pairing: independent`` the per-arm stream only reseeds random
    gaps, so ``constant`` and ``trace`` give every arm the same schedule; poisson does not."""
    trace = tmp_path / "t.csv"
    trace.write_text("t\n0\n0.5\n2.25\n")
    for load in (
        LoadConfig(arrival="constant", rate=7.0, duration_s=20.0, seed=4),
        trace_load(trace, seed=4),
    ):
        arm1, arm2 = (list(build_schedule(load, ROOT, stream=k).offsets()) for k in (1, 2))
        assert arm1 == arm2 and arm1 == list(build_schedule(load, ROOT, stream=0).offsets())
    poisson = LoadConfig(arrival="poisson", rate=7.0, duration_s=20.0, seed=4)
    assert list(build_schedule(poisson, ROOT, stream=1).offsets()) != list(
        build_schedule(poisson, ROOT, stream=2).offsets()
    )


def test_workers_partition_the_schedule():
    sched = build_schedule(LoadConfig(rate=2000.0, duration_s=100.0, seed=1), ROOT)
    full = list(sched.offsets())
    parts = [list(sched.for_worker(w, 3)) for w in range(3)]
    merged = sorted((i, t) for part in parts for i, t in part)
    assert merged == list(enumerate(full))
    assert all(i % 3 == w for w, part in enumerate(parts) for i, _ in part)


def test_expected_count():
    load = LoadConfig(arrival="poisson", rate=7.0, duration_s=60.0)
    assert build_schedule(load, ROOT).expected_count() == pytest.approx(420.0)
    load.max_requests = 100
    assert build_schedule(load, ROOT).expected_count() == 100


def test_generation_is_cheap():
    sched = build_schedule(
        LoadConfig(arrival="gamma", burstiness=0.5, rate=1e5, duration_s=10), ROOT
    )
    t0 = time.perf_counter()
    n = sum(1 for _ in sched.offsets())
    rate = n / (time.perf_counter() - t0)
    assert n > 990_000
    assert rate > 300_000  # about 5M/s unloaded; generous for a shared CI core


# -- trace replay ---------------------------------------------------------------------------


def trace_load(path: Path, **kw) -> LoadConfig:
    return LoadConfig(
        arrival="trace", trace_path=str(path), duration_s=kw.pop("duration_s", 100.0), **kw
    )


def test_trace_replay_is_exact(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("# comment\nrequest,t,size\nx,100.5,1\ny,100.5,2\n\nz,101.25,3\nw,104,4\n")
    assert list(build_schedule(trace_load(csv), ROOT).offsets()) == [0.0, 0.0, 0.75, 3.5]
    plain = tmp_path / "t.txt"
    plain.write_text("3\n4.5\n10\n")
    assert list(build_schedule(trace_load(plain), ROOT).offsets()) == [0.0, 1.5, 7.0]
    # the duration and max_requests cut a trace; time_scale replays it faster
    assert list(build_schedule(trace_load(plain, duration_s=7.0), ROOT).offsets()) == [0.0, 1.5]
    assert list(build_schedule(trace_load(plain, max_requests=1), ROOT).offsets()) == [0.0]
    assert list(build_schedule(trace_load(plain, time_scale=2.0), ROOT).offsets()) == [0, 0.75, 3.5]
    jl = tmp_path / "t.jsonl"
    jl.write_text("\n".join(json.dumps({"t": t, "id": k}) for k, t in enumerate([5, 6, 8])))
    sched = build_schedule(trace_load(jl), ROOT)
    assert list(sched.offsets()) == [0.0, 1.0, 3.0] and sched.expected_count() == 3


def test_shipped_example_trace():
    t = read_trace(ROOT / "workloads/traces/example_trace.csv")
    assert t[0] == 0 and len(t) > 100 and np.all(np.diff(t) >= 0)


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("a.csv", "0\n1\n0.5\n", r"a\.csv:3: timestamps must not decrease"),
        ("a.csv", "0\nabc\n", r"a\.csv:2: expected a timestamp"),
        ("a.csv", "t\n1\nnan\n", r"a\.csv:3: timestamp nan is not a finite"),
        ("a.csv", "when,who\n1,a\n", r"a\.csv:1: expected a number or a CSV header"),
        ("a.csv", "id,t\n1,2\n3\n", r"a\.csv:3: expected at least 2 columns"),
        ("a.csv", "# nothing\n\n", r"a\.csv: empty trace"),
        ("a.jsonl", '{"t": 1}\n{"t": 2\n', r"a\.jsonl:2: malformed JSON"),
        ("a.jsonl", '{"t": 1}\n{"time": 2}\n', r'a\.jsonl:2: expected an object with a number "t"'),
        ("a.jsonl", '{"t": "1"}\n', r'a\.jsonl:1: "t" must be a number'),
        ("a.jsonl", '{"t": 2}\n{"t": 1}\n', r"a\.jsonl:2: timestamps must not decrease"),
    ],
)
def test_bad_traces_name_file_and_line(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(ArrivalError, match=match):
        build_schedule(trace_load(tmp_path / name), ROOT)


def test_missing_trace_and_config_errors(tmp_path):
    with pytest.raises(ArrivalError, match="no such trace file"):
        build_schedule(trace_load(tmp_path / "nope.csv"), ROOT)
    bad = [
        (dict(arrival="trace"), "load.trace_path"),
        (dict(arrival="trace", trace_path="x.csv", shape="ramp"), "load.shape"),
        (dict(arrival="weibull"), "load.arrival"),
        (dict(rate=0.0), "load.rate"),
        (dict(rate=math.nan), "load.rate"),
        (dict(arrival="gamma", burstiness=0.0), "load.burstiness"),
        (dict(duration_s=0.0), "load.duration_s"),
        (dict(duration_s=math.inf), "load.duration_s"),
        (dict(max_requests=-1), "load.max_requests"),
        (dict(time_scale=0.0), "load.time_scale"),
        (dict(shape="sine"), "load.shape"),
    ]
    for kw, key in bad:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            build_schedule(LoadConfig(**kw), ROOT)


def test_phase_of():
    load = LoadConfig(duration_s=100.0, warmup_s=10.0, cooldown_s=5.0)
    assert [phase_of(t, load) for t in (0, 9.99, 10, 94.99, 95, 99)] == [
        "warmup",
        "warmup",
        "main",
        "main",
        "cooldown",
        "cooldown",
    ]
    assert phase_of(99.9, LoadConfig(duration_s=100.0)) == "main"
