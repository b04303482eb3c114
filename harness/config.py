"""Structured experiment configs: typed dataclasses registered with Hydra's ConfigStore.

Every setting lives here once, with its default. Hydra composes ``configs/config.yaml``
against these schemas, so a misspelled key fails with a message naming it.

Arms are free-form in YAML (``arms: {cloud: {target: sim_cloud}}``): each arm names a target
preset in ``configs/target/NAME.yaml`` and may override any :class:`TargetConfig` field.
The ``arms`` node is registered open (not struct), so ``arms.NAME.FIELD=value`` works from the
command line without a ``+``; :func:`resolve_arm` merges schema defaults <- preset <- arm
overrides in struct mode, so a misspelled arm field still fails, naming ``arms.NAME.FIELD``.

:func:`validate_config` checks a whole composed config before a run starts: keys unknown to
the schema (also those added with ``+``), types, and the values that would otherwise fail only
when the report is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import socket
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import MISSING, DictConfig, OmegaConf

from harness.canary.settings import CanaryConfig
from harness.cost.settings import PricingConfig, SelfHostConfig, TrafficConfig
from harness.judge.settings import JudgeConfig, check_judge
from harness.quality.llm_judge import QualityConfig, check_quality

#: ``router``: a hybrid arm routing each request to one of two other arms (harness/routing)
TARGET_KINDS = ("sim_vllm", "sim_cloud", "openai", "vllm", "router")
CLIENTS = ("auto", "lean", "sdk")
OUTPUT_TEXT_MODES = ("keep", "hash", "drop")


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message names the key and the value."""


@dataclass
class TimeoutConfig:
    connect_s: float = 5.0  # TCP/TLS connect
    first_token_s: float = 60.0  # send -> first content chunk
    total_s: float = 600.0  # send -> end of stream


@dataclass
class RetryConfig:
    max_attempts: int = 3  # total attempts per logical request, the first included
    backoff_base_s: float = 0.5  # exponential backoff: base * 2**(attempt-1), capped
    backoff_max_s: float = 20.0
    jitter: float = 0.1  # +- fraction of the backoff, drawn from the run's seeded RNG
    honor_retry_after: bool = True  # a Retry-After header replaces the computed backoff
    retry_on: list[str] = field(
        default_factory=lambda: ["rate_limited", "server_error", "timeout", "connection"]
    )


@dataclass
class SimConfig:
    """Settings for the embedded simulator (targets ``sim_vllm`` / ``sim_cloud``)."""

    config_file: str | None = None  # YAML with simulator parameters (see harness/sim)
    params: dict[str, Any] = field(default_factory=dict)  # overrides of simulator parameters
    seed: int = 0


@dataclass
class LaunchConfig:
    """Optional managed ``vllm serve`` subprocess for a ``vllm`` target."""

    enabled: bool = False
    command: list[str] = field(default_factory=lambda: ["vllm", "serve"])
    model: str | None = None  # defaults to the target's model
    args: list[str] = field(default_factory=list)  # e.g. ["--max-num-seqs", "256"]
    port: int = 8000
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 900.0
    log_file: str | None = None  # defaults to <run_dir>/vllm-<arm>.log


