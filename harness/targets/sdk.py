"""The SDK client: the official ``openai`` package, as products call it.

Fidelity over speed: requests go through ``client.chat.completions.create(stream=True)`` (or
``completions``), so the measurement includes the SDK's own request building, SSE decoding and
pydantic chunk objects. One ``openai.OpenAI`` per (arm, endpoint) per process (creating one
costs about 43 ms of CPU), with ``max_retries=0`` (we retry ourselves, recording each attempt)
and an ``httpx`` pool sized by ``target.max_connections``.

Timeouts: connect via httpx; every socket read is bounded by the first-token timeout (httpx's
read timeout), and the first-token and total deadlines are checked as each chunk arrives and
at every read, so a stalled stream is detected within ``min(first_token_s, total_s)`` after
the deadline at worst. Stream completeness: as in the lean client, a stream is complete when it
carried a ``finish_reason`` (see ``Attempt.check_complete``). A wrapper around the SDK's SSE
decoder (:class:`_Guard`) notes ``[DONE]`` (which the SDK swallows), bounds each event to
``target.max_event_bytes`` (the SDK has no limit: a 400 MiB line cost it 1.7 GiB) and, under
gevent, pauses every ``YIELD_BYTES`` read and every ``_PAUSE_EVENTS`` chunks, so one flooding
stream cannot hold the load process.

``stream: false``: ``with_streaming_response.create(stream=False)``, the body read through
httpx with the same bound and the total deadline, decoded as the SDK decodes it (JSON, then its
pydantic model), folded in as one chunk.

Parity: transport failures are classified and worded as the lean client does (a malformed
status line or a head over ``MAX_HEAD_BYTES`` is ``bad_response``, a connection lost after
the finish reason counts as the stream's end, one lost before it is cut short); the library's
own error text goes into a bracketed detail at the end of the message
(``tests/targets/test_parity.py`` compares both clients on every scripted fault).
"""

from __future__ import annotations

import json
import re
import socket
import threading
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import orjson

from harness.config import TargetConfig
from harness.targets import clock
from harness.targets.attempt import (
    Attempt,
    apply_body,
    cut_short_message,
    is_error_chunk,
    note_meta,
    stream_error,
)
from harness.targets.client import YIELD_BYTES, ArmClient, cooperative_pause
from harness.targets.errors import (
    MAX_HEAD_BYTES,
    AttemptError,
    classify_status,
    error_text,
    event_too_large,
    headers_too_large,
    with_detail,
)
from harness.targets.retry import retry_after_from

_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()

# Body fields passed as typed SDK arguments; anything else goes through ``extra_body``.
_TYPED = ("max_tokens", "max_completion_tokens", "stream_options", "temperature", "seed")

#: Under gevent, the stream loop pauses after this many chunks read without a pause (each
#: costs the SDK tens of microseconds; a flood of them must not hold the process).
_PAUSE_EVENTS = 16

#: Most of a non-2xx-like body read to word an error (as the lean client reads).
_MAX_ERROR_BODY = 65536


def shared_openai_client(target: TargetConfig, api_key: str, arm: str) -> Any:
    """The process-wide ``openai.OpenAI`` for this arm and endpoint (created once)."""
    to = target.timeouts
    key = (arm, target.base_url, api_key, target.max_connections, to.connect_s, to.first_token_s)
    client = _CLIENTS.get(key)
    if client is not None:
        return client
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            import httpx2
            import openai

            timeout = httpx2.Timeout(
                to.total_s, connect=to.connect_s, read=min(to.first_token_s, to.total_s)
            )
            http = httpx2.Client(
                limits=httpx2.Limits(
                    max_connections=target.max_connections,
                    max_keepalive_connections=target.max_connections,
                ),
                timeout=timeout,
            )
            # a query in base_url (Azure's ?api-version=) goes on every request, as with lean
            u = urlsplit(target.base_url or "")
            base_url = urlunsplit((u.scheme, u.netloc, u.path, "", ""))
            client = openai.OpenAI(
                api_key=api_key,
                base_url=base_url,
                max_retries=0,
                timeout=timeout,
                http_client=http,
                default_query=dict(parse_qsl(u.query, keep_blank_values=True)) or None,
            )
            _CLIENTS[key] = client
    return client


