"""The simulator over HTTP, driven by the official ``openai`` SDK and raw sockets: streaming
shapes and usage, typed errors, keep-alive, disconnects, metrics, fixed latency."""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import time

import openai
import pytest

from harness.sim.process import SimProcess, SimProcessError

VLLM = "sim-llama-3.1-8b-instruct"
CLOUD = "sim-cloud-mini"
USER = [{"role": "user", "content": "tell me a story about a dog and a cat"}]


def raw(
    sim: SimProcess, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict, bytes]:
    host, port = sim.url.removeprefix("http://").rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


# -- streaming and non-streaming -------------------------------------------------------------
@pytest.mark.parametrize("profile", ["vllm", "cloud"])
def test_chat_stream_with_usage(profile, vllm_sim, cloud_sim, sdk):
    sim, model = (vllm_sim, VLLM) if profile == "vllm" else (cloud_sim, CLOUD)
    chunks = list(
        sdk(sim).chat.completions.create(
            model=model,
            messages=USER,
            max_tokens=30,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 30  # one token per content chunk
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == "length" and set(reasons[:-1]) == {None}
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage.completion_tokens == 30
    assert usage.prompt_tokens == 10 + 3 + 3  # 10 words + one message + reply priming
    assert usage.total_tokens == usage.prompt_tokens + 30
    assert usage.prompt_tokens_details.cached_tokens == 0
    text = "".join(c.choices[0].delta.content for c in content)
    assert len(text.split()) == 30


def test_completions_stream_and_non_stream(vllm_sim, sdk):
    client = sdk(vllm_sim)
    chunks = list(
        client.completions.create(
            model=VLLM,
            prompt="one two three",
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) == 12 and all(texts)
    assert chunks[-1].usage.prompt_tokens == 3 and chunks[-1].usage.completion_tokens == 12
    r = client.completions.create(
        model=VLLM, prompt="one two three", max_tokens=12, extra_body={"ignore_eos": True}
    )
    assert r.object == "text_completion" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 12 and len(r.choices[0].text.split()) == 12


def test_non_stream_chat_and_natural_eos(vllm_sim, cloud_sim, sdk):
    r = sdk(cloud_sim).chat.completions.create(model=CLOUD, messages=USER, max_tokens=2000)
    assert r.object == "chat.completion"
    msg = r.choices[0].message
    assert msg.role == "assistant"
    # natural EOS: lognormal(200, 0.6), far below 2000
    assert r.choices[0].finish_reason == "stop"
    assert 1 <= r.usage.completion_tokens < 2000
    assert len(msg.content.split()) == r.usage.completion_tokens
    capped = sdk(vllm_sim).chat.completions.create(model=VLLM, messages=USER, max_tokens=3)
    assert capped.choices[0].finish_reason == "length" and capped.usage.completion_tokens == 3


def test_min_tokens_and_max_completion_tokens(cloud_sim, sdk):
    client = sdk(cloud_sim)
    r = client.chat.completions.create(
        model=CLOUD, messages=USER, max_completion_tokens=40, extra_body={"min_tokens": 40}
    )
    assert r.usage.completion_tokens == 40 and r.choices[0].finish_reason == "length"


def test_same_seed_same_text(vllm_sim, cloud_sim, sdk):
    def text(sim, model, seed, prompt="a b c"):
        r = sdk(sim).chat.completions.create(
            model=model,
            seed=seed,
            temperature=1.0,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=8,
        )
        return r.choices[0].message.content

    assert text(vllm_sim, VLLM, 7) == text(vllm_sim, VLLM, 7)
    assert text(vllm_sim, VLLM, 7) != text(vllm_sim, VLLM, 8)
    assert text(vllm_sim, VLLM, 7) != text(vllm_sim, VLLM, 7, "a b d")
    # Same server seed, other profile and process: the same content.
    assert text(cloud_sim, CLOUD, 7) == text(vllm_sim, VLLM, 7)


# -- errors --------------------------------------------------------------------------------
def test_unknown_model_is_not_found(vllm_sim, sdk):
    with pytest.raises(openai.NotFoundError) as ei:
        sdk(vllm_sim).chat.completions.create(model="nope", messages=USER, max_tokens=5)
    assert "nope" in ei.value.message
    assert ei.value.response.headers["x-request-id"]


def test_context_length_is_bad_request(vllm_sim, sdk):
    prompt = "word " * 8000  # 8000 + 6 prompt tokens + 500 > 8192
    with pytest.raises(openai.BadRequestError) as ei:
        sdk(vllm_sim).chat.completions.create(
            model=VLLM, messages=[{"role": "user", "content": prompt}], max_tokens=500
        )
    assert "This model's maximum context length is 8192 tokens" in ei.value.message
    assert "8506 tokens" in ei.value.message
    assert ei.value.body["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    "body, needle",
    [
        (b"{not json", "could not parse the JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"model": "sim-llama-3.1-8b-instruct"}', "messages"),
        (b'{"model": "sim-llama-3.1-8b-instruct", "messages": [{"role": "x"}]}', "role"),
        (
            b'{"model": "sim-llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "a"}],'
            b' "max_tokens": -1}',
            "max_tokens",
        ),
        (
            b'{"model": "sim-llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "a"}],'
            b' "stream_options": {"include_usage": true}}',
            "stream=True",
        ),
        (b'{"messages": [{"role": "user", "content": "a"}]}', "model"),
    ],
)
def test_bad_requests_get_openai_errors(vllm_sim, body, needle):
    status, headers, data = raw(
        vllm_sim, "POST", "/v1/chat/completions", body, {"content-type": "application/json"}
    )
    assert status == 400
    err = json.loads(data)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert needle in err["message"]
    assert headers["x-request-id"]


def test_unknown_path_and_method(vllm_sim):
    status, headers, data = raw(vllm_sim, "GET", "/v1/nothing")
    assert status == 404 and "error" in json.loads(data) and headers["x-request-id"]
    status, _, _ = raw(vllm_sim, "GET", "/v1/chat/completions")
    assert status == 405


def test_request_id_is_echoed(vllm_sim, sdk):
    raw_resp = sdk(vllm_sim).chat.completions.with_raw_response.create(
        model=VLLM, messages=USER, max_tokens=2, extra_headers={"x-request-id": "abc-123"}
    )
    assert raw_resp.headers["x-request-id"] == "abc-123"


def test_rate_limit_429_with_retry_after(sdk):
    with SimProcess(
        "cloud", params={"ttft_ms": 1, "itl_ms": 1, "itl_jitter": 0, "rpm_limit": 2}
    ) as sim:
        client = sdk(sim)
        for _ in range(2):
            client.chat.completions.create(model=CLOUD, messages=USER, max_tokens=2)
        with pytest.raises(openai.RateLimitError) as ei:
            client.chat.completions.create(model=CLOUD, messages=USER, max_tokens=2)
        h = ei.value.response.headers
        assert 25 <= int(h["retry-after"]) <= 30  # one request refills in 60 / 2 s
        assert h["x-ratelimit-remaining-requests"] == "0"
        assert ei.value.body["code"] == "rate_limit_exceeded"
        sim.set_params(rpm_limit=None, tpm_limit=100)  # prompt + max_tokens are charged
        client.chat.completions.create(model=CLOUD, messages=USER, max_tokens=50)
        with pytest.raises(openai.RateLimitError) as ei:
            client.chat.completions.create(model=CLOUD, messages=USER, max_tokens=50)
        assert "tokens per min" in ei.value.message
        sim.set_params(tpm_limit=None, error_rate=1.0, error_statuses=[503])
        with pytest.raises(openai.InternalServerError) as ei5:
            client.chat.completions.create(model=CLOUD, messages=USER, max_tokens=2)
        assert ei5.value.status_code == 503
        sim.set_params(error_rate=0.0, rate_limited_rate=1.0, retry_after_s=7)
        with pytest.raises(openai.RateLimitError) as ei:
            client.chat.completions.create(model=CLOUD, messages=USER, max_tokens=2)
        assert ei.value.response.headers["retry-after"] == "7"


def test_server_errors_are_typed(sdk):
    with SimProcess("vllm", params={"error_rate": 1.0, "error_statuses": [500]}) as sim:
        with pytest.raises(openai.InternalServerError) as ei:
            sdk(sim).chat.completions.create(model=VLLM, messages=USER, max_tokens=2)
        assert ei.value.status_code == 500
        assert ei.value.body["type"] == "InternalServerError"  # vLLM's type names


def test_stall_times_out_and_truncation_breaks_stream(sdk):
    with SimProcess(
        "cloud",
        params={"ttft_ms": 5, "itl_ms": 1, "itl_jitter": 0, "stall_rate": 1.0, "stall_s": 30},
    ) as sim:
        with pytest.raises(openai.APITimeoutError):
            sdk(sim, timeout=0.3).chat.completions.create(model=CLOUD, messages=USER, max_tokens=5)
        sim.set_params(stall_rate=0.0, truncate_rate=1.0)
        got = []
        with pytest.raises(openai.APIConnectionError):
            for c in sdk(sim).chat.completions.create(
                model=CLOUD, messages=USER, max_tokens=20, stream=True
            ):
                got.append(c)
        assert len(got) < 20


# -- connections ---------------------------------------------------------------------------
def test_keep_alive_reuses_the_connection(vllm_sim):
    host, port = vllm_sim.url.removeprefix("http://").rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    body = json.dumps({"model": VLLM, "messages": USER, "max_tokens": 3, "stream": True})
    socks = set()
    for _ in range(3):
        c.request(
            "POST", "/v1/chat/completions", body=body, headers={"content-type": "application/json"}
        )
        r = c.getresponse()
        data = r.read()
        assert r.status == 200 and data.endswith(b"data: [DONE]\n\n")
        socks.add(id(c.sock))
    assert len(socks) == 1
    c.close()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} missing")


def test_disconnect_mid_stream_frees_the_sequence(vllm_sim):
    host, port = vllm_sim.url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps(
        {"model": VLLM, "messages": USER, "max_tokens": 5000, "stream": True, "ignore_eos": True}
    ).encode()
    s = socket.create_connection((host, int(port)))
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
        b"\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
    )
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    time.sleep(0.2)
    text = vllm_sim.metrics_text()
    assert _metric(text, "vllm:num_requests_running") == 1
    assert _metric(text, "vllm:kv_cache_usage_perc") > 0
    s.close()
    deadline = time.time() + 5
    while _metric(vllm_sim.metrics_text(), "vllm:num_requests_running") != 0:
        assert time.time() < deadline
        time.sleep(0.05)
    text = vllm_sim.metrics_text()
    assert _metric(text, "vllm:kv_cache_usage_perc") == 0
    assert 'finished_reason="abort"' in text


def test_models_health_metrics(vllm_sim, cloud_sim, sdk):
    assert [m.id for m in sdk(vllm_sim).models.list()] == [VLLM]
    assert [m.id for m in sdk(cloud_sim).models.list()] == [CLOUD]
    assert raw(vllm_sim, "GET", "/health")[0] == 200
    text = vllm_sim.metrics_text()
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_count",
    ):
        assert f'{name}{{model_name="{VLLM}"' in text, name
    assert _metric(text, "vllm:generation_tokens_total") > 0
    assert "vllm:time_to_first_token_seconds_count" in cloud_sim.metrics_text()


def test_prefix_cache_reports_cached_tokens(vllm_sim, sdk):
    system = {"role": "system", "content": " ".join(f"rule{i}" for i in range(600))}

    def ask(q):
        return sdk(vllm_sim).chat.completions.create(
            model=VLLM, messages=[system, {"role": "user", "content": q}], max_tokens=2
        )

    first = ask("first question here")
    second = ask("a different question")
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached % 16 == 0 and 560 <= cached <= 600


# -- timing ----------------------------------------------------------------------------------
def _stream_times(host: str, port: int, model: str, n_tokens: int) -> tuple[float, list[float]]:
    """TTFT and inter-chunk gaps of one streamed request, read with a bare socket."""
    body = json.dumps(
        {
            "model": model,
            "messages": USER,
            "max_tokens": n_tokens,
            "stream": True,
            "ignore_eos": True,
        }
    ).encode()
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.perf_counter()
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
        b"\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
    )
    times, buf = [], b""
    while b"[DONE]" not in buf:
        data = s.recv(65536)
        assert data
        buf += data
        times += [time.perf_counter()] * data.count(b'"content":"')
    s.close()
    times = times[1:]  # the role chunk arrives with the first token
    return times[0] - t0, [b - a for a, b in zip(times, times[1:], strict=False)]