@dataclass
class TargetConfig:
    """One endpoint: an OpenAI-compatible API, a vLLM server or an embedded simulator."""

    kind: str = "sim_vllm"  # one of TARGET_KINDS
    model: str = "sim-llama-3.1-8b-instruct"
    base_url: str | None = None  # e.g. https://api.openai.com/v1 ; simulators fill it in
    api_key_env: str | None = None  # name of the env var holding the key; never the key
    api: str = "chat"  # chat | completions
    client: str = "auto"  # auto | lean | sdk
    force_output_length: bool = True  # send ignore_eos/min_tokens (vLLM and simulators)
    stream: bool = True  # false: one JSON body per request (ttft_s = e2e_s, streamed=False)
    # Largest SSE event (or non-streamed body) a client accepts; a bigger one ends the attempt
    # as bad_response. 16 MiB: far above any real chunk (KBs even with logprobs), and bounds
    # a hostile stream's memory and the CPU of parsing one event (~25 ms).
    max_event_bytes: int = 16 * 1024 * 1024
    extra_body: dict[str, Any] = field(default_factory=dict)  # merged into each request body
    temperature: float = 0.0
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    max_connections: int = 4096  # per arm across all load processes (split between them)
    scrape_metrics: bool | None = None  # None: on for vllm and simulators, off for openai
    metrics_interval_s: float = 2.0
    preflight: bool = True
    sim: SimConfig = field(default_factory=SimConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    # kind router: the routing policy, a mapping of harness.routing.settings.PolicyConfig
    # fields; ``small`` / ``large`` name two other (non-router) arms of the experiment, whose
    # endpoints, timeouts and retries the router's attempts use
    router: dict[str, Any] | None = None


@dataclass
class LengthDist:
    """A token-length distribution: fixed | uniform | normal | lognormal, clipped to [min, max]."""

    dist: str = "fixed"
    mean: float = 128
    std: float = 0
    min: int = 1
    max: int = 32768


@dataclass
class WorkloadConfig:
    name: str = "synthetic"
    kind: str = "synthetic"  # synthetic | jsonl | multiturn | eval
    path: str | None = None  # jsonl / eval: file, relative to the project root or absolute
    input_tokens: LengthDist = field(default_factory=lambda: LengthDist(mean=256))
    output_tokens: LengthDist = field(default_factory=lambda: LengthDist(mean=64))
    shared_prefix_tokens: int = 0  # length of a shared system prefix
    shared_prefix_share: float = 0.0  # fraction of requests that start with it
    num_prefixes: int = 1
    turns_min: int = 2  # multiturn: turns per conversation
    turns_max: int = 6
    max_tokens: int | None = None  # jsonl/eval items without their own max_tokens
    num_items: int = 1000  # synthetic: size of the item pool (cycled)
    shuffle: bool = True
    seed: int = 0
    # added by the workloads module:
    force_length: bool | None = None  # None: True for synthetic/multiturn, False for jsonl/eval
    slice_by: str = "auto"  # synthetic: auto | prefix | input_len | none (see README)
    interleave: int = 4  # multiturn: conversations whose turns alternate in item order


@dataclass
class LoadConfig:
    mode: str = "open"  # open (arrival schedule) | closed (fixed concurrency)
    arrival: str = "poisson"  # constant | poisson | gamma | trace
    rate: float = 2.0  # requests/s per logical arrival (mirrored: each arm gets this rate)
    burstiness: float = 1.0  # gamma shape; 1 = Poisson, <1 burstier, >1 smoother
    trace_path: str | None = None  # arrival=trace: file of timestamps (s) or JSONL with "t"
    concurrency: int | None = None  # closed: users; open: in-flight cap per arm, all workers
    duration_s: float = 60.0
    max_requests: int | None = None  # stop after this many arrivals (requests per arm)
    warmup_s: float = 0.0  # rows flagged phase=warmup
    cooldown_s: float = 0.0  # rows flagged phase=cooldown (last seconds of the run)
    shape: str = "none"  # none | ramp | steps | diurnal (multiplies rate over time)
    ramp_from: float = 0.0  # ramp: rate fraction at t=0 ... 1 at the end
    steps: list[list[float]] = field(default_factory=list)  # [[t_s, rate], ...]
    diurnal_period_s: float = 86400.0
    diurnal_min_frac: float = 0.3  # trough rate as a fraction of the peak
    weekend_frac: float = 1.0  # diurnal: days 6-7 of each week at this share of a weekday
    pairing: str = "mirrored"  # mirrored | independent
    workers: int = 0  # 0: one local process; N: locust master + N local worker processes
    remote_workers: int = 0  # also wait for this many workers started on other machines
    master_bind_host: str = "127.0.0.1"  # 0.0.0.0 to accept remote workers
    master_port: int = 0  # 0: a free port (remote workers need a fixed one, e.g. 5557)
    web_ui: bool = False
    web_port: int = 8089
    time_scale: float = 1.0  # experiment-clock seconds per wall second (t_virtual)
    seed: int = 0
    max_error_rate: float | None = None  # stop the run if an arm's error share passes this
    stop_timeout_s: float = 30.0  # wait for in-flight requests at the end


@dataclass
class RecordConfig:
    flush_interval_s: float = 2.0
    flush_rows: int = 5000
    output_text: str = "keep"  # keep | hash | drop
    reports_dir: str = "reports"


@dataclass
class SLOConfig:
    ttft_s: float | None = 0.5
    tpot_s: float | None = 0.05
    e2e_s: float | None = None


@dataclass
class AnalysisConfig:
    include_phases: list[str] = field(default_factory=lambda: ["main"])
    slo: SLOConfig = field(default_factory=SLOConfig)
    confidence: float = 0.95
    bootstrap_resamples: int = 2000
    seed: int = 0
    report: bool = True  # write the report at the end of `harness experiment`


@dataclass
class ExperimentMeta:
    name: str = MISSING
    description: str = ""


@dataclass
class Config:
    experiment: ExperimentMeta = field(default_factory=ExperimentMeta)
    arms: dict[str, Any] = field(default_factory=dict)  # arm name -> {target: preset, ...}
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)  # API prices, billing
    traffic: TrafficConfig = field(default_factory=TrafficConfig)  # the user's traffic
    selfhost: SelfHostConfig = field(default_factory=SelfHostConfig)  # GPUs, fixed costs
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # canary judge (harness/judge)
    quality: QualityConfig = field(default_factory=QualityConfig)  # LLM-as-judge (off)
    canary: CanaryConfig = field(default_factory=CanaryConfig)  # month-long runs (off)
    run_id: str | None = None  # default: UTC timestamp + short random suffix
    # continue an interrupted month-long run in place: its run id, or `latest` (the newest
    # run of this experiment); the schedule continues from now, the gap is harness downtime
    resume: str | None = None
    progress_interval_s: float = 5.0


