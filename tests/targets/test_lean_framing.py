"""The lean client's HTTP/chunked/SSE reader against one valid response cut at every byte.

However the kernel splits a response into reads (inside a chunk-size line, inside the CRLF
after chunk data, inside an SSE event, inside the head), the row must be the same. The
reader is driven through the real client (``execute``) with a fake socket that returns the
response in the given pieces, so the test covers the hot path exactly as it runs.
"""

from __future__ import annotations

import json
import random
from collections import deque

import pytest

from harness.targets.client import make_arm_client
from tests.targets.scripted_server import Script, make_target
from tests.targets.test_clients import ITEM, _client, _one


class _FakeSock:
    """Plays ``pieces`` as successive ``recv`` results, then EOF."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = deque(pieces)

    def recv(self, n: int) -> bytes:
        if not self.pieces:
            return b""
        p = self.pieces.popleft()
        if len(p) > n:  # never happens with the sizes used here, but stay honest
            self.pieces.appendleft(p[n:])
            p = p[:n]
        return p

    def settimeout(self, t):
        pass

    def setsockopt(self, *a):
        pass

    def sendall(self, data):
        pass

    def shutdown(self, how):
        pass

    def close(self):
        pass


def _chunk_json(text=None, finish=None, role=False):
    delta = {"role": "assistant", "content": ""} if role else {}
    if text is not None:
        delta["content"] = text
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return json.dumps({"id": "c1", "object": "chat.completion.chunk", "choices": [choice]})


def _response(crlf: bool = False) -> bytes:
    """A valid chunked SSE response: several HTTP chunks, one holding two events, one event
    split over two HTTP chunks, a chunk extension and a trailer-less terminal chunk."""
    nl = "\r\n" if crlf else "\n"
    events = [_chunk_json(role=True)]
    events += [_chunk_json(t) for t in ["Hel", "lo", " wor", "ld", "!"]]
    events.append(_chunk_json(finish="stop"))
    usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    events.append(json.dumps({"id": "c1", "choices": [], "usage": usage}))
    events.append("[DONE]")
    sse = [f"data: {e}{nl}{nl}".encode() for e in events]
    bodies = [sse[0], sse[1] + sse[2], sse[3][:10], sse[3][10:], *sse[4:]]
    out = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nx-request-id: abc\r\n"
    out += b"Transfer-Encoding: chunked\r\n\r\n"
    for i, b in enumerate(bodies):
        ext = b";name=value" if i == 2 else b""
        out += f"{len(b):X}".encode() + ext + b"\r\n" + b + b"\r\n"
    return out + b"0\r\n\r\n"


def _row_fields(r):
    return (
        r.status,
        r.error_type,
        r.error_message,
        r.http_status,
        r.completion_tokens,
        r.tokens_source,
        r.output_text,
        r.finish_reason,
        len(r.itl_s) if r.itl_s is not None else None,
        r.server_request_id,
    )


def _run(client, pieces):
    client._idle.clear()
    client._connect = lambda: _FakeSock(pieces)
    rows = client.execute(ITEM, request_id="r1")
    assert len(rows) == 1
    return _row_fields(rows[0])


@pytest.fixture
def lean():
    t = make_target("http://127.0.0.1:9/v1", client="lean")
    t.retry.max_attempts = 1
    return make_arm_client("a", t, run_id="r", experiment="e")


def _splits(data: bytes):
    yield "whole", [data]
    for k in range(1, len(data)):
        yield f"at {k}", [data[:k], data[k:]]
    yield "bytewise", [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(7)
    for n in range(100):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(2, 40)))
        yield (
            f"random {n}",
            [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)],
        )


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_valid_stream_parses_identically_at_every_split(lean, crlf):
    data = _response(crlf)
    expected = _run(lean, [data])
    assert expected == (
        "ok",
        None,
        None,
        200,
        5,
        "usage",
        "Hello world!",
        "stop",
        4,
        "abc",
    )
    bad = {}
    for name, pieces in _splits(data):
        got = _run(lean, pieces)
        if got != expected:
            bad[name] = got
    assert not bad, f"{len(bad)} splits differ, e.g. {next(iter(bad.items()))}"


def test_chunked_error_body_parses_identically_at_every_split(lean):
    body = json.dumps({"error": {"message": "overloaded, try later", "code": 503}}).encode()
    data = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    data += b"Transfer-Encoding: chunked\r\n\r\n"
    for part in (body[:9], body[9:30], body[30:]):
        data += f"{len(part):x}".encode() + b"\r\n" + part + b"\r\n"
    data += b"0\r\n\r\n"
    expected = _run(lean, [data])
    assert expected[:4] == ("error", "server_error", "HTTP 503: overloaded, try later", 503)
    bad = {}
    for name, pieces in _splits(data):
        got = _run(lean, pieces)
        if got != expected:
            bad[name] = got
    assert not bad, f"{len(bad)} splits differ, e.g. {next(iter(bad.items()))}"


# -- the same through the scripted server (real sockets, the server writes in pieces) ----


def _server_row(server, impl, script):
    server.push(script)
    c = _client(server, impl)
    c.target.retry.max_attempts = 1
    return _row_fields(_one(c)[0])[:-1]  # the request id differs per request


@pytest.mark.parametrize("impl", ["lean", "sdk"])
def test_scripted_server_bytewise_and_split_writes(server, impl):
    chunks = ["Hel", "lo", " wor", "ld", "!"]
    expected = _server_row(server, impl, Script(chunks=chunks))
    assert expected[0] == "ok" and expected[6] == "Hello world!", expected
    assert _server_row(server, impl, Script(chunks=chunks, bytewise=True)) == expected
    # cuts inside the head, a size line, a size line's CRLF, an event, a data CRLF
    for cuts in ([3, 40, 130, 131, 132], list(range(100, 400, 7)), [150, 151, 152, 153]):
        got = _server_row(server, impl, Script(chunks=chunks, split_at=cuts))
        assert got == expected, cuts
