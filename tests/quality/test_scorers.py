"""Scorers: hand-computed values, and adverse inputs (empty, unicode, huge, markup)."""

from __future__ import annotations

import time

import pytest
from rapidfuzz import fuzz

from harness.quality.scorers import (
    SCORERS,
    ItemSpec,
    exact_match,
    extract_numbers,
    find_json,
    format_valid,
    is_refusal,
    json_equal,
    json_schema_valid,
    normalize_text,
    numeric_match,
    output_tokens,
    regex_match,
    score_output,
    scorers_for,
    similarity,
    token_f1,
)
from harness.sim.answers import FORMAT_PREFIX, REFUSAL

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "text, want",
    [
        ("  Paris. ", "paris"),
        ("**Paris**", "paris"),
        ("`Au`", "au"),
        ("<b>Cairo</b>", "cairo"),
        ("The Amazon", "amazon"),
        ("Bogotá", "bogota"),
        ("BOGOTA", "bogota"),
        ("-5", "-5"),
        ("−5", "-5"),  # Unicode minus
        (".5", ".5"),
        ("“Lima”", "lima"),
        ("new   york\n", "new york"),
        ("3.50", "3.50"),
        ("", ""),
        ("...", ""),
        ("ＡＢＣ", "abc"),  # full-width letters, NFKD
    ],
)
def test_normalize_text(text, want):
    assert normalize_text(text) == want


def test_exact_match_after_normalisation():
    assert exact_match("Paris.", "Paris") == 1.0
    assert exact_match("paris, france", "Paris") == 0.0
    assert exact_match("5", "-5") == 0.0
    assert exact_match("", "") == 1.0
    assert exact_match("", "x") == 0.0
    assert exact_match("Brasilia", "Brasília") == 1.0


def test_exact_match_of_json_compares_values():
    ref = '{"name": "Ana", "age": 34}'
    assert exact_match('{"age": 34.0, "name": "Ana"}', ref, "json") == 1.0
    assert exact_match('{"age":34,"name":"Ana"}\n', ref, "json") == 1.0
    assert exact_match('{"age": 35, "name": "Ana"}', ref, "json") == 0.0
    assert exact_match('{"age": 34, "name": "ana"}', ref, "json") == 0.0  # strings exact
    assert exact_match(f"Here: {ref}", ref, "json") == 0.0  # prose around it
    assert exact_match('{"age": 34, "name": "Ana"', ref, "json") == 0.0  # truncated
    assert exact_match("```json\n" + ref + "\n```", ref, "json") == 0.0


def test_json_equal_keeps_booleans_apart_from_numbers():
    assert json_equal({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not json_equal({"a": True}, {"a": 1})
    assert not json_equal([1, 2], [2, 1])
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})
    assert json_equal(None, None) and not json_equal(None, 0)


def test_extract_numbers():
    assert extract_numbers("89 + 58 = 147") == [89, 58, 147]
    assert extract_numbers("1,234.5 and −3, x2, 3rd, .5 and 1e3") == [1234.5, -3, 0.5, 1000]
    assert extract_numbers("") == []
    assert extract_numbers("no digits") == []
    assert extract_numbers("12,34") == [12, 34]  # not a thousands group


def test_numeric_match_uses_the_last_number_and_tolerance():
    assert numeric_match("89 + 58 = 147", "147") == 1.0
    assert numeric_match("147 or maybe 148", "147") == 0.0
    assert numeric_match(f"{FORMAT_PREFIX} 147", "147") == 1.0
    assert numeric_match("1,420", "1420") == 1.0
    assert numeric_match("-5.", "-5") == 1.0
    assert numeric_match("5", "-5") == 0.0
    assert numeric_match("6.214", "6.21", tolerance=0.005) == 1.0
    assert numeric_match("6.22", "6.21", tolerance=0.005) == 0.0
    assert numeric_match("6.215", "6.21", tolerance=0.005) == 1.0  # boundary is inclusive
    assert numeric_match("6.2100000001", "6.21") == 1.0  # float noise only
    assert numeric_match("6.2101", "6.21") == 0.0
    assert numeric_match("", "3") == 0.0
    assert numeric_match("3", "three") == 0.0


