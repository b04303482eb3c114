"""The SDK client: the official ``openai`` package, as products call it.

Fidelity over speed: requests go through ``client.chat.completions.create(stream=True)`` (or
``completions``), so the measurement includes the SDK's own request building, SSE decoding and
pydantic chunk objects. One ``openai.OpenAI`` per (arm, endpoint) per process (creating one
costs about 43 ms of CPU), with ``max_retries=0`` (we retry ourselves, recording each attempt)
and an ``httpx`` pool sized by ``target.max_connections``.

Timeouts: connect via httpx; every socket read is bounded by the first-token timeout (httpx's
read timeout), and the first-token and total deadlines are checked as each chunk arrives, so a
stalled stream is detected within ``min(first_token_s, total_s)`` after the deadline at worst.
Stream completeness: the SDK swallows ``[DONE]``, so a stream counts as complete when it
carried a ``finish_reason``.
"""

from __future__ import annotations

import socket
import threading
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from harness.config import TargetConfig
from harness.targets import clock
from harness.targets.attempt import Attempt, stream_error
from harness.targets.client import ArmClient
from harness.targets.errors import AttemptError, classify_status
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
            att.http_status = raw.status_code
            att.server_request_id = raw.headers.get("x-request-id")
            ctype = raw.headers.get("content-type", "")
            if "text/event-stream" not in ctype:
                text = raw.http_response.read()[:200].decode("utf-8", "replace")
                raw.http_response.close()
                raise AttemptError(
                    "bad_response", f"expected text/event-stream, got {ctype}: {text}"
                )
            stream = raw.parse()
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
            raise AttemptError(
                classify_status(exc.status_code),
                f"HTTP {exc.status_code}: {exc.message}",
                exc.status_code,
            ) from None
        except oa.APITimeoutError as exc:
            if type(exc.__cause__).__name__ == "PoolTimeout":  # httpx: no free pooled connection
                raise AttemptError(
                    "connection",
                    "client connection pool exhausted: httpx pool timeout waiting for a "
                    f"connection (target.max_connections={self.target.max_connections})",
                    retryable=False,
                ) from None
            if not times:
                raise self._timeout_error(att) from None
            raise AttemptError(
                "timeout", f"read timed out mid-stream ({self._ft_ns / 1e9:g} s)", att.http_status
            ) from None
        except oa.APIConnectionError as exc:
            raise self._closed(att, f"{exc}: {exc.__cause__!r}") from None
        except oa.APIError as exc:  # an error event inside the stream: classified as lean does
            body = exc.body if isinstance(exc.body, dict | str) else exc.message
            raise stream_error(body) from None
        except ValueError as exc:  # json.JSONDecodeError from the SDK's SSE decoder
            if self._cancelled:
                raise AttemptError("cancelled", "run stopped while in flight") from None
            raise AttemptError(
                "bad_response", f"invalid JSON in SSE data: {exc}", att.http_status
            ) from None
        except Exception as exc:  # httpx errors escaping the SDK's wrappers mid-stream
            raise self._closed(att, f"{type(exc).__name__}: {exc}") from None
        finally:
            if stream is not None:
                self._inflight.discard(stream)
                stream.close()