def register_configs() -> None:
    """Register the schema so ``configs/config.yaml`` is validated against it."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    node = OmegaConf.structured(Config)
    # Arms are checked field by field by resolve_arm (against TargetConfig): leave the node
    # open so that `arms.NAME.FIELD=value` and `arms.NEW.target=...` need no leading `+`.
    OmegaConf.set_struct(node.arms, False)
    cs.store(name="base_config", node=node)


def project_root() -> Path:
    """The directory that holds ``configs/`` (the checkout, or the current directory)."""
    here = Path(__file__).resolve().parent.parent
    if (here / "configs").is_dir():
        return here
    return Path.cwd()


def load_target_preset(name: str, configs_dir: Path | None = None) -> DictConfig:
    path = (configs_dir or project_root() / "configs") / "target" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"unknown target preset {name!r}: no {path} (known: {', '.join(known)})")
    return OmegaConf.load(path)


def resolve_arm(name: str, arm: Any, configs_dir: Path | None = None) -> TargetConfig:
    """Merge TargetConfig defaults <- preset ``configs/target/<target>.yaml`` <- arm overrides."""
    if isinstance(arm, DictConfig):
        arm = OmegaConf.to_container(arm, resolve=True)
    if arm is None:
        arm = {}
    if not isinstance(arm, dict):
        raise ConfigError(f"arms.{name}: expected a mapping like {{target: sim_vllm}}, got {arm!r}")
    arm_cfg = OmegaConf.create(arm)
    preset_name = arm_cfg.pop("target", None)
    schema = OmegaConf.structured(TargetConfig)
    layers = [schema]
    if preset_name is not None:
        layers.append(load_target_preset(str(preset_name), configs_dir))
    layers.append(arm_cfg)
    try:
        merged = OmegaConf.merge(*layers)
        target: TargetConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except Exception as exc:  # omegaconf's errors name the key; add the arm
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(exc, OmegaConfBaseException) and getattr(exc, "full_key", None):
            exc.full_key = f"arms.{name}.{exc.full_key}"
            raise omegaconf_error(exc) from None
        raise ConfigError(f"arms.{name}: {exc}") from exc
    validate_target(name, target)
    return target


def validate_target(name: str, t: TargetConfig) -> None:
    if t.kind not in TARGET_KINDS:
        raise ConfigError(f"arms.{name}.kind: {t.kind!r} is not one of {', '.join(TARGET_KINDS)}")
    if t.kind == "router":
        if t.router is None:
            raise ConfigError(
                f"arms.{name}.router: required for a router arm, e.g. "
                "{small: selfhosted, large: cloud}"
            )
        from harness.routing.settings import policy_from_config

        policy_from_config(t.router, f"arms.{name}.router")
        return  # a router has no endpoint of its own: its arms' settings apply
    if t.router is not None:
        raise ConfigError(f"arms.{name}.router: only for kind router, not {t.kind!r}")
    if t.client not in CLIENTS:
        raise ConfigError(f"arms.{name}.client: {t.client!r} is not one of {', '.join(CLIENTS)}")
    if t.api not in ("chat", "completions"):
        raise ConfigError(f"arms.{name}.api: {t.api!r} is not 'chat' or 'completions'")
    if t.kind in ("openai", "vllm") and not t.base_url and not t.launch.enabled:
        raise ConfigError(f"arms.{name}.base_url: required for a {t.kind} target")
    from harness.record.schema import ERROR_TYPES

    unknown = [e for e in t.retry.retry_on if e not in ERROR_TYPES]
    if unknown:
        raise ConfigError(
            f"arms.{name}.retry.retry_on: {unknown} not in the error types {', '.join(ERROR_TYPES)}"
        )
    if t.retry.max_attempts < 1:
        raise ConfigError(
            f"arms.{name}.retry.max_attempts: must be >= 1, got {t.retry.max_attempts}"
        )
    for key in ("connect_s", "first_token_s", "total_s"):
        if getattr(t.timeouts, key) <= 0:
            raise ConfigError(f"arms.{name}.timeouts.{key}: must be > 0")
    if t.max_connections < 1:
        raise ConfigError(f"arms.{name}.max_connections: must be >= 1, got {t.max_connections}")
    if t.max_event_bytes < 1:
        raise ConfigError(f"arms.{name}.max_event_bytes: must be >= 1, got {t.max_event_bytes}")
    if not t.metrics_interval_s > 0:
        raise ConfigError(
            f"arms.{name}.metrics_interval_s: must be > 0, got {t.metrics_interval_s}"
        )
    if t.base_url:
        parts = urlsplit(str(t.base_url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            from harness.redaction import redact_url

            raise ConfigError(
                f"arms.{name}.base_url: {redact_url(str(t.base_url))!r} is not an http:// or "
                "https:// URL "
                "with a host (e.g. http://gpu-box:8000/v1)"
            )


#: Target kinds of each role a router's ``small`` / ``large`` default to (one arm of the role).
_SELFHOST_KINDS, _API_KINDS = ("vllm", "sim_vllm"), ("openai", "sim_cloud")


def check_router_arms(arms: dict[str, TargetConfig]) -> None:
    """Each router arm's ``small`` / ``large`` name two different non-router arms, ``small`` a
    self-hosted kind (vllm, sim_vllm) and ``large`` an API kind (openai, sim_cloud): the
    sensitive rules keep requests on ``small``, so it must never be the cloud. Unset, they
    default to the only self-hosted / API arm. Fills them in (the load processes and the
    manifest see the arms used). A TTFT budget (``failover.ttft_budget_s``) needs a streamed
    small arm: with ``stream: false`` no token is seen before the whole body, so the first-token
    deadline cannot be enforced live. Raises a one-line ConfigError naming the key."""
    plain = [n for n, t in arms.items() if t.kind != "router"]
    for name, t in arms.items():
        if t.kind != "router":
            continue
        router = dict(t.router or {})
        for key, kinds, role in (("small", _SELFHOST_KINDS, "self-hosted"),
                                 ("large", _API_KINDS, "API")):  # fmt: skip
            where = f"arms.{name}.router.{key}"
            v = router.get(key)
            if v is None:
                cands = [n for n in plain if arms[n].kind in kinds]
                if len(cands) != 1:
                    raise ConfigError(
                        f"{where}: not set, and the experiment has {len(cands)} {role} arms "
                        f"({', '.join(cands) or 'none'}): name one of {', '.join(plain) or '-'}"
                    )
                v = cands[0]
            elif v == name or (v in arms and arms[v].kind == "router"):
                raise ConfigError(f"{where}: {v!r} is a router arm; name a plain arm "
                                  f"({', '.join(plain) or 'none'})")  # fmt: skip
            elif v not in arms:
                raise ConfigError(f"{where}: {v!r} is not an arm of the experiment "
                                  f"(arms: {', '.join(plain) or 'none'})")  # fmt: skip
            elif arms[v].kind not in kinds:
                cands = [n for n in plain if arms[n].kind in kinds]
                raise ConfigError(f"{where}: {v!r} is a {arms[v].kind} arm; the {key} arm must be "
                                  f"{role} ({', '.join(kinds)}): name one of "
                                  f"{', '.join(cands) or 'none'}")  # fmt: skip
            router[key] = v
        if router["small"] == router["large"]:
            raise ConfigError(
                f"arms.{name}.router.large: {router['large']!r} is the small arm too; "
                "a router needs two different arms"
            )
        failover = router.get("failover") or {}
        if (
            hasattr(failover, "get")
            and failover.get("enabled", True) is not False
            and failover.get("ttft_budget_s") is not None
            and arms[router["small"]].stream is False
        ):
            raise ConfigError(
                f"arms.{name}.router.failover.ttft_budget_s: the small arm {router['small']!r} "
                "has stream: false, so its first token comes with the whole body and a TTFT "
                "budget cannot be enforced; stream it or set ttft_budget_s: null"
            )
        t.router = router


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")


def load_processes(load: LoadConfig) -> int:
    """Processes that send the load: 1 without workers, else the workers (the master sends none)."""
    return max(1, load.workers + load.remote_workers)


def check_connection_caps(load: LoadConfig, arms: dict[str, TargetConfig]) -> None:
    """Each arm's ``max_connections`` can be split across the load processes (>= 1 each)."""
    n_proc = load_processes(load)
    for name, t in arms.items():
        if t.max_connections < n_proc:
            raise ConfigError(
                f"arms.{name}.max_connections: the cap of {t.max_connections} connection(s) "
                f"is split across the {n_proc} load processes (load.workers + "
                f"load.remote_workers), at least one each: raise it to {n_proc} or use "
                "fewer workers"
            )


