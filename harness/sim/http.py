"""A small HTTP/1.1 server layer on ``asyncio.Protocol`` + ``httptools`` (uvicorn's parser).

Only what the simulator needs, built for streaming speed: keep-alive, requests on one
connection answered in order, full responses with Content-Length, and chunked streams whose
frames are written straight to the transport. Flow control: ``pause_writing`` marks the
connection paused; producers that can wait (timer-driven streams) check ``paused`` and register
in ``on_resume``; others keep writing into the transport buffer up to ``MAX_BUFFER`` bytes,
past which the connection is dropped (a client that stopped reading).

Input that cannot be served (a parser error, a body over ``MAX_BODY``: 413, a request line +
headers over ``MAX_HEAD``: 431, more than ``MAX_PENDING`` pipelined requests) is answered with an
OpenAI-shaped error and the connection closes; if a response is in progress, nothing is written
into it: the connection stops reading, finishes the responses already queued and then closes.
``Upgrade`` requests (``h2c``, sent by ``curl --http2``) are served as plain HTTP/1.1 with their
body; ``Expect: 100-continue`` is answered with ``100 Continue``. An idle keep-alive connection
is closed after ``idle_timeout_s`` (default :data:`KEEP_ALIVE_S`, 5 s like uvicorn / vLLM).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

import httptools
import orjson

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024
MAX_BUFFER = 16 * 1024 * 1024
MAX_HEAD = 64 * 1024  # request line + headers
MAX_PENDING = 64  # pipelined requests queued behind the one being answered
KEEP_ALIVE_S = 5.0  # an idle keep-alive connection is closed after this
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def error_body(
    message: str,
    etype: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | int | None = None,
) -> bytes:
    """OpenAI's error body ``{"error": {message, type, param, code}}``."""
    return orjson.dumps(
        {"error": {"message": message, "type": etype, "param": param, "code": code}}
    )


