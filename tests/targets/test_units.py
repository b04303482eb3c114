"""Pure pieces: chunked decoding, SSE parsing, retry policy, token counting, redaction, timing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from harness.config import RetryConfig
from harness.targets import timing
from harness.targets.errors import clip_message, redact
from harness.targets.lean import _Endpoint, _Framing, dechunk, deframe, sse_data
from harness.targets.retry import backoff_s, parse_retry_after, retry_after_from, should_retry
from harness.targets.tokens import count_tokens, encoding_name_for


def _chunked(parts: list[bytes]) -> bytes:
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


@pytest.mark.parametrize("seed", range(20))
def test_dechunk_any_split(seed):
    rng = random.Random(seed)
    parts = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(8)]
    wire = _chunked(parts) + b"NEXT"
    out, left, pending, done = [], 0, b"", False
    pos = 0
    while pos < len(wire) and not done:
        step = rng.randrange(1, 40)
        data, pending, left, done = dechunk(pending + wire[pos : pos + step], left)
        out.append(data)
        pos += step
    assert done and b"".join(out) == b"".join(parts)
    rest = pending + wire[pos:]
    # either exactly the next message, or the decoder kept the unfinished trailer CRLF
    # (so the caller will not reuse the connection)
    assert rest == b"NEXT" or (pending[:1] == b"\r" and rest == b"\r\nNEXT")


def test_dechunk_extensions_and_trailers():
    data, rest, _, done = dechunk(b"3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", 0)
    assert (data, rest, done) == (b"abc", b"", True)
    _, rest, _, done = dechunk(b"0\r\n", 0)  # final CRLF not here yet: not reusable
    assert done and rest


def test_sse_data():
    assert sse_data(b"data: a") == b"a"
    assert sse_data(b"data:a\ndata: b") == b"a\nb"
    assert sse_data(b": keepalive") is None
    assert sse_data(b"event: ping\nid: 3") is None
    assert b"boom" in sse_data(b"event: error\ndata: boom")


def test_retry_after_parsing():
    assert parse_retry_after("2") == 2.0 and parse_retry_after(" 0.5 ") == 0.5
    now = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
    when = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after(when, now_s=now.timestamp()) == pytest.approx(7.0)
    assert retry_after_from({"retry-after": "1", "retry-after-ms": "250"}) == 0.25
    assert retry_after_from({"retry-after": "3"}) == 3.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_backoff_policy():
    cfg = RetryConfig(backoff_base_s=0.5, backoff_max_s=3.0, jitter=0.1)
    waits = [backoff_s(cfg, n, seed=1, key="r") for n in (1, 2, 3, 4, 5)]
    for w, nominal in zip(waits, [0.5, 1.0, 2.0, 3.0, 3.0], strict=True):
        assert nominal * 0.9 <= w <= nominal * 1.1
    assert waits == [backoff_s(cfg, n, seed=1, key="r") for n in (1, 2, 3, 4, 5)]  # seeded
    assert waits != [backoff_s(cfg, n, seed=2, key="r") for n in (1, 2, 3, 4, 5)]
    assert backoff_s(cfg, 1, retry_after_s=4.0) == 4.0
    cfg.honor_retry_after = False
    assert backoff_s(cfg, 1, retry_after_s=4.0) < 1
    assert should_retry(cfg, "rate_limited", 0) and not should_retry(cfg, "rate_limited", 2)
    assert not should_retry(cfg, "client_error", 0) and not should_retry(cfg, None, 0)


def test_tokens():
    assert encoding_name_for("gpt-4o-mini") == "o200k_base"
    assert encoding_name_for("gpt-4.1") == "o200k_base"
    assert encoding_name_for("openai/gpt-5") == "o200k_base"
    assert encoding_name_for("gpt-4-turbo") == "cl100k_base"
    assert encoding_name_for("meta-llama/Llama-3.1-8B") == "cl100k_base"
    assert count_tokens("hello world", "gpt-4") == 2 and count_tokens("", "x") == 0


def test_redaction():
    key = "sk-abc123-THEKEY-xyz"
    msg = f"HTTP 401: Incorrect API key provided: sk-abc1********-xyz. Bearer {key}"
    out = clip_message(msg, (key,))
    assert "THEKEY" not in out and "sk-abc1*" not in out and "Bearer ***" in out
    assert redact("plain text stays") == "plain text stays"
    assert len(clip_message("x" * 2000)) == 500


def test_timing_formulas():
    assert timing.ttft_s(1_050_000_000, 1_000_000_000) == pytest.approx(0.05)
    assert timing.tpot_s(0, 300_000_000, 4) == pytest.approx(0.1)
    assert timing.tpot_s(0, 5, 1) is None and timing.tpot_s(0, 5, None) is None
    assert timing.itl_s([0, 10_000_000, 30_000_000]) == pytest.approx([0.01, 0.02])
    assert timing.itl_s([5]) == []
    assert timing.queue_delay_s(3_000_000_000, 1_000_000_000) == 2.0


@pytest.mark.parametrize(
    "url,host,path",
    [
        ("http://[::1]/v1", "[::1]", "/v1/chat/completions"),
        ("http://[::1]:8000/v1", "[::1]:8000", "/v1/chat/completions"),
        ("https://[2001:db8::1]/v1/", "[2001:db8::1]", "/v1/chat/completions"),
        ("http://127.0.0.1:9/v1?api-version=2024-10-21", "127.0.0.1:9",
         "/v1/chat/completions?api-version=2024-10-21"),
        ("https://example.com", "example.com", "/chat/completions"),
    ],
)  # fmt: skip
def test_lean_endpoint_host_and_path(url, host, path):
    head = _Endpoint(url, "/chat/completions", "k").head.decode()
    assert head.startswith(f"POST {path} HTTP/1.1\r\n")
    assert f"\r\nHost: {host}\r\n" in head


def test_deframe():
    assert deframe(b"abcdef", _Framing.LENGTH, 4) == (b"abcd", b"ef", 0, True)
    assert deframe(b"ab", _Framing.LENGTH, 4) == (b"ab", b"", 2, False)
    assert deframe(b"ab", _Framing.CLOSE, -1) == (b"ab", b"", -1, False)
    assert deframe(b"2\r\nab\r\n0\r\n\r\n", _Framing.CHUNKED, 0) == (b"ab", b"", 0, True)
