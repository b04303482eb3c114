"""The simulator's OpenAI-compatible server: routes, request validation, response streams.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions`` (streaming SSE or not),
``GET /v1/models``, ``GET /health``, ``GET /version``, ``GET /metrics`` (Prometheus, vLLM
names), ``GET|POST /admin/config`` (read / change parameters while running), ``GET|POST
/admin/clock`` (the experiment clock the scenario runs on), and on the vllm profile ``POST
/tokenize`` (vLLM's: at the server root; the prompt count with the chat template).
``send_usage=false`` leaves usage out of every response; ``response_model`` and
``system_fingerprint`` say what served a response, in every chunk and body.

The scenario timeline (:mod:`harness.sim.settings`) runs on the experiment clock: seconds
since the server started (scale 1) until ``POST /admin/clock {"origin_ns", "time_scale"}``
sets experiment time to ``(time.time_ns() - origin_ns) / 1e9 * time_scale`` seconds. Steps
fire in order when experiment time reaches their ``at_s``; setting the clock fires at once
(in order) every step already passed, so a resumed month re-creates its state, and
reschedules the rest. It may be set again: steps that fired stay applied.

Profile ``vllm``: every accepted request becomes an engine :class:`~harness.sim.engine.Sequence`
after ``api_overhead_ms``; one :class:`EngineDriver` steps the engine against the wall clock and
writes a chunk for every sequence that sampled a token. Profile ``cloud``: each stream runs on
its own timer with latencies drawn by :mod:`harness.sim.cloud`, behind the rate limiters.

Streams look like vLLM's: a chat stream's first chunk carries ``role`` with empty content, each
later chunk exactly one token; ``stream_options.include_usage`` adds a final chunk with
``choices: []`` and ``usage``; then ``data: [DONE]``. The vllm profile puts ``finish_reason`` on
the last token's chunk (as vLLM does), the cloud profile sends it in a separate chunk with an
empty delta (as OpenAI does). Errors use OpenAI's body ``{"error": {message, type, param,
code}}`` so the ``openai`` SDK raises its typed exceptions.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import random
import time
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from . import cloud as cloud_model
from .answers import REFUSAL, AnswerBook
from .engine import Engine, Sequence, Step
from .http import Connection, Request, error_body, frame
from .judge import judge_verdict
from .metrics import Metrics
from .params import (
    CloudParams,
    CommonParams,
    ParamError,
    VllmParams,
    commit_params,
    params_to_dict,
    trial_params,
)
from .settings import DAY_S, SimSettings, check_clock
from .tokens import (
    VOCAB_PIECES,
    WALK,
    WALK_MASK,
    Output,
    answer_words,
    block_hashes,
    chat_prompt_tokens,
    message_text,
    natural_length,
    request_rng,
)

log = logging.getLogger(__name__)

ROLES = {"system", "user", "assistant", "tool", "developer", "function"}
DONE = b"data: [DONE]\n\n"
# Behind by more than this, the engine's clock resyncs to the wall clock instead of catching up.
MAX_LAG_S = 0.05

# Pre-encoded SSE chunk tails: a middle token's HTTP chunk is HEXLEN[size] + the stream's
# prefix (id, created, model) + TAIL[word] (the word, the rest of the JSON, CRLF).
CHAT_SUF = b'"},"logprobs":null,"finish_reason":null}]}\n\n'
CMPL_SUF = b'","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'
TAIL_CHAT = tuple(w + CHAT_SUF + b"\r\n" for w in VOCAB_PIECES)
TAIL_CMPL = tuple(w + CMPL_SUF + b"\r\n" for w in VOCAB_PIECES)
HEXLEN = tuple(b"%x\r\n" % n for n in range(4096))


class ApiError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or []


_OPENAI_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    429: "rate_limit_exceeded",
}
_VLLM_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    405: "MethodNotAllowed",
    429: "RateLimitError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
}


@dataclass(slots=True)
class Parsed:
    """A validated completion request."""

    chat: bool
    model: str
    prompt_tokens: int
    tokens: list[str]  # the prompt as tokens (prefix-cache hashing)
    prompt_key: str  # the whole prompt text (content seed)
    match_text: str  # last user message / prompt, for reference answers
    max_tokens: int
    min_tokens: int
    ignore_eos: bool
    stream: bool
    include_usage: bool
    seed: int | None
    temperature: float


def _int_field(body: dict, name: str, lo: int | None = None) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or int(v) != v:
        raise ApiError(400, f"'{name}' must be an integer, got {v!r}", param=name)
    v = int(v)
    if lo is not None and v < lo:
        raise ApiError(400, f"'{name}' must be at least {lo}, got {v}", param=name)
    return v


def _messages(body: dict) -> list[dict[str, Any]]:
    """The request's ``messages``, checked (a non-empty list of role/content objects)."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "'messages' must be a non-empty array", param="messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ApiError(
                400, f"messages[{i}]: expected an object with a valid 'role'", param="messages"
            )
        c = m.get("content")
        if c is not None and not isinstance(c, str | list):
            raise ApiError(
                400, f"messages[{i}].content must be a string or an array", param="messages"
            )
    return msgs


