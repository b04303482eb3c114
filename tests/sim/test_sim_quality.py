"""Simulated quality: item difficulty shared across servers (errors correlate), accuracy kept
calibrated, and the behaviour drifts (refusals, broken formats, verbosity) as params and on
the scenario timeline."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm

from harness.quality.scorers import format_valid, is_refusal, json_schema_valid
from harness.sim.answers import FORMAT_PREFIX, REFUSAL, AnswerBook
from harness.sim.params import ParamError, default_params
from harness.sim.process import SimProcess
from harness.sim.settings import load_settings

FAST = {"ttft_ms": 1, "itl_ms": 1, "itl_jitter": 0}
CANARY = "workloads/eval/canary.jsonl"


@pytest.fixture(scope="module")
def book() -> AnswerBook:
    return AnswerBook.load([CANARY])


def _items(book):
    return list(book.by_prompt.values())


def _right(book, seeds, acc, rho):
    """(seeds, items) booleans: the simulator's own decisions."""
    its = _items(book)
    return np.array([[book.latent_u(it, s, rho) < acc for it in its] for s in seeds])


def test_hardness_is_standard_normal_over_the_canary_set(book):
    z = np.array([it.hardness for it in _items(book)])
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.08


def test_accuracy_stays_calibrated_with_correlated_items(book):
    m = _right(book, range(60), 0.8, 0.5)
    # 60 seeds x 600 items: the mean share right is accuracy (sd of the mean ~0.01)
    assert m.mean() == pytest.approx(0.8, abs=0.02)


def test_errors_correlate_across_servers_as_the_copula_says(book):
    acc, rho = 0.8, 0.5
    m = _right(book, range(40), acc, rho)
    both = (m[0::2] & m[1::2]).mean()  # two different seeds = two servers
    a = norm.ppf(acc)
    expected = multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).cdf([a, a])
    assert both == pytest.approx(expected, abs=0.015)
    assert both > acc * acc + 0.03  # clearly above independence (0.64)
    m0 = _right(book, range(40), acc, 0.0)
    assert (m0[0::2] & m0[1::2]).mean() == pytest.approx(acc * acc, abs=0.015)


def test_hard_items_are_hard_for_every_server(book):
    its = _items(book)
    d = np.array([it.difficulty for it in its])
    m = _right(book, range(20), 0.85, 0.5)
    assert m[:, d > 0.8].mean() < m[:, d < 0.2].mean() - 0.3


def test_lower_accuracy_only_flips_items_to_wrong_with_correlation(book):
    for seed in (0, 7):
        hi = {it.id for it in _items(book) if book.answer(it, 0.92, seed, 0.5)[1]}
        lo = {it.id for it in _items(book) if book.answer(it, 0.80, seed, 0.5)[1]}
        assert lo < hi


def test_item_correlation_zero_is_the_old_independent_draw(book):
    it = _items(book)[3]
    from harness.sim.tokens import request_rng

    assert book.latent_u(it, 5, 0.0) == request_rng(5, "accuracy", it.id).random()


def test_refusals_and_broken_formats_follow_their_rates(book):
    its = _items(book)
    for rate in (0.1, 0.3):
        refused = [book.reply(it, 1, accuracy=0.9, refusal_rate=rate).refused for it in its]
        assert np.mean(refused) == pytest.approx(rate, abs=0.05)
    r = [book.reply(it, 1, accuracy=0.9, refusal_rate=0.2) for it in its]
    assert all(x.text == REFUSAL and is_refusal(x.text) for x in r if x.refused)
    lo = {it.id for it, x in zip(its, r, strict=True) if x.refused}
    hi = {it.id for it in its if book.reply(it, 1, accuracy=0.9, refusal_rate=0.4).refused}
    assert lo <= hi  # raising the rate only adds refusals
    broken = [book.reply(it, 2, accuracy=1.0, format_break_rate=0.5) for it in its]
    assert np.mean([x.broken for x in broken]) == pytest.approx(0.5, abs=0.06)
    for it, x in zip(its, broken, strict=True):
        fmt = "json" if it.category == "json_extraction" else "number"
        if x.broken:
            assert x.text.startswith(FORMAT_PREFIX) or not x.text.endswith("}")
            if it.category in ("arithmetic", "unit_conversion", "json_extraction"):
                assert format_valid(x.text, fmt) == 0.0
        elif it.category in ("arithmetic", "json_extraction"):
            assert format_valid(x.text, fmt) == 1.0
    json_items = [(it, x) for it, x in zip(its, broken, strict=True)
                  if it.category == "json_extraction" and x.broken]  # fmt: skip
    truncated = [x for _, x in json_items if not x.text.startswith(FORMAT_PREFIX)]
    assert truncated and len(truncated) < len(json_items)  # both kinds of breakage


