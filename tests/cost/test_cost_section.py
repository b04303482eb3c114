"""The cost section from recorded rows, hand-computed; ``harness cost``; checks before traffic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.analysis.data import load_run
from harness.config import ConfigError
from harness.cost.catalog import CatalogError
from harness.cost.section import check_for_arms, compute_cost, settings_from
from harness.record.schema import RequestRecord
from tests.analysis.conftest import NS, T0, default_manifest, write_run

ROOT = Path(__file__).resolve().parents[2]


def _row(arm: str, rid: str, attempt: int, i: int, **kw) -> RequestRecord:
    sched = T0 + i * NS // 10
    base = dict(run_id="run-test", experiment="unit", arm=arm, target_kind="sim_cloud",
                request_id=rid, attempt=attempt, sample_id=rid, phase="main",
                t_scheduled=sched, t_sent=sched, t_arrival=T0 + i * NS // 10 - attempt * NS // 20,
                t_virtual=sched, queue_delay_s=0.0, will_retry=False)  # fmt: skip
    if kw.get("status", "ok") == "ok":
        base.update(t_first_token=sched + NS // 10, t_end=sched + NS // 5, ttft_s=0.1, e2e_s=0.2,
                    ttft_sched_s=0.1, e2e_sched_s=0.2, tpot_s=0.01, finish_reason="length")  # fmt: skip
    base.update(kw)
    base.setdefault("status", "ok")
    return RequestRecord(**base)


def _api_rows() -> list[RequestRecord]:
    """A: 429 then ok (1000 in, 200 cached, 100 out); B: ok (500, 50); C: cut short after 20
    tokens (400 in); D: 5xx before any token; E: cancelled by the harness."""
    err = dict(status="error", t_end=None)
    return [
        _row("cloud", "A", 0, 0, **err, error_type="rate_limited", http_status=429,
             will_retry=True),
        _row("cloud", "A", 1, 1, prompt_tokens=1000, cached_tokens=200, completion_tokens=100),
        _row("cloud", "B", 0, 2, prompt_tokens=500, completion_tokens=50),
        _row("cloud", "C", 0, 3, status="error", error_type="truncated", prompt_tokens=400,
             completion_tokens=20, t_first_token=T0 + 3 * NS // 10 + NS // 10,
             t_end=T0 + 3 * NS // 10 + NS // 5),
        _row("cloud", "D", 0, 4, **err, error_type="server_error", http_status=503),
        _row("cloud", "E", 0, 5, **err, error_type="cancelled"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    rows = _api_rows() + [
        _row("selfhosted", f"s{i}", 0, i, target_kind="sim_vllm", prompt_tokens=300,
             completion_tokens=64) for i in range(20)
    ]  # fmt: skip
    man = default_manifest()
    man["arms"] = {"cloud": {"kind": "sim_cloud", "model": "sim-gpt-4o-mini"},
                   "selfhosted": {"kind": "sim_vllm", "model": "m"}}  # fmt: skip
    man["config"]["analysis"]["slo"] = {"ttft_s": 1.0, "tpot_s": None, "e2e_s": None}
    return write_run(tmp_path_factory.mktemp("cost") / "run", rows, manifest=man, parts=2)


FLAT = ["traffic.profile=[1]", "selfhost.capacity_rps=2"]


def test_api_arm_is_priced_attempt_by_attempt(run_dir):
    c = compute_cost(load_run(run_dir), settings_from({}, FLAT))
    a = c["arms"]["cloud"]
    # gpt-4o-mini: 0.15 in, 0.075 cached, 0.60 out per 1M. A1 = 800*.15 + 200*.075 + 100*.6 =
    # 195; B = 75 + 30 = 105; C (cut short, billed as received) = 60 + 12 = 72; 429, 5xx: 0
    assert a["recorded_usd"] == pytest.approx(372e-6, abs=1e-12)
    assert a["measured"]["requests"] == 4 and a["measured"]["cancelled_requests"] == 1
    assert a["usd_per_call"] == pytest.approx(93e-6)  # 372 / 4 requests (E left out)
    assert a["usd_per_successful_task"] == pytest.approx(186e-6)  # A and B succeeded
    assert a["retry_share"] == 0 and a["failed_share"] == pytest.approx(72 / 372)
    assert a["monthly_total_usd"] == pytest.approx(6_000_000 * 93e-6)  # 100k x 20 x 3 calls
    assert c["cloud"]["monthly_total_usd"] == a["monthly_total_usd"]  # the DESIGN key
    lo, hi = a["usd_per_call_ci"]
    assert lo < 93e-6 < hi
    assert any("priced as gpt-4o-mini" not in n for n in c["notes"])


def test_billing_overrides_price_retries(run_dir):
    s = settings_from({}, [*FLAT, "pricing.billing.default.before_output.rate_limited=input"])
    a = compute_cost(load_run(run_dir), s)["arms"]["cloud"]
    # the 429 now bills its prompt: unknown, so the mean known prompt (1000+500+400)/3 -> 633
    retry = 633 * 0.15e-6
    assert a["recorded_usd"] == pytest.approx(372e-6 + retry, abs=1e-12)
    assert a["retry_share"] == pytest.approx(retry / (372e-6 + retry))
    s = settings_from({}, [*FLAT, "pricing.billing.default.before_output.rate_limited=input",
                           "traffic.retry_rate=2"])  # fmt: skip
    a = compute_cost(load_run(run_dir), s)["arms"]["cloud"]
    # c_call = mean final-attempt cost (372 / 4) + 2 x mean retried-attempt cost (94.95)
    assert a["usd_per_call"] == pytest.approx(93e-6 + 2 * retry)


def test_selfhost_and_break_even(run_dir):
    c = compute_cost(load_run(run_dir), settings_from({}, FLAT))
    sh = c["arms"]["selfhosted"]
    # 6M calls = 2.28 req/s all month; 2 req/s x 0.7 per replica -> 2 replicas (also the minimum)
    assert sh["replicas_by_hour"] == [2] and sh["replica_hours"] == 1460
    assert sh["compute_usd"] == pytest.approx(1460 * 2.99)
    assert sh["fixed_usd"] == 40 * 150 + 100 + 200 + 100
    assert sh["monthly_total_usd"] == pytest.approx(1460 * 2.99 + 6400)
    be = c["break_even"]
    assert be["never"] is True  # 2.99 / (3600 * 1.4) = 5.9e-4 per call > 9.3e-5
    c = compute_cost(
        load_run(run_dir), settings_from({}, ["traffic.profile=[1]", "selfhost.capacity_rps=50"])
    )
    be = c["break_even"]
    # 2 replicas hold 70 req/s = 184M calls: self stays 1460 x 2.99 + 6400 = 10765.4 up to there
    assert be["monthly_api_spend_usd"] == pytest.approx(10765.4)
    assert be["monthly_calls"] == pytest.approx(10765.4 / 93e-6)
    assert be["monthly_tokens"] == pytest.approx(10765.4 / 93e-6 * (1500 / 2 + 75))
    lo, hi = be["monthly_api_spend_usd_ci"]
    assert lo <= 10765.4 <= hi
    assert [h["share_selfhosted"] for h in c["hybrid"]] == [0.25, 0.5, 0.8]
    assert len(c["projection"]) == 12 and c["projection"][0]["api_usd"] == pytest.approx(558.0)
    assert c["projection"][1]["monthly_calls"] == pytest.approx(6_000_000 * 1.05)
    assert {f["factor"] for f in c["sensitivity"]["factors"]} >= {
        "GPU price", "purchase mode", "headroom", "engineering hours", "retry rate",
        "traffic growth"}  # fmt: skip


def test_retry_override_when_nothing_was_retried_and_failed_share_note(run_dir):
    # the self-hosted arm's rows are all ok; cost it as an API arm to see the retry fallback:
    # a retry priced as the policy bills a 5xx before output (default: nothing; "input": the
    # mean prompt of the final attempts)
    base = [*FLAT, "traffic.retry_rate=1"]
    c = compute_cost(load_run(run_dir), settings_from({}, base))
    a = c["arms"]["cloud"]
    # cloud did retry (A's 429, free): c_call = 372/4 + 1 x 0 and the retry share is 0
    assert a["usd_per_call"] == pytest.approx(93e-6) and a["retry_share"] == 0
    assert a["usd_per_successful_task"] == pytest.approx(93e-6 * 4 / 2)
    # 2 of 4 requests failed after retries: the note says what a successful task costs
    assert any("50% of requests failed" in n and "$0.000186" in n for n in c["notes"])


def test_measured_capacity_is_a_lower_bound_with_a_note(run_dir):
    c = compute_cost(load_run(run_dir), settings_from({}, ["traffic.profile=[1]"]))
    assert c["arms"]["selfhosted"]["capacity_source"].startswith("run goodput")
    assert any("bounds capacity from below" in n for n in c["notes"])


def test_bad_settings_and_unpriced_arms_fail_before_traffic():
    with pytest.raises(ConfigError, match=r"traffic\.montly_growth: unknown key.*monthly_growth"):
        settings_from({}, ["traffic.montly_growth=0.1"])
    with pytest.raises(ConfigError, match=r"selfhost\.headroom: must be in \[0, 1\)"):
        settings_from({}, ["selfhost.headroom=1"])
    for key in ("traffic.calls_per_month", "traffic.retry_rate", "selfhost.capacity_rps"):
        with pytest.raises(ConfigError, match=rf"{key}: must be a finite number"):
            settings_from({}, [f"{key}=.inf"])
    s = settings_from({}, [])
    with pytest.raises(CatalogError, match=r"no price for arms\.api model 'gpt-9'"):
        check_for_arms(s, {"api": ("openai", "gpt-9")})
    check_for_arms(s, {"api": ("openai", "gpt-4o"), "sim": ("sim_cloud", "whatever")})
    with pytest.raises(CatalogError, match=r"selfhost\.instance: 'tpu'"):
        check_for_arms(settings_from({}, ["selfhost.instance=tpu"]), {"v": ("vllm", "m")})


def test_harness_cost_recomputes_and_keeps_overrides(run_dir, tmp_path):
    import shutil

    rd = tmp_path / "run"
    shutil.copytree(run_dir, rd)

    def cost(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "harness", "cost", str(rd), *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip

    r = cost("selfhost.capacity_rps=50", "traffic.profile=[1]")
    assert r.returncode == 0, r.stderr
    assert "break-even: $10,765/month" in r.stdout
    s = json.loads((rd / "summary.json").read_text())
    assert s["cost"]["break_even"]["monthly_api_spend_usd"] == pytest.approx(10765.4)
    assert "## Cost" in (rd / "memo.md").read_text() and "Cost" in (rd / "report.html").read_text()
    before = (rd / "cost_overrides.yaml").read_text()
    for bad, key in (("traffic.monthly_active_users=-5", "traffic.monthly_active_users"),
                     ("selfhost.sweep_dir=/nonexistent", "selfhost.sweep_dir"),
                     ("traffic.calls_per_month=.inf", "traffic.calls_per_month")):  # fmt: skip
        r = cost(bad)
        assert r.returncode == 2 and key in r.stderr, (bad, r.stderr)
        assert "Traceback" not in r.stderr
        assert (rd / "cost_overrides.yaml").read_text() == before
    # the failed call wrote nothing: the stored overrides are the first call's
    from harness.report import build_report

    again = build_report(rd)
    assert again["cost"]["break_even"]["monthly_api_spend_usd"] == pytest.approx(10765.4)


def test_every_formula_in_the_docstrings_is_in_the_readme():
    import re

    from harness.cost import billing, measure, model

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- SECTION:cost -->(.*)<!-- /SECTION:cost -->", text, re.S)
    assert m, "README has no cost section"
    readme = " ".join(m.group(1).split())
    found = 0
    for mod in (model, billing, measure):
        for f in re.findall(r"``([^`]+)``", mod.__doc__ or ""):
            if " = " in f:
                found += 1
                assert " ".join(f.split()) in readme, f
    assert found >= 20


def test_capacity_from_a_sweep(run_dir, tmp_path):
    import datetime as dt

    from harness.cost.section import sweep_capacity

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    pts = [{"load": 2.0, "goodput_rps": 1.9}, {"load": 4.0, "goodput_rps": 3.8},
           {"load": 4.0, "goodput_rps": 3.6}, {"load": 8.0, "goodput_rps": 5.0}]  # fmt: skip
    doc = {"kind": "sweep", "arms": {"selfhosted": {"points": pts, "max_load_meeting_slo": 4.0},
                                     "none": {"points": [], "max_load_meeting_slo": None}}}  # fmt: skip
    (sweep / "summary.json").write_text(json.dumps(doc))
    assert sweep_capacity(sweep, "selfhosted")[0] == 3.6  # the lowest repeat at load 4
    assert sweep_capacity(sweep, "none") == (None, "no load of the sweep met the SLO")
    s = settings_from({}, ["traffic.profile=[1]", f"selfhost.sweep_dir={sweep}"])
    c = compute_cost(load_run(run_dir), s, today=dt.date(2025, 7, 1))
    assert c["arms"]["selfhosted"]["capacity_rps"] == 3.6
    assert c["stale_entries"] == []  # 30 days old on that day
    c = compute_cost(load_run(run_dir), s, today=dt.date(2026, 12, 1))
    assert c["stale_entries"] == ["api:gpt-4o-mini", "gpu:h100-80gb-x1"]
    assert any("dated 2025-06-01" in n for n in c["notes"])
    (sweep / "summary.json").write_text(json.dumps({"kind": "run"}))
    with pytest.raises(ConfigError, match="not a sweep summary"):
        sweep_capacity(sweep, "selfhosted")


@pytest.mark.parametrize(
    "args, message",
    [
        (["pricing.catalog_file=/nonexistent.yaml"], "/nonexistent.yaml: API price catalog not found"),
        (["arms.cloud.target=openai", "arms.cloud.api_key_env=OPENAI_API_KEY",
          "arms.cloud.model=gpt-9"], "no price for arms.cloud model 'gpt-9'"),
        (["selfhost.instance=tpu-v9"], "selfhost.instance: 'tpu-v9'"),
    ],
)  # fmt: skip
def test_experiment_refuses_bad_cost_inputs_before_traffic(tmp_path, args, message):
    r = subprocess.run(
        [sys.executable, "-m", "harness", "experiment", *args,
         f"record.reports_dir={tmp_path}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not any(tmp_path.rglob("manifest.json"))  # nothing started
