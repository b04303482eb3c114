"""A scripted OpenAI-compatible SSE test server for deterministic client tests.

The server runs an asyncio loop in a daemon thread on 127.0.0.1 (ephemeral port, backlog
1024). Each completion request takes the next queued :class:`Script` (or the default one) and
plays it: status, headers, delays, content chunks, usage, and faults (truncation, invalid JSON,
stalls, error events). ``/v1/models``, ``/metrics`` and ``/health`` answer from settable
attributes. Every request is logged (path, headers, JSON body, arrival perf-counter ns).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from harness.config import TargetConfig


@dataclass
class Script:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # non-stream body (errors); default: an OpenAI error object
    ttft_s: float = 0.0  # delay before the first content chunk (after the role chunk)
    itl_s: float = 0.0  # delay between content chunks
    chunks: list[str] = field(default_factory=lambda: ["Hello", " world", "!"])
    role_chunk: bool = True
    usage: bool = True
    prompt_tokens: int = 7
    completion_tokens: int | None = None  # default: len(chunks)
    cached_tokens: int | None = None
    finish: str | None = "stop"
    finish_separate: bool = True  # finish_reason on its own (text-less) chunk
    done: bool = True
    truncate_after: int | None = None  # close after N content chunks (no terminal chunk)
    invalid_json_at: int | None = None  # send garbage instead of content chunk N
    stall_after: int | None = None  # after N content chunks, send nothing more
    error_event_at: int | None = None  # send {"error": ...} instead of content chunk N
    error_payload: dict[str, Any] | None = None  # what error_event_at sends (default code 500)
    chunked: bool = True  # else close-delimited body
    crlf: bool = False  # SSE lines end with \r\n
    batch: bool = False  # write all chunks at once
    echo_auth: bool = False  # put the Authorization header into the error body
    content_type: str = "text/event-stream"
    status_line: str | None = None  # replaces "HTTP/1.1 200 OK" (a malformed one, say)
    header_pad: int = 0  # add about this many bytes of extra headers (1 KB lines)
    close_before_response: bool = False  # read the request, then close without answering
    abort_at_end: bool = False  # abort the connection instead of sending the last chunk
    # Write the whole response at once, in pieces: cut at these byte offsets of the response
    # (head included; each piece written and flushed, then a short pause so the client reads
    # it on its own), or one byte at a time with ``bytewise``. Delays (ttft_s, itl_s) are
    # skipped in these modes.
    split_at: list[int] | None = None
    bytewise: bool = False
    split_pause_s: float = 0.002
    split_in_body: bool = False  # split_at offsets count from the start of the body
    # Hostile streams. ``event_pad``: content chunk 0 carries an extra field of this many bytes
    # (one huge event, in one HTTP chunk). ``flood``: this many tiny text-less events before
    # the content, written at once. ``endless_after``: after N content chunks, one SSE line
    # that never ends, written in 64 KiB pieces (``endless_pause_s`` apart) until the client
    # goes away.
    event_pad: int = 0
    flood: int = 0
    endless_after: int | None = None
    endless_pause_s: float = 0.0
    # ``stream: false``: a request that asks for no stream gets one JSON body (chat.completion
    # or text_completion) after ``ttft_s``; ``json_framing``: length | chunked | close.
    json_framing: str = "length"
    stream_anyway: bool = False  # answer a stream: false request with a stream
    reasoning: str | None = None  # non-streamed chat: message.reasoning_content
    # What the server says served it: ``model`` in every chunk / body (default: the requested
    # model) and ``system_fingerprint`` (sent only when set); ``meta_from``: chunks before
    # this index carry ``"model": ""`` and no fingerprint (a prompt-filter chunk, say).
    response_model: str | None = None
    system_fingerprint: str | None = None
    meta_from: int = 0


class ScriptServer:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.queue: deque[Script] = deque()
        self.default = Script()
        self.requests: list[dict[str, Any]] = []
        self.models: list[str] = ["test-model"]
        self.models_status = 200
        self.metrics_text = ""
        self.health_status = 200
        self.port = 0
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._padded: dict[tuple[int, str], str] = {}
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        self.queue.clear()
        self.default = Script()
        self.requests.clear()
        self.models = ["test-model"]
        self.models_status = 200
        self.metrics_text = ""
        self.health_status = 200

    def push(self, *scripts: Script) -> None:
        self.queue.extend(scripts)

    def drop_connections(self) -> None:
        """Close every open connection server-side (an idle-timeout or restart), and wait."""

        def drop() -> None:
            for w in list(self._writers):
                w.close()

        done = threading.Event()
        self.loop.call_soon_threadsafe(lambda: (drop(), done.set()))
        done.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            srv = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
            self.port = srv.sockets[0].getsockname()[1]

        self.loop.run_until_complete(start())
        ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                t_recv = time.perf_counter_ns()
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                route = path.split("?", 1)[0]
                n = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(n) if n else b""
                body = json.loads(raw) if raw else None
                self.requests.append(
                    {"method": method, "path": path, "headers": headers, "body": body, "t": t_recv}
                )
                if route.endswith("/models"):
                    await self._simple(writer, self.models_status, self._models_body())
                elif route.endswith("/metrics"):
                    await self._simple(writer, 200, self.metrics_text.encode(), "text/plain")
                elif route.endswith("/health"):
                    await self._simple(writer, self.health_status, b"")
                elif route.endswith("/completions"):
                    script = self.queue.popleft() if self.queue else self.default
                    keep = await self._play(writer, script, headers, body, route)
                    if not keep:
                        return
                else:
                    await self._simple(writer, 404, b'{"error": {"message": "not found"}}')
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            try:
                writer.close()
            except Exception:
                pass

    def _models_body(self) -> bytes:
        if self.models_status != 200:
            return json.dumps({"error": {"message": f"status {self.models_status}"}}).encode()
        data = [{"id": m, "object": "model", "owned_by": "test"} for m in self.models]
        return json.dumps({"object": "list", "data": data}).encode()

    async def _simple(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        ctype: str = "application/json",
        extra: dict[str, str] | None = None,
    ) -> None:
        hdrs = "".join(f"{k}: {v}\r\n" for k, v in (extra or {}).items())
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"{hdrs}\r\n".encode()
            + body
        )
        await writer.drain()

    async def _play(
        self, w: asyncio.StreamWriter, s: Script, headers: dict, body: Any, path: str
    ) -> bool:
        chat = path.endswith("/chat/completions")
        if s.close_before_response:
            w.transport.abort()
            return False
        extra = {"x-request-id": f"req-{len(self.requests)}", **s.headers}
        if s.status != 200:
            err = s.body
            if err is None:
                msg = f"scripted status {s.status}"
                if s.echo_auth:
                    msg += f"; you sent Authorization: {headers.get('authorization')}"
                err = json.dumps({"error": {"message": msg, "type": "test"}}).encode()
            await self._simple(w, s.status, err, extra=extra)
            return True
        if s.header_pad:
            extra.update({f"x-pad-{i}": "p" * 1000 for i in range(max(1, s.header_pad // 1010))})
        nl = "\r\n" if s.crlf else "\n"
        split = s.bytewise or s.split_at is not None
        whole: list[bytes] = []  # the response, when written in pieces at the end
        head_len = [0]  # bytes of the response head (split_in_body)

        async def put(data: bytes, drain: bool = True) -> None:
            if split:
                whole.append(data)
            else:
                w.write(data)
                if drain:
                    await w.drain()

        async def flush_split() -> None:
            if not split:
                return
            data = b"".join(whole)
            whole.clear()
            cuts = range(1, len(data)) if s.bytewise else sorted(set(s.split_at or ()))
            if s.split_in_body and not s.bytewise:
                cuts = [c + head_len[0] for c in cuts]
            start = 0
            for cut in [*cuts, len(data)]:
                if not start < cut <= len(data):
                    continue
                w.write(data[start:cut])
                await w.drain()
                start = cut
                if cut < len(data):
                    await asyncio.sleep(s.split_pause_s)

        status_line = s.status_line if s.status_line is not None else "HTTP/1.1 200 OK"
        hdr = f"{status_line}\r\nContent-Type: {s.content_type}\r\n"
        hdr += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
        if s.body is not None:  # a non-stream 200 body (e.g. a JSON error object)
            head = hdr.encode() + f"Content-Length: {len(s.body)}\r\n\r\n".encode()
            head_len[0] = len(head)
            await put(head + s.body)
            await flush_split()
            return True
        streamed = not (body and body.get("stream") is False) or s.stream_anyway
        if not streamed and s.content_type == "text/event-stream":
            return await self._play_json(w, s, hdr, body, chat, put, flush_split)
        hdr += "Transfer-Encoding: chunked\r\n\r\n" if s.chunked else "Connection: close\r\n\r\n"
        await put(hdr.encode(), drain=False)  # goes out with the first event
        pending: list[bytes] = []

        log = self.requests[-1]

        async def send(payload: str, flush: bool = True) -> None:
            ev = f"data: {payload}{nl}{nl}".encode()
            frame = f"{len(ev):x}\r\n".encode() + ev + b"\r\n" if s.chunked else ev
            pending.append(frame)
            if flush and not s.batch:
                await put(b"".join(pending))
                pending.clear()

        model = s.response_model or (body or {}).get("model", "m")
        sent = [0]  # chunks built so far (meta_from)

        def chunk(text: str | None, finish: str | None = None, role: bool = False) -> str:
            if chat:
                delta: dict[str, Any] = {}
                if role:
                    delta["role"] = "assistant"
                    delta["content"] = ""
                elif text is not None:
                    delta["content"] = text
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
                obj = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish}
                obj = "text_completion"
            out: dict[str, Any] = {"id": "c1", "object": obj, "model": model}
            if sent[0] < s.meta_from:
                out["model"] = ""
            elif s.system_fingerprint is not None:
                out["system_fingerprint"] = s.system_fingerprint
            sent[0] += 1
            out["choices"] = [choice]
            return json.dumps(out)

        if s.role_chunk and chat:
            await send(chunk(None, role=True))
        if s.flood:
            ev = "data: " + chunk(None) + nl + nl
            evs = (ev * s.flood).encode()
            step = 64 * 1024 - 64 * 1024 % len(ev)  # whole events per HTTP chunk
            for k in range(0, len(evs), step):
                part = evs[k : k + step]
                pending.append(
                    f"{len(part):x}\r\n".encode() + part + b"\r\n" if s.chunked else part
                )
            await put(b"".join(pending))
            pending.clear()
        if s.ttft_s and not split:
            await asyncio.sleep(s.ttft_s)
        n = len(s.chunks)
        for i, text in enumerate(s.chunks):
            if i and s.itl_s and not split:
                await asyncio.sleep(s.itl_s)
            if s.truncate_after is not None and i >= s.truncate_after:
                await put(b"".join(pending))
                await flush_split()
                w.transport.abort()
                return False
            if s.stall_after is not None and i >= s.stall_after:
                await put(b"".join(pending))
                await flush_split()
                await asyncio.sleep(3600)
                return False
            if s.endless_after is not None and i >= s.endless_after:
                await put(b"".join(pending))
                await flush_split()
                block = b"x" * 65536
                line = b"data: {" + block[7:]
                while True:
                    frame_ = f"{len(line):x}\r\n".encode() + line + b"\r\n" if s.chunked else line
                    w.write(frame_)
                    await w.drain()  # raises once the client has gone
                    if s.endless_pause_s:
                        await asyncio.sleep(s.endless_pause_s)
                    line = block
            if s.invalid_json_at == i:
                await send('{"choices": [ not json')
                continue
            if s.error_event_at == i:
                err = s.error_payload or {"error": {"message": "engine died", "code": 500}}
                await send(json.dumps(err))
                continue
            last = i == n - 1
            if i == 0:
                log["t_first_write"] = time.perf_counter_ns()
            fin = s.finish if (last and not s.finish_separate) else None
            if i == 0 and s.event_pad:
                key = (s.event_pad, chunk(text, fin))
                if key not in self._padded:  # built once: the server is not what is measured
                    obj = json.loads(key[1])
                    obj["pad"] = "p" * s.event_pad
                    self._padded.clear()
                    self._padded[key] = json.dumps(obj)
                await send(self._padded[key], flush=not last or s.finish_separate)
                continue
            await send(chunk(text, fin), flush=not last or s.finish_separate)
        if s.finish and s.finish_separate:
            await send(chunk(None, s.finish), flush=False)
        if s.usage:
            ct = s.completion_tokens if s.completion_tokens is not None else n
            usage: dict[str, Any] = {
                "prompt_tokens": s.prompt_tokens,
                "completion_tokens": ct,
                "total_tokens": s.prompt_tokens + ct,
            }
            if s.cached_tokens is not None:
                usage["prompt_tokens_details"] = {"cached_tokens": s.cached_tokens}
            await send(json.dumps({"id": "c1", "choices": [], "usage": usage}), flush=False)
        if s.done:
            await send("[DONE]", flush=False)
        out = b"".join(pending)
        if s.abort_at_end:
            await put(out)
            await flush_split()
            w.transport.abort()
            return False
        if s.chunked:
            out += b"0\r\n\r\n"
        await put(out)
        await flush_split()
        if not s.chunked:
            w.close()
            return False
        return True

    async def _play_json(self, w, s: Script, hdr: str, body: Any, chat: bool, put, flush) -> bool:
        """One non-streamed completion (``stream: false``), scripted like a stream: its text
        is the chunks joined; ``finish``, ``usage``, ``truncate_after`` (close mid-body),
        ``stall_after`` (send half the body, then nothing), ``event_pad`` apply."""
        if s.ttft_s and not (s.bytewise or s.split_at is not None):
            await asyncio.sleep(s.ttft_s)
        text = "".join(s.chunks)
        model = s.response_model or body.get("model", "m")
        if chat:
            msg: dict[str, Any] = {"role": "assistant", "content": text}
            if s.reasoning is not None:
                msg["reasoning_content"] = s.reasoning
            choice: dict[str, Any] = {"index": 0, "message": msg, "finish_reason": s.finish}
            obj: dict[str, Any] = {"id": "c1", "object": "chat.completion", "created": 1}
        else:
            choice = {"index": 0, "text": text, "finish_reason": s.finish}
            obj = {"id": "c1", "object": "text_completion", "created": 1}
        obj.update(model=model, choices=[choice])
        if s.system_fingerprint is not None:
            obj["system_fingerprint"] = s.system_fingerprint
        if s.usage:
            ct = s.completion_tokens if s.completion_tokens is not None else len(s.chunks)
            obj["usage"] = {
                "prompt_tokens": s.prompt_tokens,
                "completion_tokens": ct,
                "total_tokens": s.prompt_tokens + ct,
            }
        if s.event_pad:
            obj["pad"] = "p" * s.event_pad
        data = json.dumps(obj).encode()
        hdr = hdr.replace(f"Content-Type: {s.content_type}", "Content-Type: application/json")
        if s.json_framing == "chunked":
            head = hdr + "Transfer-Encoding: chunked\r\n\r\n"
            half = len(data) // 2
            out = b"".join(
                f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (data[:half], data[half:])
            )
            out += b"0\r\n\r\n"
        elif s.json_framing == "close":
            head, out = hdr + "Connection: close\r\n\r\n", data
        else:
            head, out = hdr + f"Content-Length: {len(data)}\r\n\r\n", data
        if s.truncate_after is not None or s.stall_after is not None:
            await put(head.encode() + out[: len(out) // 2])
            await flush()
            if s.stall_after is not None:
                await asyncio.sleep(3600)
            w.transport.abort()
            return False
        await put(head.encode() + out)
        await flush()
        if s.json_framing == "close":
            w.close()
            return False
        return True


def make_target(base_url: str, **kw: Any) -> TargetConfig:
    """A TargetConfig for tests (simulator kind, short timeouts, fast retries)."""
    t = TargetConfig(kind=kw.pop("kind", "sim_vllm"), model=kw.pop("model", "test-model"))
    t.base_url = base_url
    t.timeouts.connect_s = 2.0
    t.timeouts.first_token_s = kw.pop("first_token_s", 5.0)
    t.timeouts.total_s = kw.pop("total_s", 10.0)
    t.retry.backoff_base_s = 0.01
    t.retry.backoff_max_s = 0.05
    for k, v in kw.items():
        setattr(t, k, v)
    return t