def test_verbosity_multiplies_reply_length_on_average(book):
    its = _items(book)
    for v in (1.0, 2.0, 3.5):
        ratio = [
            (len(x.text.split()) + x.extra_tokens) / len(x.text.split())
            for x in (book.reply(it, 4, accuracy=1.0, verbosity=v) for it in its)
        ]
        assert np.mean(ratio) == pytest.approx(v, rel=0.05)
    assert all(book.reply(it, 4, accuracy=1.0, verbosity=0.5).extra_tokens == 0 for it in its)


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"refusal_rate": 1.5}, "refusal_rate"),
        ({"format_break_rate": -0.1}, "format_break_rate"),
        ({"item_correlation": 2}, "item_correlation"),
        ({"verbosity": 0}, "verbosity"),
        ({"verbosity": "lots"}, "verbosity"),
    ],
)
def test_bad_behaviour_params_are_refused(params, needle):
    with pytest.raises(ParamError, match=needle):
        load_settings("cloud", overrides=params)


def test_defaults_keep_behaviour_off():
    p = default_params("vllm")
    assert (p.refusal_rate, p.format_break_rate, p.verbosity) == (0.0, 0.0, 1.0)
    assert 0 < p.item_correlation < 1


def _ask(client, prompt: str, max_tokens: int = 64):
    r = client.chat.completions.create(
        model="sim-cloud-mini", messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
    )  # fmt: skip
    return r.choices[0].message.content, r.usage.completion_tokens


def test_drifts_over_http_and_on_the_scenario_timeline(tmp_path, book, sdk):
    its = [it for it in _items(book) if it.category == "json_extraction"][:20]
    schema_of = {
        json.loads(line)["id"]: json.loads(line)["schema"]
        for line in open(CANARY, encoding="utf-8")
        if '"json_extraction"' in line
    }
    cfg = tmp_path / "sim.yaml"
    cfg.write_text(
        "profile: cloud\nseed: 3\n"
        f"params: {json.dumps({**FAST, 'accuracy': 1.0})}\n"
        "scenario:\n"
        "  - at_s: 1.0\n    note: the provider's model turns verbose and sloppy\n"
        "    params: {verbosity: 2.0, format_break_rate: 1.0}\n"
        "  - at_s: 1.6\n    note: and then refuses everything\n"
        "    params: {refusal_rate: 1.0}\n"
    )
    with SimProcess("cloud", config_file=str(cfg)) as sim:
        client = sdk(sim)
        before = [_ask(client, it.prompt) for it in its]
        assert [t for t, _ in before] == [it.answer for it in its]
        assert all(
            json_schema_valid(t, schema_of[it.id]) for it, (t, _) in zip(its, before, strict=True)
        )
        time.sleep(max(0.0, 1.05 - sim.get_config()["uptime_s"]))
        during = [_ask(client, it.prompt, 200) for it in its]
        assert all(format_valid(t, "json") == 0.0 for t, _ in during)
        tokens_before = sum(n for _, n in before)
        assert sum(n for _, n in during) > 1.8 * tokens_before  # verbosity 2 (+ prose)
        time.sleep(max(0.0, 1.65 - sim.get_config()["uptime_s"]))
        after = [_ask(client, it.prompt) for it in its]
        assert all(t.startswith(REFUSAL) and is_refusal(t) for t, _ in after)  # still verbose
        sim.set_params(refusal_rate=0.0, format_break_rate=0.0, verbosity=1.0)
        assert [_ask(client, it.prompt)[0] for it in its] == [it.answer for it in its]
    assert math.isfinite(tokens_before)
