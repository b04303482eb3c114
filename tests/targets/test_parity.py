"""Client parity: every hostile response of the scripted server, through both clients, must give
the same rows (error type, HTTP status, retry decision, status, tokens, finish reason and the
error message, up to a bracketed client-specific detail at its end).

Each case pushes one scripted response; a retried attempt gets the default (good) response,
so the rows also show the retry decision.
"""

from __future__ import annotations

import re

import pytest

from tests.targets.scripted_server import Script
from tests.targets.test_clients import ITEM, _client, _one

_PORT = re.compile(r"127\.0\.0\.1:\d+")
SERVED = "test-model-2026-01-15"  # a dated snapshot behind the requested alias

HOSTILE = {
    "429": Script(status=429, headers={"Retry-After": "0.01"}),
    "500": Script(status=500),
    "503-text-body": Script(status=503, body=b"upstream overloaded"),
    "400": Script(status=400),
    "401": Script(status=401),
    "404": Script(status=404),
    "truncated-after-content": Script(truncate_after=2, chunks=["a", "b", "c"]),
    "truncated-before-content": Script(truncate_after=0),
    "truncated-close-delimited": Script(truncate_after=2, chunked=False, chunks=["a", "b", "c"]),
    "invalid-json": Script(invalid_json_at=1),
    "empty": Script(chunks=[]),
    "error-event-500": Script(error_event_at=1),
    "error-event-429": Script(error_event_at=1, error_payload={"error": {"code": 429}}),
    "not-sse": Script(content_type="application/json"),
    "json-error-200": Script(
        content_type="application/json", body=b'{"error": {"message": "boom", "code": 500}}'
    ),
    "json-garbage-200": Script(content_type="application/json", body=b"<html>oops</html>"),
    "done-without-finish": Script(finish=None),
    "done-without-finish-close-delimited": Script(finish=None, chunked=False),
    "no-done-no-finish": Script(finish=None, done=False),
    "finish-without-done": Script(done=False),
    "finish-then-abort": Script(done=False, abort_at_end=True),
    "done-no-finish-then-abort": Script(finish=None, abort_at_end=True),
    "finish-done-then-abort": Script(abort_at_end=True),
    "bad-status-line": Script(status_line="HTTX/1.1 200 OK"),
    "garbage-status-line": Script(status_line="garbage"),
    "headers-60KB": Script(header_pad=60_000),
    "headers-100KB": Script(header_pad=100_000),
    "headers-200KB": Script(header_pad=200_000),
    "first-token-stall": Script(ttft_s=1.0),
    "mid-stream-stall": Script(stall_after=1),
    "closed-before-response": Script(close_before_response=True),
    "bytewise": Script(bytewise=True),
    "crlf": Script(crlf=True),
    "close-delimited": Script(chunked=False),
    # an event over max_event_bytes (4000 here) ends the attempt, not retried; one under passes
    "event-over-max": (Script(event_pad=5000), {"max_event_bytes": 4000}),
    "event-under-max": (Script(event_pad=3000), {"max_event_bytes": 4000}),
    "event-over-max-crlf": (Script(event_pad=5000, crlf=True), {"max_event_bytes": 4000}),
    "event-over-max-bytewise": (
        Script(event_pad=5000, split_at=[700, 2500, 4100]),
        {"max_event_bytes": 4000},
    ),
    "endless-line": (Script(endless_after=1), {"max_event_bytes": 200_000}),
    "endless-line-before-content": (Script(endless_after=0), {"max_event_bytes": 200_000}),
    # stream: false (one JSON body)
    **{
        f"body-{name}": (script, {"stream": False})
        for name, script in {
            "ok": Script(),
            "chunked": Script(json_framing="chunked"),
            "close": Script(json_framing="close"),
            "reasoning": Script(reasoning="thinking..."),
            "split": Script(split_at=[40, 150, 300, 330]),
            "no-finish": Script(finish=None),
            "no-usage": Script(usage=False),
            "empty": Script(chunks=[]),
            "cut": Script(truncate_after=1),
            "stall": Script(stall_after=1),
            "slow": Script(ttft_s=1.0),
            "500": Script(status=500),
            "429": Script(status=429, headers={"Retry-After": "0.01"}),
            "error-200": Script(
                content_type="application/json", body=b'{"error": {"message": "boom", "code": 500}}'
            ),
            "garbage-200": Script(content_type="application/json", body=b"<html>oops</html>"),
            "list-200": Script(content_type="application/json", body=b"[1, 2]"),
            "no-choices-200": Script(content_type="application/json", body=b'{"id": "x"}'),
            "streamed-anyway": Script(stream_anyway=True),
        }.items()
    },
    "body-over-max": (Script(event_pad=5000), {"stream": False, "max_event_bytes": 4000}),
    "body-completions": (Script(), {"stream": False, "api": "completions"}),
    # what the server says served it: model and system_fingerprint, streamed and in a body
    **{
        f"meta-{name}": script
        for name, script in {
            "stream": Script(response_model=SERVED, system_fingerprint="fp_a1"),
            "stream-completions": (
                Script(response_model=SERVED, system_fingerprint="fp_a1"),
                {"api": "completions"},
            ),
            "no-fingerprint": Script(response_model=SERVED),
            "late": Script(response_model=SERVED, system_fingerprint="fp_a1", meta_from=2),
            "body": (
                Script(response_model=SERVED, system_fingerprint="fp_a1"),
                {"stream": False},
            ),
            "body-completions": (
                Script(response_model=SERVED, system_fingerprint="fp_a1"),
                {"stream": False, "api": "completions"},
            ),
            "after-retry": Script(status=429, headers={"Retry-After": "0.01"}),
        }.items()
    },
}


