"""The ``judge`` config node: which arm is judged against which, the error rate, the score
thresholds, the sample-size floors and the metrics (direction, margin, critical, weight).

Every setting is a dataclass field here, with its default; :func:`check_judge` reads each one
(no setting is declared and then ignored) and :func:`judge_from_config` types a run's
``config.judge`` (manifest or ``harness judge`` input), naming the key of any mistake.

A metric entry (``judge.metrics.NAME``) says what is measured (``measure``, plus ``quantile``
for latency and ``scorer`` for quality), which change is bad (``direction``) and by how much
the candidate may be worse and still count as not worse (``margin``, relative or absolute).
``quality`` entries with ``scorer: "*"`` stand for every scorer of the given ``kinds`` found
in the scores table (each becomes ``quality.<scorer>``); an entry naming one scorer replaces
the template for it. ``weight: 0`` leaves a metric out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

#: What a metric entry can measure.
LATENCY_MEASURES = ("request_ttft_s", "tpot_s", "request_e2e_s")
MEASURES = (*LATENCY_MEASURES, "failure_rate", "quality", "cost_per_task")
#: Which change is bad: ``lower`` (lower is better: a rise is bad), ``higher`` (a drop is bad),
#: ``either`` (any change beyond the margin is bad); ``auto`` (quality only): from the scorer.
DIRECTIONS = ("lower", "higher", "either", "auto")
MARGIN_TYPES = ("relative", "absolute")
#: Kinds of the scores table (``kind`` column, harness/quality).
SCORE_KINDS = ("binary", "score", "length")


@dataclass
class MetricSpec:
    """One judged metric: what is measured and when a change counts as worse."""

    measure: str = MISSING  # one of MEASURES
    quantile: float | None = None  # latency measures: the quantile judged, e.g. 0.99
    scorer: str | None = None  # quality: a scorer's name, or "*" (every scorer of `kinds`)
    kinds: list[str] = field(default_factory=lambda: ["binary", "score"])  # quality "*" only
    direction: str = "lower"  # lower | higher | either | auto (quality: from the scorer)
    # relative: candidate / baseline may be up to 1 + margin (lower is better) or down to
    # 1 - margin (higher is better); absolute: candidate - baseline within +-margin
    margin: float = 0.10
    margin_type: str = "relative"
    critical: bool = False  # shown worse -> NO_GO; not shown non-inferior -> never GO
    weight: float = 1.0  # share in the score; 0 leaves the metric out


def _latency(measure: str, q: float, margin: float, critical: bool = False) -> MetricSpec:
    return MetricSpec(measure=measure, quantile=q, margin=margin, critical=critical)


def default_metrics() -> dict[str, MetricSpec]:
    """The metrics judged unless the config says otherwise (README "Canary judge").

    Latency per logical request (retries included) at p50/p95/p99, with wider margins in the
    tail, where a quantile is known less precisely; failure rate per logical request and every
    pass/fail or graded quality score are critical; output length may drift either way;
    cost per task when the cost section prices both arms."""
    m: dict[str, MetricSpec] = {}
    for short, measure in (("ttft", "request_ttft_s"), ("tpot", "tpot_s"),
                           ("e2e", "request_e2e_s")):  # fmt: skip
        for q, margin in ((0.5, 0.10), (0.95, 0.15), (0.99, 0.20)):
            m[f"{short}_p{round(q * 100)}"] = _latency(measure, q, margin)
    m["failure_rate"] = MetricSpec(
        measure="failure_rate", margin=0.01, margin_type="absolute", critical=True, weight=2.0
    )
    m["quality"] = MetricSpec(measure="quality", scorer="*", direction="auto", margin=0.03,
                              margin_type="absolute", critical=True, weight=2.0)  # fmt: skip
    m["quality_length"] = MetricSpec(measure="quality", scorer="*", kinds=["length"],
                                     direction="either", margin=0.25)  # fmt: skip
    m["cost_per_task"] = MetricSpec(measure="cost_per_task", margin=0.10)
    return m


@dataclass
class JudgeConfig:
    """Settings of the canary judge (``judge`` in the experiment config)."""

    # Arms by name. None: the baseline is the first hosted-API arm (openai, sim_cloud), else
    # the first arm; the candidate the first self-hosted arm (vllm, sim_vllm) that is not the
    # baseline, else the next arm.
    baseline: str | None = None
    candidate: str | None = None
    # Error rate of each claim: a false GO (a critical metric worse than its margin passed)
    # and a false NO_GO (a metric within its margin shown worse) each happen with
    # probability <= alpha (see README "Canary judge" for how the intervals get there).
    alpha: float = 0.05
    pass_score: float = 90.0  # GO needs a score >= this (and every critical metric Pass)
    marginal_score: float = 75.0  # NO_GO when even the best case leaves the score below this
    min_n: int = 100  # fewer observations (pairs, items, requests) -> NoData insufficient_n
    # a quantile q also needs n * (1 - q) >= min_tail observations beyond it (p99: 500)
    min_tail: int = 5
    resamples: int = 2000  # bootstrap resamples
    seed: int = 0  # bootstrap seed
    block_len: int | None = None  # paired latency: None = automatic (Politis-White)
    mde_power: float = 0.9  # power of the smallest-detectable-change line
    metrics: dict[str, MetricSpec] = field(default_factory=default_metrics)


def _fail(key: str, msg: str) -> Exception:
    from harness.config import ConfigError

    return ConfigError(f"{key}: {msg}")


def _number(x: object) -> bool:
    return (
        isinstance(x, int | float) and not isinstance(x, bool) and x == x and abs(x) != float("inf")
    )


def check_metric(name: str, m: MetricSpec, where: str = "judge.metrics") -> None:
    """A metric entry makes sense; a ConfigError names ``judge.metrics.NAME.KEY`` otherwise."""
    key = f"{where}.{name}"
    if m.measure not in MEASURES:
        raise _fail(f"{key}.measure", f"{m.measure!r} is not one of {', '.join(MEASURES)}")
    if m.direction not in DIRECTIONS:
        raise _fail(f"{key}.direction", f"{m.direction!r} is not one of {', '.join(DIRECTIONS)}")
    if m.direction == "auto" and m.measure != "quality":
        raise _fail(f"{key}.direction", "'auto' is for quality metrics only")
    if m.margin_type not in MARGIN_TYPES:
        raise _fail(f"{key}.margin_type",
                    f"{m.margin_type!r} is not one of {', '.join(MARGIN_TYPES)}")  # fmt: skip
    if not (_number(m.margin) and m.margin >= 0):
        raise _fail(f"{key}.margin", f"must be a number >= 0, got {m.margin!r}")
    if m.margin_type == "relative" and m.direction == "higher" and m.margin >= 1:
        raise _fail(f"{key}.margin", "a relative margin on a drop must be < 1")
    if not (_number(m.weight) and m.weight >= 0):
        raise _fail(f"{key}.weight", f"must be a number >= 0, got {m.weight!r}")
    if m.measure in LATENCY_MEASURES:
        if m.quantile is None or not (_number(m.quantile) and 0 < m.quantile < 1):
            raise _fail(f"{key}.quantile", f"a latency metric needs a quantile in (0, 1), got "
                                           f"{m.quantile!r}")  # fmt: skip
    elif m.quantile is not None:
        raise _fail(f"{key}.quantile", f"only latency metrics take a quantile ({m.measure})")
    if m.measure == "quality":
        if not m.scorer:
            raise _fail(f"{key}.scorer", "a quality metric names a scorer, or '*' for every one")
        bad = [k for k in m.kinds if k not in SCORE_KINDS]
        if bad or not m.kinds:
            raise _fail(f"{key}.kinds", f"{list(m.kinds)} must be a non-empty list of "
                                        f"{', '.join(SCORE_KINDS)}")  # fmt: skip
    elif m.scorer is not None:
        raise _fail(f"{key}.scorer", f"only quality metrics take a scorer ({m.measure})")


def check_judge(cfg: JudgeConfig, where: str = "judge", arms: list[str] | None = None
                ) -> JudgeConfig:  # fmt: skip
    """Every setting of ``cfg`` is usable (and, given the run's ``arms``, the arms it names
    exist); a ConfigError names the key otherwise."""
    if not (_number(cfg.alpha) and 0 < cfg.alpha < 0.5):
        raise _fail(f"{where}.alpha", f"must be in (0, 0.5), got {cfg.alpha!r}")
    for key in ("pass_score", "marginal_score"):
        v = getattr(cfg, key)
        if not (_number(v) and 0 <= v <= 100):
            raise _fail(f"{where}.{key}", f"must be a score in [0, 100], got {v!r}")
    if cfg.marginal_score > cfg.pass_score:
        raise _fail(f"{where}.marginal_score", f"{cfg.marginal_score} is above pass_score "
                                               f"{cfg.pass_score}")  # fmt: skip
    for key, lo in (("min_n", 2), ("min_tail", 1), ("resamples", 100)):
        v = getattr(cfg, key)
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise _fail(f"{where}.{key}", f"must be an integer >= {lo}, got {v!r}")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise _fail(f"{where}.seed", f"must be an integer, got {cfg.seed!r}")
    if cfg.block_len is not None and (not isinstance(cfg.block_len, int) or cfg.block_len < 1):
        raise _fail(f"{where}.block_len", f"must be null or an integer >= 1, got {cfg.block_len!r}")
    if not (_number(cfg.mde_power) and 0 < cfg.mde_power < 1):
        raise _fail(f"{where}.mde_power", f"must be in (0, 1), got {cfg.mde_power!r}")
    for key in ("baseline", "candidate"):
        v = getattr(cfg, key)
        if v is not None and (not isinstance(v, str) or not v):
            raise _fail(f"{where}.{key}", f"must be an arm name or null, got {v!r}")
    for key in ("baseline", "candidate"):
        v = getattr(cfg, key)
        if arms is not None and v is not None and v not in arms:
            raise _fail(f"{where}.{key}", f"{v!r} is not an arm (arms: {', '.join(arms)})")
    if cfg.baseline is not None and cfg.baseline == cfg.candidate:
        raise _fail(f"{where}.candidate", f"is the baseline arm too ({cfg.baseline!r})")
    if not isinstance(cfg.metrics, dict):
        raise _fail(f"{where}.metrics", "must be a mapping of metric names to entries")
    for name, m in cfg.metrics.items():
        check_metric(str(name), m, f"{where}.metrics")
    return cfg


def judge_from_config(raw: object, where: str = "judge") -> JudgeConfig:
    """A typed, checked :class:`JudgeConfig` from a plain ``config.judge`` mapping (None:
    the defaults). Unknown keys and bad values raise a ConfigError naming the key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from harness.config import ConfigError, omegaconf_error

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(JudgeConfig), raw)
        cfg: JudgeConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        msg = str(omegaconf_error(exc))
        raise ConfigError(msg if msg.startswith(where) else f"{where}.{msg}") from None
    return check_judge(cfg, where)


