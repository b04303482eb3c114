"""The lean client: raw sockets, a tiny HTTP/1.1 parser and an SSE reader on the hot path.

Why not an HTTP library: at tens of thousands of chunks per second per process, every
microsecond per chunk matters. This reader costs one ``recv`` per batch of chunks (whatever
the kernel has buffered), one ``perf_counter_ns`` per ``recv``, a chunked-transfer decode, a
``find`` per SSE event and one ``orjson.loads`` per event. It uses the ``socket`` and ``ssl``
modules through attribute lookups at call time, so under gevent monkey-patching (the locust
load process) every blocking call is cooperative, and without patching it works from threads.

Protocol coverage: HTTP/1.1 keep-alive with a connection pool, ``Transfer-Encoding: chunked``,
``Content-Length`` and close-delimited bodies, TLS for ``https`` URLs, SSE with ``\\n`` or
``\\r\\n`` line endings, multi-line ``data:`` fields and comments. No proxies, no compression
(``Accept-Encoding: identity``), no HTTP/2.

Timeouts (``TimeoutConfig``): connect bounds TCP+TLS setup; every ``recv`` waits at most until
the first-token deadline (before the first content chunk) or the total deadline, both measured
from ``t_sent``, so a stall anywhere is detected on time.

Hostile streams: buffering is linear in the bytes read however an event is split; an SSE event
over ``target.max_event_bytes`` (default 16 MiB) ends the attempt as ``bad_response``; under
gevent the reader pauses for one hub iteration every ``YIELD_BYTES`` read, because a ``recv``
that finds data waiting never switches greenlets: without it one endless line or flood held
the whole load process (deadlines, other arms, signal handlers).

``stream: false`` (``target.stream``): one JSON body, read whole (at most ``max_event_bytes``,
by the total deadline) and folded in as one chunk stamped when its last byte arrived.
"""

from __future__ import annotations

import socket
import ssl
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import orjson

from harness.config import TargetConfig
from harness.targets import clock
from harness.targets.attempt import (
    Attempt,
    apply_body,
    apply_chunk,
    cut_short_message,
    is_error_chunk,
    stream_error,
)
from harness.targets.client import YIELD_BYTES, ArmClient, cooperative_pause
from harness.targets.errors import (
    MAX_HEAD_BYTES,
    AttemptError,
    TargetError,
    classify_status,
    error_text,
    event_too_large,
    headers_too_large,
    with_detail,
)
from harness.targets.retry import retry_after_from

_RECV = 65536
_BIG_EVENT = 1 << 20  # events over this are parsed in place (see _huge_event)
_SMALL = 8192  # a partial event shorter than this is joined by copying (cheaper when short)
_MAX_ERROR_BODY = 65536
_loads = orjson.loads


class _StaleConnection(Exception):
    """A reused keep-alive connection was closed by the server before answering."""


class _Deadline(Exception):
    """Raised into a greenlet by its ``gevent.Timeout`` (first-token or total deadline)."""


def _gevent_timeout_class() -> Any:
    """``gevent.Timeout`` when sockets are monkey-patched (the load process), else None."""
    try:
        from gevent import monkey

        if monkey.is_module_patched("socket"):
            from gevent import Timeout

            return Timeout
    except ImportError:
        pass
    return None


class _Framing:
    CHUNKED, LENGTH, CLOSE = 0, 1, 2


def deframe(raw: bytes, framing: int, left: int) -> tuple[bytes, bytes, int, bool]:
    """Take the body bytes out of ``raw`` per the response framing.

    ``left`` is the framing state (chunked: the :func:`dechunk` state; length: bytes still
    due; close-delimited: unused). Returns (body bytes, unconsumed raw bytes, new state, True
    when the body is complete; a close-delimited body completes only at EOF, never here).
    """
    if framing == _Framing.CHUNKED:
        return dechunk(raw, left)
    if framing == _Framing.LENGTH:
        data = raw[:left]
        left -= len(data)
        return data, raw[len(data) :], left, left <= 0
    return raw, b"", left, False


