"""The canary eval set: the shipped file is the generator's output, balanced, well-formed;
the eval reader's new optional fields are checked with errors naming file:line."""

from __future__ import annotations

import collections
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.quality.scorers import SCORERS, ItemSpec, exact_match, scorers_for
from harness.workloads.base import WorkloadError
from harness.workloads.eval import read_eval_file

ROOT = Path(__file__).resolve().parents[2]
CANARY = ROOT / "workloads/eval/canary.jsonl"
GENERATOR = ROOT / "workloads/eval/make_canary_eval.py"


def _generator():
    spec = importlib.util.spec_from_file_location("make_canary_eval", GENERATOR)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shipped_file_equals_the_generators_output():
    gen = _generator()
    assert CANARY.read_text(encoding="utf-8") == gen.render(gen.build()), (
        "workloads/eval/canary.jsonl is out of date: run python workloads/eval/make_canary_eval.py"
    )


def test_generator_check_mode(tmp_path):
    out = tmp_path / "c.jsonl"
    cmd = [sys.executable, str(GENERATOR), "-o", str(out)]
    assert subprocess.run([*cmd, "--check"], capture_output=True).returncode == 1
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert subprocess.run([*cmd, "--check"], capture_output=True).returncode == 0
    assert out.read_bytes() == CANARY.read_bytes()


@pytest.fixture(scope="module")
def lines():
    return list(read_eval_file(CANARY))


def test_at_least_500_items_in_balanced_categories(lines):
    assert len(lines) >= 500
    counts = collections.Counter(x.category for x in lines)
    assert set(counts) == {"arithmetic", "primality", "unit_conversion", "fact_lookup",
                           "json_extraction"}  # fmt: skip
    assert len(set(counts.values())) == 1
    primes = collections.Counter(x.answer for x in lines if x.category == "primality")
    assert primes == {"yes": counts["primality"] // 2, "no": counts["primality"] // 2}


def test_answers_are_right(lines):
    for x in lines:
        if x.category == "primality":
            n = int(x.prompt.split()[1])
            prime = n > 1 and all(n % f for f in range(2, int(n**0.5) + 1))
            assert x.answer == ("yes" if prime else "no"), x.prompt
        elif x.category == "arithmetic":
            expr = x.prompt.removeprefix("Calculate ").split(".")[0]
            assert set(expr) <= set("0123456789+-* ")
            assert str(eval(expr)) == x.answer, x.prompt  # digits and operators only


def test_difficulty_is_spread_evenly_within_each_category(lines):
    by_cat = collections.defaultdict(list)
    for x in lines:
        assert x.difficulty is not None and 0 < x.difficulty < 1
        by_cat[x.category].append(x.difficulty)
    for ds in by_cat.values():
        n = len(ds)
        assert sorted(ds) == pytest.approx([(k + 0.5) / n for k in range(n)], abs=1e-4)


def test_every_item_scores_its_own_answer_as_right(lines):
    for x in lines:
        item = ItemSpec(x.sample_id, x.category, x.answer, x.format, x.schema, x.regex,
                        x.tolerance, x.scorers)  # fmt: skip
        for s in scorers_for(item):
            v = s.score(x.answer, item, 3)
            if s.name == "refusal":
                assert v == 0.0
            elif s.kind != "length":
                assert v == 1.0, (x.sample_id, s.name)
        assert exact_match(x.answer, x.answer, x.format) == 1.0


def test_prompts_are_unique_across_the_eval_files(lines):
    basic = [x.prompt.strip() for x in read_eval_file(ROOT / "workloads/eval/basic_qa.jsonl")]
    mine = [x.prompt.strip() for x in lines]
    assert len(set(mine)) == len(mine)
    assert not set(mine) & set(basic)


def test_basic_qa_still_reads_with_inferred_formats():
    xs = list(read_eval_file(ROOT / "workloads/eval/basic_qa.jsonl"))
    assert len(xs) == 100
    assert {x.format for x in xs} == {"number", "short"}
    assert all(x.difficulty is None and x.schema is None for x in xs)


GOOD = {"id": "a", "category": "c", "prompt": "p?", "answer": "4"}


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"difficulty": 1.5}, "'difficulty' must be a number in \\[0, 1\\]"),
        ({"difficulty": "hard"}, "'difficulty' must be a number"),
        ({"format": "xml"}, "'format': 'xml' is not one of"),
        ({"format": "yesno"}, "not a valid answer of format 'yesno'"),
        ({"schema": "object"}, "'schema' must be a JSON schema object"),
        ({"schema": {"type": "nope"}}, "'schema' is not a valid JSON schema"),
        ({"schema": {"type": "string"}}, "answer' does not satisfy its 'schema'"),
        ({"answer": "{x", "format": "json"}, "'answer' is not valid JSON"),
        ({"schema": {"type": "number"}, "format": "short"}, "has format 'json'"),
        ({"regex": "("}, "'regex' does not compile"),
        ({"regex": "^5$"}, "'regex' .* does not match the item's own answer"),
        ({"tolerance": -1}, "'tolerance' must be a number >= 0"),
        ({"scorers": "exact_match"}, "'scorers' must be a non-empty list"),
        ({"scorers": []}, "'scorers' must be a non-empty list"),
        ({"difficulty_": 0.5}, "unknown field 'difficulty_'"),
    ],
)
def test_bad_scoring_fields_name_file_line_and_key(tmp_path, extra, needle):
    f = tmp_path / "e.jsonl"
    f.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "id": "b", **extra}) + "\n")
    with pytest.raises(WorkloadError, match=rf"e.jsonl:2: .*{needle}"):
        list(read_eval_file(f))


def test_good_scoring_fields_are_read(tmp_path):
    f = tmp_path / "e.jsonl"
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    rows = [
        {**GOOD, "difficulty": 0.25, "tolerance": 0.5, "regex": "4"},
        {"id": "j", "category": "j", "prompt": "j?", "answer": '{"n": 1}', "schema": schema},
        {"id": "s", "category": "s", "prompt": "s?", "answer": "x", "scorers": ["token_f1"]},
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, j, s = read_eval_file(f)
    assert (a.difficulty, a.tolerance, a.regex, a.format) == (0.25, 0.5, "4", "number")
    assert (j.format, j.schema) == ("json", schema)
    assert s.scorers == ("token_f1",) and "token_f1" in SCORERS
