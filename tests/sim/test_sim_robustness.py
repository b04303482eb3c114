"""Review findings, reproduced with raw sockets and in-process fakes: HTTP-layer errors on a
busy connection, upgrades, ``Expect: 100-continue``, idle keep-alive and input caps, failure
isolation between streams, KV-cache capacity, parameter validation, per-request determinism
and rate-limit accounting."""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
import time
from types import SimpleNamespace

import pytest

from harness.sim import http as sim_http
from harness.sim.engine import Arrival, Engine, Sequence, simulate
from harness.sim.params import CloudParams, ParamError, VllmParams, apply_params
from harness.sim.process import SimProcess, SimProcessError
from harness.sim.server import Completion, SimServer
from harness.sim.settings import load_settings

VLLM = "sim-llama-3.1-8b-instruct"
CLOUD = "sim-cloud-mini"
FAST = {"ttft_ms": 1, "itl_ms": 1, "itl_jitter": 0}


# -- raw HTTP helpers ------------------------------------------------------------------------
def connect(sim: SimProcess, timeout: float = 10) -> socket.socket:
    host, port = sim.url.removeprefix("http://").rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    return s


def post(path: str, body: dict, extra: bytes = b"") -> bytes:
    data = json.dumps(body).encode()
    return (
        b"POST %b HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n%b"
        b"content-length: %d\r\n\r\n%b" % (path.encode(), extra, len(data), data)
    )


GET_HEALTH = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"


class Reader:
    """Reads HTTP/1.1 responses off a socket one at a time (strict chunked decoding)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> None:
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            self._more()
        out, _, self.buf = self.buf.partition(sep)
        return out

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self) -> tuple[int, dict[str, str]]:
        lines = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return int(lines[0].split()[1]), headers

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.head()
        return status, headers, self.body(status, headers)

    def body(self, status: int, headers: dict[str, str]) -> bytes:
        if status == 100:
            return b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._until(b"\r\n"), 16)
                chunk = self._take(size)
                assert self._take(2) == b"\r\n", "bad chunk framing"
                if size == 0:
                    return body
                body += chunk
        return self._take(int(headers.get("content-length", "0")))

    def closed(self, timeout: float = 5) -> bool:
        """Whether the server closes the connection (with nothing more sent) in ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            return self.buf == b"" and self.sock.recv(65536) == b""
        except TimeoutError:
            return False


def sse_texts(body: bytes) -> list[dict]:
    events = [e for e in body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    return [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]


def metric(sim: SimProcess, name: str) -> float:
    for line in sim.metrics_text().splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} missing")


# -- 1. HTTP-layer errors never go into a busy connection --------------------------------------
BAD_INPUTS = {
    "parser error": b"GARBAGE / HTTP/1.1\r\n\r\n",
    "431": b"GET /health HTTP/1.1\r\nx-big: " + b"a" * (sim_http.MAX_HEAD + 10) + b"\r\n\r\n",
    "413": b"POST /v1/completions HTTP/1.1\r\ncontent-length: 99999999999\r\n\r\n",
}


@pytest.mark.parametrize("profile", ["vllm", "cloud"])
@pytest.mark.parametrize("bad", list(BAD_INPUTS))
def test_http_error_during_a_stream_leaves_the_stream_intact(profile, bad, vllm_sim, cloud_sim):
    sim, model = (vllm_sim, VLLM) if profile == "vllm" else (cloud_sim, CLOUD)
    s = connect(sim)
    body = {"model": model, "prompt": "a b c", "max_tokens": 40, "stream": True}
    s.sendall(post("/v1/completions", {**body, "ignore_eos": True}))
    r = Reader(s)
    status, headers = r.head()  # the stream is in progress now
    assert status == 200
    s.sendall(BAD_INPUTS[bad])
    stream = r.body(status, headers)
    events = sse_texts(stream)  # strict framing: nothing written into the stream
    assert sum(1 for e in events if e["choices"] and e["choices"][0]["text"]) == 40
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert r.closed()  # then the connection closes, no second response
    if profile == "vllm":
        assert metric(sim, "vllm:num_requests_running") == 0


@pytest.mark.parametrize("bad, status", [("parser error", 400), ("431", 431), ("413", 413)])
def test_http_errors_on_an_idle_connection_use_openai_error_bodies(vllm_sim, bad, status):
    s = connect(vllm_sim)
    s.sendall(BAD_INPUTS[bad])
    r = Reader(s)
    got, headers, body = r.response()
    assert got == status and headers["connection"] == "close"
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert r.closed()


