"""Both clients against the embedded simulator (a separate asyncio process)."""

from __future__ import annotations

import statistics

import pytest

from harness.config import TargetConfig
from harness.sim import process
from harness.targets import make_arm_client
from harness.targets.metrics import MetricsScraper
from harness.targets.preflight import preflight
from harness.workloads.base import WorkItem

ITEM = WorkItem(sample_id="s", prompt="hello there", max_tokens=20, force_length=True)


@pytest.fixture(scope="module")
def cloud_sim():
    with process.SimProcess("cloud", params={"ttft_ms": 50, "itl_ms": 5, "itl_jitter": 0}) as s:
        yield s


@pytest.mark.parametrize("impl", ["lean", "sdk"])
def test_fixed_latency_sim(cloud_sim, impl):
    t = TargetConfig(kind="sim_cloud", model="sim-cloud-mini", base_url=cloud_sim.base_url)
    t.client = impl
    preflight("cloud", t)
    c = make_arm_client("cloud", t, run_id="r", experiment="e")
    c.execute(ITEM, request_id="warm")
    rows = [c.execute(ITEM, request_id=str(i))[0] for i in range(7)]
    assert all(r.status == "ok" for r in rows), [r.error_message for r in rows]
    r = rows[-1]
    assert (r.completion_tokens, r.tokens_source, r.finish_reason) == (20, "usage", "length")
    assert len(r.itl_s) == 19 and statistics.median(r.itl_s) == pytest.approx(0.005, abs=0.002)
    # the simulator's event loop (uvloop/libuv) keeps millisecond timers: it can fire up to
    # ~1 ms early, so the lower bound is 49 ms
    tol = 0.004 if impl == "lean" else 0.020
    assert 0.049 <= statistics.median(x.ttft_s for x in rows) < 0.050 + tol


def test_sim_faults_and_retries(cloud_sim):
    t = TargetConfig(kind="sim_cloud", model="sim-cloud-mini", base_url=cloud_sim.base_url)
    t.retry.max_attempts = 2
    c = make_arm_client("cloud", t, run_id="r", experiment="e")
    cloud_sim.set_params(rate_limited_rate=1.0, retry_after_s=0.2)
    try:
        rows = c.execute(ITEM, request_id="x")
    finally:
        cloud_sim.set_params(rate_limited_rate=0.0)
    assert [r.error_type for r in rows] == ["rate_limited", "rate_limited"]
    assert rows[0].retry_after_s == pytest.approx(0.2)
    assert (rows[1].t_sent - rows[0].t_end) / 1e9 >= 0.2


def test_vllm_sim_metrics_and_cached_tokens():
    with process.SimProcess("vllm") as sim:
        t = TargetConfig(kind="sim_vllm", model="sim-llama-3.1-8b-instruct", base_url=sim.base_url)
        c = make_arm_client("selfhosted", t, run_id="r", experiment="e")
        r = c.execute(ITEM, request_id="x")[0]
        assert r.status == "ok" and r.cached_tokens is not None and r.prompt_tokens
        rows = MetricsScraper("selfhosted", t, run_id="r", on_rows=lambda _: None).scrape_once()
        names = {x["name"] for x in rows}
        assert {"vllm:num_requests_running", "vllm:num_requests_waiting"} <= names


@pytest.mark.parametrize("impl", ["lean", "sdk"])
def test_non_streamed_requests_against_the_simulator(cloud_sim, impl):
    """``stream: false``: one body when the last token would have streamed (50 + 19 x 5 ms);
    TTFT equals E2E, the row says it was not streamed, usage counts the tokens."""
    t = TargetConfig(kind="sim_cloud", model="sim-cloud-mini", base_url=cloud_sim.base_url)
    t.client, t.stream = impl, False
    c = make_arm_client("cloud", t, run_id="r", experiment="e")
    c.execute(ITEM, request_id="warm")
    rows = [c.execute(ITEM, request_id=str(i))[0] for i in range(5)]
    assert all(r.status == "ok" for r in rows), [r.error_message for r in rows]
    r = rows[-1]
    assert (r.streamed, r.completion_tokens, r.tokens_source, r.finish_reason) == (
        False,
        20,
        "usage",
        "length",
    )
    assert r.ttft_s == r.e2e_s and r.tpot_s is None and r.itl_s == []
    assert len(r.output_text.split()) == 20
    tol = 0.006 if impl == "lean" else 0.025
    assert 0.144 <= statistics.median(x.e2e_s for x in rows) < 0.145 + tol
