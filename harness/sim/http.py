"""A small HTTP/1.1 server layer on ``asyncio.Protocol`` + ``httptools`` (uvicorn's parser).

Only what the simulator needs, built for streaming speed: keep-alive, requests on one
connection answered in order, full responses with Content-Length, and chunked streams whose
frames are written straight to the transport. Flow control: ``pause_writing`` marks the
connection paused; producers that can wait (timer-driven streams) check ``paused`` and register
in ``on_resume``; others keep writing into the transport buffer up to ``MAX_BUFFER`` bytes,
past which the connection is dropped (a client that stopped reading).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import httptools

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024
MAX_BUFFER = 16 * 1024 * 1024

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Request:
    """One parsed HTTP request."""

    __slots__ = ("method", "path", "query", "headers", "body", "keep_alive", "t_received")

    def __init__(
        self,
        method: str,
        url: bytes,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
        t_received: float,
    ) -> None:
        path, _, query = url.partition(b"?")
        self.method = method
        self.path = path.decode("latin-1")
        self.query = query.decode("latin-1")
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.t_received = t_received


class Handler(Protocol):
    def __call__(self, request: Request, conn: Connection) -> None: ...


class StreamOwner(Protocol):
    def on_disconnect(self) -> None: ...


class Connection(asyncio.Protocol):
    """One client connection. The app's handler gets each request with this connection and
    answers with :meth:`send` or :meth:`start_stream` / :meth:`write` / :meth:`end_stream`."""

    __slots__ = (
        "handler",
        "loop",
        "transport",
        "parser",
        "_url",
        "_headers",
        "_body",
        "_size",
        "_pending",
        "busy",
        "keep_alive",
        "paused",
        "closed",
        "on_resume",
        "owner",
        "_registry",
    )

    def __init__(self, handler: Handler, registry: set[Connection]) -> None:
        self.handler = handler
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._pending: deque[Request] = deque()
        self.busy = False
        self.keep_alive = True
        self.paused = False
        self.closed = False
        self.on_resume: list[Callable[[], None]] = []
        self.owner: StreamOwner | None = None  # the response in progress, told of disconnects
        self._registry = registry

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._registry.discard(self)
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.on_disconnect()
        self.on_resume.clear()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        waiters, self.on_resume = self.on_resume, []
        for fn in waiters:
            fn()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._send_raw(400, b'{"error":{"message":"upgrade not supported"}}', close=True)
        except httptools.HttpParserError as exc:
            msg = f"Invalid HTTP request: {exc}".encode()
            self._send_raw(
                400, b'{"error":{"message":"' + msg.replace(b'"', b"'") + b'"}}', close=True
            )

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._size += len(body)
        if self._size > MAX_BODY and not self.closed:
            self._send_raw(
                413,
                b'{"error":{"message":"request body too large","type":'
                b'"invalid_request_error","param":null,"code":null}}',
                close=True,
            )
            self._body = []

    def on_message_complete(self) -> None:
        if self.closed:  # e.g. after a 413: the rest of the input is ignored
            return
        req = Request(
            self.parser.get_method().decode("latin-1"),
            self._url,
            self._headers,
            b"".join(self._body),
            self.parser.should_keep_alive(),
            self.loop.time(),
        )
        if self.busy:
            self._pending.append(req)
        else:
            self._dispatch(req)

    # -- responses ----------------------------------------------------------------------
    def _dispatch(self, req: Request) -> None:
        self.busy = True
        self.keep_alive = req.keep_alive
        try:
            self.handler(req, self)
        except Exception:  # never crash the server on one bad request
            log.exception("handler failed for %s %s", req.method, req.path)
            if self.owner is not None:  # mid-stream: nothing sane left to send
                self.abort()
            elif self.busy and not self.closed:
                self.send(
                    500,
                    b'{"error":{"message":"internal error","type":"server_error",'
                    b'"param":null,"code":null}}',
                )

    def _done(self) -> None:
        self.busy = False
        self.owner = None
        if self.closed:
            return
        if not self.keep_alive:
            self.transport.close()
            self.closed = True
        elif self._pending:
            self._dispatch(self._pending.popleft())

    def _head(self, status: int, headers: list[tuple[str, str]], extra: str) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nserver: harness-sim\r\n"]
        for k, v in headers:
            lines.append(f"{k}: {v}\r\n")
        if not self.keep_alive:
            lines.append("connection: close\r\n")
        lines.append(extra)
        return "".join(lines).encode("latin-1")

    def send(
        self,
        status: int,
        body: bytes,
        headers: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Write a complete response and finish the request."""
        if self.closed:
            return
        hdrs = [("content-type", content_type), *(headers or [])]
        self.transport.write(
            self._head(status, hdrs, f"content-length: {len(body)}\r\n\r\n") + body
        )
        self._done()

    def _send_raw(self, status: int, body: bytes, close: bool) -> None:
        if self.closed:
            return
        self.keep_alive = not close
        self.send(status, body)

    def start_stream(
        self,
        owner: StreamOwner,
        headers: list[tuple[str, str]],
        content_type: str = "text/event-stream; charset=utf-8",
        first: bytes = b"",
    ) -> None:
        """Write the head of a chunked response (and ``first``, pre-framed, if given)."""
        self.owner = owner
        hdrs = [("content-type", content_type), ("cache-control", "no-cache"), *headers]
        self.transport.write(self._head(200, hdrs, "transfer-encoding: chunked\r\n\r\n") + first)

    def write(self, framed: bytes) -> None:
        """Write pre-framed chunk bytes; drops a client whose buffer passed MAX_BUFFER."""
        if self.closed:
            return
        t = self.transport
        t.write(framed)
        if self.paused and t.get_write_buffer_size() > MAX_BUFFER:
            log.warning("client stopped reading; dropping the connection")
            t.abort()

    def end_stream(self, last: bytes = b"") -> None:
        """Write ``last`` (pre-framed) and the terminating chunk; finish the request."""
        if self.closed:
            return
        self.transport.write(last + b"0\r\n\r\n")
        self._done()

    def abort(self) -> None:
        """Close the connection at once (a truncated stream)."""
        if not self.closed:
            self.owner = None
            self.closed = True
            self.transport.close()


def frame(payload: bytes) -> bytes:
    """``payload`` as one HTTP chunk."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def header_items(headers: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, v in headers.items()]
