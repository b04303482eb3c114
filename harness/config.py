"""Structured experiment configs: typed dataclasses registered with Hydra's ConfigStore.

Every setting lives here once, with its default. Hydra composes ``configs/config.yaml``
against these schemas, so a misspelled key fails with a message naming it.

Arms are free-form in YAML (``arms: {cloud: {target: sim_cloud}}``): each arm names a target
preset in ``configs/target/NAME.yaml`` and may override any :class:`TargetConfig` field.
:func:`resolve_arm` merges schema defaults <- preset <- arm overrides, in struct mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

TARGET_KINDS = ("sim_vllm", "sim_cloud", "openai", "vllm")
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
    extra_body: dict[str, Any] = field(default_factory=dict)  # merged into each request body
    temperature: float = 0.0
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    max_connections: int = 4096
    scrape_metrics: bool | None = None  # None: on for vllm and simulators, off for openai
    metrics_interval_s: float = 2.0
    preflight: bool = True
    sim: SimConfig = field(default_factory=SimConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)


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
    concurrency: int | None = None  # closed: users; open: cap on in-flight requests per arm
    duration_s: float = 60.0
    max_requests: int | None = None  # stop after this many arrivals
    warmup_s: float = 0.0  # rows flagged phase=warmup
    cooldown_s: float = 0.0  # rows flagged phase=cooldown (last seconds of the run)
    shape: str = "none"  # none | ramp | steps | diurnal (multiplies rate over time)
    ramp_from: float = 0.0  # ramp: rate fraction at t=0 ... 1 at the end
    steps: list[list[float]] = field(default_factory=list)  # [[t_s, rate], ...]
    diurnal_period_s: float = 86400.0
    diurnal_min_frac: float = 0.3  # trough rate as a fraction of the peak
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
    run_id: str | None = None  # default: UTC timestamp + short random suffix
    progress_interval_s: float = 5.0


def register_configs() -> None:
    """Register the schema so ``configs/config.yaml`` is validated against it."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)


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
    except Exception as exc:  # omegaconf's errors name the key; add the arm
        raise ConfigError(f"arms.{name}: {exc}") from exc
    target: TargetConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    validate_target(name, target)
    return target


def validate_target(name: str, t: TargetConfig) -> None:
    if t.kind not in TARGET_KINDS:
        raise ConfigError(f"arms.{name}.kind: {t.kind!r} is not one of {', '.join(TARGET_KINDS)}")
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


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")


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
    if load.warmup_s + load.cooldown_s >= load.duration_s:
        raise ConfigError(
            f"load.warmup_s ({load.warmup_s}) + load.cooldown_s ({load.cooldown_s}) must be "
            f"shorter than load.duration_s ({load.duration_s}): nothing would be analysed"
        )
    if load.time_scale <= 0:
        raise ConfigError(f"load.time_scale: must be > 0, got {load.time_scale}")


def validate_record(record: RecordConfig) -> None:
    _one_of("record.output_text", record.output_text, OUTPUT_TEXT_MODES)
    if not record.flush_interval_s > 0:
        raise ConfigError(f"record.flush_interval_s: must be > 0, got {record.flush_interval_s}")
    if record.flush_rows < 1:
        raise ConfigError(f"record.flush_rows: must be >= 1, got {record.flush_rows}")