def validate_load(load: LoadConfig) -> None:
    """Checks that need no files: modes, pairings, windows, worker counts."""
    _one_of("load.mode", load.mode, ("open", "closed"))
    _one_of("load.pairing", load.pairing, ("mirrored", "independent"))
    if load.mode == "closed" and not (load.concurrency and load.concurrency >= 1):
        raise ConfigError("load.concurrency: required (>= 1) when load.mode=closed")
    if load.concurrency is not None and load.concurrency < 1:
        raise ConfigError(f"load.concurrency: must be >= 1, got {load.concurrency}")
    if load.workers < 0 or load.remote_workers < 0:
        raise ConfigError("load.workers / load.remote_workers: must be >= 0")
    n_proc = load_processes(load)
    if load.mode == "open" and load.concurrency is not None and load.concurrency < n_proc:
        raise ConfigError(
            f"load.concurrency: the cap of {load.concurrency} request(s) in flight per arm is "
            f"split across the {n_proc} load processes (load.workers + load.remote_workers), "
            f"at least one each: raise it to {n_proc} or use fewer workers"
        )
    if load.mode == "closed" and load.concurrency is not None and load.concurrency < n_proc:
        # locust deals the users out to the workers: one left without any would never finish
        raise ConfigError(
            f"load.concurrency: {load.concurrency} closed-loop user(s) for {n_proc} load "
            "processes (load.workers + load.remote_workers) leaves a worker without users: "
            f"raise it to {n_proc} or use fewer workers"
        )
    if load.warmup_s + load.cooldown_s >= load.duration_s:
        raise ConfigError(
            f"load.warmup_s ({load.warmup_s}) + load.cooldown_s ({load.cooldown_s}) must be "
            f"shorter than load.duration_s ({load.duration_s}): nothing would be analysed"
        )
    if load.time_scale <= 0:
        raise ConfigError(f"load.time_scale: must be > 0, got {load.time_scale}")
    if load.max_requests is not None and load.max_requests < 1:
        raise ConfigError(
            f"load.max_requests: must be >= 1 (or null for no cap), got {load.max_requests}"
        )