def test_token_f1_hand_computed():
    # output tokens [paris, city], reference [paris]: P = 1/2, R = 1, F1 = 2/3
    assert token_f1("the Paris city", "Paris") == pytest.approx(2 / 3)
    # output [new, york, new], reference [new, york]: common 2, P = 2/3, R = 1 -> 0.8
    assert token_f1("New York, new", "new york") == pytest.approx(0.8)
    assert token_f1("Rome", "Paris") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("", "Paris") == 0.0
    assert token_f1("!!!", "Paris") == 0.0
    assert token_f1("Bogota", "Bogotá") == 1.0


def test_similarity_is_rapidfuzz_indel_of_normalised_texts():
    # LCS("pari", "paris") = 4 -> 2 * 4 / 9
    assert similarity("Pari", "Paris") == pytest.approx(8 / 9)
    assert similarity("Pari", "Paris") == pytest.approx(fuzz.ratio("pari", "paris") / 100)
    assert similarity("**PARIS.**", "Paris") == 1.0
    assert similarity("", "") == 1.0
    assert similarity("", "Paris") == 0.0
    assert similarity("xyz", "abc") == 0.0


def test_regex_match():
    assert regex_match("Yes, it is prime.", r"(?i)^\W*yes\b") == 1.0
    assert regex_match("No", r"(?i)^\W*yes\b") == 0.0
    assert regex_match("the city is Paris", r"(?i)(?<!\w)Paris(?!\w)") == 1.0
    assert regex_match("Parisian", r"(?i)(?<!\w)Paris(?!\w)") == 0.0
    assert regex_match("", "x") == 0.0


def test_json_schema_valid_finds_json_in_prose_and_fences():
    ok = '{"name": "Ana", "age": 34}'
    assert json_schema_valid(ok, PERSON) == 1.0
    assert json_schema_valid(f"{FORMAT_PREFIX} {ok}", PERSON) == 1.0
    assert json_schema_valid("```json\n" + ok + "\n```", PERSON) == 1.0
    assert json_schema_valid('{"name": "Ana", "age": -1}', PERSON) == 0.0
    assert json_schema_valid('{"name": "Ana", "age": 34, "x": 1}', PERSON) == 0.0
    assert json_schema_valid('{"name": "Ana", "age": 34', PERSON) == 0.0  # truncated
    assert json_schema_valid("", PERSON) == 0.0
    assert json_schema_valid("[1, 2]", PERSON) == 0.0


def test_find_json_gives_up_after_a_bounded_number_of_starts():
    assert find_json("{" * 50 + ' {"a": 1}') == (False, None)
    assert find_json('x {"a": 1} y') == (True, {"a": 1})
    assert find_json("[" * 100_000)[0] is False  # deep nesting: no RecursionError escapes


@pytest.mark.parametrize(
    "text",
    [
        REFUSAL,
        "I cannot help with that request.",
        "I’m sorry, but I can’t assist with this.",
        "Sorry, I am unable to provide that information.",
        "I'm not able to answer this.",
        "I must decline.",
        "As an AI language model, I don't have opinions.",
        "I won't do that.",
    ],
)
def test_refusals_are_detected(text):
    assert is_refusal(text) == 1.0


@pytest.mark.parametrize(
    "text",
    ["83", "Paris", "", "I can't believe it is 42.", "No", "yes", "I think the answer is 7",
     "x" * 400 + " I can't help with that."],
)  # fmt: skip
def test_answers_are_not_refusals(text):
    assert is_refusal(text) == 0.0


@pytest.mark.parametrize(
    "text, fmt, ref, want",
    [
        ("83", "number", "83", 1.0),
        (" -5. ", "number", "-5", 1.0),
        ("1,420", "number", "1420", 1.0),
        ("83 the time", "number", "83", 0.0),
        (f"{FORMAT_PREFIX} 83", "number", "83", 0.0),
        ("", "number", "83", 0.0),
        ("Yes", "yesno", "yes", 1.0),
        ("**no.**", "yesno", "yes", 1.0),
        ("Yes, it is", "yesno", "yes", 0.0),
        ("Buenos Aires", "short", "Buenos Aires", 1.0),
        ("one two three four", "short", "Paris", 1.0),
        ("one two three four five", "short", "Paris", 0.0),
        ("Paris\nFrance", "short", "Paris", 0.0),
        ("", "short", "Paris", 0.0),
        ('{"a": 1}', "json", "", 1.0),
        ('{"a": 1', "json", "", 0.0),
        ('Here: {"a": 1}', "json", "", 0.0),
        ("anything", "text", "", 1.0),
        ("  ", "text", "", 0.0),
    ],
)
def test_format_valid(text, fmt, ref, want):
    assert format_valid(text, fmt, ref) == want


