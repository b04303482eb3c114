"""Run the judge's stages on typed inputs: expand the metrics, check their sample sizes, compute
each one's change at the levels the number of metrics calls for, classify, correct the
p-values (Holm), score and decide. Pure: :func:`judge` takes :class:`JudgeInputs` (built
from run directories by :mod:`harness.judge.preprocess`, or synthetic ones by
:mod:`harness.judge.calibration`) and returns a :class:`Verdict`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from harness.analysis.paired import holm, mde_paired_proportion, n_for_paired_drop
from harness.judge.classify import Region, classify
from harness.judge.decide import Decision, Judged, decide
from harness.judge.samples import ArmRef, CostSample, JudgeInputs, LatencySample, Sample
from harness.judge.settings import LATENCY_MEASURES, JudgeConfig, MetricSpec
from harness.judge.statistics import Change, Levels, Resampling, change_of


@dataclass
class MetricResult:
    """One judged metric: its settings, data, change, classification and corrected p."""

    name: str
    spec: MetricSpec  # direction resolved (no "auto")
    classification: str
    reason: str | None
    n: int | None  # observations that count (pairs, items, requests); None: not sampled
    n_required: int
    n_arms: tuple[int, int]
    change: Change | None = None
    region: Region | None = None
    p_holm: float | None = None
    kind: str | None = None  # quality: binary | score | length
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        c, s = self.change, self.spec
        out: dict[str, Any] = {
            "measure": s.measure,
            "quantile": s.quantile,
            "scorer": s.scorer,
            "kind": self.kind,
            "classification": self.classification,
            "reason": self.reason,
            "direction": s.direction,
            "margin": s.margin,
            "margin_type": s.margin_type,
            "critical": s.critical,
            "weight": s.weight,
            "n": self.n,
            "n_required": self.n_required,
            "n_baseline": self.n_arms[0],
            "n_candidate": self.n_arms[1],
        }
        if self.error:
            out["error"] = self.error
        if c is None:
            return out
        r = self.region
        out.update({
            "scale": c.scale,
            "estimate": c.estimate,
            "baseline_value": c.reference,
            "candidate_value": c.candidate_value,
            "ci": list(c.ci),
            "ci_ni": list(c.ci_ni),
            "not_worse_region": None if r is None else [r.lo, r.hi],
            "interval": c.interval,
            "test": c.test,
            "statistic": c.statistic,
            "p": c.p,
            "p_holm": self.p_holm,
            "paired": c.detail.get("paired"),
            "detail": {k: v for k, v in c.detail.items() if k != "paired"},
        })  # fmt: skip
        return out


@dataclass
class Verdict:
    decision: str
    score: float | None
    score_ceiling: float | None
    reasons: list[str]
    metrics: list[MetricResult]
    baseline: ArmRef
    candidate: ArmRef
    settings: JudgeConfig
    levels: Levels
    mde: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "decision": self.decision,
            "score": self.score,
            "score_ceiling": self.score_ceiling,
            "reasons": list(self.reasons),
            "baseline": dataclasses.asdict(self.baseline),
            "candidate": dataclasses.asdict(self.candidate),
            "metrics": {m.name: m.to_dict() for m in self.metrics},
            "settings": {
                "alpha": s.alpha,
                "pass_score": s.pass_score,
                "marginal_score": s.marginal_score,
                "min_n": s.min_n,
                "min_tail": s.min_tail,
                "resamples": s.resamples,
                "seed": s.seed,
                "block_len": s.block_len,
                "mde_power": s.mde_power,
            },  # fmt: skip
            "levels": {
                "metrics_judged": self.levels.m,
                "ci_level": self.levels.worse,
                "ci_ni_level": self.levels.ni,
            },
            "smallest_detectable_change": list(self.mde),
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------- stage 1: what is judged


@dataclass
class _Planned:
    name: str
    spec: MetricSpec
    sample: Sample | None
    kind: str | None = None
    error: str | None = None


def plan(cfg: JudgeConfig, inputs: JudgeInputs) -> tuple[list[_Planned], list[str]]:
    """The metrics to judge, each with its sample (quality templates expanded), and notes."""
    out: list[_Planned] = []
    notes: list[str] = []
    specs = [(k, m) for k, m in cfg.metrics.items() if m.weight > 0]
    named = {m.scorer for _, m in specs if m.measure == "quality" and m.scorer != "*"}
    covered: set[str] = set()
    for key, spec in specs:
        if spec.measure in LATENCY_MEASURES:
            err = inputs.errors.get("latency")
            out.append(_Planned(key, spec, inputs.latency.get(spec.measure), error=err))
        elif spec.measure == "failure_rate":
            out.append(_Planned(key, spec, inputs.failures, error=inputs.errors.get("latency")))
        elif spec.measure == "cost_per_task":
            out.append(_Planned(key, spec, inputs.cost, error=inputs.errors.get("cost_per_task")))
        elif "quality" in inputs.errors:  # one NoData entry per quality entry, saying why
            out.append(_Planned(key, spec, None, error=inputs.errors["quality"]))
        elif spec.scorer != "*":
            q = inputs.quality.get(str(spec.scorer))
            resolved = spec if spec.direction != "auto" or q is None else \
                replace(spec, direction=q.direction)  # fmt: skip
            out.append(_Planned(key, resolved, q.sample if q else None, q.kind if q else None))
        else:
            for scorer in sorted(inputs.quality):
                q = inputs.quality[scorer]
                if scorer in named or scorer in covered or q.kind not in spec.kinds:
                    continue
                covered.add(scorer)
                d = q.direction if spec.direction == "auto" else spec.direction
                out.append(_Planned(f"quality.{scorer}", replace(spec, scorer=scorer, direction=d),
                                    q.sample, q.kind))  # fmt: skip
    if not inputs.quality and "quality" not in inputs.errors:
        notes.append("No quality scores (no scores table, or no scorer matched): quality was "
                     "not judged.")  # fmt: skip
    for p in out:  # an unresolved "auto" (no scorer data) reads as higher-is-better
        if p.spec.direction == "auto":
            p.spec = replace(p.spec, direction="higher")
    # one bootstrap per latency series serves all its quantiles
    qs: dict[str, set[float]] = {}
    for p in out:
        if isinstance(p.sample, LatencySample) and p.spec.quantile is not None:
            qs.setdefault(p.spec.measure, set()).add(float(p.spec.quantile))
    series: dict[str, LatencySample] = {}
    for p in out:
        if isinstance(p.sample, LatencySample):
            m = p.spec.measure
            if m not in series:
                series[m] = replace(p.sample, quantiles=tuple(sorted(qs[m])), cache={})
            p.sample = series[m]
    return out, notes


def n_required(cfg: JudgeConfig, spec: MetricSpec) -> int:
    """``min_n``; for a quantile q also ``ceil(min_tail / (1 - q))`` (p99: 500 at 5)."""
    if spec.quantile is not None:
        return max(cfg.min_n, math.ceil(cfg.min_tail / (1 - spec.quantile) - 1e-9))
    return cfg.min_n


def _sample_n(sample: Sample) -> int | None:
    if isinstance(sample, CostSample) and sample.baseline is None and sample.candidate is None:
        return None  # both arms priced by projection: nothing sampled, nothing to wait for
    return sample.n


# ---------------------------------------------------------------- stages 2-5


def floors(
    cfg: JudgeConfig, planned: list[_Planned]
) -> tuple[list[MetricResult], list[tuple[_Planned, MetricResult]]]:
    """Stage 2: one result per planned metric, NoData (errors, no data, below its sample-size
    floor) or ready for its statistic; ``(results, ready)``, ``ready`` in plan order."""
    results: list[MetricResult] = []
    ready: list[tuple[_Planned, MetricResult]] = []
    for p in planned:
        need = n_required(cfg, p.spec)
        if p.error:
            results.append(MetricResult(p.name, p.spec, "NoData", "errors", None, need, (0, 0),
                                        kind=p.kind, error=p.error))  # fmt: skip
            continue
        if p.sample is None:
            results.append(MetricResult(p.name, p.spec, "NoData", "no_data", 0, need, (0, 0),
                                        kind=p.kind))  # fmt: skip
            continue
        n = _sample_n(p.sample)
        arms = p.sample.n_arms
        res = MetricResult(p.name, p.spec, "NoData", None, n, need, arms, kind=p.kind)
        if n is not None and n == 0:
            res.reason = "no_data"
        elif n is not None and n < need:
            res.reason = "insufficient_n"
        else:
            ready.append((p, res))
        results.append(res)
    return results, ready


def classify_ready(
    ready: list[tuple[_Planned, MetricResult]], statistic: Callable[[_Planned], Change]
) -> None:
    """Stages 3-4 on the ready metrics: ``statistic`` (the fixed-sample one, or a sequential
    one) and the classification, into each result; a statistic that cannot run here leaves
    its metric NoData with the error."""
    for p, res in ready:
        try:
            change = statistic(p)
        except (ValueError, ArithmeticError) as exc:  # a statistic that cannot run here
            res.reason, res.error = "errors", f"{type(exc).__name__}: {exc}"
            continue
        res.change = change
        res.classification, res.reason, res.region = classify(p.spec, change)


def decide_results(results: list[MetricResult], cfg: JudgeConfig) -> Decision:
    """Stage 5: the weighted score and the decision from the classified results."""
    return decide([Judged(r.name, r.classification, r.reason, r.spec.critical, r.spec.weight)
                   for r in results], cfg.pass_score, cfg.marginal_score)  # fmt: skip


def fixed_statistic(levels: Levels, rs: Resampling) -> Callable[[_Planned], Change]:
    """The judge's own (fixed-sample) statistic of a planned metric at ``levels``."""

    def statistic(p: _Planned) -> Change:
        assert p.sample is not None
        relative = p.spec.margin_type == "relative"
        return change_of(p.sample, p.spec.quantile, relative, levels, rs)

    return statistic


