"""JSONL prompt sets: parsing, fallbacks, and errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import ConfigError, LengthDist, WorkloadConfig
from harness.workloads import WorkloadError, build_workload


def write(tmp_path: Path, lines: list, name: str = "set.jsonl") -> Path:
    p = tmp_path / name
    p.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
        encoding="utf-8",
    )
    return p


def load(path: Path, **kw):
    return build_workload(
        WorkloadConfig(name="js", kind="jsonl", path=str(path), **kw), path.parent
    )


def test_prompt_and_messages_lines(tmp_path):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    p = write(
        tmp_path,
        [
            {"prompt": "Tell me a joke.", "id": "a", "max_tokens": 40, "category": "fun"},
            "",
            {"messages": msgs, "slice": "chat", "answer": "Hello"},
            {"prompt": "Count to three.", "id": 7, "reference": "1 2 3"},
        ],
    )
    w = load(p, shuffle=False, max_tokens=99)
    assert len(w) == 3
    a, b, c = (w.item(i) for i in range(3))
    assert (a.sample_id, a.prompt, a.messages, a.max_tokens, a.slice) == (
        "a",
        "Tell me a joke.",
        None,
        40,
        "fun",
    )
    assert a.chat_messages() == [{"role": "user", "content": "Tell me a joke."}]
    assert b.sample_id == "js:3"  # <workload>:<line>, blank line counted
    assert list(b.messages) == msgs and b.slice == "chat" and b.reference_answer == "Hello"
    assert b.max_tokens == 99  # workload.max_tokens fallback
    assert (c.sample_id, c.reference_answer, c.slice) == ("7", "1 2 3", "all")
    assert not a.force_length and a.workload == "js"


def test_max_tokens_fallback_draws_from_output_tokens(tmp_path):
    p = write(tmp_path, [{"prompt": f"q{k}"} for k in range(30)])
    dist = LengthDist(dist="uniform", mean=50, std=10, min=30, max=70)
    w1, w2 = load(p, output_tokens=dist), load(p, output_tokens=dist)
    got = [w1.item(i).max_tokens for i in range(30)]
    assert got == [w2.item(i).max_tokens for i in range(30)]
    assert all(30 <= n <= 70 for n in got) and len(set(got)) > 3


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"prompt": "ok"', r"set\.jsonl:2: malformed JSON"),
        ('["prompt", "x"]', r"set\.jsonl:2: expected a JSON object, got list"),
        ('{"id": "x"}', r"set\.jsonl:2: missing required field 'prompt'"),
        ('{"prompt": 5}', r"set\.jsonl:2: field 'prompt' must be a string"),
        ('{"prompt": "  "}', r"set\.jsonl:2: field 'prompt' is empty"),
        ('{"prompt": "x", "messages": []}', r"set\.jsonl:2: give either 'prompt' or 'messages'"),
        ('{"messages": []}', r"set\.jsonl:2: field 'messages' must be a non-empty list"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', r"set\.jsonl:2: messages\[0\]\.role"),
        ('{"messages": [{"role": "user"}]}', r"set\.jsonl:2: messages\[0\]\.content"),
        ('{"prompt": "x", "max_tokens": 0}', r"set\.jsonl:2: field 'max_tokens' must be an int"),
        ('{"prompt": "x", "max_tokens": "9"}', r"set\.jsonl:2: field 'max_tokens'"),
        ('{"prompt": "x", "id": true}', r"set\.jsonl:2: field 'id' must be a string or integer"),
        ('{"prompt": "x", "max_token": 9}', r"set\.jsonl:2: unknown field 'max_token' \(did you"),
        ('{"prompt": "x", "id": "first"}', r"set\.jsonl:2: duplicate id 'first' \(first at .*:1\)"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, match):
    p = write(tmp_path, ['{"prompt": "fine", "id": "first"}', line])
    with pytest.raises(WorkloadError, match=match):
        load(p)


def test_file_level_errors(tmp_path):
    with pytest.raises(WorkloadError, match="does not exist"):
        load(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(WorkloadError, match=r"empty\.jsonl: empty file"):
        load(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "ok"}\n{"prompt": "\xff"}\n')
    with pytest.raises(WorkloadError, match=r"bad\.jsonl:2: not valid UTF-8"):
        load(bad)
    with pytest.raises(ConfigError, match=r"workload\.path: required"):
        build_workload(WorkloadConfig(kind="jsonl"), tmp_path)


def test_unknown_extra_keys_are_ignored(tmp_path):
    p = write(tmp_path, [{"prompt": "x", "source": "web", "metadata": {"k": 1}}])
    assert load(p).item(0).prompt == "x"


def test_shipped_example_set(root):
    from omegaconf import OmegaConf

    c = OmegaConf.merge(
        OmegaConf.structured(WorkloadConfig),
        OmegaConf.load(root / "configs/workload/jsonl_example.yaml"),
    )
    w = build_workload(OmegaConf.to_object(c), root)
    assert len(w) >= 10
    assert len({w.item(i).sample_id for i in range(len(w))}) == len(w)