def test_format_valid_refuses_an_unknown_format():
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        format_valid("x", "xml")


def test_output_tokens():
    assert output_tokens(12) == 12.0
    assert output_tokens(None) is None
    assert output_tokens(float("nan")) is None
    assert output_tokens(-1) is None


def test_scorers_by_format_and_fields():
    def names(**kw):
        return [s.name for s in scorers_for(ItemSpec("i", "c", **kw))]

    behaviour = ["refusal", "format_valid", "output_tokens"]
    assert names(reference="83", format="number") == ["exact_match", "numeric_match", *behaviour]
    assert names(reference="yes", format="yesno", regex="(?i)yes") == [
        "exact_match",
        "regex_match",
        *behaviour,
    ]
    assert names(reference="Paris", format="short") == [
        "exact_match",
        "token_f1",
        "similarity",
        *behaviour,
    ]
    assert names(reference='{"a": 1}', format="json", schema={"type": "object"}) == [
        "exact_match",
        "similarity",
        "json_schema",
        *behaviour,
    ]
    assert names(reference="x", scorers=("token_f1", "numeric_match")) == ["token_f1"]
    with pytest.raises(ValueError, match="unknown scorer"):
        names(reference="x", scorers=("bleu",))


def test_every_scorer_has_a_docstring_definition_and_a_kind():
    for s in SCORERS.values():
        assert s.kind in ("binary", "score", "length")
        assert s.better in ("higher", "lower", None)


ADVERSE = [
    "",
    " ",
    "\x00\x01\ufeff",
    "🙂🙃 émoji ünïcödé 中文 العربية",
    "<script>alert(1)</script>",
    "**bold** _it_ `code` [link](http://x) | a | b |",
    "\ud800 lone surrogate",
    "{" * 1000,
    '{"a": ' * 3000,
    "9" * 5000,
]


@pytest.mark.parametrize("text", ADVERSE, ids=range(len(ADVERSE)))
def test_adverse_outputs_score_without_errors(text):
    for item in (
        ItemSpec("n", "c", "83", "number"),
        ItemSpec("s", "c", "Paris", "short", regex=r"(?i)paris"),
        ItemSpec("j", "c", '{"name": "A", "age": 1}', "json", schema=PERSON),
        ItemSpec("y", "c", "yes", "yesno"),
    ):
        out = score_output(text, item, 5)
        assert out["output_tokens"] == 5.0
        for name, v in out.items():
            assert v == v, name  # not NaN
            if SCORERS[name].kind != "length":
                assert 0.0 <= v <= 1.0, name


def test_huge_output_is_scored_quickly():
    text = ("lorem ipsum 12 " * 70_000) + "answer 83"  # about 1 MB
    t0 = time.perf_counter()
    out = score_output(text, ItemSpec("n", "c", "83", "number"), 200_000)
    out |= score_output(text, ItemSpec("s", "c", "Paris", "short"), 200_000)
    out |= score_output(text, ItemSpec("j", "c", '{"a": 1}', "json", schema=PERSON), 200_000)
    assert time.perf_counter() - t0 < 5.0
    assert out["numeric_match"] == 1.0 and out["exact_match"] == 0.0


def test_readme_documents_every_scorer_and_every_quality_param():
    import re
    from pathlib import Path

    from harness.sim.params import param_names

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    m = re.search(r"### Scorers\n(.*?)\n### ", readme, re.S)
    assert m, "README has no Scorers subsection"
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (\w+|\(either way\)) \|", m.group(1), re.M)
    assert [r[0] for r in rows] == list(SCORERS)
    for name, kind, better in rows:
        assert SCORERS[name].kind == kind
        assert (SCORERS[name].better or "(either way)") == better
    for p in ("item_correlation", "refusal_rate", "format_break_rate", "verbosity"):
        assert p in param_names("cloud") and f"`{p}`" in readme
