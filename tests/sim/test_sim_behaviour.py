"""Behaviour over time and content: reference-answer accuracy, the scenario timeline, the
admin endpoint, and config errors a user can act on."""

from __future__ import annotations

import json
import statistics
import time

import pytest

from harness.sim.answers import AnswerBook, EvalItem, project_root
from harness.sim.cli import main as cli_main
from harness.sim.params import CommonParams, ParamError
from harness.sim.process import SimProcess, SimProcessError
from harness.sim.settings import load_settings
from harness.workloads.base import WorkloadError

EVAL = "workloads/eval/*.jsonl"
CLOUD = "sim-cloud-mini"
FAST = {"ttft_ms": 1, "itl_ms": 1, "itl_jitter": 0}


@pytest.fixture(scope="module")
def book() -> AnswerBook:
    b = AnswerBook.load([EVAL])
    assert len(b) >= 50, "the eval set ships with the project"
    return b


def items(book: AnswerBook) -> list[EvalItem]:
    return list(book.by_prompt.values())


def test_accuracy_over_the_eval_set_is_close_to_configured(book):
    shares = []
    for seed in range(40):
        right = sum(book.answer(it, 0.8, seed)[1] for it in items(book))
        shares.append(right / len(book))
    assert statistics.mean(shares) == pytest.approx(0.8, abs=0.015)
    assert min(shares) > 0.6 and max(shares) < 0.95  # per-seed binomial spread


def test_lower_accuracy_only_flips_items_to_wrong(book):
    hi = {it.id for it in items(book) if book.answer(it, 0.92, 3)[1]}
    lo = {it.id for it in items(book) if book.answer(it, 0.84, 3)[1]}
    assert lo <= hi and len(lo) < len(hi)


def test_wrong_answers_are_plausible(book):
    for it in items(book):
        wrong = book.wrong_answer(it, seed=0)
        assert wrong.strip() != it.answer.strip()
        if it.answer.lstrip("-").isdigit():
            assert 1 <= abs(int(wrong) - int(it.answer)) <= 3


GOOD_ITEM = '{"id": "a", "category": "math", "prompt": "2+2?", "answer": "4"}\n'


def test_missing_eval_files_are_tolerated(tmp_path):
    assert len(AnswerBook.load(["nothing/*.jsonl"], root=tmp_path)) == 0
    (tmp_path / "e.jsonl").write_text(GOOD_ITEM)
    book = AnswerBook.load(["e.jsonl"], root=tmp_path)
    assert book.lookup("  2+2? ").answer == "4"


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("not json", "malformed JSON"),
        ('{"id": "b", "category": "x", "prompt": 12, "answer": "4"}', "'prompt' must be a string"),
        ('{"id": "a", "category": "x", "prompt": "3+3?", "answer": "6"}', "duplicate id 'a'"),
    ],
)
def test_malformed_eval_files_are_refused_like_the_eval_workload(tmp_path, bad, needle):
    # The same reader and checks as harness.workloads.eval: an error naming file:line.
    (tmp_path / "bad.jsonl").write_text(GOOD_ITEM + bad + "\n")
    with pytest.raises(WorkloadError, match=rf"bad.jsonl:2: .*{needle}"):
        AnswerBook.load(["bad.jsonl"], root=tmp_path)


def test_malformed_eval_file_is_a_clean_startup_error_and_a_refused_admin_change(tmp_path, sdk):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "b", "category": "x", "prompt": 12, "answer": "4"}\n')
    with pytest.raises(SimProcessError, match=r"eval_files.*bad.jsonl:1"):
        SimProcess("cloud", params={**FAST, "eval_files": [str(bad)]}).start()
    with SimProcess("cloud", params={**FAST, "accuracy": 1.0}) as sim:
        before = sim.get_config()["params"]
        with pytest.raises(SimProcessError, match=r"bad.jsonl:1"):
            sim.set_params(eval_files=[str(bad)], accuracy=0.0)
        assert sim.get_config()["params"] == before  # nothing half-applied
        item = next(iter(AnswerBook.load([EVAL]).by_prompt.values()))
        r = sdk(sim).chat.completions.create(
            model=CLOUD, messages=[{"role": "user", "content": item.prompt}], max_tokens=20
        )
        assert r.choices[0].message.content == item.answer  # the old book, accuracy 1.0


