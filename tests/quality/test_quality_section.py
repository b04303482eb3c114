"""The quality section: per-arm statistics and the paired comparison against hand-computed
values, arm choice, rendering with escaping, and the calibration of the paired test on the
simulator's correlated-error model (false alarms at or below alpha, power for a 10-point
drop)."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats as sps

from harness.analysis.paired import mcnemar_exact, paired_proportion_diff_ci
from harness.analysis.stats import wilson_ci
from harness.quality.score import SCORES_SCHEMA, ArmCounts, Scores
from harness.quality.section import paired_comparison, pick_arms, summarize, t_interval
from harness.report import build_report
from harness.sim.answers import AnswerBook
from tests.quality.runs import config_with_eval, eval_file, rec, write_run


def _scores(rows: list[tuple[str, str, str, str, float]], counts=None) -> Scores:
    """rows: (arm, sample_id, category, scorer, value)."""
    from harness.quality.scorers import SCORERS

    cols = {f.name: [] for f in SCORES_SCHEMA}
    for k, (arm, sid, cat, scorer, v) in enumerate(rows):
        for name, val in (("run_id", "r"), ("arm", arm), ("sample_id", sid),
                          ("request_id", f"{arm}-{k}"), ("attempt", 0), ("pair_id", f"p{k}"),
                          ("category", cat), ("scorer", scorer),
                          ("kind", SCORERS[scorer].kind), ("value", v)):  # fmt: skip
            cols[name].append(val)
    return Scores(pa.Table.from_pydict(cols, schema=SCORES_SCHEMA), counts or {})


BASE = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]  # 9 of 10
CAND = [1, 0, 0, 0, 1, 1, 0, 1, 1, 1]  # 6 of 10; discordant: 4 baseline-only, 1 candidate-only


def _two_arm_rows():
    rows = []
    for i, (b, c) in enumerate(zip(BASE, CAND, strict=True)):
        cat = "x" if i < 5 else "y"
        rows += [
            ("cloud", f"s{i}", cat, "exact_match", b),
            ("selfhosted", f"s{i}", cat, "exact_match", c),
        ]
        rows += [("cloud", f"s{i}", cat, "output_tokens", 10 + i), ("selfhosted", f"s{i}", cat, "output_tokens", 12 + i)]  # fmt: skip
    rows.append(("cloud", "only-base", "x", "exact_match", 1))
    return rows


def test_per_arm_rates_and_comparison_match_hand_computed_values():
    counts = {"cloud": ArmCounts(12, 11, 1, 0), "selfhosted": ArmCounts(10, 10, 0, 0)}
    q = summarize(_scores(_two_arm_rows(), counts), ["cloud", "selfhosted"], "cloud",
                  "selfhosted", confidence=0.95, resamples=500, seed=1)  # fmt: skip
    em = q["cloud"]["exact_match"]
    assert (em["n"], em["passed"], em["rate"]) == (11, 10, pytest.approx(10 / 11))
    assert em["ci"] == pytest.approx(list(wilson_ci(10, 11, 0.95)))
    assert em["unanswered"] == 1 and em["ci_method"] == "wilson"
    assert q["selfhosted"]["exact_match"]["by_category"]["x"]["rate"] == pytest.approx(2 / 5)
    c = q["comparison"]["exact_match"]
    assert (c["n_pairs"], c["unmatched_baseline"], c["unmatched_candidate"]) == (10, 1, 0)
    assert c["discordant"] == {"baseline_only": 4, "candidate_only": 1}
    assert c["estimate"] == pytest.approx(-0.3)
    # exact McNemar by hand: 2 * P(Bin(5, 1/2) <= 1) = 2 * 6 / 32
    assert c["p"] == pytest.approx(0.375) == mcnemar_exact(4, 1)
    assert c["ci"] == pytest.approx(list(paired_proportion_diff_ci(5, 4, 1, 0, 0.95)[1:]))
    assert c["test"] == "mcnemar_exact" and c["better"] == "higher"
    t = q["comparison"]["output_tokens"]
    assert t["estimate"] == pytest.approx(2.0) and t["ci"] == [2.0, 2.0]  # constant diff
    assert t["test"] == "wilcoxon_signed_rank"
    assert t["p"] == pytest.approx(sps.wilcoxon(np.full(10, 2.0), zero_method="pratt").pvalue)
    # Holm over the two scorers: the smaller p doubled, the larger max(itself, that)
    p = sorted([c["p"], t["p"]])
    adj = {min(1, 2 * p[0]), max(min(1, 2 * p[0]), p[1])}
    assert {c["p_holm"], t["p_holm"]} == adj
    assert set(c["by_category"]) == {"x", "y"} and c["by_category"]["x"]["p_holm"] is not None
    assert q["info"]["baseline"] == "cloud" and q["info"]["scorers"] == [
        "exact_match",
        "output_tokens",
    ]


def test_repeated_items_with_disagreeing_answers_use_item_means():
    rows = [("cloud", "s0", "c", "exact_match", 1), ("cloud", "s0", "c", "exact_match", 0)]
    rows += [("cloud", f"s{i}", "c", "exact_match", 1) for i in range(1, 8)]
    rows += [("selfhosted", f"s{i}", "c", "exact_match", i % 2) for i in range(8)]
    q = summarize(_scores(rows), ["cloud", "selfhosted"], "cloud", "selfhosted")
    e = q["cloud"]["exact_match"]
    assert e["ci_method"] == "t" and e["rate"] == pytest.approx(7.5 / 8)
    assert e["repeated_items"] == 1 and e["occurrences"] == 9
    assert q["comparison"]["exact_match"]["test"] == "wilcoxon_signed_rank"


def test_t_interval_hand_computed():
    v = np.array([1.0, 2.0, 3.0, 4.0])
    lo, hi = t_interval(v, 0.95)
    h = sps.t.ppf(0.975, 3) * v.std(ddof=1) / 2
    assert (lo, hi) == pytest.approx((2.5 - h, 2.5 + h))
    assert t_interval(np.array([1.0]), 0.95) == (None, None)


def test_pick_arms_defaults_and_config():
    kinds = {"a": "sim_vllm", "b": "openai", "c": "vllm"}
    assert pick_arms(["a", "b", "c"], kinds) == ("b", "a", "default")
    assert pick_arms(["a", "c"], kinds) == ("a", "c", "default")
    assert pick_arms(["x", "y"], {}) == ("x", "y", "default")
    assert pick_arms(["a", "b", "c"], kinds, {"baseline": "c", "candidate": "b"}) == (
        "c",
        "b",
        "config",
    )
    assert pick_arms(["only"], {}) == ("only", None, "default")


def test_no_comparison_with_one_arm():
    q = summarize(_scores([("cloud", "s0", "c", "exact_match", 1)]), ["cloud"], "cloud", None)
    assert q["comparison"] == {} and q["cloud"]["exact_match"]["n"] == 1


# ------------------------------------------------------------------ calibration

SEEDS = 1000


def _sim_model(acc_base: float, acc_cand: float, rho: float, n_items: int, seed: int):
    """(seeds, items) pass/fail of two servers with different seeds under the simulator's
    own latent model (shared item hardness from the canary set), vectorised."""
    book = AnswerBook.load(["workloads/eval/canary.jsonl"])
    z = np.array([it.hardness for it in book.by_prompt.values()])[:n_items]
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((2, SEEDS, z.size))
    u = sps.norm.cdf(math.sqrt(rho) * z + math.sqrt(1 - rho) * e)
    return u[0] < acc_base, u[1] < acc_cand


def _verdicts(x, y, truth: float):
    rej = cover = 0
    for xs, ys in zip(x.astype(float), y.astype(float), strict=True):
        c = paired_comparison("binary", xs, ys, confidence=0.95, resamples=0, seed=0)
        rej += c["p"] <= 0.05
        cover += c["ci"][0] <= truth <= c["ci"][1]
    return rej / len(x), cover / len(x)


def test_calibration_aa_false_alarms_at_or_below_alpha_and_ci_coverage():
    x, y = _sim_model(0.9, 0.9, 0.5, 600, seed=11)
    rate, coverage = _verdicts(x, y, 0.0)
    print(f"\nA/A (600 items, accuracy 0.9, item_correlation 0.5, {SEEDS} seeds): "
          f"McNemar false alarms {rate:.3f}, Newcombe 95% CI coverage {coverage:.3f}")  # fmt: skip
    # sd of a 5% rate over 1000 seeds is 0.7 points; 10% would read 10 +- 0.95
    assert rate <= 0.065
    assert 0.93 <= coverage <= 0.975


def test_calibration_power_for_a_ten_point_drop():
    for n, floor in ((600, 0.99), (260, 0.85)):
        x, y = _sim_model(0.9, 0.8, 0.5, n, seed=12)
        power, coverage = _verdicts(x, y, -0.1)
        print(f"\n0.90 -> 0.80 with {n} items: McNemar power {power:.3f}, "
              f"CI coverage of the true -0.10 {coverage:.3f}")  # fmt: skip
        assert power >= floor
        assert coverage >= 0.92


# ------------------------------------------------------------------ report


def test_report_section_renders_and_escapes_untrusted_text(tmp_path):
    ev = eval_file(tmp_path / "e.jsonl", [
        {"id": f"s{i}", "category": "<script>alert(1)</script>", "prompt": f"q{i}?",
         "answer": str(i)} for i in range(6)])  # fmt: skip
    records = []
    for i in range(6):
        records.append(rec("cloud", i, f"s{i}", str(i), str(i), slice_="eval:<script>"))
        records.append(rec("selfhosted", i, f"s{i}", str(i), "<img src=x onerror=alert(1)>"
                           if i % 2 else str(i), slice_="eval:<script>"))  # fmt: skip
    run = write_run(tmp_path / "run", records, config=config_with_eval(ev))
    s = build_report(run)
    q = s["quality"]
    assert q["cloud"]["exact_match"]["rate"] == 1.0
    assert q["selfhosted"]["exact_match"]["rate"] == 0.5
    assert q["comparison"]["exact_match"]["estimate"] == pytest.approx(-0.5)
    html = (run / "report.html").read_text()
    assert 'id="quality"' in html and "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    memo = (run / "memo.md").read_text()
    assert "## Quality" in memo and "<script>" not in memo
    assert json.loads((run / "summary.json").read_text())["quality"]["info"]["rows"] > 0


def test_report_says_why_a_run_cannot_be_scored(tmp_path, small_eval):
    cfg = config_with_eval(small_eval)
    cfg["record"] = {"output_text": "hash"}
    run = write_run(tmp_path / "run", [rec("cloud", 0, "a1", "2", "ab12")], config=cfg)
    s = build_report(run)
    assert "record.output_text=keep" in s["quality"]["error"]
    assert "No quality scores" in (run / "report.html").read_text()


def test_no_quality_section_without_references(tmp_path):
    r = rec("cloud", 0, "a1", "2", "2")
    r.reference_answer = None
    run = write_run(tmp_path / "run", [r])
    assert build_report(run)["quality"] is None
    assert "nothing to score" in (run / "report.html").read_text()
    assert "## Quality" not in (run / "memo.md").read_text()
    assert not (run / "scores").exists()
