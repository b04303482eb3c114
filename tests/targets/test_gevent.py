"""Both clients are cooperative under gevent monkey-patching (how the locust process runs)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.targets.scripted_server import Script

ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import json, sys, time
    import gevent
    from harness.config import TargetConfig
    from harness.targets.client import make_arm_client
    from harness.workloads.base import WorkItem

    url, impl, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t = TargetConfig(kind="sim_vllm", model="m", base_url=url, client=impl)
    c = make_arm_client("a", t, run_id="r", experiment="e")
    item = WorkItem(sample_id="s", prompt="hi", max_tokens=3)
    c.execute(item, request_id="warmup")  # first SDK call loads its lazy modules
    t0 = time.perf_counter()
    jobs = [gevent.spawn(c.execute, item, request_id=str(i)) for i in range(n)]
    gevent.joinall(jobs, timeout=30)
    rows = [r for j in jobs for r in (j.value or [])]
    print(json.dumps({"wall": time.perf_counter() - t0,
                      "ok": sum(r.status == "ok" for r in rows),
                      "ttft": sorted(r.ttft_s or 0 for r in rows)}))
    """
)


@pytest.mark.parametrize("impl", ["lean", "sdk"])
def test_concurrent_streams_under_gevent(server, impl):
    n = 40
    server.default = Script(ttft_s=0.3, itl_s=0.05, chunks=["a", "b", "c"])
    out = subprocess.run(
        [sys.executable, "-c", PROBE, server.base_url, impl, str(n)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["ok"] == n
    # 40 streams of ~0.4 s each overlap: serial execution would take 16 s
    assert res["wall"] < 3.0, res
    assert res["ttft"][n // 2] < 0.6, res


TIMEOUT_PROBE = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import json, sys
    from harness.config import TargetConfig
    from harness.targets.client import make_arm_client
    from harness.workloads.base import WorkItem

    url, impl = sys.argv[1], sys.argv[2]
    t = TargetConfig(kind="sim_vllm", model="m", base_url=url, client=impl)
    t.timeouts.first_token_s, t.timeouts.total_s = 0.3, 0.6
    t.retry.max_attempts = 1
    c = make_arm_client("a", t, run_id="r", experiment="e")
    item = WorkItem(sample_id="s", prompt="hi", max_tokens=3)
    out = []
    for i in range(4):
        r = c.execute(item, request_id=str(i))[0]
        out.append([r.error_type, r.error_message, r.e2e_s])
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("impl", ["lean", "sdk"])
def test_timeouts_under_gevent(server, impl):
    """The lean client uses gevent timers instead of socket timeouts when patched."""
    server.push(
        Script(ttft_s=2.0),  # no first token in time
        Script(itl_s=0.1, chunks=["x"] * 30),  # total deadline passes while tokens flow
        Script(stall_after=1),  # stalls after the first token
        Script(),  # and the client still works afterwards
    )
    out = subprocess.run(
        [sys.executable, "-c", TIMEOUT_PROBE, server.base_url, impl],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r[0] for r in res] == ["timeout", "timeout", "timeout", None], res
    assert "first token" in res[0][1] and 0.3 <= res[0][2] < 1.0
    assert "total" in res[1][1] and 0.6 <= res[1][2] < 1.2
    assert 0.3 <= res[2][2] < 1.2


SLOT_PROBE = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import json, sys
    import gevent
    from harness.config import TargetConfig
    from harness.targets.client import make_arm_client
    from harness.workloads.base import WorkItem

    url, impl = sys.argv[1], sys.argv[2]
    t = TargetConfig(kind="sim_vllm", model="m", base_url=url, client=impl, max_connections=2)
    t.timeouts.first_token_s, t.timeouts.total_s = 30, 30
    t.retry.max_attempts = 1
    c = make_arm_client("a", t, run_id="r", experiment="e")
    item = WorkItem(sample_id="s", prompt="hi", max_tokens=3)
    jobs = [gevent.spawn(c.execute, item, request_id=str(i)) for i in range(6)]
    gevent.joinall(jobs, timeout=10)
    first = [[r.error_type, r.queue_delay_s, r.ttft_s] for j in jobs for r in j.value]
    jobs = [gevent.spawn(c.execute, item, request_id="s" + str(i)) for i in range(3)]
    gevent.sleep(0.5)  # two stall in flight, one waits for a slot
    c.cancel()
    gevent.joinall(jobs, timeout=3)
    second = [r.error_type for j in jobs for r in (j.value or [])]
    print(json.dumps({"first": first, "second": second}))
    """
)


@pytest.mark.parametrize("impl", ["lean", "sdk"])
def test_connection_slots_under_gevent(server, impl):
    """max_connections bounds concurrent streams; the wait is queue delay; cancel wakes it."""
    server.push(*[Script(ttft_s=0.25) for _ in range(6)], *[Script(stall_after=1)] * 2)
    out = subprocess.run(
        [sys.executable, "-c", SLOT_PROBE, server.base_url, impl],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    first = res["first"]
    assert [r[0] for r in first] == [None] * 6, first
    waits = sorted(r[1] for r in first)
    assert waits[2] >= 0.2 and waits[4] >= 0.45, waits  # in pairs: 0, 0.25, 0.5 s late
    assert max(r[2] for r in first) < 0.6, first  # slot waits are not in TTFT
    assert res["second"] == ["cancelled"] * 3, res
    assert len(server.requests) == 8  # the request queued for a slot was never sent