def _norm(msg: str | None) -> str | None:
    if msg is None:
        return None
    msg = re.sub(r" \[[^\]]*\]$", "", msg)  # client-specific detail
    return _PORT.sub("HOST", msg)


def _rows(server, impl, script):
    script, kw = script if isinstance(script, tuple) else (script, {})
    server.push(script)
    c = _client(server, impl, first_token_s=0.4, total_s=0.4, **kw)
    c.target.retry.max_attempts = 2
    try:
        rows = _one(c)
    finally:
        c.close()
    return [
        {
            "attempt": r.attempt,
            "status": r.status,
            "error_type": r.error_type,
            "http_status": r.http_status,
            "will_retry": r.will_retry,
            "completion_tokens": r.completion_tokens,
            "tokens_source": r.tokens_source,
            "finish_reason": r.finish_reason,
            "output_text": r.output_text,
            "error_message": _norm(r.error_message),
            "streamed": r.streamed,
            "response_model": r.response_model,
            "system_fingerprint": r.system_fingerprint,
            # one JSON body: TTFT is E2E and nothing between tokens was timed (both clients)
            "one_body": (r.ttft_s == r.e2e_s, r.tpot_s, r.itl_s) if not r.streamed else None,
        }
        for r in rows
    ]


@pytest.mark.parametrize("case", list(HOSTILE))
def test_both_clients_give_the_same_rows(server, case):
    lean = _rows(server, "lean", HOSTILE[case])
    sdk = _rows(server, "sdk", HOSTILE[case])
    diff = [
        (i, k, lean[i][k], sdk[i][k])
        for i in range(min(len(lean), len(sdk)))
        for k in lean[i]
        if lean[i][k] != sdk[i][k]
    ]
    lens = (len(lean), len(sdk))
    assert lens[0] == lens[1] and not diff, f"attempts {lens}; (attempt, field, lean, sdk): {diff}"


def test_repeated_large_headers_are_deterministic(server):
    """100 KB of headers: accepted every time by both (the lean reader used to fail about
    one request in eight, depending on how the head was split into reads)."""
    for impl in ("lean", "sdk"):
        for _ in range(8):
            rows = _rows(server, impl, Script(header_pad=100_000))
            assert [r["status"] for r in rows] == ["ok"], (impl, rows)
        # the head in reads of 30 and 40 KB: more than 64 KiB read and no blank line yet
        rows = _rows(server, impl, Script(header_pad=100_000, split_at=[30_000, 70_000]))
        assert [r["status"] for r in rows] == ["ok"], (impl, rows)


# -- cut-short streams: incomplete in both clients, partial output kept -------------------