def validate_record(record: RecordConfig) -> None:
    _one_of("record.output_text", record.output_text, OUTPUT_TEXT_MODES)
    if not record.flush_interval_s > 0:
        raise ConfigError(f"record.flush_interval_s: must be > 0, got {record.flush_interval_s}")
    if record.flush_rows < 1:
        raise ConfigError(f"record.flush_rows: must be >= 1, got {record.flush_rows}")


# -- the whole config, before a run starts ------------------------------------------------

# A simple name: one path component, no separators, no leading dot (so never `..`).
_SIMPLE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")

# What a few non-scalar keys expect, for messages about values of the wrong type.
_EXPECTED = {
    "load.steps": "a list of [t_s, multiplier] pairs, e.g. 'load.steps=[[0,1.0],[60,2.0]]'",
    "analysis.include_phases": "a list of phase names, e.g. 'analysis.include_phases=[main]'",
    "arms": "a mapping of arm names to targets, e.g. 'arms={cloud: {target: openai}}'",
}


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}


def _schema_at(path: list[str]) -> type | None:
    """The dataclass that describes the node at ``path`` (keys from the root), if any."""
    node: Any = Config
    i = 0
    while i < len(path):
        if node is Config and path[i] == "arms":
            if i + 1 >= len(path):
                return None
            node, i = TargetConfig, i + 2  # arms.NAME is a TargetConfig (plus `target`)
            continue
        hint = _field_types(node).get(path[i])
        if hint is None or not dataclasses.is_dataclass(hint):
            return None
        node, i = hint, i + 1
    return node


