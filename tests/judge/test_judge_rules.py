"""The judge's rules on hand-made inputs: settings, margins, classification, score, decision,
and the statistics against scipy/statsmodels or hand-computed values."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as sps

from harness.config import ConfigError
from harness.judge.classify import classify, region
from harness.judge.decide import Judged, decide, scores
from harness.judge.judge import judge, n_required, plan
from harness.judge.samples import (
    ArmRef,
    BinarySample,
    CostSample,
    JudgeInputs,
    LatencySample,
    QualityScorer,
    ScoreSample,
)
from harness.judge.settings import (
    JudgeConfig,
    MetricSpec,
    default_metrics,
    judge_from_config,
    pick_arms,
)
from harness.judge.statistics import (
    Change,
    Levels,
    Resampling,
    cost_change,
    mean_change,
    proportion_change,
    quantile_change,
)


def change(est: float, ci: tuple[float, float], ci_ni: tuple[float, float] | None = None,
           scale: str = "ratio", ref: float = 1.0) -> Change:  # fmt: skip
    return Change(est, scale, ci, ci_ni or ci, ref, est, "t", None, None, "i", 100)


LOWER = MetricSpec(measure="request_ttft_s", quantile=0.5, margin=0.10)
HIGHER = MetricSpec(measure="quality", scorer="x", direction="higher", margin=0.03,
                    margin_type="absolute")  # fmt: skip


# ---------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("ci", "ci_ni", "label", "reason"),
    [
        ((1.12, 1.30), (1.15, 1.25), "High", "worse_than_margin"),  # entirely above 1.10
        ((0.95, 1.12), (0.97, 1.08), "Pass", None),  # pass interval inside, worse one spans
        ((0.95, 1.20), (0.97, 1.15), "Undecided", "interval_spans_margin"),
        ((0.70, 0.80), (0.72, 0.78), "Pass", None),  # faster is fine when lower is better
        ((1.10, 1.20), (1.12, 1.18), "Undecided", "interval_spans_margin"),  # touching: not beyond
        ((math.nan, math.nan), (math.nan, math.nan), "Undecided", "not_estimable"),
    ],
)
def test_classify_lower_is_better(ci, ci_ni, label, reason) -> None:
    got, why, r = classify(LOWER, change(1.0, ci, ci_ni))
    assert (got, why) == (label, reason)
    assert (r.lo, r.hi) == (-math.inf, pytest.approx(1.10))


def test_classify_higher_is_better_difference() -> None:
    assert classify(HIGHER, change(-0.1, (-0.14, -0.07), scale="difference"))[0] == "Low"
    assert classify(HIGHER, change(0.0, (-0.04, 0.04), (-0.02, 0.02), "difference"))[0] == "Pass"
    assert classify(HIGHER, change(0.2, (0.1, 0.3), scale="difference"))[0] == "Pass"


def test_classify_either_direction_and_relative_difference() -> None:
    spec = MetricSpec(measure="quality", scorer="n", direction="either", margin=0.25)
    assert classify(spec, change(1.4, (1.3, 1.5)))[0] == "High"
    assert classify(spec, change(0.6, (0.5, 0.7)))[0] == "Low"
    assert classify(spec, change(1.0, (0.9, 1.1)))[0] == "Pass"
    # a relative margin on a difference scale is margin x |baseline value|
    rel = MetricSpec(measure="failure_rate", margin=0.5)
    r = region(rel, change(0.0, (0, 0), scale="difference", ref=0.04))
    assert r.hi == pytest.approx(0.02)
    assert classify(rel, change(0.03, (0.021, 0.04), scale="difference", ref=0.04))[0] == "High"


# ---------------------------------------------------------------- score and decision


def J(name: str, cls: str, critical: bool = False, weight: float = 1.0, reason=None) -> Judged:
    return Judged(name, cls, reason, critical, weight)


def test_scores_are_weighted_over_metrics_with_data() -> None:
    ms = [J("a", "Pass", weight=2), J("b", "Undecided", reason="interval_spans_margin"),
          J("c", "High", reason="worse_than_margin"), J("d", "NoData", reason="no_data")]  # fmt: skip
    score, ceiling = scores(ms)
    assert score == pytest.approx(50.0)  # 2 of 4 weight with data
    assert ceiling == pytest.approx(75.0)  # only c is shown worse


def test_critical_metric_worse_is_no_go_and_named() -> None:
    ms = [J("q", "Low", True, reason="worse_than_margin")] + [J(f"l{i}", "Pass") for i in range(9)]
    d = decide(ms, 90, 75)
    assert d.decision == "NO_GO"
    assert d.reasons == ["worse_than_margin:q"]


def test_noncritical_worse_metrics_pull_the_ceiling_below_marginal() -> None:
    ms = [J(f"w{i}", "High", reason="worse_than_margin") for i in range(3)]
    ms += [J(f"p{i}", "Pass") for i in range(7)]
    d = decide(ms, 90, 75)
    assert d.decision == "NO_GO" and "score_below_marginal" in d.reasons
    assert {"worse_than_margin:w0", "worse_than_margin:w2"} <= set(d.reasons)


def test_undecided_metrics_never_make_no_go() -> None:
    # Kayenta would fail this (score 20 < 75): here nothing is shown worse -> INCONCLUSIVE
    ms = [J(f"u{i}", "Undecided", reason="interval_spans_margin") for i in range(8)]
    ms += [J("p0", "Pass"), J("p1", "Pass")]
    d = decide(ms, 90, 75)
    assert d.decision == "INCONCLUSIVE" and d.score == pytest.approx(20.0)
    assert d.reasons[0] == "score_below_pass" and "interval_spans_margin:u0" in d.reasons


def test_go_needs_every_critical_metric_pass_and_the_score() -> None:
    passing = [J(f"p{i}", "Pass") for i in range(10)]
    assert decide([J("c", "Pass", True), *passing], 90, 75).decision == "GO"
    d = decide([J("c", "Undecided", True, reason="interval_spans_margin"), *passing], 90, 75)
    assert d.decision == "INCONCLUSIVE" and d.reasons == ["interval_spans_margin:c"]
    d = decide([J("c", "NoData", True, reason="insufficient_n"), *passing], 90, 75)
    assert d.decision == "INCONCLUSIVE" and d.reasons == ["insufficient_n:c"]
    undecided = J("u", "Undecided", reason="interval_spans_margin")
    assert decide([*passing, undecided], 90, 75).decision == "GO"  # 10 of 11: 90.9
    d = decide([*passing[:8], undecided], 90, 75)  # 8 of 9: 88.9 < 90
    assert d.decision == "INCONCLUSIVE"
    assert d.reasons == ["score_below_pass", "interval_spans_margin:u"]


def test_no_data_is_inconclusive() -> None:
    d = decide([J("a", "NoData", True, reason="no_data")], 90, 75)
    assert (d.decision, d.score, d.reasons) == ("INCONCLUSIVE", None, ["no_data"])


# ---------------------------------------------------------------- settings


def test_settings_defaults_and_errors_name_the_key() -> None:
    cfg = judge_from_config(None)
    assert cfg.alpha == 0.05 and "ttft_p99" in cfg.metrics and cfg.metrics["quality"].critical
    cfg = judge_from_config({"metrics": {"ttft_p99": {"critical": True}}, "alpha": 0.1})
    assert cfg.metrics["ttft_p99"].critical and cfg.metrics["ttft_p99"].quantile == 0.99
    cases = [
        ({"alpah": 0.1}, "judge.alpah"),
        ({"alpha": 0.7}, "judge.alpha"),
        ({"marginal_score": 95, "pass_score": 90}, "judge.marginal_score"),
        ({"metrics": {"x": {"measure": "ttft"}}}, "judge.metrics.x.measure"),
        ({"metrics": {"x": {"measure": "request_ttft_s"}}}, "judge.metrics.x.quantile"),
        ({"metrics": {"ttft_p50": {"direction": "up"}}}, "judge.metrics.ttft_p50.direction"),
        ({"metrics": {"ttft_p50": {"margn": 0.2}}}, "judge.metrics.ttft_p50.margn"),
        ({"metrics": {"failure_rate": {"margin": -1}}}, "judge.metrics.failure_rate.margin"),
        ({"metrics": {"x": {"margin": 0.1}}}, "judge.metrics.x.measure"),
    ]
    for raw, key in cases:
        with pytest.raises(ConfigError) as exc:
            judge_from_config(raw)
        msg = str(exc.value)
        assert msg.startswith(key) and "\n" not in msg, (raw, msg)


def test_pick_arms_defaults_and_errors() -> None:
    cfg = JudgeConfig()
    kinds = {"selfhosted": "sim_vllm", "cloud": "sim_cloud", "other": "sim_vllm"}
    assert pick_arms(cfg, kinds) == ("cloud", "selfhosted")
    assert pick_arms(cfg, {"a": "sim_vllm", "b": "sim_vllm"}) == ("a", "b")
    assert pick_arms(replace(cfg, candidate="other"), kinds) == ("cloud", "other")
    assert pick_arms(replace(cfg, baseline="other"), kinds) == ("other", "selfhosted")
    with pytest.raises(ConfigError, match="^judge.baseline: 'nope' is not an arm"):
        pick_arms(replace(cfg, baseline="nope"), kinds)
    with pytest.raises(ConfigError, match="^judge.candidate: the run has 1 arm"):
        pick_arms(cfg, {"a": "sim_vllm"})


def test_n_required_tail_rule() -> None:
    cfg = JudgeConfig()
    ms = default_metrics()
    assert n_required(cfg, ms["ttft_p50"]) == 100
    assert n_required(cfg, ms["ttft_p95"]) == 100
    assert n_required(cfg, ms["ttft_p99"]) == 500
    assert n_required(cfg, ms["failure_rate"]) == 100


# ---------------------------------------------------------------- statistics

LV = Levels(0.05, 10)
RS = Resampling(1000, 0, None)


def test_levels() -> None:
    assert LV.ni == pytest.approx(0.90) and LV.worse == pytest.approx(0.99)
    assert LV.stretch == pytest.approx(sps.norm.isf(0.005) / sps.norm.isf(0.05))


def test_paired_proportion_uses_newcombe_at_both_levels() -> None:
    from harness.analysis.paired import paired_proportion_diff_ci

    x = np.array([1.0] * 90 + [0.0] * 10)
    y = np.array([1.0] * 80 + [0.0] * 20)
    c = proportion_change(BinarySample(x, y, paired=True), False, LV, RS)
    assert c.estimate == pytest.approx(-0.10)
    assert c.ci_ni == pytest.approx(paired_proportion_diff_ci(80, 10, 0, 10, 0.90)[1:])
    assert c.ci == pytest.approx(paired_proportion_diff_ci(80, 10, 0, 10, 0.99)[1:])
    assert c.p == pytest.approx(2 * 0.5**10)  # exact McNemar, b=10, c=0
    assert c.detail["n10"] == 10 and c.detail["n01"] == 0


def test_unpaired_proportion_matches_statsmodels_newcombe() -> None:
    from statsmodels.stats.proportion import confint_proportions_2indep

    x = np.r_[np.ones(30), np.zeros(170)]  # baseline 15%
    y = np.r_[np.ones(50), np.zeros(150)]  # candidate 25%
    c = proportion_change(BinarySample(x, y, paired=False), False, LV, RS)
    lo, hi = confint_proportions_2indep(50, 200, 30, 200, method="newcomb", alpha=0.10)
    assert c.estimate == pytest.approx(0.10)
    assert c.ci_ni == pytest.approx((lo, hi), abs=1e-9)
    assert c.p == pytest.approx(sps.fisher_exact([[50, 150], [30, 170]]).pvalue)


def test_mean_change_paired_and_unpaired_tests_match_scipy() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0.5, 0.1, 150)
    y = x + rng.normal(0.02, 0.05, 150)
    c = mean_change(ScoreSample(x, y, paired=True), False, LV, RS)
    assert c.estimate == pytest.approx(float((y - x).mean()))
    assert c.p == pytest.approx(sps.wilcoxon(y - x, zero_method="pratt").pvalue)
    assert c.ci_ni[0] < c.estimate < c.ci_ni[1]
    assert c.ci[0] < c.ci_ni[0] and c.ci[1] > c.ci_ni[1]  # the Bonferroni one is wider
    u = mean_change(ScoreSample(x, y, paired=False), False, LV, RS)
    assert u.p == pytest.approx(sps.mannwhitneyu(y, x).pvalue)


def test_quantile_change_ratio_paired_and_unpaired() -> None:
    rng = np.random.default_rng(5)
    load = rng.normal(0, 0.3, 800)
    x = np.exp(load + rng.normal(0, 0.05, 800))
    y = 1.5 * np.exp(load + rng.normal(0, 0.05, 800))
    s = LatencySample(x, y, paired=True, measure="request_ttft_s", quantiles=(0.5, 0.99))
    c = quantile_change(s, 0.5, True, LV, RS)
    assert c.scale == "ratio" and c.estimate == pytest.approx(1.5, rel=0.03)
    assert c.ci[0] < c.estimate < c.ci[1] and c.ci[0] > 1.3
    assert "block length" in c.interval and c.p < 1e-6
    assert len(s.cache) == 1  # p50 and p99 come from one bootstrap
    quantile_change(s, 0.99, True, LV, RS)
    assert len(s.cache) == 1
    u = quantile_change(LatencySample(x, y, paired=False, measure="m"), 0.5, True, LV, RS)
    assert u.ci[0] > 1.2 and "independent" in u.interval
    # pairing removes the shared load: the paired interval is much narrower
    assert (c.ci[1] - c.ci[0]) < 0.5 * (u.ci[1] - u.ci[0])


def test_quantile_change_censored_tail_is_unbounded() -> None:
    rng = np.random.default_rng(1)
    x = rng.lognormal(0, 0.2, 600)
    y = x * 1.01
    y[:30] = np.inf  # 5% failed: the candidate's p99 is censored
    c = quantile_change(LatencySample(x, y, paired=True, measure="m"), 0.99, True, LV, RS)
    assert c.estimate == math.inf and c.ci[1] == math.inf
    got, reason, _ = classify(LOWER, c)
    assert got == "High" or reason in ("interval_spans_margin", "not_estimable")


def test_cost_change_fixed_and_sampled() -> None:
    both_fixed = cost_change(CostSample(None, None, 0.002, 0.001), True, LV, RS)
    assert both_fixed.estimate == pytest.approx(0.5) and both_fixed.ci == pytest.approx((0.5, 0.5))
    assert both_fixed.p is None
    rng = np.random.default_rng(2)
    api = rng.lognormal(np.log(1e-3), 0.3, 400)
    c = cost_change(CostSample(api, None, None, 2e-3), True, LV, RS)
    assert c.estimate == pytest.approx(2e-3 / api.mean())
    assert c.p == pytest.approx(sps.ttest_1samp(api, 2e-3).pvalue)
    assert c.ci[0] < c.estimate < c.ci[1]


# ---------------------------------------------------------------- the whole judge, small


def _inputs(n: int = 300, drop: float = 0.0, quality: bool = True) -> JudgeInputs:
    rng = np.random.default_rng(0)
    x = rng.lognormal(np.log(0.03), 0.1, n)
    y = x * np.exp(rng.normal(0, 0.01, n))
    right = rng.random(n) < 0.9
    cand = right & (rng.random(n) >= drop / 0.9)
    q = {"exact_match": QualityScorer("binary", "higher", BinarySample(
        right.astype(float), cand.astype(float), paired=True))} if quality else {}  # fmt: skip
    return JudgeInputs(
        ArmRef("r", "base"), ArmRef("r", "cand"),
        latency={"request_ttft_s": LatencySample(x, y, paired=True, measure="request_ttft_s")},
        failures=BinarySample(np.zeros(n), np.zeros(n), paired=True), quality=q,
    )  # fmt: skip


def test_judge_templates_tail_floor_and_holm() -> None:
    cfg = JudgeConfig(resamples=500)
    v = judge(_inputs(), cfg)
    by = {m.name: m for m in v.metrics}
    assert by["ttft_p99"].classification == "NoData" and by["ttft_p99"].reason == "insufficient_n"
    assert by["tpot_p50"].reason == "no_data"  # no TPOT sample at all
    assert by["quality.exact_match"].spec.direction == "higher"
    assert by["quality.exact_match"].spec.critical
    assert v.levels.m == sum(1 for m in v.metrics if m.change is not None)
    ps = [m for m in v.metrics if m.change is not None and m.change.p is not None]
    assert all(m.p_holm is not None and m.p_holm >= m.change.p for m in ps)  # type: ignore[union-attr]
    assert v.decision == "GO" and v.mde and "items" in v.mde[0]
    d = v.to_dict()
    assert set(d["metrics"]["ttft_p50"]) >= {"classification", "estimate", "ci", "margin", "n",
                                             "test", "statistic", "p", "p_holm", "critical",
                                             "weight"}  # fmt: skip


def test_judge_catches_a_quality_drop_and_explicit_scorer_entry_wins() -> None:
    cfg = JudgeConfig(resamples=500)
    v = judge(_inputs(drop=0.15), cfg)
    assert v.decision == "NO_GO" and "worse_than_margin:quality.exact_match" in v.reasons
    metrics = dict(cfg.metrics)
    metrics["em"] = MetricSpec(measure="quality", scorer="exact_match", direction="auto",
                               margin=0.5, margin_type="absolute")  # fmt: skip
    v = judge(_inputs(drop=0.15), replace(cfg, metrics=metrics))
    names = [m.name for m in v.metrics]
    assert "em" in names and "quality.exact_match" not in names
    assert next(m for m in v.metrics if m.name == "em").classification == "Pass"


def test_judge_without_quality_scores_notes_it_and_errors_are_nodata() -> None:
    inputs = _inputs(quality=False)
    inputs.errors["cost_per_task"] = "catalog missing"
    v = judge(inputs, JudgeConfig(resamples=500))
    assert any("No quality scores" in n for n in v.notes)
    cost = next(m for m in v.metrics if m.name == "cost_per_task")
    assert (cost.classification, cost.reason, cost.error) == ("NoData", "errors", "catalog missing")
    planned, _ = plan(JudgeConfig(), inputs)
    assert not any(p.spec.measure == "quality" for p in planned)


def test_experiment_config_checks_judge_settings_before_a_run(tmp_path) -> None:
    from harness.config import validate_config

    cfg = {"experiment": {"name": "x"}, "record": {"reports_dir": str(tmp_path)},
           "arms": {"a": {"target": "sim_vllm"}, "b": {"target": "sim_vllm"}}}  # fmt: skip
    assert validate_config(cfg).judge.alpha == 0.05
    for raw, msg in (({"candidate": "nope"}, "judge.candidate: 'nope' is not an arm"),
                       ({"min_n": 1}, "judge.min_n: must be an integer >= 2")):  # fmt: skip
        with pytest.raises(ConfigError, match=f"^{msg}"):
            validate_config({**cfg, "judge": raw})