class SdkClient(ArmClient):
    """Streaming through the official ``openai`` SDK (see the module docstring)."""

    name = "sdk"

    def __init__(self, arm: str, target: TargetConfig, **kwargs: Any) -> None:
        super().__init__(arm, target, **kwargs)
        import openai

        self._openai = openai
        self._client = shared_openai_client(target, self._key, arm)
        api = self._client.chat.completions if self._chat else self._client.completions
        self._create = api.with_raw_response.create
        self._create_streaming = api.with_streaming_response.create  # stream: false bodies
        from openai.types import Completion
        from openai.types.chat import ChatCompletion

        self._body_type = ChatCompletion if self._chat else Completion
        self._pause = cooperative_pause()
        self._inflight: set[Any] = set()
        u = urlsplit(target.base_url or "")
        self._hostport = f"{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"
        self._connect_s = target.timeouts.connect_s

    def _prepare(self, body: dict[str, Any]) -> dict[str, Any]:
        body = dict(body)
        kwargs: dict[str, Any] = {"model": body.pop("model"), "stream": self._streamed}
        body.pop("stream", None)
        if not self._streamed:  # the whole body is the first token: total_s bounds each read
            import httpx2

            to = self.target.timeouts
            kwargs["timeout"] = httpx2.Timeout(to.total_s, connect=to.connect_s)
        if self._chat:
            kwargs["messages"] = body.pop("messages")
        else:
            kwargs["prompt"] = body.pop("prompt")
        for k in _TYPED:
            if k in body:
                kwargs[k] = body.pop(k)
        if body:
            kwargs["extra_body"] = body
        return kwargs

    def _abort_inflight(self) -> None:
        for stream in list(self._inflight):
            sock = getattr(stream, "_harness_sock", None)
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
                else:
                    stream.close()
            except Exception:
                pass

    def _attempt(self, payload: dict[str, Any], att: Attempt) -> None:
        oa = self._openai
        perf = clock.perf_ns
        times = att.times
        total_deadline = att.t_sent + self._total_ns
        try:
            if self._streamed:
                self._stream(payload, att)
            else:
                self._body(payload, att)
        except AttemptError as exc:
            if exc.http_status is None:
                exc.http_status = att.http_status
            raise
        except oa.APIStatusError as exc:
            headers = exc.response.headers
            att.retry_after_s = retry_after_from(headers)
            att.server_request_id = headers.get("x-request-id")
            try:
                text = error_text(exc.response.text)
            except Exception:
                text = exc.message
            raise AttemptError(
                classify_status(exc.status_code), f"HTTP {exc.status_code}: {text}", exc.status_code
            ) from None
        except oa.APITimeoutError as exc:
            if type(exc.__cause__).__name__ == "PoolTimeout":  # httpx: no free pooled connection
                raise AttemptError(
                    "connection",
                    "client connection pool exhausted: httpx pool timeout waiting for a "
                    f"connection (target.max_connections={self.target.max_connections})",
                    retryable=False,
                ) from None
            if type(exc.__cause__).__name__ == "ConnectTimeout":  # worded as lean words it
                raise AttemptError(
                    "timeout",
                    f"connect to {self._hostport} timed out after {self._connect_s} s",
                ) from None
            if not times or perf() >= total_deadline:
                raise self._timeout_error(att) from None
            raise AttemptError(
                "timeout", f"read timed out mid-stream ({self._ft_ns / 1e9:g} s)", att.http_status
            ) from None
        except oa.APIConnectionError as exc:
            if att.done or att.finish_reason is not None:
                return  # the stream ended; check_complete judges what it carried
            raise self._connection_error(att, exc, exc.__cause__) from None
        except oa.APIError as exc:  # an error event inside the stream: classified as lean does
            body = exc.body if isinstance(exc.body, dict | str) else exc.message
            raise stream_error(body) from None
        except ValueError as exc:  # json.JSONDecodeError from the SDK's SSE decoder
            if self._cancelled:
                raise AttemptError("cancelled", "run stopped while in flight") from None
            raise AttemptError(
                "bad_response", with_detail("invalid JSON in SSE data", str(exc)), att.http_status
            ) from None
        except Exception as exc:  # httpx errors escaping the SDK's wrappers mid-stream
            if att.done or att.finish_reason is not None:
                return
            raise self._connection_error(att, exc, exc) from None

    def _stream(self, payload: dict[str, Any], att: Attempt) -> None:
        """One streamed exchange through the SDK (``stream=True``)."""
        perf = clock.perf_ns
        ft_deadline = att.t_sent + self._ft_ns
        total_deadline = att.t_sent + self._total_ns
        chat = self._chat
        times = att.times
        pause = self._pause
        unpaused = 0
        stream = None
        try:
            raw = self._create(**payload)
            resp = raw.http_response
            att.http_status = raw.status_code
            att.server_request_id = raw.headers.get("x-request-id")
            if _head_size(resp) > MAX_HEAD_BYTES:  # the limit lean applies, however it was read
                resp.close()
                raise headers_too_large()
            ctype = raw.headers.get("content-type", "")
            if "text/event-stream" not in ctype:
                body = resp.read()
                resp.close()
                try:
                    obj = orjson.loads(body)
                except orjson.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict) and is_error_chunk(obj):  # classified as lean does
                    raise stream_error(obj)
                text = body[:200].decode("utf-8", "replace")
                raise AttemptError(
                    "bad_response", f"expected text/event-stream, got {ctype or '?'}: {text}"
                )
            stream = raw.parse()
            dec = getattr(stream, "_decoder", None)
            if dec is not None and hasattr(dec, "iter_bytes"):
                stream._decoder = _Guard(dec, att, self)
            self._inflight.add(stream)
            try:  # the socket, so that cancel() can interrupt a blocked read from any thread
                ns = raw.http_response.extensions.get("network_stream")
                stream._harness_sock = ns.get_extra_info("socket") if ns is not None else None
            except Exception:
                pass
            for chunk in stream:
                t = perf()
                if att.meta_open:  # what served it, from the first chunk naming a model
                    note_meta(
                        att,
                        getattr(chunk, "model", None),
                        getattr(chunk, "system_fingerprint", None),
                    )
                choices = getattr(chunk, "choices", None)
                if choices:
                    c0 = choices[0]
                    if chat:
                        d = c0.delta
                        text = d.content if d is not None else None
                        if text:
                            times.append(t)
                            att.pieces.append(text)
                        elif d is not None:
                            r = getattr(d, "reasoning_content", None) or getattr(
                                d, "reasoning", None
                            )
                            if r and isinstance(r, str):
                                times.append(t)
                                att.reasoning.append(r)
                    else:
                        text = c0.text
                        if text:
                            times.append(t)
                            att.pieces.append(text)
                    if c0.finish_reason:
                        att.finish_reason = c0.finish_reason
                elif getattr(chunk, "object", None) == "error":  # vLLM's in-stream error
                    raise stream_error(chunk.model_dump())
                u = getattr(chunk, "usage", None)
                if u is not None:
                    att.usage = u.model_dump() if hasattr(u, "model_dump") else dict(u)
                if (not times and t > ft_deadline) or t > total_deadline:
                    raise self._timeout_error(att)
                if pause is not None:
                    unpaused += 1
                    if unpaused >= _PAUSE_EVENTS:  # a flood of chunks: let others run
                        unpaused = 0
                        pause()
        finally:
            if stream is not None:
                self._inflight.discard(stream)
                stream.close()

    def _body(self, payload: dict[str, Any], att: Attempt) -> None:
        """One non-streamed exchange (``stream: false``): the body is read through the SDK's
        streaming response, bounded by ``max_event_bytes`` and the total deadline (a plain
        ``create`` would read it whole, unbounded), then decoded as the SDK decodes it (JSON,
        then its pydantic model) and folded into ``att`` as one chunk."""
        import httpx2

        perf = clock.perf_ns
        total_deadline = att.t_sent + self._total_ns
        limit = self._max_event
        pause = self._pause
        with self._create_streaming(**payload) as raw:
            resp = raw.http_response
            att.http_status = raw.status_code
            att.server_request_id = raw.headers.get("x-request-id")
            if _head_size(resp) > MAX_HEAD_BYTES:
                raise headers_too_large()
            ctype = raw.headers.get("content-type", "")
            sse = "text/event-stream" in ctype  # the server streamed anyway: an error
            holder = _Inflight()
            try:
                ns = resp.extensions.get("network_stream")
                holder._harness_sock = ns.get_extra_info("socket") if ns is not None else None
            except Exception:
                pass
            self._inflight.add(holder)
            parts: list[bytes] = []
            size = unpaused = 0
            try:
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise event_too_large(self.arm, limit, "response body")
                    parts.append(chunk)
                    if sse and size > _MAX_ERROR_BODY:
                        break
                    if perf() > total_deadline:
                        raise self._timeout_error(att)
                    unpaused += len(chunk)
                    if unpaused >= YIELD_BYTES and pause is not None:
                        unpaused = 0
                        pause()
            except httpx2.TimeoutException:
                raise self._timeout_error(att) from None
            except httpx2.TransportError as exc:
                if self._cancelled:
                    raise AttemptError("cancelled", "run stopped while in flight") from None
                raise self._closed(
                    att,
                    with_detail(
                        "connection closed before the response body ended",
                        f"{type(exc).__name__}: {exc}",
                    ),
                ) from None
            finally:
                self._inflight.discard(holder)
            body = b"".join(parts)
        if sse:
            text = body[:200].decode("utf-8", "replace")
            raise AttemptError(
                "bad_response",
                f"expected a JSON body (stream: false), got text/event-stream: {text}",
            )
        try:
            obj = json.loads(body)  # as the SDK's response.json() does
        except ValueError:
            raise AttemptError(
                "bad_response", with_detail("invalid JSON in response body", repr(body[:200]))
            ) from None
        try:  # the model an application would get (its cost is part of what the SDK measures)
            self._client._process_response_data(data=obj, cast_to=self._body_type, response=resp)
        except Exception:
            pass  # a shape the SDK cannot model: apply_body words what is wrong with it
        apply_body(att, obj, perf(), self._chat)

    def _connection_error(self, att: Attempt, exc: Exception, cause: Any) -> AttemptError:
        """A transport failure, worded and classified as the lean client does: a malformed
        status line or oversized head is ``bad_response``; a connection lost after the
        response began is cut short (``truncated`` once content arrived); anything before
        it is ``connection``."""
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        text = str(cause)
        if "status line" in text or "no response line" in text:
            return AttemptError("bad_response", with_detail("bad status line", detail))
        if "Receive buffer too long" in text:
            return headers_too_large()
        if att.http_status is not None:
            return self._closed(att, with_detail(cut_short_message(att), detail))
        if type(cause).__name__ == "ConnectError":
            return self._closed(att, with_detail(f"connect to {self._hostport} failed", detail))
        if "without sending a response" in text:
            return self._closed(
                att, with_detail("connection closed before response headers", detail)
            )
        return self._closed(att, f"{exc}: {cause!r}")


