"""A silent provider update, as the simulator plays it: accuracy per eval category (the same
fixed draw per (seed, item), so lowering a category's accuracy only flips its items to wrong)
and what the responses say served them (``model``, ``system_fingerprint``), in every chunk
and body, recorded by both harness clients."""

from __future__ import annotations

import http.client
import json

import pytest

from harness.config import TargetConfig
from harness.sim.answers import AnswerBook
from harness.sim.process import SimProcess, SimProcessError
from harness.targets import make_arm_client
from harness.workloads.base import WorkItem

FAST = {"ttft_ms": 1, "itl_ms": 1, "itl_jitter": 0}
CANARY = "workloads/eval/canary.jsonl"
SEED = 5
RHO = 0.5  # the default item_correlation


@pytest.fixture(scope="module")
def book() -> AnswerBook:
    return AnswerBook.load([CANARY])


@pytest.fixture(scope="module")
def sim():
    with SimProcess("cloud", params={**FAST, "accuracy": 1.0}, seed=SEED) as s:
        yield s


def _items(book, category, n):
    return [it for it in book.by_prompt.values() if it.category == category][:n]


def _right(sim, items) -> list[bool]:
    """Whether the simulator answered each item with its reference answer (non-streamed)."""
    out = []
    for it in items:
        body = {
            "model": "sim-cloud-mini",
            "messages": [{"role": "user", "content": it.prompt}],
            "max_tokens": 64,
            "temperature": 0,
        }
        status, raw = sim.request("POST", "/v1/chat/completions", body)
        assert status == 200, raw
        out.append(json.loads(raw)["choices"][0]["message"]["content"] == it.answer)
    return out


def test_category_accuracy_overrides_accuracy_for_its_items_only(sim, book):
    facts, sums = _items(book, "fact_lookup", 40), _items(book, "arithmetic", 15)
    try:
        sim.set_params(category_accuracy={"fact_lookup": 0.0})
        assert _right(sim, facts) == [False] * 40
        assert _right(sim, sums) == [True] * 15  # accuracy 1.0 still holds elsewhere
        right = {}
        for acc in (0.8, 0.5):
            sim.set_params(category_accuracy={"fact_lookup": acc})
            right[acc] = _right(sim, facts)
            # the fixed draw of answers.py: right exactly when u(seed, item) < accuracy
            assert right[acc] == [book.latent_u(it, SEED, RHO) < acc for it in facts]
        # monotone: every item right at 0.5 is right at 0.8, and the drop flips some
        assert all(hi for lo, hi in zip(right[0.5], right[0.8], strict=True) if lo)
        assert sum(right[0.8]) > sum(right[0.5]) > 0
        assert sim.get_config()["params"]["category_accuracy"] == {"fact_lookup": 0.5}
        sim.set_params(category_accuracy={})  # the empty default: accuracy for everyone
        assert _right(sim, facts[:10]) == [True] * 10
    finally:
        sim.set_params(category_accuracy={})


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ({"fact_lookpu": 0.5}, r"unknown categories \['fact_lookpu'\].*fact_lookup"),
        ({"fact_lookup": 1.5}, r"category_accuracy.*fact_lookup.*\[0, 1\]"),
        ({"fact_lookup": "high"}, r"category_accuracy\.fact_lookup.*expected a number"),
        ([0.5], r"category_accuracy.*expected a mapping"),
    ],
)
def test_bad_category_accuracy_is_refused(sim, value, needle):
    with pytest.raises(SimProcessError, match=needle):
        sim.set_params(category_accuracy=value)
    assert sim.get_config()["params"]["category_accuracy"] == {}


def test_unknown_category_in_a_scenario_fails_at_start(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "profile: cloud\nscenario:\n  - {at_day: 15, params: {category_accuracy: {facts: 0.6}}}\n"
    )
    with pytest.raises(
        SimProcessError,
        match=r"scenario step at 1296000 s \(day 15\).*unknown categories \['facts'\]",
    ):
        SimProcess("cloud", config_file=str(cfg)).start()


# -- what served it ---------------------------------------------------------------------


def _events(sim, path, body) -> list[dict]:
    """The JSON chunks of one streamed response, as sent (no SDK in between)."""
    host, port = sim.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        raw = conn.getresponse().read().decode()
    finally:
        conn.close()
    data = [ln[6:] for ln in raw.split("\n") if ln.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def _requests(model):
    chat = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
    cmpl = {"model": model, "prompt": "hello", "max_tokens": 4}
    return [("/v1/chat/completions", chat), ("/v1/completions", cmpl)]


@pytest.mark.parametrize("profile", ["cloud", "vllm"])
def test_every_chunk_and_body_says_what_served_it(profile):
    with SimProcess(profile, params={"step_jitter": 0} if profile == "vllm" else FAST) as s:
        model = s.get_config()["params"]["model"]
        for path, body in _requests(model):  # the defaults: the requested model, no fingerprint
            status, raw = s.request("POST", path, body)
            assert status == 200 and json.loads(raw)["model"] == model
            assert b"system_fingerprint" not in raw
            stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
            assert {c["model"] for c in _events(s, path, stream)} == {model}
            assert all("system_fingerprint" not in c for c in _events(s, path, stream))
        s.set_params(response_model=f"{model}-2026-02-01", system_fingerprint="fp_2026b")
        for path, body in _requests(model):  # still requested by its alias
            status, raw = s.request("POST", path, body)
            obj = json.loads(raw)
            assert (obj["model"], obj["system_fingerprint"]) == (f"{model}-2026-02-01", "fp_2026b")
            stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
            chunks = _events(s, path, stream)
            assert len(chunks) >= 5 and chunks[-1]["usage"]  # role/tokens/finish/usage
            assert {(c["model"], c["system_fingerprint"]) for c in chunks} == {
                (f"{model}-2026-02-01", "fp_2026b")
            }
            assert "".join(
                (c["choices"][0].get("delta", {}).get("content") or c["choices"][0].get("text", ""))
                for c in chunks
                if c["choices"]
            )  # the text still parses around the added key
        s.set_params(response_model=None, system_fingerprint=None)
        status, raw = s.request("POST", *_requests(model)[0])
        assert json.loads(raw)["model"] == model and b"system_fingerprint" not in raw


@pytest.mark.parametrize("impl", ["lean", "sdk"])
@pytest.mark.parametrize("stream", [True, False])
def test_both_clients_record_model_and_fingerprint(sim, impl, stream):
    t = TargetConfig(kind="sim_cloud", model="sim-cloud-mini", base_url=sim.base_url)
    t.client = impl
    t.stream = stream
    c = make_arm_client("cloud", t, run_id="r", experiment="e")
    item = WorkItem(sample_id="s", prompt="hello there", max_tokens=8, force_length=True)
    try:
        sim.set_params(response_model="sim-cloud-mini-2026-01-15", system_fingerprint="fp_2026a")
        row = c.execute(item, request_id="a")[0]
        sim.set_params(system_fingerprint="fp_2026b")  # the provider's silent update
        after = c.execute(item, request_id="b")[0]
    finally:
        sim.set_params(response_model=None, system_fingerprint=None)
        c.close()
    assert row.status == "ok" and after.status == "ok", (row.error_message, after.error_message)
    assert (row.response_model, row.system_fingerprint) == ("sim-cloud-mini-2026-01-15", "fp_2026a")
    assert (after.model, after.response_model, after.system_fingerprint) == (
        "sim-cloud-mini",
        "sim-cloud-mini-2026-01-15",
        "fp_2026b",
    )
