"""The scores table: which rows are scored, unanswered counts, the Parquet layout, caching,
rows that cannot be scored, and `harness score`."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from harness.cli import main as cli_main
from harness.quality.score import (
    SCORES_FILE,
    SCORES_SCHEMA,
    ScoreError,
    ensure_scores,
    item_values,
    read_scores,
    score_run,
)
from tests.quality.runs import config_with_eval, eval_file, rec, write_run


def _run(tmp_path, small_eval, records, **over):
    return write_run(tmp_path / "run", records, config=config_with_eval(small_eval), **over)


def test_final_attempts_are_scored_and_failures_counted_unanswered(tmp_path, small_eval):
    records = [
        rec("cloud", 0, "a1", "2", "2"),
        rec("cloud", 1, "a2", "4", None, status="error"),  # retried ...
        rec("cloud", 1, "a2", "4", "5", attempt=1),  # ... and answered wrong
        rec("cloud", 2, "f1", "Paris", None, status="error"),  # never answered
        rec("cloud", 3, "j1", '{"n": 1}', "I can't help with that.", tokens=7),
        rec("cloud", 4, "a1", "2", None, status="error", error_type="cancelled"),
        rec("selfhosted", 0, "a1", "2", "2"),
        rec("selfhosted", 9, "a1", "2", "x", phase="warmup"),  # not analysed
    ]
    s = score_run(_run(tmp_path, small_eval, records))
    c = s.counts["cloud"]
    assert (c.requests, c.answered, c.unanswered, c.cancelled) == (4, 3, 1, 1)
    assert s.counts["selfhosted"].answered == 1
    df = s.table.to_pandas()
    cloud = df[df.arm == "cloud"]
    assert set(cloud.request_id) == {"cloud-0", "cloud-1", "cloud-3"}
    assert (cloud[cloud.request_id == "cloud-1"].attempt == 1).all()
    v = {(r.sample_id, r.scorer): r.value for r in cloud.itertuples()}
    assert v[("a1", "exact_match")] == 1.0 and v[("a2", "exact_match")] == 0.0
    assert v[("a2", "numeric_match")] == 0.0
    assert v[("j1", "refusal")] == 1.0 and v[("j1", "json_schema")] == 0.0
    assert v[("j1", "output_tokens")] == 7.0
    assert ("a1", "regex_match") not in v and ("j1", "numeric_match") not in v
    assert set(df.kind) <= {"binary", "score", "length"}
    assert dict(zip(df.scorer, df.kind, strict=True))["similarity"] == "score"
    assert set(df.category) == {"arith", "json"}


def test_the_parquet_file_has_the_documented_columns_and_metadata(tmp_path, small_eval):
    run = _run(tmp_path, small_eval, [rec("cloud", 0, "a1", "2", "2")])
    score_run(run)
    t = pq.read_table(run / SCORES_FILE)
    assert t.schema.remove_metadata().equals(SCORES_SCHEMA)
    meta = t.schema.metadata
    assert meta[b"harness.scores_schema_version"] == b"1"
    assert b"harness.scores.counts" in meta
    back = read_scores(run)
    assert back.counts["cloud"].answered == 1 and back.n_rows == t.num_rows


def test_scores_are_cached_until_an_input_changes(tmp_path, small_eval):
    run = _run(tmp_path, small_eval, [rec("cloud", 0, "a1", "2", "2")])
    first = ensure_scores(run)
    mtime = (run / SCORES_FILE).stat().st_mtime_ns
    again = ensure_scores(run)
    assert again.fingerprint == first.fingerprint
    assert (run / SCORES_FILE).stat().st_mtime_ns == mtime  # reused, not rewritten
    part = next((run / "requests").glob("*.parquet"))
    os.utime(part, ns=(mtime + 10**9, mtime + 10**9))
    assert ensure_scores(run).fingerprint != first.fingerprint


def test_items_without_eval_file_are_scored_from_the_rows(tmp_path):
    run = write_run(tmp_path / "run", [rec("cloud", 0, "zz", "42", "The answer is 42",
                                           slice_="eval:misc")])  # fmt: skip
    s = score_run(run)  # manifest path None -> the default basic_qa.jsonl has no "zz"
    v = {r["scorer"]: r["value"] for r in s.table.to_pylist()}
    assert v["numeric_match"] == 1.0 and v["exact_match"] == 0.0
    assert s.table.column("category").to_pylist()[0] == "misc"
    assert any("not in the eval file" in n for n in s.notes)


def test_a_changed_reference_is_scored_against_the_recorded_one(tmp_path, small_eval):
    run = _run(tmp_path, small_eval, [rec("cloud", 0, "a1", "3", "3")])
    s = score_run(run)
    assert {r["scorer"]: r["value"] for r in s.table.to_pylist()}["exact_match"] == 1.0
    assert any("changed their answer" in n for n in s.notes)


@pytest.mark.parametrize("mode", ["hash", "drop"])
def test_hashed_or_dropped_text_cannot_be_scored(tmp_path, small_eval, mode):
    cfg = config_with_eval(small_eval)
    cfg["record"] = {"output_text": mode}
    run = write_run(tmp_path / "run", [rec("cloud", 0, "a1", "2", "d4f0")], config=cfg)
    with pytest.raises(ScoreError, match=f"output_text as '{mode}'.*output_text=keep"):
        score_run(run)


def test_no_reference_rows_is_a_clear_error(tmp_path):
    r = rec("cloud", 0, "a1", "2", "2")
    r.reference_answer = None
    with pytest.raises(ScoreError, match="no request rows with a reference answer"):
        score_run(write_run(tmp_path / "run", [r]))


def test_an_unknown_scorer_in_the_eval_file_names_the_line(tmp_path):
    ev = eval_file(tmp_path / "e.jsonl", [{"id": "a1", "category": "c", "prompt": "p",
                                           "answer": "2", "scorers": ["bleu"]}])  # fmt: skip
    run = write_run(tmp_path / "run", [rec("cloud", 0, "a1", "2", "2")],
                    config=config_with_eval(ev))  # fmt: skip
    with pytest.raises(ScoreError, match=r"e.jsonl:1: field 'scorers': unknown scorer"):
        score_run(run)


def test_item_values_average_repeats(tmp_path, small_eval):
    records = [rec("cloud", 0, "a1", "2", "2"), rec("cloud", 1, "a1", "2", "3"),
               rec("cloud", 2, "a2", "4", "4")]  # fmt: skip
    s = score_run(_run(tmp_path, small_eval, records))
    ids, vals, info = item_values(s.table, "cloud", "exact_match")
    assert ids.tolist() == ["a1", "a2"] and vals.tolist() == [0.5, 1.0]
    assert info == {"occurrences": 3, "repeated_items": 1}


def test_harness_score_command(tmp_path, small_eval, capsys):
    run = _run(tmp_path, small_eval, [rec("cloud", 0, "a1", "2", "2"),
                                      rec("selfhosted", 0, "a1", "2", "1")])  # fmt: skip
    assert cli_main(["score", str(run)]) == 0
    out = capsys.readouterr().out
    assert "cloud: 1 of 1 eval requests scored" in out and "report:" in out
    assert (run / SCORES_FILE).is_file() and (run / "summary.json").is_file()


def test_harness_score_errors_are_one_line_exit_2(tmp_path, small_eval, capsys):
    assert cli_main(["score", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    cfg = config_with_eval(small_eval)
    cfg["record"] = {"output_text": "drop"}
    run = write_run(tmp_path / "run", [rec("cloud", 0, "a1", "2", None)], config=cfg)
    assert cli_main(["score", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot score") and err.count("\n") == 1
