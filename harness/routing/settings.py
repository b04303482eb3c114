"""The ``policy`` config node: one hybrid routing policy (rules, escalation, failover, budget).

The same :class:`PolicyConfig` drives the live router arm (``target: router``,
harness/routing/live.py) and the offline what-if replay (harness/routing/replay.py); both
build one :class:`harness.routing.policy.RouterPolicy` from it. Every setting is a field
here with its default, and :func:`check_policy` reads each one (none is declared and
ignored); :func:`policy_from_config` types a plain mapping (a YAML file, a manifest's
``config``), naming the key of any mistake.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: Closed set of escalation validators (see harness/routing/policy.py ``VALIDATORS``).
VALIDATOR_NAMES = ("empty", "refusal", "json_schema", "regex", "max_length", "min_length")
#: Error types that may trigger a failover (the request schema's closed set, less ``cancelled``).
FAILOVER_ERRORS = (
    "rate_limited",
    "server_error",
    "client_error",
    "timeout",
    "connection",
    "bad_response",
    "empty",
    "truncated",
)
FIRST = ("small", "large")
ON_EXHAUSTED = ("selfhost", "reject")
#: The scraped gauge both drivers read as the small arm's queue depth (``queue_depth_max``).
QUEUE_METRIC = "vllm:num_requests_waiting"
#: A scraped queue depth older than this (wall seconds between the scrape and the decision:
#: the scraper stopped or fails) is not a signal, live and in the replay alike.
QUEUE_DEPTH_MAX_AGE_S = 30.0


@dataclass
class RulesConfig:
    """Static rules: a request matching any of them is *sensitive* and never leaves the small
    (self-hosted) arm, whatever the failover, breaker or budget say."""

    sensitive_tags: list[str] = field(default_factory=lambda: ["pii", "regulated"])
    #: regular expressions searched in the prompt text (Python ``re``), e.g. an email address
    #: ``[\w.+-]+@[\w-]+\.[\w.]+`` or an SSN-like ``\b\d{3}-\d{2}-\d{4}\b``
    sensitive_patterns: list[str] = field(default_factory=list)


@dataclass
class EscalationConfig:
    """Small-first escalation: the small arm's answer failing a validator goes to the large arm
    (once: the large arm's answer is final)."""

    enabled: bool = True
    #: applied in this order; the first failing one names the escalation reason
    validators: list[str] = field(default_factory=lambda: ["empty", "refusal"])
    json_schema: dict[str, Any] | None = None  # ``json_schema``: a JSON value valid against it
    regex: str | None = None  # ``regex``: the pattern is found in the output
    min_chars: int | None = None  # ``min_length``: at least this many characters (stripped)
    max_chars: int | None = None  # ``max_length``: at most this many characters (stripped)


@dataclass
class FailoverConfig:
    """Overload failover from the small to the large arm, and the small arm's circuit breaker.

    Times are experiment-clock seconds (``RouteRequest.t_s``, ``Attempt.t_end_s``), never
    the wall clock, so the live router and the replay evolve the same state. On an
    accelerated clock (``load.time_scale`` > 1) ``breaker_window_s`` and ``cooldown_s``
    shrink in wall time by that factor (a 30 s window at time_scale 3600 is 8 ms of wall
    time, a handful of requests at most): set them in experiment seconds accordingly (e.g.
    hours for a simulated month). Latencies (``ttft_budget_s``, ``breaker_ttft_s``) are wall
    seconds, as the requests measure them.

    What the policy sees of the small arm is one attempt per *leg* (the request's visit to an
    arm, that arm's client retries included): its final outcome, its TTFT and E2E from the
    leg's start (for the first leg, the arrival), in both drivers (live:
    :class:`harness.routing.live.RouterClient`; replay: the arm's recorded logical
    request)."""

    enabled: bool = True
    on_errors: list[str] = field(
        default_factory=lambda: ["rate_limited", "server_error", "timeout", "connection"]
    )
    #: the small arm's first token is due within this many seconds of the leg's start (the
    #: arm's retries included), else the request goes to the large arm; the leg is reported
    #: abandoned at the budget (live, each attempt is also cut at the budget from its send).
    #: Needs a streamed small arm: with ``stream: false`` nothing arrives before the whole body,
    #: so the deadline cannot be enforced live (a config error). At or below
    #: ``breaker_ttft_s`` the TTFT breaker cannot fire (abandoned legs record TTFT = budget):
    #: a warning (``policy_warnings``)
    ttft_budget_s: float | None = None
    #: requests waiting on the small arm (scraped ``vllm:num_requests_waiting``) above which new
    #: requests go to the large arm
    queue_depth_max: float | None = None
    #: circuit breaker over the small arm's attempts that ended in the last ``breaker_window_s``:
    #: it opens when at least ``breaker_min_requests`` ended there and either the
    #: ``breaker_quantile`` of their TTFT exceeds ``breaker_ttft_s`` (null: not judged on TTFT)
    #: or the share of overload failures (``on_errors``, TTFT budget exceeded) reaches
    #: ``breaker_error_rate`` (null: not judged on errors); open, every non-sensitive request
    #: goes to the large arm for ``cooldown_s``, then it closes with an empty window
    breaker_window_s: float = 60.0
    breaker_quantile: float = 0.99
    breaker_ttft_s: float | None = None
    breaker_min_requests: int = 20
    breaker_error_rate: float | None = 0.5
    cooldown_s: float = 30.0


@dataclass
class BudgetConfig:
    """A daily cap on API (large arm) spend, per experiment-clock day (``RouteRequest.day``)."""

    daily_api_usd: float | None = None  # null: no cap
    #: once the day's spend reaches the cap: ``selfhost`` sends everything to the small arm;
    #: ``reject`` rejects what would have gone to the large arm (escalations are dropped: the
    #: small answer stands)
    on_exhausted: str = "selfhost"


@dataclass
class PolicyConfig:
    """A hybrid routing policy between two arms of a run (or two underlying targets)."""

    small: str | None = None  # the self-hosted arm (null: the run's self-hosted arm)
    large: str | None = None  # the cloud arm (null: the run's API arm)
    first: str = "small"  # small: small-first (escalate / fail over); large: cloud-first
    rules: RulesConfig = field(default_factory=RulesConfig)
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    failover: FailoverConfig = field(default_factory=FailoverConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)


def _fail(key: str, msg: str) -> Exception:
    from harness.config import ConfigError

    return ConfigError(f"{key}: {msg}")


def _number(x: object) -> bool:
    return (
        isinstance(x, int | float) and not isinstance(x, bool) and x == x and abs(x) != float("inf")
    )


def _positive_or_none(v: object, key: str, *, zero: bool = False) -> None:
    if v is None:
        return
    if not _number(v) or v < 0 or (v == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise _fail(key, f"must be null or a number {bound}, got {v!r}")


def _str_list(v: object, key: str) -> list[str]:
    if not isinstance(v, list | tuple) or not all(isinstance(s, str) for s in v):
        raise _fail(key, f"must be a list of strings, got {v!r}")
    return list(v)


def _regex(pattern: str, key: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise _fail(key, f"{pattern!r} is not a valid regular expression ({exc})") from None


def policy_warnings(cfg: PolicyConfig, where: str = "policy") -> list[str]:
    """Settings that are valid but defeat one another (one line each, naming the keys)."""
    f = cfg.failover
    out: list[str] = []
    if (
        f.enabled
        and f.ttft_budget_s is not None
        and f.breaker_ttft_s is not None
        and f.ttft_budget_s <= f.breaker_ttft_s
    ):
        out.append(
            f"{where}.failover.ttft_budget_s ({f.ttft_budget_s:g} s) is not above "
            f"breaker_ttft_s ({f.breaker_ttft_s:g} s): legs over the budget are abandoned and "
            "record TTFT = budget, so the TTFT breaker can never fire (only sensitive "
            "requests, which have no budget, could trip it); the error-rate breaker still "
            "counts budget misses"
        )
    return out


_WARNED: set[str] = set()


def check_policy(
    cfg: PolicyConfig, where: str = "policy", arms: list[str] | None = None
) -> PolicyConfig:
    """Every setting of ``cfg`` is usable (and, given ``arms``, the arms it names exist and
    differ); a ConfigError names the key otherwise. :func:`policy_warnings` are logged (once
    each per process); the policy's state carries them too."""
    for key in ("small", "large"):
        v = getattr(cfg, key)
        if v is not None and (not isinstance(v, str) or not v):
            raise _fail(f"{where}.{key}", f"must be an arm name or null, got {v!r}")
        if v is not None and arms is not None and v not in arms:
            raise _fail(f"{where}.{key}", f"{v!r} is not an arm (arms: {', '.join(arms)})")
    if cfg.small is not None and cfg.small == cfg.large:
        raise _fail(f"{where}.large", f"is the small arm too ({cfg.small!r})")
    if cfg.first not in FIRST:
        raise _fail(f"{where}.first", f"must be one of {', '.join(FIRST)}, got {cfg.first!r}")

    r = cfg.rules
    _str_list(r.sensitive_tags, f"{where}.rules.sensitive_tags")
    for i, p in enumerate(_str_list(r.sensitive_patterns, f"{where}.rules.sensitive_patterns")):
        _regex(p, f"{where}.rules.sensitive_patterns[{i}]")

    e = cfg.escalation
    k = f"{where}.escalation"
    if not isinstance(e.enabled, bool):
        raise _fail(f"{k}.enabled", f"must be true or false, got {e.enabled!r}")
    names = _str_list(e.validators, f"{k}.validators")
    bad = [n for n in names if n not in VALIDATOR_NAMES]
    if bad:
        raise _fail(f"{k}.validators", f"unknown validator(s) {', '.join(map(repr, bad))} "
                                       f"(known: {', '.join(VALIDATOR_NAMES)})")  # fmt: skip
    if len(set(names)) != len(names):
        raise _fail(f"{k}.validators", f"lists a validator twice: {names}")
    if e.json_schema is not None and not isinstance(e.json_schema, dict):
        raise _fail(f"{k}.json_schema", f"must be a JSON schema (mapping) or null, got "
                                        f"{type(e.json_schema).__name__}")  # fmt: skip
    if "json_schema" in names and e.json_schema is None:
        raise _fail(f"{k}.json_schema", "the json_schema validator needs a schema")
    if e.json_schema is not None:
        from harness.workloads.eval import schema_key, schema_validator

        try:
            schema_validator(schema_key(e.json_schema))
        except Exception as exc:  # jsonschema's SchemaError and friends
            raise _fail(f"{k}.json_schema", f"is not a valid JSON schema ({exc})") from None
    if e.regex is not None:
        if not isinstance(e.regex, str):
            raise _fail(f"{k}.regex", f"must be a regular expression or null, got {e.regex!r}")
        _regex(e.regex, f"{k}.regex")
    if "regex" in names and e.regex is None:
        raise _fail(f"{k}.regex", "the regex validator needs a pattern")
    for key, needed_by in (("min_chars", "min_length"), ("max_chars", "max_length")):
        v = getattr(e, key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise _fail(f"{k}.{key}", f"must be null or an integer >= 0, got {v!r}")
        if needed_by in names and v is None:
            raise _fail(f"{k}.{key}", f"the {needed_by} validator needs {key}")
    if e.min_chars is not None and e.max_chars is not None and e.min_chars > e.max_chars:
        raise _fail(f"{k}.min_chars", f"{e.min_chars} is above max_chars {e.max_chars}")

    f = cfg.failover
    k = f"{where}.failover"
    if not isinstance(f.enabled, bool):
        raise _fail(f"{k}.enabled", f"must be true or false, got {f.enabled!r}")
    bad = [t for t in _str_list(f.on_errors, f"{k}.on_errors") if t not in FAILOVER_ERRORS]
    if bad:
        raise _fail(f"{k}.on_errors", f"unknown error type(s) {', '.join(map(repr, bad))} "
                                      f"(known: {', '.join(FAILOVER_ERRORS)})")  # fmt: skip
    _positive_or_none(f.ttft_budget_s, f"{k}.ttft_budget_s")
    _positive_or_none(f.queue_depth_max, f"{k}.queue_depth_max", zero=True)
    _positive_or_none(f.breaker_ttft_s, f"{k}.breaker_ttft_s")
    if not (_number(f.breaker_window_s) and f.breaker_window_s > 0):
        raise _fail(f"{k}.breaker_window_s", f"must be a number > 0, got {f.breaker_window_s!r}")
    if not (_number(f.breaker_quantile) and 0 < f.breaker_quantile < 1):
        raise _fail(f"{k}.breaker_quantile", f"must be in (0, 1), got {f.breaker_quantile!r}")
    n = f.breaker_min_requests
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise _fail(f"{k}.breaker_min_requests", f"must be an integer >= 1, got {n!r}")
    if f.breaker_error_rate is not None and not (
        _number(f.breaker_error_rate) and 0 < f.breaker_error_rate <= 1
    ):
        raise _fail(f"{k}.breaker_error_rate", f"must be null or in (0, 1], got "
                                               f"{f.breaker_error_rate!r}")  # fmt: skip
    if not (_number(f.cooldown_s) and f.cooldown_s >= 0):
        raise _fail(f"{k}.cooldown_s", f"must be a number >= 0, got {f.cooldown_s!r}")

    b = cfg.budget
    _positive_or_none(b.daily_api_usd, f"{where}.budget.daily_api_usd", zero=True)
    if b.on_exhausted not in ON_EXHAUSTED:
        raise _fail(f"{where}.budget.on_exhausted", f"must be one of {', '.join(ON_EXHAUSTED)}, "
                                                    f"got {b.on_exhausted!r}")  # fmt: skip
    for w in policy_warnings(cfg, where):
        if w not in _WARNED:
            _WARNED.add(w)
            log.warning("%s", w)
    return cfg


def _check_keys(raw: dict[Any, Any], cls: type, where: str) -> None:
    """Unknown keys of ``raw`` (recursively, through nested config dataclasses) name the key,
    the closest known one and the known keys."""
    import dataclasses
    import difflib
    import typing

    from harness.config import ConfigError

    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key, value in raw.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}.{key}: unknown key{hint} (known keys: {', '.join(known)})")
        sub = hints[key]
        if dataclasses.is_dataclass(sub) and isinstance(value, dict):
            _check_keys(value, sub, f"{where}.{key}")  # type: ignore[arg-type]


def policy_from_config(raw: object, where: str = "policy") -> PolicyConfig:
    """A typed, checked :class:`PolicyConfig` from a plain mapping (None: the defaults).
    Unknown keys and bad values raise a ConfigError naming the key."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from harness.config import ConfigError, omegaconf_error

    if raw is None:
        raw = {}
    if isinstance(raw, DictConfig):
        raw = OmegaConf.to_container(raw, resolve=True)
    if isinstance(raw, PolicyConfig):
        return check_policy(raw, where)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    _check_keys(raw, PolicyConfig, where)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(PolicyConfig), raw)
        cfg: PolicyConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        msg = str(omegaconf_error(exc))
        raise ConfigError(msg if msg.startswith(where) else f"{where}.{msg}") from None
    return check_policy(cfg, where)