class _Reject(Exception):
    """Raised from a parser callback: the input cannot be served (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
    answers with :meth:`send` or :meth:`start_stream` / :meth:`write` / :meth:`end_stream`.
    ``owner`` (the response in progress) is told through ``on_disconnect`` whenever the
    connection ends or the response is cut short, whoever ends it."""

    __slots__ = (
        "handler",
        "loop",
        "transport",
        "parser",
        "_url",
        "_headers",
        "_body",
        "_size",
        "_head_size",
        "_pending",
        "_rejected",
        "_upgrade",
        "_idle",
        "idle_timeout_s",
        "busy",
        "keep_alive",
        "paused",
        "closed",
        "on_resume",
        "owner",
        "_registry",
    )

    def __init__(
        self, handler: Handler, registry: set[Connection], idle_timeout_s: float = KEEP_ALIVE_S
    ) -> None:
        self.handler = handler
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._head_size = 0
        self._pending: deque[Request] = deque()
        self._rejected = False  # input unusable: finish what is queued, then close
        self._upgrade: tuple[str, bytes, dict[str, str], str] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self.idle_timeout_s = idle_timeout_s
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
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._registry.discard(self)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self.on_resume.clear()
        self._tell_owner()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        waiters, self.on_resume = self.on_resume, []
        for fn in waiters:
            fn()

    def data_received(self, data: bytes) -> None:
        if self._rejected or self.closed:
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._ignore_upgrade(data[exc.args[0] :])
        except httptools.HttpParserCallbackError as exc:
            err = exc.__context__
            if isinstance(err, _Reject):
                self._reject(err.status, err.message)
            else:
                log.error("HTTP parser callback failed", exc_info=err)
                self._reject(500, "internal error")
        except httptools.HttpParserError as exc:
            self._reject(400, f"Invalid HTTP request: {exc}")

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        self._head_size = 0
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            raise _Reject(431, f"request line and headers exceed {MAX_HEAD} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise _Reject(431, f"request line and headers exceed {MAX_HEAD} bytes")
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        h = self._headers
        length = h.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            raise _Reject(413, "request body too large")
        if (
            "expect" in h
            and h["expect"].lower() == "100-continue"
            and "upgrade" not in h  # answered when the request is parsed again, upgrade-free
            and not self.busy
        ):
            self.transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._size += len(body)
        if self._size > MAX_BODY:
            self._body = []
            raise _Reject(413, "request body too large")

    def on_message_complete(self) -> None:
        parser = self.parser
        method = parser.get_method().decode("latin-1")
        if parser.should_upgrade():  # the body (if any) is still unread: see _ignore_upgrade
            self._upgrade = (method, self._url, self._headers, parser.get_http_version())
            return
        req = Request(
            method,
            self._url,
            self._headers,
            b"".join(self._body),
            parser.should_keep_alive(),
            self.loop.time(),
        )
        if self.busy:
            if len(self._pending) >= MAX_PENDING:
                raise _Reject(503, f"more than {MAX_PENDING} pipelined requests")
            self._pending.append(req)
        else:
            self._dispatch(req)

    def _ignore_upgrade(self, rest: bytes) -> None:
        """Serve an ``Upgrade`` request as plain HTTP/1.1: parse its head again without the
        upgrade headers, then its body and what follows, with a fresh parser."""
        stashed, self._upgrade = self._upgrade, None
        if stashed is None or "upgrade" not in stashed[2]:  # e.g. CONNECT
            self._reject(400, "upgrade / CONNECT requests are not supported")
            return
        method, url, headers, version = stashed
        drop = {"upgrade", "http2-settings"}
        lines = [f"{method} {url.decode('latin-1')} HTTP/{version}\r\n"]
        for k, v in headers.items():
            if k == "connection":
                v = ", ".join(t.strip() for t in v.split(",") if t.strip().lower() not in drop)
                if not v:
                    continue
            elif k in drop:
                continue
            lines.append(f"{k}: {v}\r\n")
        lines.append("\r\n")
        self.parser = httptools.HttpRequestParser(self)
        self._feed("".join(lines).encode("latin-1") + rest)

    # -- responses ----------------------------------------------------------------------
    def _dispatch(self, req: Request) -> None:
        self.busy = True
        # After rejected input, the last queued response says (and does) connection: close.
        self.keep_alive = req.keep_alive and not (self._rejected and not self._pending)
        try:
            self.handler(req, self)
        except Exception:  # never crash the server on one bad request
            log.exception("handler failed for %s %s", req.method, req.path)
            if self.owner is not None:  # mid-stream: nothing sane left to send
                self.abort()
            elif self.busy and not self.closed:
                self.send(500, error_body("internal error", "server_error"))

    def _reject(self, status: int, message: str) -> None:
        """Input that cannot be served: answer ``status`` now if no response is in progress;
        otherwise write nothing into that response, stop reading, and close once the
        responses already queued are done."""
        if self.closed or self._rejected:
            return
        self._rejected = True
        if self.busy:
            self.transport.pause_reading()
            return
        self.keep_alive = False
        self.busy = True
        etype = "server_error" if status >= 500 else "invalid_request_error"
        self.send(status, error_body(message, etype))

    def _tell_owner(self) -> None:
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner.on_disconnect()  # a no-op for an owner that finished its response

    def _done(self) -> None:
        self.busy = False
        self._tell_owner()
        if self.closed:
            return
        if not self.keep_alive or (self._rejected and not self._pending):
            self.closed = True
            self.transport.close()
        elif self._pending:
            self._dispatch(self._pending.popleft())
        else:
            self._arm_idle()

    def _arm_idle(self) -> None:
        if self.idle_timeout_s > 0:
            self._idle = self.loop.call_later(self.idle_timeout_s, self._idle_close)

    def _idle_close(self) -> None:
        self._idle = None
        if not self.busy and not self.closed:
            log.debug("closing an idle keep-alive connection")
            self.closed = True
            self.transport.close()

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

    def start_stream(
        self,
        owner: StreamOwner,
        headers: list[tuple[str, str]],
        content_type: str = "text/event-stream; charset=utf-8",
        first: bytes = b"",
    ) -> None:
        """Write the head of a chunked response (and ``first``, pre-framed, if given)."""
        if self.closed:
            owner.on_disconnect()
            return
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
            self.abort(hard=True)

    def end_stream(self, last: bytes = b"") -> None:
        """Write ``last`` (pre-framed) and the terminating chunk; finish the request."""
        if self.closed:
            return
        self.transport.write(last + b"0\r\n\r\n")
        self._done()

    def abort(self, hard: bool = False) -> None:
        """Close the connection at once (a truncated stream; ``hard``: drop unsent bytes) and
        tell the owner."""
        if not self.closed:
            self.closed = True
            if hard:
                self.transport.abort()
            else:
                self.transport.close()
        self._tell_owner()


def frame(payload: bytes) -> bytes:
    """``payload`` as one HTTP chunk."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)
