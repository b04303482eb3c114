"""Hostile streams (issue #8.4): an event size limit, linear buffering, deadlines and signals
that still run while one stream sends without pause, and non-streamed requests (#8.15).

A stream that never stops sending never makes ``recv`` wait, and a ``recv`` that does not wait
never switches greenlets: before the fix one endless SSE line ran 30 s past an 8 s total
timeout, froze every other arm and deferred SIGINT, and the SDK client grew to 1.7 GiB for a
400 MiB line. The gevent cases run in a monkey-patched subprocess, as the load process does.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.config import ConfigError, TargetConfig, validate_target
from harness.targets.client import build_body
from harness.workloads.base import WorkItem
from tests.targets.scripted_server import Script
from tests.targets.test_clients import CLIENTS, _client, _one

ROOT = Path(__file__).resolve().parents[2]


def _sse(*payloads: bytes, nl: bytes = b"\n") -> bytes:
    return b"".join(b"data: " + p + nl + nl for p in payloads)


def _content_event(size: int) -> bytes:
    """``data: {...}`` (a chat content chunk "Hi", padded) of exactly ``size`` bytes."""
    head = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"pad":"'
    tail = b'"}'
    return head + b"p" * (size - len(head) - len(tail)) + tail


_END = (
    b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
    b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}',
    b"[DONE]",
)


# -- the limit, to the byte, however the event is split into reads ------------------------


@pytest.mark.parametrize("impl", CLIENTS)
@pytest.mark.parametrize("split", ["whole", "mid-event", "between-newlines", "crlf"])
def test_max_event_bytes_is_exact(server, impl, split):
    size = 3000
    ev = _content_event(size)
    nl = b"\r\n" if split == "crlf" else b"\n"
    body = ev + nl + nl + _sse(*_END, nl=nl)
    cuts = {"mid-event": [1500], "between-newlines": [len(ev) + len(nl)]}.get(split)
    got = {}
    for limit in (size, size - 1):
        script = Script(
            content_type="text/event-stream", body=body, split_at=cuts, split_in_body=True
        )
        server.push(script)
        c = _client(server, impl, max_event_bytes=limit)
        c.target.retry.max_attempts = 1
        r = _one(c)[0]
        got[limit] = (r.status, r.error_type, r.will_retry)
        if limit < size:
            assert f"max_event_bytes={limit})" in r.error_message, r.error_message
    if split == "crlf":  # a CRLF stream: the lean client counts the event's bytes as LF lines
        assert got[size] == ("ok", None, False)
    else:
        assert got == {size: ("ok", None, False), size - 1: ("error", "bad_response", False)}


def test_max_event_bytes_is_validated():
    t = TargetConfig(max_event_bytes=0)
    with pytest.raises(ConfigError, match=r"arms\.a\.max_event_bytes: must be >= 1"):
        validate_target("a", t)


def test_stream_and_max_event_bytes_per_arm_from_the_command_line(tmp_path):
    from tests.test_config import compose

    _, arms = compose(["arms.cloud.stream=false", "arms.cloud.max_event_bytes=1048576"], tmp_path)
    assert (arms["cloud"].stream, arms["cloud"].max_event_bytes) == (False, 1 << 20)
    assert all(a.stream and a.max_event_bytes == 16 << 20 for n, a in arms.items() if n != "cloud")


@pytest.mark.parametrize("impl", CLIENTS)
def test_an_oversized_event_is_never_retried(server, impl):
    server.push(Script(endless_after=1))
    c = _client(server, impl, max_event_bytes=100_000)
    c.target.retry.max_attempts = 3
    c.target.retry.retry_on = ["bad_response"]
    rows = _one(c)
    assert [(r.error_type, r.will_retry) for r in rows] == [("bad_response", False)]
    assert rows[0].output_text == "Hello"  # what arrived before it is kept


# -- deadlines, other greenlets and signals keep running ----------------------------------

ENDLESS_PROBE = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import json, resource, sys, time
    import gevent
    from harness.config import TargetConfig
    from harness.targets.client import make_arm_client
    from harness.workloads.base import WorkItem

    url, impl, total_s, limit = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    t = TargetConfig(kind="sim_vllm", model="m", base_url=url, client=impl)
    t.timeouts.first_token_s, t.timeouts.total_s = total_s, total_s
    t.retry.max_attempts = 1
    if limit:
        t.max_event_bytes = limit
    c = make_arm_client("a", t, run_id="r", experiment="e", count_fallback="chunks")
    item = WorkItem(sample_id="s", prompt="hi", max_tokens=3)
    c.execute(item, request_id="warmup")  # the default script: a short good stream
    late = []

    def ticker():  # another greenlet of the same process: how late are its 10 ms sleeps?
        while True:
            t0 = time.perf_counter()
            gevent.sleep(0.01)
            late.append(time.perf_counter() - t0 - 0.01)

    tick = gevent.spawn(ticker)
    gevent.sleep(0.05)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    r = c.execute(item, request_id="x")[0]
    wall = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tick.kill()
    print(json.dumps({"error_type": r.error_type, "message": r.error_message, "e2e": r.e2e_s,
                      "wall": wall, "late_max": max(late), "ticks": len(late),
                      "rss_growth_mib": (rss1 - rss0) / 1024}))
    """
)