def pick_arms(cfg: JudgeConfig, arms: dict[str, str | None]) -> tuple[str, str]:
    """(baseline, candidate) among ``arms`` (name -> target kind, in config order).

    Configured names must exist; unset ones follow the defaults of :class:`JudgeConfig`.
    A ConfigError when fewer than two arms can be told apart."""
    from harness.cost.measure import role_of

    names = list(arms)
    for key in ("baseline", "candidate"):
        v = getattr(cfg, key)
        if v is not None and v not in arms:
            raise _fail(f"judge.{key}", f"{v!r} is not an arm of this run (arms: "
                                        f"{', '.join(names) or 'none'})")  # fmt: skip
    base = cfg.baseline
    if base is None:
        api = [a for a in names if role_of(arms[a]) == "api" and a != cfg.candidate]
        rest = [a for a in names if a != cfg.candidate]
        base = (api or rest or [None])[0]
    cand = cfg.candidate
    if cand is None:
        own = [a for a in names if role_of(arms[a]) == "selfhost" and a != base]
        rest = [a for a in names if a != base]
        cand = (own or rest or [None])[0]
    if base is None or cand is None:
        raise _fail("judge.candidate", f"the run has {len(names)} arm(s) ({', '.join(names)}): "
                    "judging needs two, or --baseline-run OTHER_RUN")  # fmt: skip
    return base, cand