def judge(inputs: JudgeInputs, cfg: JudgeConfig) -> Verdict:
    """Every stage on ``inputs`` under ``cfg`` (see the package docstring)."""
    planned, notes = plan(cfg, inputs)
    results, ready = floors(cfg, planned)
    levels = Levels(cfg.alpha, len(ready))
    classify_ready(ready, fixed_statistic(levels, Resampling(cfg.resamples, cfg.seed,
                                                             cfg.block_len)))  # fmt: skip
    with_p = [r for r in results if r.change is not None and r.change.p is not None]
    for r, adj in zip(with_p, holm([r.change.p for r in with_p]), strict=True):  # type: ignore[union-attr]
        r.p_holm = None if math.isnan(adj) else adj
    d = decide_results(results, cfg)
    return Verdict(d.decision, d.score, d.score_ceiling, d.reasons, results, inputs.baseline,
                   inputs.candidate, cfg, levels, mde_lines(results, cfg),
                   [*inputs.notes, *notes])  # fmt: skip


def mde_lines(results: list[MetricResult], cfg: JudgeConfig) -> list[str]:
    """The smallest detectable change of each pass/fail quality metric with data.

    McNemar at the level the judge calls a metric worse (two-sided ``2 alpha / m``), power
    ``judge.mde_power``, errors assumed independent between the arms (the conservative case:
    errors that correlate, as between two copies of one model, need fewer items).
    """
    m = max(1, sum(1 for r in results if r.change is not None))
    a = 2 * cfg.alpha / m
    out = []
    for r in results:
        if r.kind != "binary" or r.change is None or not 0 < r.change.reference <= 1:
            continue
        n, p = r.change.n, r.change.reference
        mde = mde_paired_proportion(n, p, a, cfg.mde_power)
        drop = r.spec.margin * (p if r.spec.margin_type == "relative" else 1.0)
        need = n_for_paired_drop(p, drop, a, cfg.mde_power) if 0 < drop <= p else None
        power = f"{cfg.mde_power:.0%} power"
        if math.isnan(mde):
            what = "no drop is detectable"
        else:
            what = (f"you can detect a drop of {100 * mde:.1f} points or more (from "
                    f"{100 * p:.1f}%), and one beyond {100 * (mde + drop):.1f} points is called "
                    f"worse than the {100 * drop:.1f}-point margin")  # fmt: skip
        line = f"{r.name}: with {n} items {what} ({power}, two-sided {a:.3g}"
        line += ", errors independent between arms)"
        if need is not None:
            line += f"; about {need} items are needed to see a drop of {100 * drop:.1f} points."
        out.append(line)
    return out