def _probe(server, impl, total_s, limit=0, timeout=60):
    out = subprocess.run(
        [sys.executable, "-c", ENDLESS_PROBE, server.base_url, impl, str(total_s), str(limit)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("impl", CLIENTS)
def test_endless_line_meets_the_total_timeout_under_gevent(server, impl):
    """The limit set far out of reach: the total timeout (1 s) must end the stream on time,
    and another greenlet's 10 ms sleeps stay punctual meanwhile."""
    server.push(Script(), Script(endless_after=1, endless_pause_s=0.002))
    res = _probe(server, impl, 1.0, limit=1 << 30)
    assert res["error_type"] == "timeout" and "total timeout of 1 s" in res["message"], res
    assert 1.0 <= res["e2e"] < 1.25, res
    assert res["late_max"] < 0.05 and res["ticks"] >= 50, res


@pytest.mark.parametrize("impl", CLIENTS)
def test_endless_line_stops_at_the_event_limit_in_bounded_memory(server, impl):
    """At full speed with the default limit (16 MiB): a bad_response naming the limit, soon,
    in memory of the order of the limit (the SDK used to need 4x the line's size)."""
    server.push(Script(), Script(endless_after=1))
    res = _probe(server, impl, 30.0)
    assert res["error_type"] == "bad_response", res
    assert "larger than 16 MiB (arms.a.max_event_bytes=16777216)" in res["message"], res
    assert res["wall"] < 5.0, res
    assert res["rss_growth_mib"] < 120, res
    assert res["late_max"] < 0.05, res


SIGINT_PROBE = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import json, signal, sys, time
    import gevent
    from harness.config import TargetConfig
    from harness.targets.client import make_arm_client
    from harness.workloads.base import WorkItem

    url, impl = sys.argv[1], sys.argv[2]
    t = TargetConfig(kind="sim_vllm", model="m", base_url=url, client=impl, max_event_bytes=1 << 30)
    t.retry.max_attempts = 1
    c = make_arm_client("a", t, run_id="r", experiment="e", count_fallback="chunks")
    item = WorkItem(sample_id="s", prompt="hi", max_tokens=3)
    c.execute(item, request_id="warmup")
    got = []
    gevent.signal_handler(signal.SIGINT, lambda: (got.append(time.perf_counter()), c.cancel()))
    print("ready", flush=True)
    r = c.execute(item, request_id="x")[0]
    print(json.dumps({"error_type": r.error_type, "after_signal": time.perf_counter() - got[0]}))
    """
)


@pytest.mark.parametrize("impl", CLIENTS)
def test_sigint_is_handled_during_an_endless_line(server, impl):
    server.push(Script(), Script(endless_after=1, endless_pause_s=0.002))
    p = subprocess.Popen(
        [sys.executable, "-c", SIGINT_PROBE, server.base_url, impl],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # well into the endless line
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    finally:
        p.kill()
    assert p.returncode == 0, err[-2000:]
    res = json.loads(out.strip().splitlines()[-1])
    assert res["error_type"] == "cancelled" and res["after_signal"] < 0.5, res


@pytest.mark.parametrize("impl", CLIENTS)
def test_endless_line_meets_the_total_timeout_in_threads(server, impl):
    """Without gevent (threads): every read checks the deadline, data or not."""
    server.push(Script(endless_after=1, endless_pause_s=0.002))
    c = _client(server, impl, total_s=0.5, max_event_bytes=1 << 30, count_fallback="chunks")
    c.target.retry.max_attempts = 1
    r = _one(c)[0]
    assert r.error_type == "timeout" and "total timeout" in r.error_message, r.error_message
    assert 0.5 <= r.e2e_s < 0.75


@pytest.mark.parametrize("impl", CLIENTS)
def test_huge_event_under_the_limit_is_read(server, impl):
    """A valid 10 MB event is accepted (and read in time linear in its size)."""
    server.push(Script(event_pad=10_000_000))
    c = _client(server, impl)
    t0 = time.perf_counter()
    r = _one(c)[0]
    assert (r.status, r.output_text) == ("ok", "Hello world!"), r.error_message
    assert time.perf_counter() - t0 < 3.0


# -- stream: false ------------------------------------------------------------------------


def test_build_body_without_stream():
    t = TargetConfig(stream=False)
    body = build_body(t, WorkItem(sample_id="s", prompt="hi", max_tokens=3))
    assert body["stream"] is False and "stream_options" not in body
    body = build_body(TargetConfig(), WorkItem(sample_id="s", prompt="hi", max_tokens=3))
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("impl", CLIENTS)
@pytest.mark.parametrize("api", ["chat", "completions"])
def test_non_streamed_record(server, impl, api):
    server.push(Script(ttft_s=0.05, chunks=["Hel", "lo"], reasoning="hmm"))
    c = _client(server, impl, stream=False, api=api)
    r = _one(c)[0]
    assert (r.status, r.streamed, r.output_text, r.finish_reason) == ("ok", False, "Hello", "stop")
    assert (r.completion_tokens, r.tokens_source) == (2, "usage")
    assert r.t_first_token == r.t_end and r.ttft_s == r.e2e_s >= 0.05
    assert r.tpot_s is None and r.itl_s == []
    sent = server.requests[-1]
    assert sent["body"]["stream"] is False and "stream_options" not in sent["body"]
    assert sent["headers"]["accept"] == "application/json" or impl == "sdk"


@pytest.mark.parametrize("impl", CLIENTS)
def test_non_streamed_keep_alive(server, impl):
    """Non-streamed bodies leave the connection reusable (Content-Length and chunked)."""
    c = _client(server, impl, stream=False)
    before = server.connections
    for framing in ("length", "chunked", "length", "chunked"):
        server.push(Script(json_framing=framing))
        assert _one(c)[0].status == "ok"
    assert server.connections - before <= 1  # the SDK may reuse one from an earlier test


@pytest.mark.parametrize("impl", CLIENTS)
def test_non_streamed_slow_body_is_bounded_by_total_s(server, impl):
    """No first-token deadline for one body (it is the whole answer): only total_s applies."""
    server.push(Script(ttft_s=0.6))
    c = _client(server, impl, stream=False, first_token_s=0.3, total_s=2.0)
    r = _one(c)[0]
    assert r.status == "ok" and r.ttft_s >= 0.6, r.error_message
