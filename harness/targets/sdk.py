"""The SDK client: the official ``openai`` package, as products call it.

Fidelity over speed: requests go through ``client.chat.completions.create(stream=True)`` (or
``completions``), so the measurement includes the SDK's own request building, SSE decoding and
pydantic chunk objects. One ``openai.OpenAI`` per (arm, endpoint) per process (creating one
costs about 43 ms of CPU), with ``max_retries=0`` (we retry ourselves, recording each attempt)
and an ``httpx`` pool sized by ``target.max_connections``.

Timeouts: connect via httpx; every socket read is bounded by the first-token timeout (httpx's
read timeout), and the first-token and total deadlines are checked as each chunk arrives, so a
stalled stream is detected within ``min(first_token_s, total_s)`` after the deadline at worst.
Stream completeness: as in the lean client, a stream is complete when it carried a
``finish_reason`` (see ``Attempt.check_complete``). The SDK swallows ``[DONE]``; a wrapper
around its SSE decoder notes it, so both clients word a cut-short stream alike.

Parity: transport failures are classified and worded as the lean client does (a malformed
status line or a head over ``MAX_HEAD_BYTES`` is ``bad_response``, a connection lost after
the finish reason counts as the stream's end, one lost before it is cut short); the library's
own error text goes into a bracketed detail at the end of the message
(``tests/targets/test_parity.py`` compares both clients on every scripted fault).
"""

from __future__ import annotations

import socket
import threading
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import orjson

from harness.config import TargetConfig
from harness.targets import clock
from harness.targets.attempt import Attempt, cut_short_message, is_error_chunk, stream_error
from harness.targets.client import ArmClient
from harness.targets.errors import (
    MAX_HEAD_BYTES,
    AttemptError,
    classify_status,
    error_text,
    headers_too_large,
    with_detail,
)
from harness.targets.retry import retry_after_from

_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()

# Body fields passed as typed SDK arguments; anything else goes through ``extra_body``.
_TYPED = ("max_tokens", "max_completion_tokens", "stream_options", "temperature", "seed")


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
        self._inflight: set[Any] = set()
        u = urlsplit(target.base_url or "")
        self._hostport = f"{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"
        self._connect_s = target.timeouts.connect_s

    def _prepare(self, body: dict[str, Any]) -> dict[str, Any]:
        body = dict(body)
        kwargs: dict[str, Any] = {"model": body.pop("model"), "stream": True}
        body.pop("stream", None)
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
        ft_deadline = att.t_sent + self._ft_ns
        total_deadline = att.t_sent + self._total_ns
        chat = self._chat
        times = att.times
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
            if dec is not None and hasattr(dec, "iter_bytes"):  # the SDK swallows [DONE]
                stream._decoder = _DoneWatch(dec, att)
            self._inflight.add(stream)
            try:  # the socket, so that cancel() can interrupt a blocked read from any thread
                ns = raw.http_response.extensions.get("network_stream")
                stream._harness_sock = ns.get_extra_info("socket") if ns is not None else None
            except Exception:
                pass
            for chunk in stream:
                t = perf()
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
        finally:
            if stream is not None:
                self._inflight.discard(stream)
                stream.close()

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


class _DoneWatch:
    """Wraps the SDK's SSE decoder to note ``data: [DONE]`` (which the SDK drops) in
    ``att.done``, so both clients tell "[DONE] but no finish_reason" from a plain cut."""

    __slots__ = ("_dec", "_att")

    def __init__(self, dec: Any, att: Attempt) -> None:
        self._dec = dec
        self._att = att

    def iter_bytes(self, iterator: Any) -> Any:
        att = self._att
        for sse in self._dec.iter_bytes(iterator):
            if sse.data.startswith("[DONE]"):
                att.done = True
            yield sse

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
