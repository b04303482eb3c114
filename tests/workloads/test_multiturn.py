"""Multi-turn conversations: history grows turn by turn, turns come in order, deterministic."""

from __future__ import annotations

from collections import defaultdict

import pytest

from harness.config import ConfigError, LengthDist, WorkloadConfig
from harness.workloads import build_workload


def cfg(**kw) -> WorkloadConfig:
    base = dict(
        name="mt",
        kind="multiturn",
        num_items=30,
        turns_min=2,
        turns_max=5,
        input_tokens=LengthDist(dist="uniform", mean=40, std=10, min=10, max=100),
        output_tokens=LengthDist(mean=20),
    )
    base.update(kw)
    return WorkloadConfig(**base)


def test_history_grows_and_turns_come_in_order(root):
    w = build_workload(cfg(), root)
    n = len(w)
    assert 30 * 2 <= n <= 30 * 5
    seen: dict[str, list] = defaultdict(list)
    for i in range(n):
        it = w.item(i)
        seen[it.conversation_id].append(it)
    assert len(seen) == 30
    for conv, items in seen.items():
        assert [it.turn for it in items] == list(range(len(items)))  # in order, none missing
        assert 2 <= len(items) <= 5
        for k, it in enumerate(items):
            roles = [m["role"] for m in it.messages]
            assert roles == ["user", "assistant"] * k + ["user"]
            assert it.sample_id == f"{conv}:t{k}" and it.slice == f"turn:{k}"
            assert it.force_length and it.max_tokens == 20
            words = sum(len(m["content"].split()) for m in it.messages)
            assert it.expected_prompt_tokens == words
            if k:
                prev = items[k - 1]
                # the previous prompt is a prefix of this one (cacheable), plus reply + new turn
                assert it.messages[: len(prev.messages)] == prev.messages
                assert len(it.messages[-2]["content"].split()) == prev.max_tokens


def test_interleaving(root):
    w = build_workload(cfg(turns_min=3, turns_max=3, interleave=3, shuffle=False), root)
    got = [(w.item(i).conversation_id, w.item(i).turn) for i in range(9)]
    assert got == [(f"mt:c{c}", t) for t in range(3) for c in range(3)]
    one = build_workload(cfg(turns_min=2, turns_max=2, interleave=1, shuffle=False), root)
    assert [(one.item(i).conversation_id, one.item(i).turn) for i in range(4)] == [
        ("mt:c0", 0),
        ("mt:c0", 1),
        ("mt:c1", 0),
        ("mt:c1", 1),
    ]


def test_system_prefix_and_determinism(root):
    c = cfg(shared_prefix_tokens=50, shared_prefix_share=1.0, num_prefixes=2)
    a, b = build_workload(c, root), build_workload(c, root)
    idx = list(range(0, 3 * len(a), 5))
    assert [a.item(i) for i in idx] == [b.item(i) for i in reversed(idx)][::-1]
    it = a.item(0)
    assert it.messages[0]["role"] == "system" and len(it.messages[0]["content"].split()) == 50
    n = len(a)
    assert sorted(a.item(i).sample_id for i in range(n)) == sorted(
        a.item(n + i).sample_id for i in range(n)
    )
    assert [a.item(i).sample_id for i in range(n)] != [a.item(n + i).sample_id for i in range(n)]


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"turns_min": 0}, "turns_min"),
        ({"turns_max": 1}, "turns_min"),
        ({"interleave": 0}, "interleave"),
    ],
)
def test_bad_settings(root, kw, key):
    with pytest.raises(ConfigError, match=key):
        build_workload(cfg(**kw), root)