def _known_keys(parent: list[str]) -> list[str]:
    cls = _schema_at(parent)
    keys = [f.name for f in dataclasses.fields(cls)] if cls is not None else []
    if cls is TargetConfig and len(parent) == 2 and parent[0] == "arms":
        keys.append("target")
    return keys


def _expected(full_key: str) -> str | None:
    if full_key in _EXPECTED:
        return _EXPECTED[full_key]
    parts = full_key.split(".")
    cls = _schema_at(parts[:-1])
    hint = _field_types(cls).get(parts[-1]) if cls is not None else None
    if hint is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = typing.get_origin(hint) or hint
    if base is typing.Union or (len(args) == 1 and base not in (list, dict)):
        base = typing.get_origin(args[0]) or args[0]
    names = {
        float: "a number",
        int: "an integer",
        bool: "true or false",
        str: "a string",
        list: "a list, e.g. [a, b]",
        dict: "a mapping, e.g. {k: v}",
    }
    if dataclasses.is_dataclass(base):
        return f"a mapping of {base.__name__} fields"
    return names.get(base)


def unknown_key_error(full_key: str) -> ConfigError:
    """``KEY: unknown key``, with the closest known key when there is one."""
    parts = full_key.split(".")
    known = _known_keys(parts[:-1])
    close = difflib.get_close_matches(parts[-1], known, n=1, cutoff=0.6)
    where = ".".join(parts[:-1])
    if close:
        hint = f" (did you mean {'.'.join([*parts[:-1], close[0]])}?)"
    elif known:
        hint = f" (known keys{' of ' + where if where else ''}: {', '.join(known)})"
    else:
        hint = ""
    return ConfigError(f"{full_key}: unknown key{hint}")


