"""Per-attempt measurement state shared by both clients, and its conversion to a record.

A client fills an :class:`Attempt` while it streams (timestamps as ``perf_counter_ns`` ints,
text pieces, usage, status); :func:`build_record` turns it into a
:class:`~harness.record.schema.RequestRecord` with every timing column derived consistently
through :mod:`harness.targets.timing`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from harness.config import OUTPUT_TEXT_MODES
from harness.record.schema import RequestRecord
from harness.targets import clock, timing
from harness.targets.errors import AttemptError, clip_message
from harness.targets.tokens import ServerTokenizer, count_tokens
from harness.workloads.base import WorkItem


class Attempt:
    """Mutable measurements of one attempt. Timestamps are perf-counter ns (see ``clock``)."""

    __slots__ = (
        "t_scheduled_wall",
        "t_sent",
        "slot_wait",
        "t_error",
        "times",
        "pieces",
        "reasoning",
        "usage",
        "finish_reason",
        "done",
        "http_status",
        "server_request_id",
        "retry_after_s",
        "error_type",
        "error_message",
        "response_model",
        "system_fingerprint",
        "meta_open",
    )

    def __init__(self, t_scheduled_wall: int) -> None:
        self.t_scheduled_wall = t_scheduled_wall
        self.t_sent: int = 0
        self.slot_wait = False  # waited for a connection slot (ended before t_sent if failed)
        self.t_error: int | None = None
        self.times: list[int] = []  # arrival of each content chunk
        self.pieces: list[str] = []  # content text of each content chunk
        self.reasoning: list[str] = []  # reasoning deltas (timed, counted, not in output_text)
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.done = False  # saw data: [DONE]
        self.http_status: int | None = None
        self.server_request_id: str | None = None
        self.retry_after_s: float | None = None
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.response_model: str | None = None  # the ``model`` the server says served it
        self.system_fingerprint: str | None = None
        self.meta_open = True  # still looking for them (see note_meta)

    def fail(self, error_type: str, message: str, http_status: int | None = None) -> None:
        self.t_error = clock.perf_ns()
        self.error_type = error_type
        self.error_message = message
        if http_status is not None:
            self.http_status = http_status

    def check_complete(self, streamed: bool = True) -> None:
        """Called when a 2xx stream has ended: empty and cut-short streams become errors.

        A stream is complete only when it carried a ``finish_reason``: ``[DONE]`` alone is not
        enough (llama.cpp, for one, ends a cut-short stream with ``[DONE]`` and no finish
        reason). A cut-short stream keeps what arrived (text, token counts) for billing.
        ``streamed=False``: the same rules for one JSON body (see :func:`apply_body`).
        """
        if not streamed:
            if not self.times:
                raise AttemptError("empty", "response body carried no content")
            if self.finish_reason is None:
                raise AttemptError("truncated", "response body carried no finish_reason")
            return
        if not self.times:
            raise AttemptError("empty", "stream ended without any content token")
        if self.finish_reason is None:
            n = len(self.times)
            if self.done:
                msg = f"stream ended with [DONE] but no finish_reason after {n} content chunks"
            else:
                msg = f"stream ended without [DONE] or finish_reason after {n} content chunks"
            raise AttemptError("truncated", msg)


def cut_short_message(att: Attempt) -> str:
    """The message for a connection that closed before the stream ended (both clients)."""
    return f"connection closed mid-stream after {len(att.times)} content chunks"


def note_meta(att: Attempt, model: Any, fingerprint: Any) -> None:
    """Record what the server says served the response: its ``model`` and
    ``system_fingerprint``, from the first chunk (or the body) that names a model. OpenAI and
    vLLM send both, when there is a fingerprint, in every chunk, so the search ends there
    (one flag test per later chunk on the hot path); a chunk before it with an empty model
    (a prompt-filter chunk, say) can still give the fingerprint."""
    if fingerprint and att.system_fingerprint is None and type(fingerprint) is str:
        att.system_fingerprint = fingerprint
    if model and type(model) is str:
        att.response_model = model
        att.meta_open = False


def apply_chunk(att: Attempt, obj: Any, t: int, chat: bool) -> None:
    """Fold one parsed SSE JSON chunk (OpenAI chat/completions shape) into ``att``."""
    if type(obj) is not dict:
        raise AttemptError("bad_response", f"SSE data is not a JSON object: {str(obj)[:200]}")
    if att.meta_open:
        note_meta(att, obj.get("model"), obj.get("system_fingerprint"))
    choices = obj.get("choices")
    if choices:
        c0 = choices[0]
        if chat:
            d = c0.get("delta")
            if d:
                text = d.get("content")
                if text:
                    att.times.append(t)
                    att.pieces.append(text)
                else:
                    r = d.get("reasoning_content") or d.get("reasoning")
                    if r and type(r) is str:
                        att.times.append(t)
                        att.reasoning.append(r)
        else:
            text = c0.get("text")
            if text:
                att.times.append(t)
                att.pieces.append(text)
        fr = c0.get("finish_reason")
        if fr:
            att.finish_reason = fr
    elif is_error_chunk(obj):
        raise stream_error(obj)
    u = obj.get("usage")
    if u:
        att.usage = u


def apply_body(att: Attempt, obj: Any, t: int, chat: bool) -> None:
    """Fold one non-streamed JSON response (``chat.completion`` or ``text_completion``) into
    ``att``: all of it arrived at ``t``, so it is one content "chunk" (TTFT equals E2E)."""
    if type(obj) is not dict:
        raise AttemptError("bad_response", f"response body is not a JSON object: {str(obj)[:200]}")
    note_meta(att, obj.get("model"), obj.get("system_fingerprint"))
    choices = obj.get("choices")
    if not choices:
        if is_error_chunk(obj):
            raise stream_error(obj, where="error object in response body")
        raise AttemptError("bad_response", f"response body has no choices: {str(obj)[:200]}")
    c0 = choices[0] if type(choices) is list else None
    if type(c0) is not dict:
        raise AttemptError("bad_response", f"response body has no choices: {str(obj)[:200]}")
    text: Any
    reasoning: Any = None
    if chat:
        m = c0.get("message")
        m = m if type(m) is dict else {}
        text = m.get("content")
        reasoning = m.get("reasoning_content") or m.get("reasoning")
    else:
        text = c0.get("text")
    content = False
    if text and type(text) is str:
        att.pieces.append(text)
        content = True
    if reasoning and type(reasoning) is str:
        att.reasoning.append(reasoning)
        content = True
    if content:
        att.times.append(t)
    fr = c0.get("finish_reason")
    if fr:
        att.finish_reason = fr
    u = obj.get("usage")
    if u:
        att.usage = u


def is_error_chunk(obj: dict[str, Any]) -> bool:
    """A choice-less chunk that reports an error: OpenAI ``{"error": {...}}`` or vLLM
    ``{"object": "error", ...}`` (the test both clients apply)."""
    return bool(obj.get("error")) or obj.get("object") == "error"


def stream_error(obj: dict[str, Any] | str, where: str = "error event in stream") -> AttemptError:
    """An error object sent inside a 2xx stream (OpenAI ``{"error": ...}``, vLLM ``object=error``,
    or the bare error dict or message): 429 rate_limited, other 4xx client_error, else
    server_error. ``where`` starts the message."""
    err: Any = obj.get("error", obj) if isinstance(obj, dict) else obj
    if not isinstance(err, dict):
        err = {"message": str(err)}
    code = err.get("code")
    msg = str(err.get("message") or err)
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    status = code if isinstance(code, int) and not isinstance(code, bool) else None
    if status == 429:
        etype = "rate_limited"
    elif status is not None and 400 <= status < 500:
        etype = "client_error"
    else:
        etype = "server_error"
    return AttemptError(etype, f"{where}: {msg}")


class RecordContext:
    """Everything a record needs that is fixed for one client (identity, modes, secrets)."""

    __slots__ = (
        "run_id",
        "experiment",
        "arm",
        "target_kind",
        "model",
        "client",
        "worker",
        "output_text",
        "secrets",
        "count_fallback",
        "force_output_length",
        "streamed",
        "server_counts",
        "_prompt_counts",
    )

    def __init__(
        self,
        *,
        run_id: str,
        experiment: str,
        arm: str,
        target_kind: str,
        model: str,
        client: str,
        worker: int,
        output_text: str,
        secrets: tuple[str, ...],
        count_fallback: str = "tokenizer",
        force_output_length: bool = False,
        streamed: bool = True,
        server_counts: ServerTokenizer | None = None,
    ) -> None:
        if output_text not in OUTPUT_TEXT_MODES:
            raise ValueError(f"output_text: {output_text!r} is not one of {OUTPUT_TEXT_MODES}")
        self.run_id = run_id
        self.experiment = experiment
        self.arm = arm
        self.target_kind = target_kind
        self.model = model
        self.client = client
        self.worker = worker
        self.output_text = output_text
        self.secrets = secrets
        self.count_fallback = count_fallback
        self.force_output_length = force_output_length  # target sends ignore_eos/min_tokens
        self.streamed = streamed
        self.server_counts = server_counts  # vLLM /tokenize (None: the server has none)
        self._prompt_counts: dict[str, tuple[int | None, str | None]] = {}

    def prompt_count(self, item: WorkItem) -> tuple[int | None, str | None]:
        """``(prompt tokens, prompt_tokens_source)`` for a response without usage.

        The server's own count (``server_counts``: vLLM ``POST /tokenize``, chat template
        included; source ``tokenize``) when it has one, else the local tokenizer's estimate
        (``tokenizer``; with ``count_fallback: tokenizer`` only), else ``(None, None)``.
        Cached per ``sample_id`` (items repeat), so the server is asked once per prompt.
        """
        key = item.sample_id
        hit = self._prompt_counts.get(key)
        if hit is not None:
            return hit
        n = self.server_counts.count(item) if self.server_counts is not None else None
        if n is not None:
            out: tuple[int | None, str | None] = (n, "tokenize")
        elif self.count_fallback == "tokenizer":
            n = count_tokens(item.prompt_text(), self.model)
            out = (n, "tokenizer" if n is not None else None)
        else:
            out = (None, None)
        if len(self._prompt_counts) > 100_000:
            self._prompt_counts.clear()
        self._prompt_counts[key] = out
        return out


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def build_record(
    ctx: RecordContext,
    att: Attempt,
    item: WorkItem,
    *,
    request_id: str,
    attempt: int,
    pair_id: str | None,
    phase: str,
    t_virtual: int | None,
    t_arrival: int | None = None,
) -> RequestRecord:
    """Turn one finished attempt into a row; every derived column comes from ``timing``.

    ``t_arrival`` is the logical request's original scheduled time (attempt 0's
    ``t_scheduled``; default this attempt's), so ``t_end - t_arrival`` is the whole wait of a
    retried request: failed attempts and backoffs included.
    """
    ok = att.error_type is None
    times = att.times
    t_sent = clock.wall_ns(att.t_sent) if att.t_sent else None
    t_sched = att.t_scheduled_wall
    t_first = clock.wall_ns(times[0]) if times else None
    if ok:
        t_end = clock.wall_ns(times[-1])
    elif att.t_error is not None and (att.t_sent or att.slot_wait):
        t_end = clock.wall_ns(att.t_error)  # a wait for a connection slot ended it: still an end
    else:
        t_end = None

    # Token counts: the server's usage, else a local tokenizer, else one token per chunk;
    # without usage the prompt is counted by the server's /tokenize when it has one.
    prompt_tokens = completion_tokens = cached_tokens = None
    source = prompt_source = None
    usage = att.usage
    if usage and _int(usage.get("completion_tokens")) is not None:
        source = "usage"
        completion_tokens = _int(usage.get("completion_tokens"))
        prompt_tokens = _int(usage.get("prompt_tokens"))
        if prompt_tokens is not None:
            prompt_source = "usage"
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict):
            cached_tokens = _int(details.get("cached_tokens"))
    elif times or (ok or att.http_status is not None and 200 <= att.http_status < 300):
        n = None
        if times and ctx.count_fallback == "tokenizer":
            n = count_tokens("".join(att.reasoning) + "".join(att.pieces), ctx.model)
        if n is not None:
            source = "tokenizer"
            completion_tokens = n
        else:
            source = "chunks"
            completion_tokens = len(times)
        # the prompt was sent and billed whatever counted the output
        prompt_tokens, prompt_source = ctx.prompt_count(item)

    text: str | None = None
    if ctx.output_text != "drop" and (att.pieces or ok):
        text = "".join(att.pieces)
        if ctx.output_text == "hash":
            text = hashlib.sha256(text.encode("utf-8")).hexdigest()

    return RequestRecord(
        run_id=ctx.run_id,
        experiment=ctx.experiment,
        arm=ctx.arm,
        target_kind=ctx.target_kind,
        model=ctx.model,
        client=ctx.client,
        worker=ctx.worker,
        request_id=request_id,
        attempt=attempt,
        pair_id=pair_id,
        sample_id=item.sample_id,
        workload=item.workload or None,
        slice=item.slice,
        conversation_id=item.conversation_id,
        turn=item.turn,
        phase=phase,
        status="ok" if ok else "error",
        t_scheduled=t_sched,
        t_sent=t_sent,
        t_first_token=t_first,
        t_end=t_end,
        t_virtual=t_virtual if t_virtual is not None else t_sched,
        t_arrival=t_arrival if t_arrival is not None else t_sched,
        queue_delay_s=timing.queue_delay_s(t_sent, t_sched) if t_sent is not None else None,
        ttft_s=timing.ttft_s(t_first, t_sent) if t_first is not None and t_sent else None,
        e2e_s=timing.e2e_s(t_end, t_sent) if t_end is not None and t_sent else None,
        ttft_sched_s=timing.ttft_s(t_first, t_sched) if t_first is not None else None,
        e2e_sched_s=timing.e2e_s(t_end, t_sched) if t_end is not None else None,
        # all tokens in one chunk (or one read): the time between tokens was not observed, so
        # TPOT is null, never 0 (which would pass any TPOT bound)
        tpot_s=(
            timing.tpot_s(times[0], times[-1], completion_tokens)
            if times and times[-1] > times[0]
            else None
        ),
        itl_s=timing.itl_s(times) if times else None,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=cached_tokens,
        tokens_source=source,
        prompt_tokens_source=prompt_source,
        requested_max_tokens=item.max_tokens,
        forced_length=bool(ctx.force_output_length and item.force_length),
        streamed=ctx.streamed,
        http_status=att.http_status,
        error_type=att.error_type,
        error_message=clip_message(att.error_message, ctx.secrets) if att.error_message else None,
        retry_after_s=att.retry_after_s,
        server_request_id=att.server_request_id,
        finish_reason=att.finish_reason,
        output_text=text,
        reference_answer=item.reference_answer,
        response_model=att.response_model,
        system_fingerprint=att.system_fingerprint,
    )