def dechunk(raw: bytes, left: int) -> tuple[bytes, bytes, int, bool]:
    """Decode ``Transfer-Encoding: chunked`` incrementally.

    ``left`` is the decoder state: > 0 bytes of chunk data still due, 0 a size line is due,
    -2 the CRLF after chunk data is due. Returns (decoded bytes, unconsumed raw bytes, new
    state, True when the terminal zero-size chunk was read). After the terminal chunk the
    returned raw bytes are what follows the trailer section (non-empty if it is incomplete).
    """
    out = []
    pos = 0
    n = len(raw)
    while pos < n:
        if left > 0:
            avail = n - pos
            if avail >= left + 2:  # whole remainder of the chunk and its CRLF are here
                out.append(raw[pos : pos + left])
                pos += left
                if raw[pos : pos + 2] != b"\r\n":
                    raise AttemptError("bad_response", "chunked encoding: missing CRLF after data")
                pos += 2
                left = 0
            elif avail > left:  # data complete, CRLF partly here
                out.append(raw[pos : pos + left])
                pos += left
                left = -2
            else:
                out.append(raw[pos:])
                left -= avail
                pos = n
                if left == 0:
                    left = -2
        elif left == -2:
            if n - pos < 2:
                break
            if raw[pos : pos + 2] != b"\r\n":
                raise AttemptError("bad_response", "chunked encoding: missing CRLF after data")
            pos += 2
            left = 0
        else:
            j = raw.find(b"\r\n", pos)
            if j < 0:
                if n - pos > 1024:
                    raise AttemptError("bad_response", "chunked encoding: size line too long")
                break
            try:
                size = int(raw[pos:j].split(b";", 1)[0], 16)
            except ValueError:
                raise AttemptError(
                    "bad_response", f"chunked encoding: bad size line {raw[pos:j][:40]!r}"
                ) from None
            pos = j + 2
            if size == 0:  # last chunk; then optional trailers and an empty line
                rest = raw[pos:]
                if rest[:2] == b"\r\n":
                    rest = rest[2:]
                else:
                    k = rest.find(b"\r\n\r\n")
                    # incomplete trailer section: leave bytes behind so the socket is not reused
                    rest = rest[k + 4 :] if k >= 0 else (rest or b"?")
                return b"".join(out), rest, 0, True
            left = size
    return b"".join(out), raw[pos:], left, False


def sse_data(event: bytes) -> bytes | None:
    """The ``data`` of one SSE event (multi-line data joined with ``\\n``); None if it has none.

    ``event: error`` events are surfaced as data wrapped in an error object.
    """
    data: list[bytes] = []
    etype = None
    for line in event.split(b"\n"):
        if not line or line[:1] == b":":
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            etype = value
    if not data:
        return None
    payload = b"\n".join(data)
    if etype == b"error" and not payload.startswith(b"{"):
        return orjson.dumps({"error": {"message": payload.decode("utf-8", "replace")}})
    return payload


class _Endpoint:
    """Where to connect and the constant part of every request's header block."""

    def __init__(self, base_url: str, path: str, api_key: str, stream: bool = True) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise TargetError(f"base_url {base_url!r}: expected http(s)://host[:port]/path")
        self.tls = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literal
        hostport = host if default_port else f"{host}:{self.port}"
        full_path = (u.path.rstrip("/") + path) or "/"
        if u.query:  # e.g. Azure's ?api-version=...
            full_path += "?" + u.query
        self.head = (
            f"POST {full_path} HTTP/1.1\r\n"
            f"Host: {hostport}\r\n"
            "User-Agent: harness-lean/1\r\n"
            f"Accept: {'text/event-stream' if stream else 'application/json'}\r\n"
            "Accept-Encoding: identity\r\n"
            "Content-Type: application/json\r\n"
            f"Authorization: Bearer {api_key}\r\n"
            "Content-Length: "
        ).encode("latin-1")


