"""Simulator parameters: one typed dataclass per profile, every default documented here.

``VllmParams`` models ``vllm serve meta-llama/Llama-3.1-8B-Instruct`` on one H100 (bf16):
TTFT about 60-120 ms at low load (about 75 ms for a 1000-token prompt, 115 ms for 2000),
inter-token latency 10-12 ms at low load, rising with the batch (about 25 ms at 256 running sequences), a saturation knee past
``max_num_seqs`` / the KV-cache capacity. ``CloudParams`` models a hosted API reached over the
internet: a lognormal network round trip, provider queueing with a heavy tail, per-token decode
time with jitter, rate limits and injected faults.

Fixed latency (client benchmarks, timing tests): profile ``cloud`` with ``ttft_ms=50``,
``itl_ms=5``, ``itl_jitter=0``: every stream's first token comes ``ttft_ms`` after the request
was read and each next one ``itl_ms`` later, with no network/queue/prefill component.

Parameters are changed three ways, all validated by :func:`apply_params`: ``--param k=v`` on
the command line, ``params:`` in a YAML config file (plus a ``scenario:`` timeline), and
``POST /admin/config`` while running. Unknown names and bad values raise :class:`ParamError`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

PROFILES = ("vllm", "cloud")


class ParamError(ValueError):
    """A bad simulator parameter; the message names the parameter, the value and the fix."""


@dataclass
class CommonParams:
    """Parameters shared by both profiles."""

    model: str = "sim-model"  # the one served model name; others get 404 model_not_found
    max_model_len: int = 8192  # context length: prompt + max_tokens above it -> 400
    # Natural output length (no ignore_eos / min_tokens): lognormal with this median and
    # log-space sigma, at least 1, capped by max_tokens (finish_reason "length" when capped).
    output_len_median: float = 200.0
    output_len_sigma: float = 0.6
    # Reference answers: a prompt (last user message, stripped) equal to an eval item's prompt
    # is answered with the item's answer with probability `accuracy` (fixed per seed + item),
    # otherwise with a plausible wrong answer.
    reference_answers: bool = True
    eval_files: list[str] = field(default_factory=lambda: ["workloads/eval/*.jsonl"])
    accuracy: float = 0.9
    # Per-category accuracy (eval item ``category`` -> share right) overriding ``accuracy`` for
    # that category's items, with the same fixed draw per (seed, item): lowering a category's
    # accuracy only flips its items to wrong. A change replaces the whole mapping; a category
    # no loaded eval item has is refused (see harness/sim/server.py).
    category_accuracy: dict[str, float] = field(default_factory=dict)
    # Share of an item's right/wrong latent that is the item's own hardness, the same on every
    # server and seed (and its `difficulty` when the eval file gives one): errors then
    # correlate across arms. 0: independent draws per server. See harness/sim/answers.py.
    item_correlation: float = 0.5
    # Behaviour drifts of eval answers, each a fixed draw per (seed, item): refusals ("I can't
    # help with that."; non-eval requests too), broken formats (prose around the answer,
    # truncated JSON), and a multiplier of the reply length (non-eval: of the natural median).
    refusal_rate: float = 0.0
    format_break_rate: float = 0.0
    verbosity: float = 1.0
    # Injected faults, decided per request when it arrives.
    error_rate: float = 0.0  # share of requests answered with a 5xx from error_statuses
    error_statuses: list[int] = field(default_factory=lambda: [500, 503])
    rate_limited_rate: float = 0.0  # share answered 429 regardless of the rate limits
    retry_after_s: float = 1.0  # Retry-After sent with injected 429s
    # An idle keep-alive connection is closed after this many seconds (uvicorn / vLLM: 5);
    # a change applies to connections opened afterwards. 0 keeps idle connections open.
    keep_alive_timeout_s: float = 5.0
    # false: responses carry no usage (no final usage chunk even with include_usage, no
    # "usage" key in a non-streaming body), like a proxy that strips it; clients then count
    # tokens themselves (the vllm profile's POST /tokenize still counts prompts).
    send_usage: bool = True
    # What the responses say served them: ``response_model`` replaces the requested model name
    # in the ``model`` field of every chunk and body (a provider's dated snapshot behind an
    # alias, e.g. "sim-cloud-mini-2026-01"); ``system_fingerprint`` ("fp_...") is sent in
    # every chunk and body as OpenAI sends it. None: the requested model, no fingerprint.
    # A change applies to requests accepted afterwards.
    response_model: str | None = None
    system_fingerprint: str | None = None


@dataclass
class VllmParams(CommonParams):
    """Continuous-batching engine model of vLLM (one scheduler loop, one token per running
    sequence per step). Step time (ms) = step_base_ms + decode_per_seq_ms * decoding sequences
    + prefill_per_token_ms * prefill tokens in the step + attn_per_ctx_token_ms * context tokens
    of the batch, times (1 + step_jitter * N(0, 1))."""

    model: str = "sim-llama-3.1-8b-instruct"
    max_num_seqs: int = 256  # running sequences at most (vLLM --max-num-seqs)
    max_num_batched_tokens: int = 8192  # per-step token budget; longer prefills are chunked
    block_size: int = 16  # KV block size in tokens; prefix-cache granularity (restart only)
    # KV capacity in tokens (restart only): 8B bf16 uses 128 KiB per token; an H100 at
    # gpu_memory_utilization 0.9 leaves about 50 GB for KV, about 400k tokens. At least
    # max_model_len (vLLM refuses to start otherwise); a request whose prompt + max_tokens
    # does not fit in the whole cache is answered 400.
    kv_cache_tokens: int = 400_000
    enable_prefix_caching: bool = True
    step_base_ms: float = 10.0  # fixed cost of a step (weights read once per step)
    decode_per_seq_ms: float = 0.06  # added per decoding sequence in the step
    prefill_per_token_ms: float = 0.04  # added per uncached prompt token computed in the step
    attn_per_ctx_token_ms: float = 0.00002  # added per token of context attended in the step
    step_jitter: float = 0.02  # relative std-dev of a step's duration
    api_overhead_ms: float = 20.0  # HTTP + tokenization before a request reaches the engine


@dataclass
class CloudParams(CommonParams):
    """A hosted API over the internet. TTFT = rtt + queue + prefill_per_token_ms * prompt
    tokens (or exactly ``ttft_ms`` when set); each next token after itl_ms * (1 + jitter)."""

    model: str = "sim-cloud-mini"
    rtt_ms: float = 150.0  # network round trip: lognormal median ...
    rtt_sigma: float = 0.3  # ... and log-space sigma (typical 100-300 ms)
    queue_ms: float = 40.0  # provider queueing: lognormal median ...
    queue_sigma: float = 1.2  # ... with a heavy tail (p99 about 16x the median)
    prefill_per_token_ms: float = 0.02
    itl_ms: float = 12.0  # mean time between output tokens
    itl_jitter: float = 0.3  # relative std-dev of each gap (gamma distributed); 0 = exact
    ttft_ms: float | None = None  # set: TTFT exactly this (no rtt/queue/prefill)
    rpm_limit: float | None = None  # requests per minute (token bucket, a minute of burst)
    tpm_limit: float | None = None  # tokens per minute, charged prompt + max_tokens
    stall_rate: float = 0.0  # share of streams that stop sending for stall_s mid-stream
    stall_s: float = 60.0
    truncate_rate: float = 0.0  # share of streams whose connection closes before [DONE]


PARAM_CLASSES: dict[str, type[CommonParams]] = {"vllm": VllmParams, "cloud": CloudParams}
# Structural parameters the running engine cannot change (admin/scenario reject them).
RESTART_ONLY = frozenset({"block_size", "kv_cache_tokens"})


def default_params(profile: str) -> CommonParams:
    """The profile's parameters with their defaults."""
    if profile not in PARAM_CLASSES:
        raise ParamError(f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}")
    return PARAM_CLASSES[profile]()