def _bool_field(body: dict, name: str, default: bool) -> bool:
    v = body.get(name, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ApiError(400, f"'{name}' must be a boolean, got {v!r}", param=name)
    return v


def token_id(token: str) -> int:
    """A stable id for one simulated token (what ``/tokenize`` lists); ids < 2**17."""
    return zlib.crc32(token.encode("utf-8", "surrogatepass")) & 0x1FFFF


class SimServer:
    """One simulator instance (one profile, one served model)."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.profile = settings.profile
        self.params = settings.params
        self.seed = settings.seed
        self.metrics = Metrics()
        self.conns: set[Connection] = set()
        self.answers = self._load_answers(self.params)
        self._nonce = itertools.count()  # content draws of accepted unseeded requests
        self._arrivals = itertools.count()  # completion requests, in arrival order
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: asyncio.AbstractServer | None = None
        self.t0 = 0.0
        self.applied: list[bool] = [False] * len(settings.scenario)
        self.fired = 0  # scenario steps (in time order) that have fired, applied or not
        self.fired_at: list[float | None] = [None] * len(settings.scenario)  # experiment s
        self._step_timer: asyncio.TimerHandle | None = None
        self.clock_origin_ns: int | None = None  # None: experiment time = seconds since start
        self.time_scale = 1.0
        self.active = 0  # requests accepted and not finished
        self.engine: Engine | None = None
        self.driver: EngineDriver | None = None
        self.limiter = cloud_model.RateLimiter()
        self._wheel: dict[int, list[Completion]] = {}
        if isinstance(self.params, VllmParams):
            self.engine = Engine(self.params, settings.seed)
        self._check_categories(self.params.category_accuracy, self.answers, "params")
        for step in settings.scenario:
            if "category_accuracy" in step.params and "eval_files" not in step.params:
                self._check_categories(
                    step.params["category_accuracy"],
                    self.answers,
                    f"scenario step at {step.at_s:.10g} s (day {step.at_s / DAY_S:.4g})",
                )
        self.routes = {
            "/v1/chat/completions": ("POST", lambda r, c: self.completion(r, c, True)),
            "/v1/completions": ("POST", lambda r, c: self.completion(r, c, False)),
            "/v1/models": ("GET", self.models),
            "/health": ("GET", lambda r, c: c.send(200, b"", self._hdr(r))),
            "/version": (
                "GET",
                lambda r, c: c.send(200, b'{"version":"0.0.0-harness-sim"}', self._hdr(r)),
            ),
            "/metrics": ("GET", self.metrics_endpoint),
            "/admin/config": ("GET|POST", self.admin),
            "/admin/clock": ("GET|POST", self.admin_clock),
        }
        if self.profile == "vllm":  # vLLM serves it at the root, not under /v1
            self.routes["/tokenize"] = ("POST", self.tokenize)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on ``host:port`` (0: ephemeral); returns the bound address."""
        self.loop = loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: Connection(self.handle, self.conns, self.params.keep_alive_timeout_s),
            host,
            port,
            backlog=4096,
            reuse_address=True,
        )
        self.t0 = loop.time()
        if self.engine is not None:
            self.driver = EngineDriver(self.engine, loop, self._on_step)
        if self.settings.clock_origin_ns is not None:
            self.set_clock(self.settings.clock_origin_ns, self.settings.time_scale)
        else:
            self._advance()
        addr = self.server.sockets[0].getsockname()
        return addr[0], addr[1]

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
        if self.driver is not None:
            self.driver.stop()
        if self._step_timer is not None:
            self._step_timer.cancel()

    # -- the experiment clock and the scenario --------------------------------------------
    def experiment_s(self) -> float:
        """Experiment time in seconds: ``(time.time_ns() - origin_ns) / 1e9 * time_scale``
        once a clock is set, else seconds since the server started."""
        if self.clock_origin_ns is None:
            return self.loop.time() - self.t0 if self.loop is not None else 0.0
        return (time.time_ns() - self.clock_origin_ns) / 1e9 * self.time_scale

    def set_clock(self, origin_ns: int, time_scale: float) -> None:
        """Put the scenario on the experiment clock ``(origin_ns, time_scale)``: steps already
        passed fire now, in order; the next one is rescheduled. Raises ParamError."""
        self.clock_origin_ns, self.time_scale = check_clock(origin_ns, time_scale)
        log.info(
            "experiment clock: origin %d ns, time scale %g (now %.1f s)",
            origin_ns,
            time_scale,
            self.experiment_s(),
        )
        self._advance()

    def _advance(self) -> None:
        """Fire every scenario step that is due (in order), then set one timer for the next:
        one timer at a time, so steps never fire out of order and a new clock reschedules."""
        if self._step_timer is not None:
            self._step_timer.cancel()
            self._step_timer = None
        steps = self.settings.scenario
        while self.fired < len(steps) and steps[self.fired].at_s <= (now := self.experiment_s()):
            self.fired_at[self.fired] = now
            self._apply_scenario(self.fired)
            self.fired += 1
        if self.fired < len(steps) and self.loop is not None:
            wait = (steps[self.fired].at_s - self.experiment_s()) / self.time_scale
            self._step_timer = self.loop.call_later(max(wait, 0.001), self._advance)

    def _apply_scenario(self, i: int) -> None:
        step = self.settings.scenario[i]
        log.info(
            "scenario at %.1f s (day %.2f): %s %s",
            step.at_s,
            step.at_s / DAY_S,
            step.params,
            step.note,
        )
        try:
            self._set_params(step.params)
        except ParamError as exc:  # e.g. a malformed eval file: nothing is changed
            log.error("scenario at %.1f s not applied: %s", step.at_s, exc)
            return
        self.applied[i] = True

    def _set_params(self, updates: dict[str, Any]) -> None:
        """Check ``updates``, load the answer book they need, then commit both (all or
        nothing: a bad eval file leaves the running parameters as they were)."""
        clean, trial = trial_params(self.params, updates, running=True)
        answers = self.answers
        p = self.params
        if (trial.reference_answers, trial.eval_files) != (p.reference_answers, p.eval_files):
            answers = self._load_answers(trial)
        if "category_accuracy" in clean:
            self._check_categories(clean["category_accuracy"], answers, "parameter")
        commit_params(self.params, clean)
        self.answers = answers

    @staticmethod
    def _check_categories(
        category_accuracy: dict[str, float], answers: AnswerBook | None, where: str
    ) -> None:
        """ParamError for a category no loaded eval item has (a typo would change nothing)."""
        if answers is None or not category_accuracy:
            return
        unknown = sorted(set(category_accuracy) - set(answers.by_category))
        if unknown:
            raise ParamError(
                f"{where} 'category_accuracy': unknown categories {unknown}; the eval items "
                f"have {sorted(answers.by_category)}"
            )

    @staticmethod
    def _load_answers(params: CommonParams) -> AnswerBook | None:
        """The answer book ``params`` ask for; ParamError for a malformed eval file."""
        if not params.reference_answers:
            return None
        try:
            book = AnswerBook.load(params.eval_files)
        except ValueError as exc:  # WorkloadError: the file and line at fault
            raise ParamError(f"parameter 'eval_files': {exc}") from None
        log.info("reference answers: %d eval items", len(book))
        return book

    # -- routing ------------------------------------------------------------------------
    @staticmethod
    def _hdr(req: Request) -> list[tuple[str, str]]:
        return [("x-request-id", req.headers.get("x-request-id") or os.urandom(16).hex())]

    def handle(self, req: Request, conn: Connection) -> None:
        route = self.routes.get(req.path.rstrip("/") or "/")
        if route is None:
            return self.error(conn, self._hdr(req), ApiError(404, f"Not Found: {req.path}"))
        methods, fn = route
        if req.method not in methods.split("|"):
            return self.error(
                conn,
                self._hdr(req),
                ApiError(405, f"Method {req.method} not allowed on {req.path}"),
            )
        fn(req, conn)

    def error(self, conn: Connection, hdrs: list[tuple[str, str]], err: ApiError) -> None:
        """Answer ``err`` in OpenAI's error format (vLLM's type names on the vllm profile)."""
        if err.status >= 500:
            etype = "server_error"
        else:
            etype = _OPENAI_TYPES.get(err.status, "invalid_request_error")
        if self.profile == "vllm":
            etype = _VLLM_TYPES.get(err.status, etype)
        code = err.code
        if code is None and self.profile == "vllm":
            code = err.status
        body = error_body(err.message, etype, param=err.param, code=code)
        self.metrics.http_errors[err.status] = self.metrics.http_errors.get(err.status, 0) + 1
        conn.send(err.status, body, hdrs + err.headers)

    def models(self, req: Request, conn: Connection) -> None:
        p = self.params
        owner = "vllm" if self.profile == "vllm" else "harness-sim"
        created = int(time.time())
        data = {
            "object": "list",
            "data": [
                {
                    "id": p.model,
                    "object": "model",
                    "created": created,
                    "owned_by": owner,
                    "root": p.model,
                    "parent": None,
                    "max_model_len": p.max_model_len,
                }
            ],
        }
        conn.send(200, orjson.dumps(data), self._hdr(req))

    def gauges(self) -> dict[str, float]:
        eng = self.engine
        if eng is None:
            return {
                "vllm:num_requests_running": self.active,
                "vllm:num_requests_waiting": 0,
                "vllm:kv_cache_usage_perc": 0.0,
            }
        return {
            "vllm:num_requests_running": len(eng.running),
            "vllm:num_requests_waiting": len(eng.waiting),
            "vllm:kv_cache_usage_perc": eng.kv_usage,
            "vllm:gpu_cache_usage_perc": eng.kv_usage,
        }

    def metrics_endpoint(self, req: Request, conn: Connection) -> None:
        counters: dict[str, float] = {}
        if self.engine is not None:
            counters = {
                "vllm:num_preemptions_total": self.engine.num_preemptions,
                "vllm:prefix_cache_queries_total": self.engine.prefix_queries,
                "vllm:prefix_cache_hits_total": self.engine.prefix_hits,
            }
        text = self.metrics.render(self.params.model, self.gauges(), counters)
        conn.send(200, text, self._hdr(req), "text/plain; version=0.0.4; charset=utf-8")

    def admin_state(self) -> dict[str, Any]:
        now = self.loop.time() if self.loop else 0.0
        return {
            "profile": self.profile,
            "seed": self.seed,
            "uptime_s": now - self.t0,
            "clock": self.clock_state(),
            "params": params_to_dict(self.params),
            "scenario": [
                {
                    "at_s": s.at_s,
                    "at_day": s.at_s / DAY_S,
                    "params": s.params,
                    "note": s.note,
                    "applied": a,
                    "fired_at_s": self.fired_at[i],  # experiment time it fired (None: not yet)
                }
                for i, (s, a) in enumerate(zip(self.settings.scenario, self.applied, strict=True))
            ],
        }

    def clock_state(self) -> dict[str, Any]:
        """The experiment clock: origin (None: seconds since start), scale and time now."""
        now = self.experiment_s()
        return {
            "origin_ns": self.clock_origin_ns,
            "time_scale": self.time_scale,
            "experiment_s": now,
            "experiment_day": now / DAY_S,
        }

    def admin_clock(self, req: Request, conn: Connection) -> None:
        """``POST /admin/clock {"origin_ns": int, "time_scale": float (default 1)}``: put the
        scenario on that experiment clock; answers :meth:`admin_state` (GET: no change)."""
        hdrs = self._hdr(req)
        if req.method == "POST":
            try:
                body = orjson.loads(req.body or b"{}")
            except orjson.JSONDecodeError as exc:
                return self.error(conn, hdrs, ApiError(400, f"invalid JSON body: {exc}"))
            if not isinstance(body, dict) or "origin_ns" not in body:
                return self.error(
                    conn,
                    hdrs,
                    ApiError(
                        400,
                        'expected {"origin_ns": <int UTC ns>, "time_scale": <float>}, '
                        f"got {body!r}",
                        code="invalid_param",
                    ),
                )
            extra = sorted(set(body) - {"origin_ns", "time_scale"})
            if extra:
                return self.error(
                    conn,
                    hdrs,
                    ApiError(
                        400,
                        f"clock: unknown keys {extra}; expected origin_ns, time_scale",
                        code="invalid_param",
                    ),
                )
            try:
                self.set_clock(body["origin_ns"], body.get("time_scale", 1.0))
            except ParamError as exc:
                return self.error(conn, hdrs, ApiError(400, str(exc), code="invalid_param"))
        conn.send(200, orjson.dumps(self.admin_state()), hdrs)

    def admin(self, req: Request, conn: Connection) -> None:
        hdrs = self._hdr(req)
        if req.method == "POST":
            try:
                body = orjson.loads(req.body or b"{}")
            except orjson.JSONDecodeError as exc:
                return self.error(conn, hdrs, ApiError(400, f"invalid JSON body: {exc}"))
            if isinstance(body, dict) and isinstance(body.get("params"), dict) and len(body) == 1:
                body = body["params"]
            try:
                self._set_params(body)
            except ParamError as exc:
                return self.error(conn, hdrs, ApiError(400, str(exc), code="invalid_param"))
            log.info("admin: parameters changed: %s", body)
        conn.send(200, orjson.dumps(self.admin_state()), hdrs)

    def tokenize(self, req: Request, conn: Connection) -> None:
        """``POST /tokenize`` as vLLM serves it: ``{model?, messages, add_generation_prompt
        (true), continue_final_message (false), add_special_tokens (false)}`` or ``{model?,
        prompt, add_special_tokens (true)}`` -> ``{count, max_model_len, tokens}``. The count
        is the one the completion endpoints put in ``usage.prompt_tokens`` (chat template
        included); the simulated tokenizer has no special tokens, so ``add_special_tokens``
        changes nothing."""
        hdrs = self._hdr(req)
        try:
            body = orjson.loads(req.body or b"")
        except orjson.JSONDecodeError as exc:
            return self.error(conn, hdrs, ApiError(400, f"invalid JSON body: {exc}"))
        try:
            tokens = self._tokenize(body)
        except ApiError as err:
            return self.error(conn, hdrs, err)
        out = {
            "count": len(tokens),
            "max_model_len": self.params.max_model_len,
            "tokens": [token_id(t) for t in tokens],
        }
        conn.send(200, orjson.dumps(out), hdrs)

    def _tokenize(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        model = body.get("model")
        if model is not None and model != self.params.model:
            raise ApiError(
                404, f"The model `{model}` does not exist.", param="model", code="model_not_found"
            )
        if "messages" in body:
            msgs = _messages(body)
            gen = _bool_field(body, "add_generation_prompt", True)
            cont = _bool_field(body, "continue_final_message", False)
            _bool_field(body, "add_special_tokens", False)
            if gen and cont:
                raise ApiError(
                    400,
                    "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
                )
            return chat_prompt_tokens(msgs, generation_prompt=gen, continue_final=cont)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ApiError(400, "expected 'messages' (an array) or 'prompt' (a string)")
        _bool_field(body, "add_special_tokens", True)
        return prompt.split()

    # -- completions --------------------------------------------------------------------
    def parse(self, body: Any, chat: bool) -> Parsed:
        """Validate a completion request body, or raise ApiError (400/404)."""
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        p = self.params
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "you must provide a model parameter", param="model")
        if model != p.model:
            raise ApiError(
                404, f"The model `{model}` does not exist.", param="model", code="model_not_found"
            )
        if chat:
            msgs = _messages(body)
            tokens = chat_prompt_tokens(msgs)
            texts = [message_text(m.get("content")) for m in msgs]
            key = "\x1e".join(f"{m.get('role')}\x1f{t}" for m, t in zip(msgs, texts, strict=True))
            users = [t for m, t in zip(msgs, texts, strict=True) if m.get("role") == "user"]
            match = users[-1].strip() if users else ""
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
                prompt = prompt[0]
            if isinstance(prompt, str):
                tokens = prompt.split()
                key = match = prompt.strip()
            elif (
                isinstance(prompt, list)
                and prompt
                and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
            ):
                tokens = [str(t) for t in prompt]
                key, match = " ".join(tokens), ""
            else:
                raise ApiError(
                    400,
                    "'prompt' must be a string, a list of one string, or a list of token ids",
                    param="prompt",
                )
        n_prompt = len(tokens)
        n = _int_field(body, "n", 1)
        if n not in (None, 1):
            raise ApiError(400, "the simulator supports n=1 only", param="n")
        max_tokens = _int_field(body, "max_completion_tokens", 1)
        if max_tokens is None:
            max_tokens = _int_field(body, "max_tokens", 1)
        what = "messages" if chat else "prompt"
        limit = p.max_model_len
        if max_tokens is None:
            if n_prompt >= limit:
                raise ApiError(
                    400,
                    f"This model's maximum context length is {limit} tokens. "
                    f"However, you requested {n_prompt} tokens in the {what}. Please "
                    f"reduce the length of the {what}.",
                    param=what,
                    code="context_length_exceeded",
                )
            max_tokens = limit - n_prompt
        elif n_prompt + max_tokens > limit:
            raise ApiError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {n_prompt + max_tokens} tokens ({n_prompt} in the {what}, "
                f"{max_tokens} in the completion). Please reduce the length of the {what} or "
                "completion.",
                param=what,
                code="context_length_exceeded",
            )
        min_tokens = _int_field(body, "min_tokens", 0) or 0
        if min_tokens > max_tokens:
            raise ApiError(
                400,
                f"min_tokens ({min_tokens}) must be less than or equal to "
                f"max_tokens ({max_tokens})",
                param="min_tokens",
            )
        ignore_eos = body.get("ignore_eos", False)
        stream = body.get("stream", False)
        for name, v in (("ignore_eos", ignore_eos), ("stream", stream)):
            if not isinstance(v, bool) and v is not None:
                raise ApiError(400, f"'{name}' must be a boolean, got {v!r}", param=name)
        opts = body.get("stream_options")
        include_usage = False
        if opts is not None:
            if not isinstance(opts, dict):
                raise ApiError(400, "'stream_options' must be an object", param="stream_options")
            if not stream:
                raise ApiError(
                    400,
                    "Stream options can only be defined when `stream=True`.",
                    param="stream_options",
                )
            include_usage = bool(opts.get("include_usage"))
        temperature = body.get("temperature", 1.0)
        if temperature is None:
            temperature = 1.0
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not (0 <= temperature <= 2)
        ):
            raise ApiError(
                400,
                f"'temperature' must be a number in [0, 2], got {temperature!r}",
                param="temperature",
            )
        seed = _int_field(body, "seed")
        return Parsed(
            chat,
            model,
            n_prompt,
            tokens,
            key,
            match,
            max_tokens,
            min_tokens,
            bool(ignore_eos),
            bool(stream),
            include_usage,
            seed,
            float(temperature),
        )

    def plan_output(self, q: Parsed) -> tuple[Output, str]:
        """The response's tokens and finish reason: deterministic for (server seed, request
        seed, prompt); a fresh draw per request only when sampling with no seed."""
        p = self.params
        salt = (
            q.seed if q.seed is not None else (0 if q.temperature == 0 else f"n{next(self._nonce)}")
        )
        rng = request_rng(self.seed, salt, q.prompt_key)
        fixed = None
        verdict = judge_verdict(q.match_text) if q.match_text else None  # sim as LLM judge
        item = self.answers.lookup(q.match_text) if self.answers and q.match_text else None
        if verdict is not None:
            fixed = answer_words(verdict)
            natural = len(fixed)
        elif item is not None:
            reply = self.answers.reply(
                item,
                self.seed,
                accuracy=p.category_accuracy.get(item.category, p.accuracy),
                item_correlation=p.item_correlation,
                refusal_rate=p.refusal_rate,
                format_break_rate=p.format_break_rate,
                verbosity=p.verbosity,
            )
            fixed = answer_words(reply.text)
            natural = len(fixed) + reply.extra_tokens
        elif p.refusal_rate > 0 and (
            request_rng(self.seed, salt, "refusal", q.prompt_key).random() < p.refusal_rate
        ):
            fixed = answer_words(REFUSAL)
            natural = len(fixed)
        else:
            median = p.output_len_median * p.verbosity
            natural = natural_length(rng, median, p.output_len_sigma)
        if q.ignore_eos:
            n, reason = q.max_tokens, "length"
        else:
            stop_at = max(natural, q.min_tokens)
            if stop_at > q.max_tokens or (q.min_tokens >= q.max_tokens and natural < q.max_tokens):
                n, reason = q.max_tokens, "length"
            else:
                n, reason = stop_at, "stop"
        return Output(n, rng.randrange(1 << 16), fixed), reason

    def completion(self, req: Request, conn: Connection, chat: bool) -> None:
        """Validate, decide injected faults (the request's own generator, from its arrival
        index), apply the rate limits, plan the output, then start the response."""
        index = next(self._arrivals)
        hdrs = self._hdr(req)
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError as exc:
            return self.error(
                conn,
                hdrs,
                ApiError(
                    400,
                    f"We could not parse the JSON body of your request ({exc}). The request "
                    "body must be valid JSON.",
                    code="invalid_json",
                ),
            )
        try:
            q = self.parse(body, chat)
        except ApiError as err:
            return self.error(conn, hdrs, err)
        p = self.params
        now = req.t_received
        if self.engine is not None and not self.engine.fits(q.prompt_tokens, q.max_tokens):
            need = q.prompt_tokens + q.max_tokens
            cap = self.engine.total_blocks * self.engine.block_size
            what = "messages" if chat else "prompt"
            return self.error(
                conn,
                hdrs,
                ApiError(
                    400,
                    f"This request needs {need} tokens of KV cache ({q.prompt_tokens} in the "
                    f"{what}, {q.max_tokens} in the completion), more than the server's whole "
                    f"KV cache holds ({cap} tokens). Please reduce the length of the {what} "
                    "or completion.",
                    param=what,
                    code="context_length_exceeded",
                ),
            )
        rng = request_rng(self.seed, "request", index)  # this request's faults and latencies
        status, injected_429 = cloud_model.draw_rejection(rng, p)
        if injected_429:
            return self.error(conn, hdrs, self._rate_limit_error("requests", p.retry_after_s, now))
        if status is not None:
            err = ApiError(
                status, "The server had an error while processing your request. (simulated fault)"
            )
            if isinstance(p, CloudParams) and p.ttft_ms is None:  # fails after the round trip
                delay = cloud_model.lognormal_ms(rng, p.rtt_ms, p.rtt_sigma)
                self.loop.call_later(delay, self.error, conn, hdrs, err)
                return None
            return self.error(conn, hdrs, err)
        if isinstance(p, CloudParams):  # charged only for requests that are served
            cost = q.prompt_tokens + q.max_tokens
            limited = self.limiter.check(p, cost, now)
            if limited is not None:
                kind, wait = limited
                if math.isinf(wait):
                    return self.error(conn, hdrs, self._too_large_error(kind, cost))
                return self.error(conn, hdrs, self._rate_limit_error(kind, wait, now))
        output, reason = self.plan_output(q)
        stall_at, truncate_at = cloud_model.draw_stream_faults(rng, p, output.n)
        self.metrics.prompt_tokens += q.prompt_tokens
        resp = Completion(self, conn, q, output, reason, hdrs, now, rng)
        self.active += 1
        if self.engine is not None:
            resp.start_engine()
        else:
            resp.start_cloud(cloud_model.Faults(None, False, stall_at, truncate_at))

    def _too_large_error(self, kind: str, cost: int) -> ApiError:
        """A request bigger than a whole minute's allowance: 429 like OpenAI's "Request too
        large", without Retry-After (waiting never helps)."""
        p: CloudParams = self.params  # type: ignore[assignment]
        unit, limit, asked = (
            ("TPM", p.tpm_limit, cost) if kind == "tokens" else ("RPM", p.rpm_limit, 1)
        )
        return ApiError(
            429,
            f"Request too large for {p.model} on {kind} per min ({unit}): Limit {limit:g}, "
            f"Requested {asked}. This request can never fit within the limit; reduce the input "
            "or max_tokens.",
            code="rate_limit_exceeded",
        )

    def _rate_limit_error(self, kind: str, wait: float, now: float) -> ApiError:
        wait = max(wait, 0.001) if math.isfinite(wait) else 60.0
        headers = [
            ("retry-after", str(max(1, math.ceil(wait)))),
            ("retry-after-ms", str(max(1, round(wait * 1000)))),
        ]
        p = self.params
        rem_r, rem_t = self.limiter.remaining(now)
        if isinstance(p, CloudParams) and p.rpm_limit is not None:
            headers += [
                ("x-ratelimit-limit-requests", str(int(p.rpm_limit))),
                ("x-ratelimit-remaining-requests", str(rem_r)),
            ]
        if isinstance(p, CloudParams) and p.tpm_limit is not None:
            headers += [
                ("x-ratelimit-limit-tokens", str(int(p.tpm_limit))),
                ("x-ratelimit-remaining-tokens", str(rem_t)),
            ]
        unit = "RPM" if kind == "requests" else "TPM"
        msg = (
            f"Rate limit reached for {p.model} on {kind} per min ({unit}). Please try again "
            f"in {wait:.3f}s."
        )
        return ApiError(429, msg, code="rate_limit_exceeded", headers=headers)

    # -- cloud stream timers ------------------------------------------------------------
    def at(self, t: float, stream: Completion) -> None:
        """Run ``stream._tick()`` at loop time ``t`` (to the nearest millisecond, the event
        loop's timer resolution): streams due in the same millisecond share one timer."""
        slot = round(t * 1000.0)
        due = self._wheel.get(slot)
        if due is None:
            self._wheel[slot] = [stream]
            self.loop.call_at(slot / 1000.0, self._fire, slot)
        else:
            due.append(stream)

    def _fire(self, slot: int) -> None:
        for stream in self._wheel.pop(slot):
            try:
                stream._tick()
            except Exception:  # one broken stream never stops the others due now
                stream.fail()

    # -- engine callbacks ---------------------------------------------------------------
    def _on_step(self, step: Step, sampled: list[Sequence], end: float) -> None:
        """Write the token each sampled sequence got (the hot loop: middle tokens of a
        stream go straight to the transport as pre-encoded bytes)."""
        now = self.loop.time()
        self.metrics.generation_tokens += len(sampled)
        decoded = 0
        for seq in sampled:
            c = seq.user
            i = seq.num_output - 1
            try:
                if i:
                    decoded += 1
                    if c.fast_from <= i < c.last:
                        c.write_token(i)
                        continue
                c.emit(i, now)
            except Exception:  # one broken stream never stops the others in this step
                c.fail()
        if decoded:
            self.metrics.itl.observe(step.duration, decoded)


