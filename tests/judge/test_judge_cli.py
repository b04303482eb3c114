"""The judge on run directories: the report section, `harness judge` and its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.analysis.data import load_run
from harness.cli import main
from harness.judge.section import BASELINE_FILE, verdict_section
from tests.judge.runs import write_eval_run


def test_identical_arms_go_paired_on_pair_id(tmp_path: Path) -> None:
    v = verdict_section(load_run(write_eval_run(tmp_path / "aa")), {})
    assert v["decision"] == "GO", v["reasons"]
    assert (v["baseline"]["arm"], v["candidate"]["arm"]) == ("base", "cand")
    m = v["metrics"]
    assert m["ttft_p50"]["paired"] is True and "block length" in m["ttft_p50"]["interval"]
    assert m["ttft_p99"]["classification"] == "NoData"  # 400 < 500: not judged, not GO-blocking
    assert m["ttft_p99"]["reason"] == "insufficient_n" and not m["ttft_p99"]["critical"]
    assert m["quality.exact_match"]["classification"] == "Pass"
    assert m["quality.exact_match"]["n"] == 400 and m["quality.exact_match"]["critical"]
    assert v["smallest_detectable_change"][0].startswith("quality.exact_match: with 400 items")


def test_regressed_candidate_is_no_go_naming_the_metrics(tmp_path: Path) -> None:
    run = write_eval_run(tmp_path / "reg", drop=0.2, ttft_shift_s=0.01)
    v = verdict_section(load_run(run), {})
    assert v["decision"] == "NO_GO"
    assert "worse_than_margin:quality.exact_match" in v["reasons"]
    assert "worse_than_margin:ttft_p50" in v["reasons"]
    assert v["metrics"]["quality.exact_match"]["classification"] == "Low"
    assert v["metrics"]["ttft_p50"]["classification"] == "High"


def test_default_arms_and_cost_per_task_of_an_api_arm(tmp_path: Path) -> None:
    kinds = {"cloud": "sim_cloud", "selfhosted": "sim_vllm"}
    run = write_eval_run(tmp_path / "mixed", arms=("selfhosted", "cloud"), kinds=kinds)
    v = verdict_section(load_run(run), {})
    assert (v["baseline"]["arm"], v["candidate"]["arm"]) == ("cloud", "selfhosted")
    cost = v["metrics"]["cost_per_task"]
    assert cost["n"] == 400 and cost["scale"] == "ratio" and cost["p"] is not None
    assert "fixed: candidate" in cost["interval"] and cost["test"].startswith("one-sample t")


def test_one_arm_run_has_a_note_not_a_verdict(tmp_path: Path) -> None:
    v = verdict_section(load_run(write_eval_run(tmp_path / "one", arms=("solo",))), {})
    assert (
        v["decision"] == "INCONCLUSIVE"
        and v["reasons"] == ["no_data"]
        and "--baseline-run" in v["note"]
    )


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["judge", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no manifest.json" in err and "\n" not in err
    bad = write_eval_run(tmp_path / "bad", judge={"baseline": "nope"})
    assert main(["judge", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error: judge.baseline: 'nope' is not an arm") and "\n" not in err
    typo = write_eval_run(tmp_path / "typo", judge={"alhpa": 0.1})
    assert main(["judge", str(typo)]) == 2
    assert capsys.readouterr().err.strip().startswith("config error: judge.alhpa: unknown key")
    solo = write_eval_run(tmp_path / "solo", arms=("solo",))
    assert main(["judge", str(solo)]) == 2
    assert "judge.candidate: the run has 1 arm" in capsys.readouterr().err
    assert not (solo / "report.html").exists()  # nothing written on bad input


def test_harness_judge_writes_the_verdict_first_and_escapes(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    old = write_eval_run(tmp_path / "old", arms=("cand",), run_id="<script>x</script>")
    new = write_eval_run(tmp_path / "new", arms=("cand",), first_drop=0.2, run_id="new")
    assert main(["judge", str(new), "--baseline-run", str(old)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("verdict: NO_GO") and "worse_than_margin:quality.exact_match" in out
    assert json.loads((new / BASELINE_FILE).read_text())["baseline_run"] == str(old.resolve())
    summary = json.loads((new / "summary.json").read_text())
    v = summary["verdict"]
    assert (
        v["baseline"]["run_id"] == "<script>x</script>"
        and v["metrics"]["ttft_p50"]["paired"] is False
    )
    html = (new / "report.html").read_text()
    assert html.index('<section id="verdict">') < html.index('<section id="run">')
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    memo = (new / "memo.md").read_text()
    first = next(line for line in memo.splitlines() if line.startswith("## "))
    assert first.startswith("## Verdict: NO\\_GO") or first.startswith("## Verdict: NO_GO")
    assert "<script>" not in memo
    # judged on its own, the one-arm run is bad input: exit 2, the recorded baseline kept
    assert main(["judge", str(new)]) == 2
    assert (new / BASELINE_FILE).exists()