def param_names(profile: str) -> list[str]:
    """Every parameter name the profile accepts."""
    return [f.name for f in dataclasses.fields(PARAM_CLASSES[profile])]


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """``value`` converted to the annotated type ``tp``, or a ParamError naming ``name``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ParamError(f"parameter {name!r}: expected a mapping, got {value!r}")
        return {
            _coerce(f"{name}.{k}", k, key_tp): _coerce(f"{name}.{k}", v, val_tp)
            for k, v in value.items()
        }
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ParamError(f"parameter {name!r}: expected a list, got {value!r}")
        return [_coerce(name, v, item_tp) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "true",
            "1",
            "yes",
            "on",
            "false",
            "0",
            "no",
            "off",
        ):
            return value.lower() in ("true", "1", "yes", "on")
        raise ParamError(f"parameter {name!r}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ParamError(f"parameter {name!r}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ParamError(f"parameter {name!r}: expected an integer, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ParamError(f"parameter {name!r}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ParamError(f"parameter {name!r}: expected a number, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ParamError(f"parameter {name!r}: expected a number, got {value!r}") from None
        if not math.isfinite(f):
            raise ParamError(f"parameter {name!r}: expected a finite number, got {value!r}")
        return f
    if tp is str:
        if not isinstance(value, str | int | float):
            raise ParamError(f"parameter {name!r}: expected a string, got {value!r}")
        return str(value)
    return value


_RATES = (
    "accuracy",
    "item_correlation",
    "refusal_rate",
    "format_break_rate",
    "error_rate",
    "rate_limited_rate",
    "stall_rate",
    "truncate_rate",
)
_POSITIVE_INTS = (
    "max_model_len",
    "max_num_seqs",
    "max_num_batched_tokens",
    "block_size",
    "kv_cache_tokens",
)


def _check(params: CommonParams) -> None:
    """Range checks across the fields of ``params``."""
    for name in _RATES:
        v = getattr(params, name, None)
        if v is not None and not 0.0 <= v <= 1.0:
            raise ParamError(f"parameter {name!r}: expected a share in [0, 1], got {v!r}")
    for name in _POSITIVE_INTS:
        v = getattr(params, name, None)
        if v is not None and v < 1:
            raise ParamError(f"parameter {name!r}: expected a positive integer, got {v!r}")
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ParamError(f"parameter {f.name!r}: expected a finite number, got {v!r}")
        if isinstance(v, float) and v < 0 and f.name not in _RATES:
            raise ParamError(f"parameter {f.name!r}: expected a value >= 0, got {v!r}")
    for cat, v in params.category_accuracy.items():
        if not 0.0 <= v <= 1.0:
            raise ParamError(
                f"parameter 'category_accuracy': {cat!r}: expected a share in [0, 1], got {v!r}"
            )
    for status in params.error_statuses:
        if not 500 <= status <= 599:
            raise ParamError(f"parameter 'error_statuses': {status} is not a 5xx status")
    if params.error_rate > 0 and not params.error_statuses:
        raise ParamError(
            "parameter 'error_statuses': must list at least one 5xx status when error_rate > 0"
        )
    if params.output_len_median < 1:
        raise ParamError("parameter 'output_len_median': expected >= 1")
    if not 0 < params.verbosity <= 100:
        raise ParamError(
            f"parameter 'verbosity': expected a multiplier in (0, 100], got {params.verbosity!r}"
        )
    if isinstance(params, VllmParams):
        if params.kv_cache_tokens < params.block_size:
            raise ParamError("parameter 'kv_cache_tokens': must hold at least one block")
        if params.max_model_len > params.kv_cache_tokens:
            raise ParamError(
                f"parameter 'max_model_len': {params.max_model_len} exceeds the KV cache "
                f"({params.kv_cache_tokens} kv_cache_tokens); one full-length request must fit"
            )


def is_numeric_param(profile: str, name: str) -> bool:
    """Whether ``name`` is a number (int or float, optionally None) on ``profile``: the
    parameters a scenario ramp may interpolate."""
    tp = typing.get_type_hints(PARAM_CLASSES[profile]).get(name)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = inner[0] if len(inner) == 1 else None
    return tp in (int, float)


def validate_updates(profile: str, updates: dict[str, Any], *, running: bool = False) -> dict:
    """``updates`` coerced to the profile's types; raises ParamError for unknown names, bad
    values, and (``running``) restart-only parameters."""
    if not isinstance(updates, dict):
        raise ParamError(f"parameters must be a mapping of name -> value, got {updates!r}")
    cls = PARAM_CLASSES[profile]
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for name, value in updates.items():
        if name not in hints:
            raise ParamError(
                f"unknown parameter {name!r} for profile {profile!r}; "
                f"known: {', '.join(sorted(hints))}"
            )
        if running and name in RESTART_ONLY:
            raise ParamError(f"parameter {name!r} cannot change while running; restart instead")
        out[name] = _coerce(name, value, hints[name])
    return out


def trial_params(
    params: CommonParams, updates: dict[str, Any], *, running: bool = False
) -> tuple[dict[str, Any], CommonParams]:
    """(clean updates, a checked copy of ``params`` with them applied); ``params`` is left as
    it is. Raises ParamError like :func:`apply_params`."""
    profile = next(p for p, c in PARAM_CLASSES.items() if isinstance(params, c))
    clean = validate_updates(profile, updates, running=running)
    trial = dataclasses.replace(params, **clean)
    _check(trial)
    return clean, trial


def commit_params(params: CommonParams, clean: dict[str, Any]) -> None:
    """Apply updates returned by :func:`trial_params` to ``params`` in place."""
    for name, value in clean.items():
        setattr(params, name, value)


def apply_params(params: CommonParams, updates: dict[str, Any], *, running: bool = False) -> None:
    """Validate ``updates`` and apply them to ``params`` in place, all or nothing."""
    clean, _ = trial_params(params, updates, running=running)
    commit_params(params, clean)


def params_to_dict(params: CommonParams) -> dict[str, Any]:
    """A JSON-ready copy of ``params``."""
    return dataclasses.asdict(params)