class EngineDriver:
    """Runs an :class:`Engine` against the wall clock: one timer per step, absolute deadlines
    (a step ends ``duration`` after the previous one ended, not after the timer fired), so the
    engine clock does not drift; more than ``MAX_LAG_S`` behind, it resyncs to the wall."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, on_step: Any) -> None:
        self.engine = engine
        self.loop = loop
        self.on_step = on_step
        self.vnow = 0.0
        self.step: Step | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.resyncs = 0

    def submit(self, seq: Sequence) -> bool:
        """Queue ``seq``; starts stepping if the engine was idle. ``False``: refused (it
        could never fit in the KV cache)."""
        if not self.engine.add(seq):
            return False
        if self.step is None:
            self.vnow = self.loop.time()
            self._next()
        return True

    def _next(self) -> None:
        step = self.engine.schedule(self.vnow)
        self.step = step
        if step is not None:
            self.handle = self.loop.call_at(self.vnow + step.duration, self._end)

    def _end(self) -> None:
        step = self.step
        end = self.vnow + step.duration
        now = self.loop.time()
        if now - end > MAX_LAG_S:
            self.resyncs += 1
            end = now
        sampled, _ = self.engine.finish_step(step, end)
        self.vnow = end
        try:
            self.on_step(step, sampled, end)
        finally:
            self._next()

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.step = None


class Completion:
    """One accepted completion request: writes its stream (or its JSON body) as tokens come."""

    __slots__ = (
        "srv",
        "conn",
        "q",
        "output",
        "reason",
        "hdrs",
        "t0",
        "rid",
        "created",
        "pre",
        "suf",
        "seq",
        "handle",
        "next_t",
        "i",
        "faults",
        "t_last",
        "done",
        "rng",
        "fast_from",
        "last",
        "off",
        "plen",
        "tail",
        "served",
        "fingerprint",
    )

    def __init__(
        self,
        srv: SimServer,
        conn: Connection,
        q: Parsed,
        output: Output,
        reason: str,
        hdrs: list[tuple[str, str]],
        t0: float,
        rng: random.Random,
    ) -> None:
        self.srv = srv
        self.conn = conn
        self.q = q
        self.output = output
        self.reason = reason
        self.hdrs = hdrs
        self.t0 = t0
        self.rid = ("chatcmpl-" if q.chat else "cmpl-") + os.urandom(12).hex()
        self.created = int(time.time())
        self.seq: Sequence | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.next_t = 0.0
        self.i = 0
        self.faults: cloud_model.Faults | None = None
        self.t_last = t0
        self.done = False
        self.rng = rng  # this request's latency draws
        p = srv.params
        self.served = p.response_model or p.model  # what the responses say served them
        self.fingerprint = p.system_fingerprint
        model = orjson.dumps(self.served).decode()
        if self.fingerprint is not None:  # after "model", as OpenAI sends it
            model += ',"system_fingerprint":' + orjson.dumps(self.fingerprint).decode()
        head = orjson.dumps(self.rid).decode(), model
        if q.chat:
            self.pre = (
                f'data: {{"id":{head[0]},"object":"chat.completion.chunk","created":'
                f'{self.created},"model":{head[1]},"choices":[{{"index":0,"delta":'
                '{"content":"'
            ).encode()
            self.suf = CHAT_SUF
            self.tail = TAIL_CHAT
        else:
            self.pre = (
                f'data: {{"id":{head[0]},"object":"text_completion","created":'
                f'{self.created},"model":{head[1]},"choices":[{{"index":0,"text":"'
            ).encode()
            self.suf = CMPL_SUF
            self.tail = TAIL_CMPL
        # Tokens fast_from .. last-1 are vocabulary words written by the hot loops.
        self.last = output.n - 1
        self.fast_from = max(1, output.n_fixed) if q.stream else output.n + 1
        self.off = output.offset
        self.plen = len(self.pre)

    # -- starting -----------------------------------------------------------------------
    def start_engine(self) -> None:
        srv, q = self.srv, self.q
        p: VllmParams = srv.params  # type: ignore[assignment]
        hashes = block_hashes(q.tokens, p.block_size) if p.enable_prefix_caching else []
        self.seq = Sequence(0, q.prompt_tokens, self.output.n, hashes, self.t0, user=self)
        if q.stream:
            self.conn.start_stream(self, self.hdrs)
        else:
            self.conn.owner = self
        srv.loop.call_at(self.t0 + p.api_overhead_ms / 1000.0, self._submit)

    def _submit(self) -> None:
        if not self.done and not self.srv.driver.submit(self.seq):
            log.error("%s: refused by the engine (cannot fit in the KV cache)", self.rid)
            self.conn.abort()  # tells on_disconnect
            self.on_disconnect()

    def start_cloud(self, faults: cloud_model.Faults) -> None:
        srv = self.srv
        p: CloudParams = srv.params  # type: ignore[assignment]
        self.faults = faults
        self.next_t = self.t0 + cloud_model.draw_ttft(self.rng, p, self.q.prompt_tokens)
        if faults.stall_at == 0:
            self.next_t += p.stall_s
        if self.q.stream:
            self.conn.start_stream(self, self.hdrs)
            srv.at(self.next_t, self)
        else:
            self.conn.owner = self
            # The whole body is ready when the last token would have been streamed.
            end = self.next_t
            for k in range(1, self.output.n):
                end += cloud_model.draw_itl(self.rng, p)
                if faults.stall_at == k:
                    end += p.stall_s
            self.handle = srv.loop.call_at(end, self._cloud_body, self.next_t)

    # -- cloud timers -------------------------------------------------------------------
    def _tick(self) -> None:
        if self.done:
            return
        conn = self.conn
        if conn.paused:  # client not reading: wait for the transport to drain
            conn.on_resume.append(self._resume)
            return
        i = self.i
        f = self.faults
        if i == f.truncate_at:
            self._truncate()
            return
        srv = self.srv
        now = srv.loop.time()
        m = srv.metrics
        m.generation_tokens += 1
        if self.fast_from <= i < self.last:
            self.write_token(i)
            m.itl.observe(now - self.t_last)
            self.t_last = now
        else:
            self.emit(i, now)
        self.i = i = i + 1
        if i < self.output.n:
            p = srv.params
            self.next_t += (
                p.itl_ms / 1000.0 if p.itl_jitter <= 0 else cloud_model.draw_itl(self.rng, p)
            )
            if f.stall_at == i:
                self.next_t += p.stall_s
            srv.at(self.next_t, self)

    def _resume(self) -> None:
        if not self.done:
            self.next_t = max(self.next_t, self.srv.loop.time())
            self.srv.at(self.next_t, self)

    def _truncate(self) -> None:
        self.done = True
        self.srv.active -= 1
        self.srv.metrics.success["abort"] += 1
        self.conn.abort()

    def _cloud_body(self, t_first: float) -> None:
        if self.done:
            return
        try:
            self._cloud_body_now(t_first)
        except Exception:
            self.fail()

    def _cloud_body_now(self, t_first: float) -> None:
        f = self.faults
        srv = self.srv
        srv.metrics.ttft.observe(t_first - self.t0)
        if f.truncate_at is not None:  # half a body, then the connection closes
            body = self._body()
            head = self.conn._head(
                200,
                [("content-type", "application/json"), *self.hdrs],
                f"content-length: {len(body)}\r\n\r\n",
            )
            if not self.conn.closed:
                self.conn.transport.write(head + body[: len(body) // 2])
            self._truncate()
            return
        srv.metrics.generation_tokens += self.output.n
        self.i = self.output.n
        self._finish(srv.loop.time())

    # -- tokens -------------------------------------------------------------------------
    def write_token(self, i: int) -> None:
        """Stream token ``i`` (any but the last) as one HTTP chunk: the one place mid-stream
        chunks are framed. Vocabulary tokens splice pre-encoded bytes; a chat stream's token 0
        comes after the role chunk. Nothing is written to a closed connection."""
        conn = self.conn
        if conn.closed:
            return
        if self.fast_from <= i < self.last:
            tail = self.tail[WALK[(self.off + i) & WALK_MASK]]
            size = self.plen + len(tail) - 2
            data = (HEXLEN[size] if size < 4096 else b"%x\r\n" % size) + self.pre + tail
        else:
            data = frame(self.pre + self.output.piece(i) + self.suf)
            if i == 0 and self.q.chat:
                data = self._role_chunk() + data
        if conn.paused:
            conn.write(data)  # drops a client that stopped reading
        else:
            conn.transport.write(data)

    def fail(self) -> None:
        """This stream broke (an exception while writing it): drop its connection and free
        what it holds, leaving every other stream alone."""
        log.exception("%s: stream failed; dropping its connection", self.rid)
        try:
            self.conn.abort(hard=True)  # tells on_disconnect
        except Exception:  # the transport may be gone already
            pass
        self.on_disconnect()

    def emit(self, i: int, now: float) -> None:
        """Token ``i`` is out (at ``now``): stream it; after the last, finish the response."""
        srv = self.srv
        if i == 0:
            srv.metrics.ttft.observe(now - self.t0)
        elif self.seq is None:
            srv.metrics.itl.observe(now - self.t_last)
        self.t_last = now
        last = i == self.output.n - 1
        if self.q.stream:
            if not last:
                self.write_token(i)
            else:
                self.done = True
                first = self._role_chunk() if i == 0 and self.q.chat else b""
                self.conn.end_stream(first + self._final_chunks(self.output.piece(i)))
                self._account(now)
        elif last:
            self._finish(now)

    def _role_chunk(self) -> bytes:
        return frame(
            self.pre[: -len(b'"content":"')] + b'"role":"assistant","content":""},"logprobs":null,'
            b'"finish_reason":null}]}\n\n'
        )

    def _usage(self) -> dict[str, Any]:
        q = self.q
        cached = (self.seq.cached_tokens or 0) if self.seq is not None else 0
        n = self.output.n
        return {
            "prompt_tokens": q.prompt_tokens,
            "completion_tokens": n,
            "total_tokens": q.prompt_tokens + n,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    def _final_chunks(self, piece: bytes) -> bytes:
        reason = self.reason.encode()
        if self.srv.profile == "vllm":  # finish_reason on the last token's chunk
            suf = self.suf.replace(b'"finish_reason":null', b'"finish_reason":"%b"' % reason, 1)
            out = frame(self.pre + piece + suf)
        else:  # OpenAI: the last token, then an empty delta with the finish_reason
            out = frame(self.pre + piece + self.suf)
            empty = self.pre + self.suf.replace(
                b'"finish_reason":null', b'"finish_reason":"%b"' % reason, 1
            )
            if self.q.chat:
                empty = empty.replace(b'"delta":{"content":""}', b'"delta":{}', 1)
            out += frame(empty)
        if self.q.include_usage and self.srv.params.send_usage:
            obj = "chat.completion.chunk" if self.q.chat else "text_completion"
            usage: dict[str, Any] = {
                "id": self.rid,
                "object": obj,
                "created": self.created,
                "model": self.served,
            }
            if self.fingerprint is not None:
                usage["system_fingerprint"] = self.fingerprint
            usage["choices"] = []
            usage["usage"] = self._usage()
            out += frame(b"data: " + orjson.dumps(usage) + b"\n\n")
        return out + frame(DONE)

    def _body(self) -> bytes:
        text = self.output.text()
        if self.q.chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": self.reason,
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": self.reason}
            obj = "text_completion"
        out: dict[str, Any] = {
            "id": self.rid,
            "object": obj,
            "created": self.created,
            "model": self.served,
        }
        if self.fingerprint is not None:
            out["system_fingerprint"] = self.fingerprint
        out["choices"] = [choice]
        if self.srv.params.send_usage:
            out["usage"] = self._usage()
        return orjson.dumps(out)

    def _finish(self, now: float) -> None:
        self.done = True
        self.conn.send(200, self._body(), self.hdrs)
        self._account(now)

    def _account(self, now: float) -> None:
        m = self.srv.metrics
        m.e2e.observe(now - self.t0)
        m.success[self.reason] += 1
        self.srv.active -= 1

    def on_disconnect(self) -> None:
        """The client went away: abort the sequence (freeing its KV) or cancel the timer."""
        if self.done:
            return
        self.done = True
        self.srv.active -= 1
        self.srv.metrics.success["abort"] += 1
        if self.seq is not None and self.srv.engine is not None:
            self.srv.engine.abort(self.seq)
        if self.handle is not None:
            self.handle.cancel()
