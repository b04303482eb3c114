"""Per-arm caps across load processes: ``load.concurrency`` (open loop) and ``max_connections``.

Each load process enforces its own slots, so each gets its share of the cap
(:func:`process_share`); the shares sum to the configured value, so N workers never hold
N times the cap in flight.
"""

from __future__ import annotations

import time

import gevent
import numpy as np
import pytest

from harness.config import (
    ConfigError,
    LoadConfig,
    RecordConfig,
    TargetConfig,
    WorkloadConfig,
    check_connection_caps,
    validate_load,
)
from harness.load.engine import LoadEngine
from harness.load.spec import RunSpec, process_share
from tests.load.e2e import only_run_dir, read_rows, run_harness, smoke_args

# -- the share function -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "n", "shares"),
    [(10, 3, [4, 3, 3]), (5, 2, [3, 2]), (4, 4, [1, 1, 1, 1]), (7, 1, [7]), (9, 4, [3, 2, 2, 2])],
)
def test_shares_by_hand(total, n, shares):
    assert [process_share(total, n, w) for w in range(n)] == shares


def test_shares_sum_to_the_cap_and_differ_by_at_most_one():
    for n in range(1, 12):
        for total in range(n, 60):
            shares = [process_share(total, n, w) for w in range(n)]
            assert sum(shares) == total
            assert max(shares) - min(shares) <= 1 and min(shares) >= 1


@pytest.mark.parametrize(("total", "n", "index"), [(2, 3, 0), (5, 2, 2), (5, 2, -1), (5, 0, 0)])
def test_a_cap_that_cannot_be_split_is_refused(total, n, index):
    with pytest.raises(ValueError):
        process_share(total, n, index)


# -- config checks ------------------------------------------------------------------------


def test_open_loop_cap_below_the_worker_count_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^load\.concurrency: .*3 load processes"):
        validate_load(LoadConfig(mode="open", concurrency=2, workers=2, remote_workers=1))
    validate_load(LoadConfig(mode="open", concurrency=3, workers=2, remote_workers=1))
    validate_load(LoadConfig(mode="open", concurrency=1))  # one local process


def test_closed_loop_with_fewer_users_than_workers_is_a_config_error():
    """A worker dealt no user never finished: the run hung until its hard deadline."""
    with pytest.raises(ConfigError, match=r"^load\.concurrency: 1 closed-loop user\(s\) for 2"):
        validate_load(LoadConfig(mode="closed", concurrency=1, workers=2))
    validate_load(LoadConfig(mode="closed", concurrency=2, workers=2))


def test_max_connections_below_the_worker_count_is_a_config_error():
    arms = {"a": TargetConfig(max_connections=8), "b": TargetConfig(max_connections=3)}
    with pytest.raises(ConfigError, match=r"^arms\.b\.max_connections: .*4 load processes"):
        check_connection_caps(LoadConfig(workers=4), arms)
    check_connection_caps(LoadConfig(workers=3), arms)


def test_cli_refuses_a_cap_below_the_worker_count(reports):
    res = run_harness(
        smoke_args(reports, "load=capped", "load.concurrency=1", "load.workers=2"), timeout=60
    )
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "load.concurrency:" in res.stderr
    assert not list(reports.glob("*/*/manifest.json"))  # refused before any run started


# -- the engine: two processes' shares together -------------------------------------------

ARMS = ("a", "b")


def _spec(tmp_path, **load) -> RunSpec:
    arm = TargetConfig(kind="sim_cloud", model="m", base_url="http://127.0.0.1:9/v1",
                       max_connections=3)  # fmt: skip
    return RunSpec(
        run_id="r",
        experiment="e",
        run_dir=str(tmp_path),
        project_root=str(tmp_path),
        arms={name: arm for name in ARMS},
        workload=WorkloadConfig(num_items=20),
        load=LoadConfig(mode="open", arrival="constant", **load),
        record=RecordConfig(),
        n_workers=2,
    )