class _Inflight:
    """What :meth:`SdkClient._abort_inflight` needs of a non-streamed exchange: its socket."""

    __slots__ = ("_harness_sock",)

    def __init__(self) -> None:
        self._harness_sock: Any = None

    def close(self) -> None:
        pass


# An empty line: two line ends (CRLF, a lone CR or LF each), the end of an SSE event.
_BLANK = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")


def _after_last_blank(buf: bytes) -> int:
    """Index just after the last empty line in ``buf``; -1 when it has none."""
    end = -1
    for sep in (b"\n\n", b"\n\r\n", b"\r\r"):
        i = buf.rfind(sep)
        if i >= 0 and i + len(sep) > end:
            end = i + len(sep)
    return end


class _Guard:
    """Wraps the SDK's SSE decoder (which imposes no size limit and, reading data already
    there, never yields under gevent) between it and the response bytes.

    - notes ``data: [DONE]`` (which the SDK drops) in ``att.done``, so both clients tell
      "[DONE] but no finish_reason" from a plain cut;
    - counts the bytes of the event being read: one over ``max_event_bytes`` ends the attempt
      before the decoder buffers more (an endless line cost the SDK 4x its size in memory);
    - checks the first-token / total deadline at every read, not only at every event (an
      endless line has none);
    - under gevent, pauses every ``YIELD_BYTES`` so timers and other streams run.
    """

    __slots__ = ("_dec", "_att", "_client")

    def __init__(self, dec: Any, att: Attempt, client: SdkClient) -> None:
        self._dec = dec
        self._att = att
        self._client = client

    def iter_bytes(self, iterator: Any) -> Any:
        att = self._att
        for sse in self._dec.iter_bytes(self._guarded(iterator)):
            if sse.data.startswith("[DONE]"):
                att.done = True
            yield sse

    def _guarded(self, chunks: Any) -> Any:
        client, att = self._client, self._att
        limit = client._max_event
        pause = client._pause
        perf = clock.perf_ns
        ft_deadline = att.t_sent + client._ft_ns
        total_deadline = att.t_sent + client._total_ns
        pending = 0  # bytes of the event being read (since the last empty line)
        tail = b""  # the end of the previous read: an empty line may span two reads
        unpaused = 0
        for chunk in chunks:
            n = len(chunk)
            probe = tail + chunk if pending else chunk
            if pending + n <= limit:  # the common case: no event here can be over the limit
                end = _after_last_blank(probe)
                pending = len(probe) - end if end >= 0 else pending + n
            else:  # measure every event that ends here, then the one still open
                start = len(probe) - n - pending  # where the open event began (may be < 0)
                for m in _BLANK.finditer(probe):
                    if m.start() - start > limit:
                        raise event_too_large(client.arm, limit)
                    start = m.end()
                pending = len(probe) - start
                if pending > limit + 1:  # + 1: the first line end of the empty line
                    raise event_too_large(client.arm, limit)
            tail = probe[-3:]
            if perf() > (total_deadline if att.times else ft_deadline):
                raise client._timeout_error(att)
            if pause is not None:
                unpaused += n
                if unpaused >= YIELD_BYTES:
                    unpaused = 0
                    pause()
            yield chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dec, name)


def _head_size(resp: Any) -> int:
    """Bytes of the response head (status line and header lines, without the blank line),
    as the lean client counts them."""
    try:
        n = len(resp.http_version) + len(resp.reason_phrase) + 5
        for k, v in resp.headers.raw:
            n += len(k) + len(v) + 4
        return n
    except Exception:
        return 0
