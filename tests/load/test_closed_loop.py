"""The closed loop: each arm runs its own loops over one item order; a slow arm throttles no one.

The engine runs in this process (no locust, no network): its ``_execute`` is replaced by a
fake target that takes a fixed time per arm and logs what it was asked to send.
"""

from __future__ import annotations

import time

import gevent

from harness.config import LoadConfig, RecordConfig, TargetConfig, WorkloadConfig
from harness.load.engine import LoadEngine
from harness.load.spec import RunSpec

LATENCY = {"fast": 0.01, "slow": 0.1}


def _spec(tmp_path, **load) -> RunSpec:
    arms = {
        arm: TargetConfig(kind="sim_cloud", model="m", base_url="http://127.0.0.1:9/v1")
        for arm in LATENCY
    }
    return RunSpec(
        run_id="r",
        experiment="e",
        run_dir=str(tmp_path),
        project_root=str(tmp_path),
        arms=arms,
        workload=WorkloadConfig(num_items=50),
        load=LoadConfig(**{"mode": "closed", "concurrency": 2, "duration_s": 1.0, **load}),
        record=RecordConfig(),
    )


class FakeTarget:
    """Stands in for ``LoadEngine._execute``: sleeps the arm's latency, logs each send."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def __call__(self, arm, item, rid, pair_id, t_sched, phase, on_row):
        self.sent.append({"arm": arm, "rid": rid, "pair_id": pair_id, "sample": item.sample_id})
        gevent.sleep(LATENCY[arm])
        return []

    def of(self, arm: str) -> list[dict]:
        return [s for s in self.sent if s["arm"] == arm]


def _run(tmp_path, *, worker_index=0, n_workers=1, users=2, **load):
    engine = LoadEngine(_spec(tmp_path, **load), worker_index=worker_index, n_workers=n_workers)
    fake = FakeTarget()
    engine._execute = fake
    engine.set_t0(time.time_ns())
    loops = [gevent.spawn(engine.run_closed_user) for _ in range(users)]
    assert engine.done.wait(10), "the closed loop did not end"
    gevent.joinall(loops, timeout=2)
    engine.close()
    return engine, fake


def _index(rid: str) -> int:
    return int(rid.rsplit("-", 1)[1])


def test_slow_arm_does_not_throttle_the_fast_one(tmp_path):
    engine, fake = _run(tmp_path)
    fast, slow = fake.of("fast"), fake.of("slow")
    # two users per arm for 1 s: ~200 fast and ~20 slow requests; waiting for both arms
    # (the old behaviour) gives both arms the slow arm's count
    assert len(slow) >= 10
    assert len(fast) >= 5 * len(slow), (len(fast), len(slow))
    # both arms walk the same item order from index 0, each as far as its speed allows
    idx = {arm: sorted(_index(s["rid"]) for s in fake.of(arm)) for arm in LATENCY}
    assert idx["fast"] == list(range(len(fast)))
    assert idx["slow"] == list(range(len(slow)))
    # the requests for one index carry the same item and pair id on every arm
    by_index = {(s["arm"], _index(s["rid"])): s for s in fake.sent}
    for i in idx["slow"]:
        a, b = by_index[("fast", i)], by_index[("slow", i)]
        assert a["sample"] == b["sample"]
        assert a["pair_id"] == b["pair_id"] == f"p{i:09d}"
        assert (a["rid"], b["rid"]) == (f"fast-{i:09d}", f"slow-{i:09d}")
    # arrivals: distinct item indices begun (the fast arm's), not requests
    st = engine.stats()
    assert st["arrivals"] == len(fast)
    assert st["requests_by_arm"] == {"fast": len(fast), "slow": len(slow)}


def test_max_requests_ends_each_arm_on_its_own(tmp_path):
    t0 = time.monotonic()
    engine, fake = _run(tmp_path, max_requests=8, duration_s=30)
    fast, slow = fake.of("fast"), fake.of("slow")
    # each arm sends exactly the first 8 indices, all paired; the fast arm is done long
    # before the slow one (8 requests over 2 users: 4 x 0.1 s)
    assert sorted(_index(s["rid"]) for s in fast) == list(range(8))
    assert sorted(_index(s["rid"]) for s in slow) == list(range(8))
    assert time.monotonic() - t0 < 2.0
    assert engine.stats()["arrivals"] == 8


def test_worker_share_of_the_item_order(tmp_path):
    # worker 1 of 3: indices 1, 4, 7, ... on both arms, below max_requests
    _, fake = _run(tmp_path, worker_index=1, n_workers=3, max_requests=20, duration_s=30)
    for arm in LATENCY:
        assert sorted(_index(s["rid"]) for s in fake.of(arm)) == [1, 4, 7, 10, 13, 16, 19]


def test_independent_arms_walk_the_same_items_unpaired(tmp_path):
    engine, fake = _run(tmp_path, pairing="independent", users=2, max_requests=5, duration_s=30)
    for arm in LATENCY:  # one user per arm, each the first 5 indices
        assert sorted(_index(s["rid"]) for s in fake.of(arm)) == list(range(5))
    assert all(s["pair_id"] is None for s in fake.sent)
    samples = {arm: sorted(s["sample"] for s in fake.of(arm)) for arm in LATENCY}
    assert samples["fast"] == samples["slow"]
    assert engine.stats()["arrivals"] == 10  # each arm its own stream


def test_failing_arm_loop_stops_the_process(tmp_path):
    engine = LoadEngine(_spec(tmp_path, duration_s=30), worker_index=0, n_workers=1)
    fake = FakeTarget()
    engine._execute = fake
    item = engine.workload.item

    def broken(i):
        if i == 5:
            raise RuntimeError("bad item 5")
        return item(i)

    engine.workload.item = broken
    engine.set_t0(time.time_ns())
    loops = [gevent.spawn(engine.run_closed_user) for _ in range(2)]
    assert engine.done.wait(5), "a failed loop must end the process's closed loop"
    gevent.joinall(loops, timeout=2)
    assert engine.failure == "RuntimeError: bad item 5"
    n = len(fake.sent)
    gevent.sleep(0.3)
    assert len(fake.sent) == n  # no loop of any user keeps sending
    engine.close()


def test_killed_user_leaves_no_arm_loop_sending(tmp_path):
    """Locust stops a user by killing its greenlet: its per-arm loops must end with it."""
    engine = LoadEngine(_spec(tmp_path, duration_s=30), worker_index=0, n_workers=1)
    fake = FakeTarget()
    engine._execute = fake
    engine.set_t0(time.time_ns())
    user = gevent.spawn(engine.run_closed_user)
    gevent.sleep(0.3)
    assert fake.of("fast") and fake.of("slow")
    user.kill(block=True, timeout=2)
    assert engine.done.wait(5)
    n = len(fake.sent)
    gevent.sleep(0.3)
    assert len(fake.sent) == n
    engine.close()