def omegaconf_error(exc: Exception, override: str | None = None) -> ConfigError:
    """One line naming the key for an OmegaConf error (unknown key, wrong type, missing)."""
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        MissingMandatoryValue,
        OmegaConfBaseException,
    )

    full_key = str(getattr(exc, "full_key", "") or "")
    msg = str(getattr(exc, "msg", None) or exc).splitlines()[0].strip() if str(exc) else ""
    if isinstance(exc, OmegaConfBaseException) and full_key:
        if isinstance(exc, ConfigAttributeError | ConfigKeyError) and "not in" in msg:
            return unknown_key_error(full_key)
        if isinstance(exc, MissingMandatoryValue):
            return ConfigError(f"{full_key}: required, but not set")
        expected = _expected(full_key)
        value = override.partition("=")[2] if override else None
        if expected:
            got = f", got {value!r}" if value is not None else ""
            return ConfigError(f"{full_key}: expected {expected}{got} ({msg})")
        return ConfigError(f"{full_key}: {msg}")
    return ConfigError(msg or type(exc).__name__)


def _check_port(key: str, host: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: {port} is not a port number (0-65535)")
    if port == 0:
        return
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise ConfigError(
            f"{key}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "is another run or program using it? Pick another port"
        ) from None


def check_ports(load: LoadConfig) -> None:
    """The ports this run will listen on are free (a busy one would fail mid-start)."""
    if load.workers + load.remote_workers > 0:
        _check_port("load.master_port", load.master_bind_host, load.master_port)
    if load.web_ui:
        if load.web_port == 0:
            raise ConfigError("load.web_port: must be a fixed port (1-65535) when load.web_ui=true")
        _check_port("load.web_port", "127.0.0.1", load.web_port)


def check_simple_name(
    key: str, value: str, why: str = "it names a directory under record.reports_dir"
) -> None:
    if not _SIMPLE_NAME.match(value) or len(value) > 200:
        raise ConfigError(
            f"{key}: {value!r} is not a simple name (letters, digits, '.', '_', '-'; "
            f"no '/', no leading '.'): {why}"
        )


def reports_dir_of(record: RecordConfig, root: Path | None = None) -> Path:
    path = Path(record.reports_dir)
    return path if path.is_absolute() else (root or project_root()) / path


def check_reports_dir(reports_dir: Path, experiment: str, run_id: str | None) -> None:
    """The run directory can be created: a writable reports directory, a new run id."""
    existing = reports_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"record.reports_dir: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"record.reports_dir: {existing} is not writable")
    if run_id is not None:
        run_dir = reports_dir / experiment / run_id
        if run_dir.exists():
            raise ConfigError(
                f"run_id: {run_id!r} was used before ({run_dir} exists); "
                "give a new run_id or leave it unset"
            )


def validate_config(cfg: Any, root: Path | None = None) -> Config:
    """Check a composed experiment config before anything starts; returns it typed.

    Keys the schema does not know fail here even when added with ``+`` (``+load.rat=5``,
    ``+analysis.slo.ttft=0.3``), and so do the values that would otherwise pass the start
    and fail only later (analysis settings, ports in use, the run directory).
    """
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(cfg, DictConfig | dict) and "arms" not in cfg:
        raise ConfigError(
            "arms: removed (~arms) and not replaced: give the arms, e.g. "
            "'arms={cloud: {target: openai}, selfhosted: {target: vllm}}'"
        )
    try:
        # As plain data: merging a DictConfig of the schema's own types would carry keys
        # added with `+` (struct mode off) through unchecked.
        data = (
            OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
            if isinstance(cfg, DictConfig)
            else cfg
        )
        merged = OmegaConf.merge(OmegaConf.structured(Config), data)
        typed: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise omegaconf_error(exc) from None
    if not isinstance(typed.arms, dict) or not typed.arms:
        raise ConfigError(
            "arms: the experiment names no arms (e.g. arms: {cloud: {target: sim_cloud}})"
        )
    for name in typed.arms:
        check_simple_name(f"arms.{name}", str(name), "arm names appear in file names")
    check_simple_name("experiment.name", str(typed.experiment.name))
    if typed.run_id is not None:
        check_simple_name("run_id", str(typed.run_id))
    validate_load(typed.load)
    validate_record(typed.record)
    from harness.analysis.data import RunDataError, check_analysis

    try:
        check_analysis(typed.analysis, source="config")
    except RunDataError as exc:
        msg = str(exc).removeprefix("config: ").removeprefix("config.")
        raise ConfigError(msg) from None
    if not typed.progress_interval_s > 0:
        raise ConfigError(f"progress_interval_s: must be > 0, got {typed.progress_interval_s}")
    check_reports_dir(reports_dir_of(typed.record, root), str(typed.experiment.name), typed.run_id)
    check_ports(typed.load)
    from harness.cost.section import CostSettings, check_for_arms, check_settings

    costs = CostSettings(typed.pricing, typed.traffic, typed.selfhost)
    check_settings(costs)
    targets = {str(n): resolve_arm(str(n), a) for n, a in typed.arms.items()}
    check_router_arms(targets)
    check_for_arms(costs, {n: (t.kind, t.model) for n, t in targets.items()})
    check_judge(typed.judge, "judge", list(targets))
    check_quality(typed.quality, "quality")
    return typed


# -- command-line overrides ----------------------------------------------------------------


def rewrite_arm_overrides(overrides: list[str]) -> list[str]:
    """``arms={...}`` replaces the experiment's arms (Hydra alone would merge into them).

    It becomes ``~arms +arms={...}``; later ``arms.NAME.FIELD=value`` overrides become
    ``++arms.NAME.FIELD=value`` so they may add fields to the new arms.
    """
    out: list[str] = []
    replaced = False
    for ov in overrides:
        if ov.startswith("arms="):
            out += ["~arms", "+" + ov]
            replaced = True
        elif replaced and ov.startswith("arms."):
            out.append("++" + ov)
        else:
            out.append(ov)
    return out


def _first_of_sweeps(overrides: list[str]) -> list[str]:
    """The overrides with each sweep (``k=1,2,4``) replaced by its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    out = []
    for ov in overrides:
        try:
            parsed = OverridesParser.create().parse_overrides([ov])[0]
        except Exception as exc:
            raise ConfigError(f"{ov}: not a valid override: {_one_line(str(exc))}") from None
        if not parsed.is_sweep_override():
            out.append(ov)
            continue
        try:
            first = next(iter(parsed.sweep_string_iterator()))
        except Exception:  # e.g. an interval sweep for an optimiser: leave it to Hydra
            continue
        prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++"}.get(parsed.type, "")
        out.append(f"{prefix}{parsed.get_key_element()}={first}")
    return out


def check_overrides(configs_dir: Path, overrides: list[str]) -> None:
    """Compose the config once with these overrides; a failure becomes one ConfigError line.

    Hydra itself would print several lines (and suggest ``+key=value`` for a misspelled key,
    which :func:`validate_config` then rejects); this names the key and what it expects.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    single = _first_of_sweeps(overrides)
    try:
        with initialize_config_dir(config_dir=str(configs_dir), version_base="1.3"):
            compose("config", overrides=single)
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc
        while not isinstance(cause, OmegaConfBaseException) and cause.__cause__ is not None:
            cause = cause.__cause__  # type: ignore[assignment]
        if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
            key = str(cause.full_key)
            given = next((o for o in single if o.lstrip("+~").split("=")[0] == key), None)
            raise omegaconf_error(cause, given) from None
        raise ConfigError(_one_line(str(exc))) from None


def _one_line(msg: str) -> str:
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    keep = [
        ln
        for ln in lines
        if not ln.startswith(("To append", "full_key:", "object_type=", "reference_type="))
    ]
    keep = [ln for ln in keep if not ln.startswith(("Config search path", "provider="))]
    return " ".join(keep) or msg
