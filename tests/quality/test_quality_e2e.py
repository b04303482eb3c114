"""End to end: an experiment on the canary eval set whose candidate simulator is less accurate
and more verbose ends with scores, a quality section that shows both drifts, and a
`harness score` that reproduces the table."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests.load.e2e import only_run_dir, run_harness


@pytest.mark.slow
def test_experiment_scores_the_canary_set_and_shows_the_drifts(tmp_path):
    args = [
        "experiment",
        "experiment=smoke",
        "workload=eval_canary",
        f"record.reports_dir={tmp_path}",
        "load.rate=60",
        "load.max_requests=240",
        "load.duration_s=30",
        "load.warmup_s=0",
        "progress_interval_s=5",
        "arms.selfhosted.sim.params={accuracy: 0.6, verbosity: 2.0}",
        "arms.selfhosted.sim.seed=1",
    ]
    r = run_harness(args, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    run = only_run_dir(tmp_path)
    table = pq.read_table(run / "scores" / "scores.parquet")
    assert set(table.column("arm").to_pylist()) == {"cloud", "selfhosted"}
    q = json.loads((run / "summary.json").read_text())["quality"]
    assert q["info"]["baseline"] == "cloud" and q["info"]["candidate"] == "selfhosted"
    assert q["cloud"]["exact_match"]["n"] == 240 and q["cloud"]["exact_match"]["unanswered"] == 0
    c = q["comparison"]
    assert c["numeric_match"]["estimate"] < -0.15 and c["numeric_match"]["p_holm"] < 0.01
    assert c["output_tokens"]["estimate"] > 1.0 and c["output_tokens"]["p_holm"] < 0.01
    assert c["refusal"]["estimate"] == 0.0 and c["refusal"]["p_holm"] == 1.0
    assert c["exact_match"]["unmatched_baseline"] == 0
    assert set(c["exact_match"]["by_category"]) == {
        "arithmetic", "primality", "unit_conversion", "fact_lookup", "json_extraction"
    }  # fmt: skip
    assert "## Quality" in (run / "memo.md").read_text()
    before = table.sort_by([("arm", "ascending"), ("request_id", "ascending"),
                            ("scorer", "ascending")])  # fmt: skip
    r2 = run_harness(["score", str(run), "--no-report"], timeout=120)
    assert r2.returncode == 0, r2.stderr
    assert "cloud: 240 of 240 eval requests scored" in r2.stdout
    after = pq.read_table(run / "scores" / "scores.parquet").sort_by(
        [("arm", "ascending"), ("request_id", "ascending"), ("scorer", "ascending")]
    )
    assert after.equals(before)