def _ask_all(sim: SimProcess, sdk, book: AnswerBook, n: int | None = None) -> float:
    client = sdk(sim)
    its = items(book)[:n]
    right = 0
    for it in its:
        r = client.chat.completions.create(
            model=CLOUD, messages=[{"role": "user", "content": it.prompt}], max_tokens=20
        )
        assert r.choices[0].finish_reason == "stop"
        right += r.choices[0].message.content == it.answer
    return right / len(its)


def test_reference_answers_over_http(book, sdk):
    with SimProcess("cloud", params={**FAST, "accuracy": 0.9}, seed=11) as sim:
        share = _ask_all(sim, sdk, book)
    rho = CommonParams().item_correlation  # the server's default
    expected = sum(book.answer(it, 0.9, 11, rho)[1] for it in items(book)) / len(book)
    assert share == expected  # exactly the pure model's decision per item
    assert 0.8 <= share <= 0.98


def test_scenario_timeline_changes_behaviour(tmp_path, book, sdk):
    cfg = tmp_path / "sim.yaml"
    cfg.write_text(
        "profile: cloud\nseed: 0\n"
        f"params: {json.dumps({**FAST, 'accuracy': 1.0})}\n"
        "scenario:\n"
        "  - at_s: 1.0\n    note: provider silently updates its model\n"
        "    params: {accuracy: 0.0, ttft_ms: 30}\n"
    )
    with SimProcess("cloud", config_file=str(cfg)) as sim:
        assert _ask_all(sim, sdk, book, 10) == 1.0
        state = sim.get_config()
        assert state["scenario"][0]["applied"] is False
        time.sleep(max(0.0, 1.05 - state["uptime_s"]))
        assert sim.get_config()["scenario"][0]["applied"] is True
        assert sim.get_config()["params"]["ttft_ms"] == 30
        assert _ask_all(sim, sdk, book, 10) == 0.0


def test_admin_changes_parameters_while_running(sdk):
    with SimProcess("cloud", params=FAST) as sim:
        client = sdk(sim)

        def e2e(n):
            t = time.perf_counter()
            client.chat.completions.create(
                model=CLOUD,
                max_tokens=n,
                messages=[{"role": "user", "content": "x"}],
                extra_body={"ignore_eos": True},
            )
            return time.perf_counter() - t

        assert e2e(20) < 0.15
        sim.set_params(itl_ms=20)
        assert sim.get_config()["params"]["itl_ms"] == 20.0
        assert e2e(20) > 0.38  # 19 gaps of 20 ms
        with pytest.raises(SimProcessError, match="unknown parameter 'itl'"):
            sim.set_params(itl=3)
        with pytest.raises(SimProcessError, match="share in"):
            sim.set_params(accuracy=1.5)
        with pytest.raises(SimProcessError, match="expected a number"):
            sim.set_params(itl_ms="fast")
        assert sim.get_config()["params"]["accuracy"] == 0.9  # a refused change changes nothing
    with SimProcess("vllm") as sim:
        with pytest.raises(SimProcessError, match="cannot change while running"):
            sim.set_params(kv_cache_tokens=1000)
        sim.set_params(max_num_seqs=8, step_base_ms=5)
        assert sim.get_config()["params"]["max_num_seqs"] == 8


def test_config_loading_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: vllm\nparams: {max_num_seq: 4}\n")
    with pytest.raises(ParamError, match=r"bad.yaml: params: unknown parameter 'max_num_seq'"):
        load_settings(config_file=bad)
    bad.write_text("profile: cloud\nscenario: [{at_s: 5, params: {accuracy: 2}}]\n")
    with pytest.raises(ParamError, match=r"scenario\[0\].*accuracy"):
        load_settings(config_file=bad)
    bad.write_text("profile: vllm\nextra: 1\n")
    with pytest.raises(ParamError, match="unknown keys"):
        load_settings(config_file=bad)
    s = load_settings("cloud", None, {"rpm_limit": "600", "error_statuses": "500,502"}, seed=4)
    assert s.params.rpm_limit == 600.0 and s.params.error_statuses == [500, 502] and s.seed == 4


def test_cli_exits_with_a_message_on_bad_params(capsys):
    assert cli_main(["--profile", "vllm", "--port", "0", "--param", "nope=1"]) == 2
    assert "unknown parameter 'nope'" in capsys.readouterr().err
    assert cli_main(["--profile", "cloud", "--param", "noequals"]) == 2


def test_example_configs_load():
    configs = sorted((project_root() / "configs" / "sim").glob("*.yaml"))
    assert configs, "configs/sim/*.yaml examples exist"
    for path in configs:
        load_settings(config_file=path)