@pytest.mark.parametrize("impl", ["lean", "sdk"])
@pytest.mark.parametrize(
    "script,message",
    [
        (
            Script(finish=None, chunks=["a", "b", "c"]),
            "stream ended with [DONE] but no finish_reason after 3 content chunks",
        ),
        (
            Script(finish=None, done=False, chunks=["a", "b", "c"]),
            "stream ended without [DONE] or finish_reason after 3 content chunks",
        ),
        (
            Script(finish=None, usage=False, chunks=["a", "b", "c"]),
            "stream ended with [DONE] but no finish_reason after 3 content chunks",
        ),
        (
            Script(truncate_after=2, chunks=["a", "b", "c"]),
            "connection closed mid-stream after 2 content chunks",
        ),
    ],
    ids=["done-no-finish", "no-done-no-finish", "done-no-finish-no-usage", "cut"],
)
def test_stream_without_finish_reason_is_truncated(server, impl, script, message):
    server.push(script)
    c = _client(server, impl)
    c.target.retry.max_attempts = 1
    r = _one(c)[0]
    assert (r.status, r.error_type, r.http_status) == ("error", "truncated", 200)
    assert _norm(r.error_message) == message
    assert r.finish_reason is None and r.will_retry is False
    n = len(script.chunks) if script.truncate_after is None else script.truncate_after
    assert r.output_text == "abc"[:n]  # what arrived is kept (billing)
    if script.usage and script.truncate_after is None:
        assert (r.tokens_source, r.completion_tokens) == ("usage", 3)
    else:
        assert r.tokens_source == "tokenizer" and r.completion_tokens >= 1


def test_connection_refused_alike():
    import socket

    from harness.targets.client import make_arm_client
    from tests.targets.scripted_server import make_target

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    got = {}
    for impl in ("lean", "sdk"):
        t = make_target(f"http://127.0.0.1:{port}/v1", client=impl)
        t.retry.max_attempts = 1
        r = make_arm_client("a", t, run_id="r", experiment="e").execute(ITEM, request_id="x")[0]
        got[impl] = (r.error_type, r.will_retry, r.error_message.split(" [")[0])
    assert got["lean"] == got["sdk"] == ("connection", False, f"connect to 127.0.0.1:{port} failed")


def test_sdk_connect_timeout_is_worded_as_lean(server, monkeypatch):
    import httpx2
    import openai

    c = _client(server, "sdk")
    c.target.retry.max_attempts = 1

    def connect_timeout(**kw):
        request = httpx2.Request("POST", server.base_url + "/chat/completions")
        try:
            raise httpx2.ConnectTimeout("timed out")
        except httpx2.ConnectTimeout as exc:
            raise openai.APITimeoutError(request=request) from exc

    monkeypatch.setattr(c, "_create", connect_timeout)
    r = _one(c)[0]
    assert r.error_type == "timeout" and "first token" not in r.error_message
    assert r.error_message == f"connect to 127.0.0.1:{server.port} timed out after 2.0 s"


@pytest.mark.parametrize("impl", ["lean", "sdk"])
@pytest.mark.parametrize(
    ("case", "want"),
    [
        ("meta-stream", (SERVED, "fp_a1")),
        ("meta-stream-completions", (SERVED, "fp_a1")),
        ("meta-no-fingerprint", (SERVED, None)),
        ("meta-late", (SERVED, "fp_a1")),  # chunks before it say model "": skipped
        ("meta-body", (SERVED, "fp_a1")),
        ("meta-body-completions", (SERVED, "fp_a1")),
        ("body-ok", ("test-model", None)),  # no snapshot name: the model echoed
        ("crlf", ("test-model", None)),
    ],
)
def test_rows_record_what_served_them(server, impl, case, want):
    rows = _rows(server, impl, HOSTILE[case])
    assert [(r["response_model"], r["system_fingerprint"]) for r in rows] == [want]


def test_a_rate_limited_attempt_records_no_model(server):
    """The 429 attempt carries nothing the server did not say; the retry that was served does."""
    for impl in ("lean", "sdk"):
        server.default = Script(response_model=SERVED, system_fingerprint="fp_b2")
        try:
            rows = _rows(server, impl, HOSTILE["meta-after-retry"])
        finally:
            server.default = Script()
        assert [(r["response_model"], r["system_fingerprint"]) for r in rows] == [
            (None, None),
            (SERVED, "fp_b2"),
        ], impl
