"""Synthetic workloads: token-count control, shared prefixes, slices, determinism, cycling."""

from __future__ import annotations

import pytest

from harness.config import ConfigError, LengthDist, WorkloadConfig
from harness.workloads import build_workload
from harness.workloads.synthetic import MIN_UNIQUE_WORDS


def cfg(**kw) -> WorkloadConfig:
    base = dict(name="syn", kind="synthetic", num_items=200)
    base.update(kw)
    return WorkloadConfig(**base)


def user_text(item) -> str:
    return [m["content"] for m in item.messages if m["role"] == "user"][-1]


def test_prompt_tokens_match_target_in_cl100k(root, cl100k):
    w = build_workload(
        cfg(input_tokens=LengthDist(dist="uniform", mean=400, std=150, min=50, max=2000)), root
    )
    for i in range(40):
        it = w.item(i)
        words = sum(len(m["content"].split()) for m in it.messages)
        assert words == it.expected_prompt_tokens  # the simulator's count
        n = len(cl100k.encode(it.prompt_text()))
        assert abs(n - it.expected_prompt_tokens) <= max(2, 0.02 * it.expected_prompt_tokens)
    fixed = build_workload(cfg(input_tokens=LengthDist(mean=1000)), root)
    assert {fixed.item(i).expected_prompt_tokens for i in range(20)} == {1000}
    assert abs(len(cl100k.encode(fixed.item(3).prompt_text())) - 1000) <= 2


def test_output_lengths_are_forced_and_drawn(root):
    w = build_workload(
        cfg(output_tokens=LengthDist(dist="uniform", mean=100, std=20, min=60, max=140)), root
    )
    lengths = [w.item(i).max_tokens for i in range(200)]
    assert all(60 <= n <= 140 for n in lengths) and len(set(lengths)) > 10
    assert abs(sum(lengths) / len(lengths) - 100) < 6
    assert all(w.item(i).force_length for i in range(5))
    assert not build_workload(cfg(force_length=False), root).item(0).force_length


def test_shared_prefix_share_and_lengths(root):
    c = cfg(
        num_items=400,
        input_tokens=LengthDist(mean=300),
        shared_prefix_tokens=200,
        shared_prefix_share=0.25,
        num_prefixes=3,
    )
    w = build_workload(c, root)
    items = [w.pool_item(j) for j in range(len(w))]
    with_prefix = [it for it in items if it.messages[0]["role"] == "system"]
    assert len(with_prefix) == 100  # exactly round(share * num_items)
    prefixes = {it.messages[0]["content"] for it in with_prefix}
    assert len(prefixes) == 3
    assert all(len(p.split()) == 200 for p in prefixes)
    counts = [sum(it.messages[0]["content"] == p for it in with_prefix) for p in prefixes]
    assert sorted(counts) == [33, 33, 34]  # prefixes used in turn
    assert {it.slice for it in with_prefix} == {"prefix"}
    assert {it.slice for it in items if it not in with_prefix} == {"noprefix"}
    # the total length (prefix included) is the drawn input length for both slices
    assert {it.expected_prompt_tokens for it in items} == {300}
    assert all(len(user_text(it).split()) == 100 for it in with_prefix)


def test_short_draws_keep_a_unique_tail_after_the_prefix(root):
    c = cfg(input_tokens=LengthDist(mean=50), shared_prefix_tokens=64, shared_prefix_share=1.0)
    it = build_workload(c, root).item(0)
    assert len(user_text(it).split()) == MIN_UNIQUE_WORDS
    assert it.expected_prompt_tokens == 64 + MIN_UNIQUE_WORDS


def test_prompts_are_distinct_from_their_first_block(root):
    c = cfg(num_items=500, shared_prefix_tokens=32, shared_prefix_share=0.5)
    w = build_workload(c, root)
    heads = {tuple(user_text(w.pool_item(j)).split()[:16]) for j in range(len(w))}
    assert len(heads) == len(w)


def test_deterministic_and_order_independent(root):
    c = cfg(input_tokens=LengthDist(dist="lognormal", mean=200, std=80, min=10, max=2000))
    a, b = build_workload(c, root), build_workload(c, root)
    forward = [a.item(i) for i in range(0, 700, 7)]
    backward = [b.item(i) for i in reversed(range(0, 700, 7))][::-1]
    assert forward == backward
    other = build_workload(cfg(seed=1), root)
    assert other.item(0).messages != a.item(0).messages


def test_cycling_with_and_without_shuffle(root):
    n = 50
    plain = build_workload(cfg(num_items=n, shuffle=False), root)
    assert [plain.item(i).sample_id for i in range(n)] == [f"syn:{j}" for j in range(n)]
    assert plain.item(n + 3) == plain.item(3)
    shuf = build_workload(cfg(num_items=n, shuffle=True), root)
    c0 = [shuf.item(i).sample_id for i in range(n)]
    c1 = [shuf.item(n + i).sample_id for i in range(n)]
    assert sorted(c0) == sorted(c1) == sorted(f"syn:{j}" for j in range(n))
    assert c0 != c1  # each cycle has its own order
    assert shuf.item(10**9).sample_id.startswith("syn:")
    with pytest.raises(IndexError):
        shuf.item(-1)


def test_input_length_slices(root):
    c = cfg(input_tokens=LengthDist(dist="uniform", mean=300, std=150, min=10, max=1000))
    w = build_workload(c, root)
    for i in range(50):
        it = w.item(i)
        lo, hi = (int(x) for x in it.slice.removeprefix("in:").split("-"))
        assert lo <= it.expected_prompt_tokens <= hi
    assert build_workload(cfg(), root).item(0).slice == "all"  # fixed lengths: one slice


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"num_items": 0}, "num_items"),
        ({"shared_prefix_share": 1.5}, "shared_prefix_share"),
        ({"num_prefixes": 0}, "num_prefixes"),
        ({"slice_by": "length"}, "slice_by"),
        ({"kind": "csv"}, "kind"),
        ({"output_tokens": LengthDist(dist="pareto")}, "output_tokens.dist"),
    ],
)
def test_bad_settings_are_config_errors(root, kw, key):
    with pytest.raises(ConfigError, match=rf"workload\.{key}"):
        build_workload(cfg(**kw), root)
