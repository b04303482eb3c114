"""Prompt counts for responses without usage: the server's /tokenize (vLLM), else a local
estimate, recorded with their source; and preflight's hint for a base_url without /v1."""

from __future__ import annotations

import json
import socket
import time

import pytest

from harness.config import TargetConfig
from harness.sim.process import SimProcess
from harness.targets import make_arm_client
from harness.targets.errors import TargetError
from harness.targets.preflight import preflight
from harness.targets.tokens import ServerTokenizer, count_tokens, server_tokenizer, tokenize_url
from harness.workloads.base import WorkItem
from tests.targets.scripted_server import Script, make_target

MODEL = "sim-llama-3.1-8b-instruct"
MSGS = ({"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "What colour is the sky"})  # fmt: skip


def _item(i: int) -> WorkItem:
    return WorkItem(sample_id=f"s{i}", messages=MSGS, max_tokens=4, force_length=True)


def test_tokenize_url_is_at_the_server_root():
    assert tokenize_url("http://h:8000/v1") == "http://h:8000/tokenize"
    assert tokenize_url("http://h:8000/v1/") == "http://h:8000/tokenize"
    assert tokenize_url("http://h:8000") == "http://h:8000/tokenize"
    assert tokenize_url("https://gw/vllm/v1?tenant=a") == "https://gw/vllm/tokenize?tenant=a"


def test_only_vllm_kinds_get_a_server_tokenizer():
    for kind, has in (("vllm", True), ("sim_vllm", True), ("openai", False), ("sim_cloud", False)):
        t = TargetConfig(kind=kind, model="m", base_url="http://h:1/v1")
        assert (server_tokenizer(t, "k") is not None) is has, kind
    assert server_tokenizer(TargetConfig(kind="vllm", model="m"), None) is None  # no base_url


@pytest.fixture(scope="module")
def no_usage_sim():
    with SimProcess("vllm", params={"send_usage": False, "step_jitter": 0}) as sim:
        yield sim


@pytest.mark.parametrize("impl", ["lean", "sdk"])
def test_no_usage_prompt_counted_by_tokenize_once_per_sample(no_usage_sim, impl, monkeypatch):
    calls = []
    ask = ServerTokenizer._ask
    monkeypatch.setattr(
        ServerTokenizer, "_ask", lambda self, item: calls.append(1) or ask(self, item)
    )
    t = TargetConfig(kind="sim_vllm", model=MODEL, base_url=no_usage_sim.base_url)
    t.client = impl
    c = make_arm_client("selfhosted", t, run_id="r", experiment="e")
    rows = [c.execute(_item(i % 2), request_id=str(i))[0] for i in range(4)]
    assert all(r.status == "ok" for r in rows), [r.error_message for r in rows]
    # the server's count: the chat template included (9 words + 3 per message + 3)
    assert {(r.prompt_tokens, r.prompt_tokens_source) for r in rows} == {(18, "tokenize")}
    assert count_tokens("\n".join(m["content"] for m in MSGS), MODEL) < 18  # local estimate
    assert len(calls) == 2  # two distinct sample ids
    assert rows[0].tokens_source == "tokenizer" and rows[0].forced_length
    # the count is what the server puts in usage when it sends it
    no_usage_sim.set_params(send_usage=True)
    try:
        r = c.execute(_item(5), request_id="u")[0]
    finally:
        no_usage_sim.set_params(send_usage=False)
    assert (r.prompt_tokens, r.prompt_tokens_source, r.tokens_source) == (18, "usage", "usage")


@pytest.mark.parametrize("impl", ["lean", "sdk"])
def test_no_tokenize_endpoint_falls_back_and_is_not_asked_again(server, impl):
    server.default = Script(chunks=["a", " b"], usage=False)
    c = make_arm_client("selfhosted", make_target(server.base_url, client=impl, kind="vllm"),
                        run_id="r", experiment="e")  # fmt: skip
    rows = [c.execute(_item(i), request_id=str(i))[0] for i in range(3)]
    local = count_tokens("\n".join(m["content"] for m in MSGS), "test-model")
    assert [(r.prompt_tokens, r.prompt_tokens_source) for r in rows] == [(local, "tokenizer")] * 3
    asked = [q["path"] for q in server.requests if q["path"].endswith("/tokenize")]
    assert asked == ["/tokenize"]  # once, at the root; then remembered as unsupported


def test_hosted_api_is_never_asked(server, monkeypatch):
    monkeypatch.setenv("HARNESS_TOK_KEY", "sk-test-TOKENIZEKEY-123")
    server.default = Script(chunks=["a"], usage=False)
    t = make_target(server.base_url, kind="openai", api_key_env="HARNESS_TOK_KEY")
    r = make_arm_client("cloud", t, run_id="r", experiment="e").execute(_item(0), request_id="x")[0]
    assert r.prompt_tokens_source == "tokenizer"
    assert not [q for q in server.requests if "tokenize" in q["path"]]


def test_a_silent_endpoint_times_out_once_then_stays_off():
    with socket.socket() as s:  # accepts connections (backlog) and never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/tokenize"
        tok = ServerTokenizer(url, "m", chat=True, timeout_s=0.2)
        t0 = time.perf_counter()
        assert tok.count(_item(0)) is None
        assert 0.15 < time.perf_counter() - t0 < 2.0
        t0 = time.perf_counter()
        assert tok.count(_item(1)) is None and time.perf_counter() - t0 < 0.01
        assert not tok.available and "timed out" in tok.off_reason


def test_a_malformed_answer_switches_it_off(server):
    tok = ServerTokenizer(server.base_url + "/models", "m", chat=False)  # JSON, but no count
    assert tok.count(_item(0)) is None and "KeyError" in tok.off_reason


def test_cancel_stops_tokenize_calls(server):
    c = make_arm_client("a", make_target(server.base_url), run_id="r", experiment="e")
    c.cancel()
    assert c._ctx.server_counts is not None and not c._ctx.server_counts.available


def test_preflight_hints_at_the_missing_v1(no_usage_sim):
    t = TargetConfig(kind="vllm", model=MODEL, base_url=no_usage_sim.url)  # no /v1
    with pytest.raises(TargetError) as e:
        preflight("selfhosted", t)
    msg = str(e.value)
    assert f"base_url should usually end in /v1 (e.g. {no_usage_sim.url}/v1)" in msg
    assert "/models unsupported" not in msg
    t.base_url = no_usage_sim.base_url
    assert preflight("selfhosted", t) == [MODEL]


@pytest.mark.slow
def test_experiment_without_usage_reports_server_counts(tmp_path):
    """End to end: the vLLM simulator sends no usage; its rows carry /tokenize counts and the
    report says so, while the cloud arm (usage sent) has no such caveat."""
    from tests.load.e2e import only_run_dir, read_rows, run_harness, smoke_args

    res = run_harness(smoke_args(tmp_path, "load.rate=5", "load.duration_s=4",
                                 "+arms.selfhosted.sim.params={send_usage:false}"))  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    df = read_rows(run_dir)
    ok = df[df.status == "ok"]
    src = ok.groupby("arm").prompt_tokens_source.unique()
    assert list(src["selfhosted"]) == ["tokenize"] and list(src["cloud"]) == ["usage"]
    summary = json.loads((run_dir / "summary.json").read_text())
    counted = summary["checks"]["arms"]["selfhosted"]["count_sources"]["prompt"]
    assert set(counted) == {"tokenize"}
    text = " ".join(summary["caveats"])
    assert "Arm 'selfhosted': the server sent no usage" in text and "/tokenize" in text
    assert "Arm 'cloud': the server sent no usage" not in text
