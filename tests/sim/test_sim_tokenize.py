"""The vllm profile's POST /tokenize (as vLLM serves it) and the send_usage=false setting."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from harness.sim.process import SimProcess

MODEL = "sim-llama-3.1-8b-instruct"
MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there you"}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with SimProcess("vllm", params={"step_jitter": 0}) as s:
        yield s


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_tokenize_counts_like_usage_with_the_chat_template(sim):
    status, tok = _post(sim.url + "/tokenize", {"model": MODEL, "messages": MSGS})
    # 2 + 3 words, 3 template tokens per message, 3 priming the reply
    assert status == 200 and tok["count"] == 5 + 2 * 3 + 3 == len(tok["tokens"])
    assert tok["max_model_len"] == 8192 and all(isinstance(t, int) for t in tok["tokens"])
    _, usage = _post(sim.base_url + "/chat/completions",
                     {"model": MODEL, "messages": MSGS, "max_tokens": 2})  # fmt: skip
    assert usage["usage"]["prompt_tokens"] == tok["count"]
    # vLLM's options: no generation prompt (-3), the last message left open (-2 more)
    _, no_gen = _post(sim.url + "/tokenize", {"messages": MSGS, "add_generation_prompt": False})
    assert no_gen["count"] == tok["count"] - 3
    body = {"messages": MSGS, "add_generation_prompt": False, "continue_final_message": True}
    assert _post(sim.url + "/tokenize", body)[1]["count"] == tok["count"] - 5
    # completions prompts: words, as /v1/completions counts them (model is optional)
    _, plain = _post(sim.url + "/tokenize", {"prompt": "one two three", "add_special_tokens": True})
    assert plain["count"] == 3


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"model": "other", "prompt": "x"}, 404, "does not exist"),
        ({"messages": MSGS, "continue_final_message": True}, 400, "Cannot set both"),
        ({"messages": []}, 400, "non-empty array"),
        ({"prompt": 3}, 400, "'prompt'"),
        ({"prompt": "x", "add_special_tokens": "yes"}, 400, "must be a boolean"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_tokenize_rejects_bad_requests(sim, body, status, text):
    got, err = _post(sim.url + "/tokenize", body)
    assert got == status and text in err["error"]["message"]


def test_tokenize_is_at_the_root_and_only_on_the_vllm_profile(sim):
    assert _post(sim.base_url + "/tokenize", {"prompt": "x"})[0] == 404  # not under /v1
    with SimProcess("cloud", params={"ttft_ms": 1, "itl_ms": 1, "itl_jitter": 0}) as cloud:
        assert _post(cloud.url + "/tokenize", {"prompt": "x"})[0] == 404


def test_send_usage_false_leaves_usage_out(sim):
    body = {"model": MODEL, "messages": MSGS, "max_tokens": 3}
    sim.set_params(send_usage=False)
    try:
        _, plain = _post(sim.base_url + "/chat/completions", body)
        req = urllib.request.Request(
            sim.base_url + "/chat/completions",
            data=json.dumps(
                {**body, "stream": True, "stream_options": {"include_usage": True}}
            ).encode(),
            method="POST",
        )
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            stream = r.read().decode()
    finally:
        sim.set_params(send_usage=True)
    assert "usage" not in plain and plain["choices"][0]["finish_reason"] == "length"
    assert '"usage"' not in stream and "data: [DONE]" in stream and "finish_reason" in stream
    # /tokenize still counts while usage is off
    assert _post(sim.url + "/tokenize", {"messages": MSGS})[1]["count"] == 14