def test_each_process_holds_its_share_of_both_caps(tmp_path):
    spec = _spec(tmp_path, rate=10, duration_s=1, concurrency=5)
    engines = [LoadEngine(spec, worker_index=w, n_workers=2) for w in (0, 1)]
    try:
        for eng, conc, conn in zip(engines, (3, 2), (2, 1), strict=True):
            for arm in ARMS:  # one semaphore and one client per arm: arms share no slots
                assert eng.arm_caps[arm].counter == conc
                assert eng.clients[arm]._slots_free == conn
                assert eng.clients[arm].target.max_connections == conn
            assert eng.arm_caps["a"] is not eng.arm_caps["b"]
        assert spec.arms["a"].max_connections == 3  # the spec itself is left as configured
    finally:
        for eng in engines:
            eng.close()


def test_two_processes_never_exceed_the_open_loop_cap_per_arm(tmp_path):
    """Two engines (workers 0 and 1 of 2) on one schedule against a slow fake target: the
    requests in flight per arm, both processes together, stay at ``concurrency``."""
    cap, latency = 5, 0.1
    spec = _spec(tmp_path, rate=100, duration_s=0.6, concurrency=cap)
    inflight = dict.fromkeys(ARMS, 0)
    peak = dict.fromkeys(ARMS, 0)
    sent = []

    def fake(arm, item, rid, pair_id, t_sched, phase, on_row):
        inflight[arm] += 1
        peak[arm] = max(peak[arm], inflight[arm])
        sent.append(rid)
        try:
            gevent.sleep(latency)
        finally:
            inflight[arm] -= 1
        return []

    engines = [LoadEngine(spec, worker_index=w, n_workers=2) for w in (0, 1)]
    t0 = time.time_ns()
    for eng in engines:
        eng._execute = fake
        eng.set_t0(t0)
    pacers = [gevent.spawn(eng.run_open) for eng in engines]
    try:
        assert all(eng.done.wait(10) for eng in engines)
        gevent.joinall(pacers, timeout=2)
    finally:
        for eng in engines:
            eng.close()
    assert len(sent) == 2 * 60  # every arrival reached both arms
    # 100 arrivals/s x 0.1 s would keep ~10 in flight per arm: the cap binds, and holds
    # across the two processes (each holding 5 of its own gave 10)
    assert peak == dict.fromkeys(ARMS, cap)


# -- end to end: two locust workers, real simulators --------------------------------------


def _max_overlap(starts: np.ndarray, ends: np.ndarray, slack_ns: int = 1_000_000) -> int:
    """The most intervals [start, end] open at once (shrunk by ``slack_ns`` each side, so
    a slot handed on at the same instant, read through two processes' clocks, is not an
    overlap)."""
    events = sorted(
        [(int(s) + slack_ns, 1) for s in starts] + [(int(e) - slack_ns, -1) for e in ends],
        key=lambda x: (x[0], x[1]),
    )
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


@pytest.mark.slow
def test_two_workers_hold_the_caps_per_arm(reports):
    """``load.concurrency=4`` caps both arms, ``max_connections=3`` caps cloud further: with
    two workers the sends in flight per arm (from t_sent/t_end) stay within them."""
    res = run_harness(
        smoke_args(
            reports,
            "load.workers=2",
            "load.arrival=constant",
            "load.rate=20",
            "load.duration_s=2",
            "load.concurrency=4",
            "load.stop_timeout_s=1",
            "+arms.cloud.max_connections=3",
            "workload.output_tokens.mean=32",
            "workload.output_tokens.std=0",
            "analysis.report=false",
        ),
        timeout=120,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    df = read_rows(only_run_dir(reports))
    assert set(df.worker) == {0, 1}
    sent = df[df.t_sent.notna() & df.t_end.notna()]
    peaks = {}
    for arm, g in sent.groupby("arm"):
        peaks[arm] = _max_overlap(
            g.t_sent.astype("int64").to_numpy(), g.t_end.astype("int64").to_numpy()
        )
    # 20 arrivals/s of ~0.4-0.5 s requests would keep 8-10 in flight: both caps bind
    assert peaks == {"cloud": 3, "selfhosted": 4}, peaks
