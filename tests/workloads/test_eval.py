"""Eval sets: items carry the reference answer and the prompt verbatim as the user message."""

from __future__ import annotations

import json

import pytest

from harness.config import WorkloadConfig
from harness.workloads import WorkloadError, build_workload
from harness.workloads.eval import DEFAULT_EVAL_MAX_TOKENS


def test_basic_qa_items_match_the_file(root):
    path = root / "workloads/eval/basic_qa.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    w = build_workload(WorkloadConfig(name="qa", kind="eval", shuffle=False), root)
    assert len(w) == len(rows) == 100
    for i, row in enumerate(rows):
        it = w.item(i)
        assert it.sample_id == row["id"]
        assert it.chat_messages() == [{"role": "user", "content": row["prompt"]}]
        assert it.prompt_text() == row["prompt"]
        assert it.reference_answer == row["answer"]
        assert it.slice == f"eval:{row['category']}"
        assert it.max_tokens == DEFAULT_EVAL_MAX_TOKENS and not it.force_length
    assert {w.item(i).slice for i in range(len(w))} == {"eval:arith", "eval:fact"}


def test_shuffled_cycles_cover_every_item(root):
    w = build_workload(WorkloadConfig(name="qa", kind="eval", max_tokens=8), root)
    ids = [w.item(i).sample_id for i in range(300)]
    for c in range(3):
        assert len(set(ids[c * 100 : (c + 1) * 100])) == 100
    assert ids[:100] != ids[100:200]
    assert w.item(0).max_tokens == 8


def test_directory_of_eval_files_and_errors(tmp_path):
    d = tmp_path / "ev"
    d.mkdir()
    (d / "a.jsonl").write_text(json.dumps(dict(id="x1", category="c", prompt="p1", answer="1")))
    (d / "b.jsonl").write_text(json.dumps(dict(id="x2", category="c", prompt="p2", answer="2")))
    w = build_workload(WorkloadConfig(kind="eval", path=str(d), shuffle=False), tmp_path)
    assert [w.item(i).sample_id for i in range(2)] == ["x1", "x2"]
    (d / "c.jsonl").write_text(
        json.dumps(dict(id="x3", category="c", prompt="p3", answer="3"))
        + "\n"
        + json.dumps(dict(id="x4", category="c", prompt="p4"))
    )
    with pytest.raises(WorkloadError, match=r"c\.jsonl:2: missing required field 'answer'"):
        build_workload(WorkloadConfig(kind="eval", path=str(d)), tmp_path)
    (d / "c.jsonl").write_text(json.dumps(dict(id="x1", category="c", prompt="p", answer="1")))
    with pytest.raises(
        WorkloadError, match=r"c\.jsonl:1: duplicate id 'x1' \(first at .*a\.jsonl:1\)"
    ):
        build_workload(WorkloadConfig(kind="eval", path=str(d)), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkloadError, match="no \\*\\.jsonl"):
        build_workload(WorkloadConfig(kind="eval", path=str(tmp_path / "empty")), tmp_path)