class LeanClient(ArmClient):
    """Streaming client on raw (gevent-cooperative) sockets with a keep-alive pool."""

    name = "lean"

    def __init__(self, arm: str, target: TargetConfig, **kwargs: Any) -> None:
        super().__init__(arm, target, **kwargs)
        self._ep = _Endpoint(target.base_url or "", self._path, self._key, self._streamed)
        self._idle: deque[Any] = deque()
        self._inflight: set[Any] = set()
        self._ssl_ctx = ssl.create_default_context() if self._ep.tls else None
        self._gevent_timeout = _gevent_timeout_class()
        self._pause = cooperative_pause() if self._gevent_timeout is not None else None
        self._connect_s = target.timeouts.connect_s

    # -- connections --------------------------------------------------------------------

    def _connect(self) -> Any:
        ep = self._ep
        try:
            sock = socket.create_connection((ep.host, ep.port), timeout=self._connect_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_ctx is not None:
                sock = self._ssl_ctx.wrap_socket(sock, server_hostname=ep.host)
        except TimeoutError:
            raise AttemptError(
                "timeout", f"connect to {ep.host}:{ep.port} timed out after {self._connect_s} s"
            ) from None
        except OSError as exc:
            raise AttemptError(
                "connection", with_detail(f"connect to {ep.host}:{ep.port} failed", str(exc))
            ) from None
        return sock

    def _checkout(self) -> tuple[Any, bool]:
        try:
            return self._idle.pop(), True
        except IndexError:
            return self._connect(), False

    def _discard_idle(self) -> None:
        while self._idle:
            try:
                self._idle.pop().close()
            except Exception:
                pass

    def close(self) -> None:
        super().close()
        self._discard_idle()

    def _abort_inflight(self) -> None:
        for sock in list(self._inflight):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- one attempt --------------------------------------------------------------------

    def _prepare(self, body: dict[str, Any]) -> bytes:
        data = orjson.dumps(body)
        return self._ep.head + str(len(data)).encode() + b"\r\n\r\n" + data

    def _attempt(self, payload: bytes, att: Attempt) -> None:
        """One exchange (the connection slot is held by the caller). A pooled connection the
        server had closed is retried once; that second pass drops every idle connection (they
        are likely stale too) and connects fresh."""
        for fresh in (False, True):
            if fresh:
                self._discard_idle()
                sock, reused = self._connect(), False
            else:
                sock, reused = self._checkout()
            self._inflight.add(sock)
            keep = False
            try:
                keep = self._exchange(sock, reused, payload, att)
                return
            except _StaleConnection:
                continue
            finally:
                self._inflight.discard(sock)
                if keep and not self._cancelled:
                    self._idle.append(sock)
                else:
                    try:
                        sock.close()
                    except Exception:
                        pass
        raise AttemptError("connection", "stale keep-alive connections")

    def _exchange(self, sock: Any, reused: bool, payload: bytes, att: Attempt) -> bool:
        """Send and stream one response; returns True when the connection may be reused.

        Deadlines: without gevent, every blocking call gets a socket timeout computed from the
        first-token / total deadline. Under gevent a socket timeout costs a timer start/stop
        per wait, so instead one ``gevent.Timeout`` runs per phase (until the first token,
        then until the total deadline) and the socket blocks without a timeout.
        """
        if self._gevent_timeout is None:
            return self._stream(sock, reused, payload, att, None)
        t_sent = att.t_sent
        total_deadline = t_sent + self._total_ns
        first_deadline = min(t_sent + self._ft_ns, total_deadline)
        timers = [
            self._gevent_timeout(max(0.0, (first_deadline - clock.perf_ns()) / 1e9), _Deadline)
        ]
        timers[0].start()

        def rearm() -> None:  # first token seen: now only the total deadline applies
            timers[0].close()
            timers[0] = self._gevent_timeout(
                max(0.0, (total_deadline - clock.perf_ns()) / 1e9), _Deadline
            )
            timers[0].start()

        try:
            sock.settimeout(None)
            return self._stream(sock, reused, payload, att, rearm)
        except _Deadline:
            if att.done:
                return False  # complete; only the end of the body was late
            raise self._timeout_error(att) from None
        finally:
            timers[0].close()

    def _stream(self, sock: Any, reused: bool, payload: bytes, att: Attempt, rearm: Any) -> bool:
        per_recv = rearm is None  # socket timeouts per blocking call (no gevent timer)
        t_sent = att.t_sent
        total_deadline = t_sent + self._total_ns
        deadline = min(t_sent + self._ft_ns, total_deadline)
        perf = clock.perf_ns
        try:
            if per_recv:
                sock.settimeout(max(1e-3, (deadline - perf()) / 1e9))
            sock.sendall(payload)
        except TimeoutError:
            raise self._timeout_error(att) from None
        except OSError as exc:
            if reused:
                raise _StaleConnection() from None
            if self._cancelled:
                raise AttemptError("cancelled", "run stopped while in flight") from None
            raise AttemptError("connection", f"send failed: {exc}") from None

        # ---- status line and headers
        buf = b""
        while True:
            if per_recv:
                remaining = deadline - perf()
                if remaining <= 0:
                    raise self._timeout_error(att)
                sock.settimeout(remaining / 1e9)
            try:
                data = sock.recv(_RECV)
            except TimeoutError:
                raise self._timeout_error(att) from None
            except OSError as exc:
                if reused and not buf:
                    raise _StaleConnection() from None
                raise self._closed(att, f"connection error before response: {exc}") from None
            if not data:
                if reused and not buf:
                    raise _StaleConnection()
                raise self._closed(att, "connection closed before response headers")
            start = len(buf) - 3 if len(buf) > 3 else 0  # the blank line may span two reads
            buf += data
            i = buf.find(b"\r\n\r\n", start)
            if i >= 0:
                break
            if len(buf) > MAX_HEAD_BYTES + 4:
                raise headers_too_large()
        if i > MAX_HEAD_BYTES:  # the same limit however the head was split into reads
            raise headers_too_large()
        head = buf[:i].decode("latin-1")
        raw = buf[i + 4 :]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        try:
            status = int(parts[1])
            if not parts[0].startswith("HTTP/"):
                raise ValueError
        except (IndexError, ValueError):
            raise AttemptError(
                "bad_response", with_detail("bad status line", repr(lines[0][:80]))
            ) from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        att.http_status = status
        att.server_request_id = headers.get("x-request-id")
        keep_alive = parts[0] != "HTTP/1.0" and "close" not in headers.get("connection", "").lower()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            framing = _Framing.CHUNKED
            left = 0
        elif "content-length" in headers:
            framing = _Framing.LENGTH
            try:
                left = int(headers["content-length"])
            except ValueError:
                raise AttemptError("bad_response", "bad Content-Length") from None
        else:
            framing = _Framing.CLOSE
            left = -1
            keep_alive = False

        ctype = headers.get("content-type", "")
        is_sse = "text/event-stream" in ctype
        if not self._streamed and 200 <= status < 300 and not is_sse:
            return self._json_body(sock, raw, framing, left, att, keep_alive)
        if not 200 <= status < 300 or not is_sse or not self._streamed:
            body, complete = self._read_body(sock, raw, framing, left, total_deadline)
            text = body.decode("utf-8", "replace")
            if 200 <= status < 300:
                try:
                    obj = _loads(body)
                except orjson.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict) and is_error_chunk(obj):
                    err = stream_error(obj)
                    raise AttemptError(err.error_type, err.message, status)
                want = "text/event-stream"
                got = ctype or "?"
                if not self._streamed:  # stream: false, but the server streamed anyway
                    want, got = "a JSON body (stream: false)", "text/event-stream"
                raise AttemptError(
                    "bad_response", f"expected {want}, got {got}: {text[:200]}", status
                )
            att.retry_after_s = retry_after_from(headers)
            raise AttemptError(
                classify_status(status), f"HTTP {status}: {error_text(text)}", status
            )

        # ---- the SSE stream (hot path)
        # ``sse`` holds the bytes after the last complete event: ``bytes`` while short, a
        # ``bytearray`` (appended in place) once an open event passes _SMALL, so one huge event
        # costs time linear in its size; each search for the blank line starts where the
        # previous one stopped. An event over ``max_event_bytes`` ends the attempt; one over
        # _BIG_EVENT is parsed without copies. Under gevent the loop pauses every YIELD_BYTES
        # read (a recv that finds data waiting never switches greenlets).
        chat = self._chat
        loads = _loads
        times = att.times
        max_ev = self._max_event
        huge = min(_BIG_EVENT, max_ev)  # events over this take the careful path
        max_open = max_ev + 1  # an open event may also hold the first \n of its end
        pause = self._pause
        unpaused = 0
        sse: bytes | bytearray = b""
        body_done = False
        rearmed = False
        try:
            while True:
                if raw:
                    t = perf()
                    data, raw, left, body_done = deframe(raw, framing, left)
                    if data:
                        if b"\r" in data:
                            data = data.replace(b"\r\n", b"\n")
                        if sse:  # an event spans reads: append; search from the seam
                            if sse[-1] == 13 and data[:1] == b"\n":  # a CRLF split by a read
                                sse = sse[:-1]
                            if len(sse) < _SMALL and type(sse) is bytes:
                                scan = len(sse) - 1
                                sse = sse + data
                            else:  # a long event: append in place, linear in its size
                                # it can end only at a \n of data: none (a memchr), no search
                                scan = len(sse) - 1 if b"\n" in data else len(sse) + len(data)
                                if type(sse) is bytes:
                                    sse = bytearray(sse)
                                sse += data
                        else:
                            sse = data
                            scan = 0
                        big = len(sse) > huge  # rare: an event here may be huge
                        pos = 0
                        while True:
                            j = sse.find(b"\n\n", scan)
                            if j < 0:
                                break
                            if big and j - pos > huge:
                                self._huge_event(sse, pos, j, att, t, status)
                                pos = scan = j + 2
                                continue
                            ev = sse[pos:j]
                            pos = scan = j + 2
                            if ev[:6] == b"data: " and b"\n" not in ev:
                                payload_ = ev[6:]
                            else:
                                payload_ = sse_data(ev)
                                if payload_ is None:
                                    continue
                            if payload_ == b"[DONE]":
                                att.done = True
                                continue
                            try:
                                obj = loads(payload_)
                            except orjson.JSONDecodeError:
                                raise AttemptError(
                                    "bad_response",
                                    with_detail(
                                        "invalid JSON in SSE data", repr(bytes(payload_[:200]))
                                    ),
                                    status,
                                ) from None
                            apply_chunk(att, obj, t, chat)
                        if pos:
                            sse = sse[pos:]
                        if big and len(sse) > max_open:
                            raise event_too_large(self.arm, max_ev)
                if body_done:
                    break
                if att.done and framing == _Framing.CLOSE:
                    break
                # wait for more bytes
                if per_recv:
                    now = perf()
                    dl = deadline if not times else total_deadline
                    if dl - now <= 0:
                        if att.done:
                            return False  # complete; only the end of the body is late
                        raise self._timeout_error(att)
                    sock.settimeout((dl - now) / 1e9)
                elif times and not rearmed:
                    rearm()
                    rearmed = True
                try:
                    data = sock.recv(_RECV)
                except TimeoutError:
                    if att.done:
                        return False
                    raise self._timeout_error(att) from None
                except OSError as exc:
                    if att.done or att.finish_reason is not None:
                        return False  # the stream ended; check_complete judges what it carried
                    raise self._closed(att, with_detail(cut_short_message(att), str(exc))) from None
                if not data:
                    if framing == _Framing.CLOSE:
                        break
                    if att.done or att.finish_reason is not None:
                        return False  # the stream ended; check_complete judges what it carried
                    raise self._closed(att, cut_short_message(att))
                if pause is not None:
                    unpaused += len(data)
                    if unpaused >= YIELD_BYTES:
                        # data keeps coming without a wait (a recv that returns at once never
                        # switches greenlets): let timers, other streams and signals run
                        unpaused = 0
                        pause()
                # bytes deframe left unconsumed (a size line or CRLF split across reads) come first
                raw = raw + data if raw else data
        except AttemptError as exc:
            if exc.http_status is None:
                exc.http_status = status
            raise
        if sse.strip():  # a last event without its blank line: accept [DONE], else malformed
            if sse_data(bytes(sse.strip())) == b"[DONE]":
                att.done = True
            elif not att.done and att.finish_reason is None:
                raise AttemptError(
                    "bad_response", f"incomplete SSE event at end: {bytes(sse[:200])!r}", status
                )
        return keep_alive and body_done and not raw

    def _huge_event(
        self, sse: bytes | bytearray, pos: int, j: int, att: Attempt, t: int, status: int
    ) -> None:
        """Parse the event ``sse[pos:j]`` in place (no copy of its megabytes) and apply it;
        over ``max_event_bytes`` it ends the attempt."""
        if j - pos > self._max_event:
            raise event_too_large(self.arm, self._max_event)
        with memoryview(sse) as mv:
            if sse[pos : pos + 6] == b"data: " and sse.find(b"\n", pos, j) < 0:
                with mv[pos + 6 : j] as payload:
                    try:
                        obj = _loads(payload)
                    except orjson.JSONDecodeError:
                        raise AttemptError(
                            "bad_response",
                            with_detail("invalid JSON in SSE data", repr(bytes(payload[:200]))),
                            status,
                        ) from None
            else:
                data = sse_data(bytes(mv[pos:j]))
                if data is None:
                    return
                if data == b"[DONE]":
                    att.done = True
                    return
                try:
                    obj = _loads(data)
                except orjson.JSONDecodeError:
                    raise AttemptError(
                        "bad_response",
                        with_detail("invalid JSON in SSE data", repr(data[:200])),
                        status,
                    ) from None
        apply_chunk(att, obj, t, self._chat)

    def _json_body(
        self, sock: Any, raw: bytes, framing: int, left: int, att: Attempt, keep_alive: bool
    ) -> bool:
        """A non-streamed 2xx response (``stream: false``): read the whole body (at most
        ``max_event_bytes``, by the total deadline), then fold it into ``att`` as one chunk
        stamped when its last byte arrived. Returns True when the connection may be reused."""
        per_recv = self._gevent_timeout is None
        total_deadline = att.t_sent + self._total_ns
        limit = self._max_event
        pause = self._pause
        perf = clock.perf_ns
        status = att.http_status
        parts: list[bytes] = []
        size = 0
        unpaused = 0
        try:
            while True:
                data, raw, left, done = deframe(raw, framing, left)
                if data:
                    size += len(data)
                    if size > limit:
                        raise event_too_large(self.arm, limit, "response body")
                    parts.append(data)
                if done:
                    break
                if per_recv:
                    remaining = total_deadline - perf()
                    if remaining <= 0:
                        raise self._timeout_error(att)
                    sock.settimeout(remaining / 1e9)
                try:
                    data = sock.recv(_RECV)
                except TimeoutError:
                    raise self._timeout_error(att) from None
                except OSError as exc:
                    raise self._closed(
                        att,
                        with_detail("connection closed before the response body ended", str(exc)),
                    ) from None
                if not data:
                    if framing == _Framing.CLOSE:
                        break
                    raise self._closed(att, "connection closed before the response body ended")
                unpaused += len(data)
                if unpaused >= YIELD_BYTES and pause is not None:
                    unpaused = 0
                    pause()
                raw = raw + data if raw else data
            t = perf()
            body = b"".join(parts)
            try:
                obj = _loads(body)
            except orjson.JSONDecodeError:
                raise AttemptError(
                    "bad_response",
                    with_detail("invalid JSON in response body", repr(body[:200])),
                ) from None
            apply_body(att, obj, t, self._chat)
        except AttemptError as exc:
            if exc.http_status is None:
                exc.http_status = status
            raise
        return keep_alive and framing != _Framing.CLOSE and not raw

    def _read_body(
        self, sock: Any, raw: bytes, framing: int, left: int, deadline: int
    ) -> tuple[bytes, bool]:
        """Read a (non-streaming) response body, bounded in size and by ``deadline``."""
        out = b""
        while True:
            data, raw, left, done = deframe(raw, framing, left)
            out += data
            if done or len(out) > _MAX_ERROR_BODY:
                return out, done
            remaining = deadline - clock.perf_ns()
            if remaining <= 0:
                return out, False
            sock.settimeout(remaining / 1e9)
            try:
                data = sock.recv(_RECV)
            except OSError:
                return out, False
            if not data:
                return out, framing == _Framing.CLOSE
            raw = raw + data if raw else data  # keep what deframe left unconsumed