def test_fixed_latency_is_exact(cloud_sim):
    host, port = cloud_sim.url.removeprefix("http://").rsplit(":", 1)
    ttfts, gaps = [], []
    for _ in range(8):
        ttft, g = _stream_times(host, int(port), CLOUD, 10)
        ttfts.append(ttft)
        gaps += g
    # Configured 50 ms / 5 ms; a shared 2-core CI box adds scheduling noise, so medians.
    assert 0.049 <= statistics.median(ttfts) <= 0.053
    assert 0.004 <= statistics.median(gaps) <= 0.0065


def test_vllm_profile_latency_matches_reference_setup(vllm_sim):
    host, port = vllm_sim.url.removeprefix("http://").rsplit(":", 1)
    ttft, gaps = _stream_times(host, int(port), VLLM, 20)
    # Llama-3.1-8B on one H100 at low load: TTFT 60-120 ms, ITL 10-15 ms.
    assert 0.025 <= ttft <= 0.12
    assert 0.009 <= statistics.median(gaps) <= 0.015


def test_process_reports_startup_errors(tmp_path):
    with pytest.raises(SimProcessError, match="unknown parameter 'bogus'"):
        SimProcess("vllm", params={"bogus": 1}).start()
    sim = SimProcess("vllm").start()
    sim.stop()
    sim.stop()  # idempotent
    assert not sim.running


def test_engine_clock_does_not_drift():
    # 10 ms steps exactly: 100 tokens end 990 ms after the first, however late timers fire.
    params = {
        "step_base_ms": 10,
        "decode_per_seq_ms": 0,
        "prefill_per_token_ms": 0,
        "attn_per_ctx_token_ms": 0,
        "step_jitter": 0,
        "api_overhead_ms": 0,
    }
    with SimProcess("vllm", params=params) as sim:
        host, port = sim.url.removeprefix("http://").rsplit(":", 1)
        ttft, gaps = _stream_times(host, int(port), VLLM, 100)
    assert 0.985 <= sum(gaps) <= 1.005
    assert ttft < 0.02