def test_pipelined_requests_are_capped(cloud_sim):
    s = connect(cloud_sim)
    stream = {"model": CLOUD, "prompt": "a", "max_tokens": 20, "stream": True, "ignore_eos": True}
    s.sendall(post("/v1/completions", stream) + GET_HEALTH * (sim_http.MAX_PENDING + 30))
    r = Reader(s)
    statuses = []
    try:
        while True:
            statuses.append(r.response()[0])
    except EOFError:
        pass
    # The stream, then the queued requests, then the connection closes.
    assert statuses == [200] * (1 + sim_http.MAX_PENDING)


# -- 2. / 7. upgrades and Expect: 100-continue -----------------------------------------------
def test_h2c_upgrade_is_served_once_as_http1_with_its_body(cloud_sim):
    s = connect(cloud_sim)
    body = {"model": CLOUD, "prompt": "a b", "max_tokens": 3, "ignore_eos": True}
    upgrade = (
        b"connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
        b"http2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    )
    s.sendall(post("/v1/completions", body, upgrade) + GET_HEALTH)
    r = Reader(s)
    status, _, data = r.response()
    assert status == 200, data
    assert json.loads(data)["usage"]["completion_tokens"] == 3
    assert r.response()[0] == 200  # the next request on the connection: plain HTTP/1.1
    s.settimeout(0.3)
    with pytest.raises(TimeoutError):  # and nothing else (no second answer to the upgrade)
        r._more()


def test_expect_100_continue_is_answered(cloud_sim):
    s = connect(cloud_sim)
    req = post("/v1/completions", {"model": CLOUD, "prompt": "a", "max_tokens": 2})
    head, _, body = req.partition(b"\r\n\r\n")
    s.sendall(head + b"\r\nexpect: 100-continue\r\n\r\n")
    r = Reader(s)
    s.settimeout(2)
    assert r.response()[0] == 100  # before the body was sent
    s.sendall(body)
    assert r.response()[0] == 200


# -- 9. idle keep-alive timeout ----------------------------------------------------------------
def test_idle_keep_alive_connections_are_closed():
    assert VllmParams().keep_alive_timeout_s == 5.0  # uvicorn's / vLLM's default
    with SimProcess(
        "cloud", params={"ttft_ms": 1, "itl_ms": 5, "keep_alive_timeout_s": 0.3}
    ) as sim:
        s = connect(sim)
        r = Reader(s)
        t0 = time.perf_counter()
        s.sendall(GET_HEALTH)
        assert r.response()[0] == 200
        assert r.closed(timeout=3)
        assert 0.25 <= time.perf_counter() - t0 <= 2.5
        never = Reader(connect(sim))  # a connection that never sends a request
        assert never.closed(timeout=3)
        # A response in progress is never cut: a 0.6 s stream outlives the 0.3 s timeout.
        s = connect(sim)
        body = {"model": CLOUD, "prompt": "a", "max_tokens": 120, "stream": True}
        s.sendall(post("/v1/completions", {**body, "ignore_eos": True}))
        status, _, data = Reader(s).response()
        assert status == 200 and data.endswith(b"data: [DONE]\n\n")


# -- 1. failure isolation (in process, fakes) --------------------------------------------------
def _server(profile: str, **params) -> SimServer:
    return SimServer(load_settings(profile, None, {"reference_answers": False, **params}))


class FakeStream:
    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.ticks = self.tokens = self.emitted = 0
        self.failed = False
        self.fast_from, self.last = 1, 1000

    def _tick(self) -> None:
        if self.broken:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")
        self.ticks += 1

    def write_token(self, i: int) -> None:
        if self.broken:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")
        self.tokens += 1

    def emit(self, i: int, now: float) -> None:
        self.emitted += 1

    def fail(self) -> None:
        self.failed = True


def test_a_failing_stream_never_stops_the_others_in_its_timer_slot():
    srv = _server("cloud")
    streams = [FakeStream(), FakeStream(broken=True), FakeStream()]
    srv._wheel[123] = list(streams)
    srv._fire(123)
    assert [s.ticks for s in streams] == [1, 0, 1]
    assert [s.failed for s in streams] == [False, True, False]


def test_a_failing_stream_never_stops_the_others_in_an_engine_step():
    srv = _server("vllm")
    srv.loop = SimpleNamespace(time=lambda: 1.0)
    streams = [FakeStream(), FakeStream(broken=True), FakeStream()]
    sampled = [SimpleNamespace(num_output=5, user=s) for s in streams]
    srv._on_step(SimpleNamespace(duration=0.01), sampled, 1.0)
    assert [s.tokens for s in streams] == [1, 0, 1]
    assert [s.failed for s in streams] == [False, True, False]


class FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed, "write on a closed transport"
        self.out.append(data)

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        self.reading = False

    def get_write_buffer_size(self) -> int:
        return 0


class Owner:
    def __init__(self) -> None:
        self.disconnects = 0

    def on_disconnect(self) -> None:
        self.disconnects += 1


def _conn(handler=None) -> tuple[sim_http.Connection, FakeTransport]:
    conn = sim_http.Connection(handler or (lambda req, c: None), set(), idle_timeout_s=0)
    t = FakeTransport()
    conn.connection_made(t)
    return conn, t


def test_abort_and_early_finish_tell_the_owner():
    async def run() -> None:
        conn, t = _conn()
        owner = Owner()
        conn.start_stream(owner, [])
        conn.abort()
        assert owner.disconnects == 1 and t.closed and conn.owner is None
        conn, t = _conn()
        owner = Owner()
        conn.start_stream(owner, [])
        conn.busy = True
        conn.send(500, b"{}")  # anything finishing the response early tells the owner too
        assert owner.disconnects == 1
        conn, t = _conn()
        t.closed = conn.closed = True  # a stream started on a connection that is gone
        owner = Owner()
        conn.start_stream(owner, [])
        assert owner.disconnects == 1

    asyncio.run(run())


def test_streams_write_nothing_to_a_closed_connection():
    async def run() -> None:
        srv = _server("vllm")
        srv.loop = asyncio.get_running_loop()
        conn, t = _conn()
        q = srv.parse({"model": VLLM, "prompt": "a b", "max_tokens": 5, "stream": True}, False)
        output, reason = srv.plan_output(q)
        c = Completion(srv, conn, q, output, reason, [], 0.0, random.Random(0))
        c.write_token(1)
        assert len(t.out) == 1
        t.closed = conn.closed = True
        c.write_token(2)
        c.write_token(0)
        assert len(t.out) == 1

    asyncio.run(run())


# -- 3. KV capacity ---------------------------------------------------------------------------
def test_max_model_len_must_fit_in_the_kv_cache():
    with pytest.raises(ParamError, match="max_model_len.*exceeds the KV cache"):
        apply_params(VllmParams(), {"max_model_len": 500_000})
    with pytest.raises(ParamError, match="max_model_len"):
        apply_params(VllmParams(), {"kv_cache_tokens": 4096})  # below max_model_len 8192
    with SimProcess("vllm") as sim:
        with pytest.raises(SimProcessError, match="exceeds the KV cache"):
            sim.set_params(max_model_len=500_000)


def test_a_request_too_big_for_the_kv_cache_is_refused_not_hung():
    # 100 tokens of KV in 16-token blocks: 6 blocks = 96 tokens; max_model_len 100 is allowed.
    params = {"kv_cache_tokens": 100, "max_model_len": 100, "step_jitter": 0}
    with SimProcess("vllm", params=params) as sim:
        s = connect(sim, timeout=5)
        prompt = " ".join(["w"] * 10)
        s.sendall(post("/v1/completions", {"model": VLLM, "prompt": prompt, "max_tokens": 90}))
        status, _, body = Reader(s).response()
        assert status == 400 and "KV cache" in json.loads(body)["error"]["message"]
        s.sendall(post("/v1/completions", {"model": VLLM, "prompt": prompt, "max_tokens": 80}))
        assert Reader(s).response()[0] == 200


def test_engine_refuses_a_sequence_that_can_never_fit_and_simulate_flags_it():
    params = VllmParams(kv_cache_tokens=160, max_model_len=160, step_jitter=0)  # 10 blocks
    eng = Engine(params)
    assert eng.fits(100, 61) and not eng.fits(100, 62)  # 160 tokens of KV fit, 161 do not
    big = Sequence(0, 150, 50)
    assert eng.add(big) is False and not eng.has_work
    res = simulate(params, [Arrival(0.0, 10, 5), Arrival(0.0, 150, 50), Arrival(0.1, 10, 5)])
    assert [r.finished for r in res.results] == [True, False, True]
    assert res.unfinished == 1
    assert math.isnan(res.results[1].e2e) and res.results[1].output_len == 0
    assert all(r.e2e > 0 for r in res.results if r.finished)


# -- 11. simulate(): unique prompt tokens per arrival, not per arrival time --------------------
def test_simultaneous_arrivals_do_not_share_their_unique_prompt_tokens():
    params = VllmParams(step_jitter=0, max_num_seqs=1)  # the second waits for the first
    a = Arrival(0.0, 64, 2, prefix="sys", prefix_len=16)
    res = simulate(params, [a, a]).results
    assert res[0].cached_tokens == 0
    assert res[1].cached_tokens == 16  # only the shared prefix block, not the whole prompt


# -- 4. parameter validation -------------------------------------------------------------------
@pytest.mark.parametrize(
    "updates, needle",
    [
        ({"error_rate": 0.5, "error_statuses": []}, "error_statuses"),
        ({"itl_ms": "inf"}, "finite"),
        ({"itl_ms": float("nan")}, "finite"),
        ({"ttft_ms": float("inf")}, "finite"),
        ({"stall_s": "-inf"}, "finite"),
        ({"max_model_len": "inf"}, "integer"),
        ({"error_statuses": [float("inf")]}, "integer"),
    ],
)
def test_bad_numbers_and_empty_error_statuses_are_refused(updates, needle):
    with pytest.raises(ParamError, match=needle):
        apply_params(CloudParams(), updates)


def test_admin_refuses_error_rate_without_statuses():
    with SimProcess("cloud", params=FAST) as sim:
        with pytest.raises(SimProcessError, match="error_statuses"):
            sim.set_params(error_rate=0.5, error_statuses=[])
        s = connect(sim)
        s.sendall(post("/v1/completions", {"model": CLOUD, "prompt": "a", "max_tokens": 2}))
        assert Reader(s).response()[0] == 200


# -- 6. determinism: a request's faults do not depend on other streams' draws -----------------
def _fault_pattern(seed: int, other_stream_tokens: int) -> list[int]:
    params = {"ttft_ms": 1, "itl_ms": 1, "itl_jitter": 0.5, "error_rate": 0.5}
    with SimProcess("cloud", params=params, seed=seed) as sim:
        s = connect(sim)
        r = Reader(s)
        stream = {"model": CLOUD, "prompt": "a", "stream": True, "ignore_eos": True}
        while True:  # another stream with its own token gaps (retried past injected 5xx)
            s.sendall(post("/v1/completions", {**stream, "max_tokens": other_stream_tokens}))
            if r.response()[0] == 200:
                break
        statuses = []
        for _ in range(40):
            s.sendall(post("/v1/completions", {"model": CLOUD, "prompt": "b", "max_tokens": 1}))
            statuses.append(r.response()[0])
        return statuses


def test_fault_pattern_depends_on_seed_and_arrival_order_only():
    a = _fault_pattern(7, other_stream_tokens=3)
    b = _fault_pattern(7, other_stream_tokens=60)
    assert a == b
    assert 5 < a.count(200) < 35 and set(a) <= {200, 500, 503}


# -- 13. rate limits: faults do not consume quota; oversized requests never fit ----------------
def test_injected_faults_do_not_consume_the_rate_limit():
    params = {**FAST, "rpm_limit": 5, "error_rate": 1.0, "error_statuses": [503]}
    with SimProcess("cloud", params=params) as sim:
        s = connect(sim)
        r = Reader(s)
        req = post("/v1/completions", {"model": CLOUD, "prompt": "a", "max_tokens": 1})
        for _ in range(8):
            s.sendall(req)
            assert r.response()[0] == 503
        sim.set_params(error_rate=0)
        got = []
        for _ in range(6):
            s.sendall(req)
            got.append(r.response()[:2])
        assert [g[0] for g in got] == [200] * 5 + [429]  # the whole bucket was still there
        assert "retry-after" in got[-1][1]


def test_a_request_larger_than_the_tpm_limit_can_never_fit():
    with SimProcess("cloud", params={**FAST, "tpm_limit": 100}) as sim:
        s = connect(sim)
        r = Reader(s)
        s.sendall(post("/v1/completions", {"model": CLOUD, "prompt": "a b", "max_tokens": 200}))
        status, headers, body = r.response()
        assert status == 429
        assert "retry-after" not in headers and "retry-after-ms" not in headers
        assert "can never fit" in json.loads(body)["error"]["message"]
        s.sendall(post("/v1/completions", {"model": CLOUD, "prompt": "a b", "max_tokens": 20}))
        assert r.response()[0] == 200
