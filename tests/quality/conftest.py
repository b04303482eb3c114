"""Fixtures of the quality tests (helpers in tests/quality/runs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.quality.runs import eval_file


@pytest.fixture()
def small_eval(tmp_path: Path) -> Path:
    """Four items: two numbers, one fact, one JSON with a schema."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}  # fmt: skip
    return eval_file(
        tmp_path / "e.jsonl",
        [
            {"id": "a1", "category": "arith", "prompt": "1+1?", "answer": "2"},
            {"id": "a2", "category": "arith", "prompt": "2+2?", "answer": "4"},
            {"id": "f1", "category": "fact", "prompt": "Capital of France?", "answer": "Paris",
             "regex": "(?i)paris"},
            {"id": "j1", "category": "json", "prompt": "n?", "answer": '{"n": 1}',
             "schema": schema},
        ],
    )  # fmt: skip
