"""What-if replay on a small synthetic mirrored run, every figure hand-computed.

The run (``write_mirrored_run``): ``n`` arrivals one second apart, items ``q0..`` all with the
answer ``42``; item ``i`` is tagged ``pii`` when ``i % 8 == 1``. Both arms answer every
arrival (same ``pair_id``):

- ``cloud`` (sim_cloud, priced as gpt-4o-mini): always right, TTFT 0.2 s, E2E 1.0 s, 1000
  prompt + 100 output tokens = 150e-6 + 60e-6 = 210e-6 USD a request;
- ``selfhosted`` (sim_vllm): TTFT 0.05 s, E2E 0.5 s, right, except a refusal when
  ``i % 5 == 0`` and a 503 after 0.1 s when ``i % 10 == 3``.

In each block of 40 arrivals: refusals {0,5,...,35} (8), errors {3,13,23,33} (4), sensitive
{1,9,17,25,33} (5; 25 refuses, 33 fails).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from harness.analysis.data import load_run
from harness.record.schema import RequestRecord, records_to_table
from harness.routing.replay import (
    apgr,
    cpt,
    mirrored_items,
    monthly_model,
    monthly_usd,
    policy_figures,
    replay,
    routing_curve,
    split_items,
)
from harness.routing.settings import policy_from_config

T0 = 1_780_000_000_000_000_000
NS = 1_000_000_000
CLOUD_USD = 210e-6
SELF_MONTH = 1460 * 2.99 + 6400  # 2 replicas (the minimum) all month + fixed costs
CALLS = 6_000_000  # 100k users x 20 actions x 3 calls


def _rec(arm: str, i: int, *, ok: bool, ttft: float, e2e: float, text: str | None,
         tokens: tuple[int, int], reference: str | None = "42") -> RequestRecord:  # fmt: skip
    sched = T0 + i * NS
    common = dict(run_id="run-r", experiment="unit", arm=arm,
                  target_kind="sim_cloud" if arm == "cloud" else "sim_vllm", model="m",
                  request_id=f"{arm}-{i}", attempt=0, pair_id=f"p{i:06d}", sample_id=f"q{i}",
                  slice="eval:c", phase="main", t_scheduled=sched, t_sent=sched,
                  t_virtual=sched, t_arrival=sched, queue_delay_s=0.0, reference_answer=reference,
                  will_retry=False)  # fmt: skip
    if not ok:
        return RequestRecord(**common, status="error", t_end=sched + int(e2e * NS),
                             http_status=503, error_type="server_error", error_message="x")  # fmt: skip
    first, end = sched + int(round(ttft * NS)), sched + int(round(e2e * NS))
    return RequestRecord(**common, status="ok", t_first_token=first, t_end=end, ttft_s=ttft,
                         e2e_s=e2e, ttft_sched_s=ttft, e2e_sched_s=e2e, tpot_s=0.01,
                         itl_s=[0.01] * 9, prompt_tokens=tokens[0], completion_tokens=tokens[1],
                         tokens_source="usage", finish_reason="stop", output_text=text)  # fmt: skip


def write_mirrored_run(run_dir: Path, n: int = 40, *, judge: dict | None = None,
                       hard_sensitive: bool = True, cloud: tuple[float, float] = (0.2, 1.0),
                       small: tuple[float, float, float] = (0.05, 0.5, 0.1),
                       small_tokens: int = 10, cost: dict | None = None,
                       reference: str | None = "42") -> Path:  # fmt: skip
    """The run of the module docstring; ``hard_sensitive=False``: sensitive items neither
    refuse nor fail; ``cloud`` (TTFT, E2E), ``small`` (TTFT, E2E, time to a 503)."""
    recs: list[RequestRecord] = []
    items = []
    for i in range(n):
        k = i % 40
        recs.append(_rec("cloud", i, ok=True, ttft=cloud[0], e2e=cloud[1], text="42",
                         tokens=(1000, 100), reference=reference))  # fmt: skip
        hard = hard_sensitive or k % 8 != 1
        refuse, err = k % 5 == 0 and hard, k % 10 == 3 and hard
        recs.append(_rec("selfhosted", i, ok=not err, ttft=small[0],
                         e2e=small[2] if err else small[1],
                         text="I cannot help with that." if refuse else "42",
                         tokens=(1000, small_tokens), reference=reference))  # fmt: skip
        prompt = f"What is 40 + 2? (item {i})" + (" SSN 123-45-6789" if k == 7 else "")
        items.append({"id": f"q{i}", "category": "c", "prompt": prompt, "answer": "42",
                      **({"tags": ["pii"]} if k % 8 == 1 else {})})  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    eval_path = run_dir / "items.jsonl"
    eval_path.write_text("".join(json.dumps(x) + "\n" for x in items), encoding="utf-8")
    (run_dir / "requests").mkdir()
    half = len(recs) // 2
    for j, chunk in enumerate((recs[:half], recs[half:])):
        pq.write_table(records_to_table(chunk), run_dir / "requests" / f"part-{j}.parquet")
    manifest = {
        "run_id": "run-r", "experiment": "unit", "status": "completed", "t0_ns": T0,
        "config": {
            "workload": {"name": "w", "kind": "eval", "path": str(eval_path)},
            "record": {"output_text": "keep"},
            "load": {"mode": "open", "rate": 1.0, "duration_s": n, "pairing": "mirrored"},
            "analysis": {"include_phases": ["main"], "confidence": 0.95,
                         "bootstrap_resamples": 200, "seed": 0,
                         "slo": {"ttft_s": 1.0, "tpot_s": None, "e2e_s": None}},
            "traffic": {"profile": [1], **(cost or {}).get("traffic", {})},
            "selfhost": {"capacity_rps": 2, **(cost or {}).get("selfhost", {})},
            "judge": {"min_n": 50, "resamples": 200, **(judge or {})},
        },
        "arms": {"cloud": {"kind": "sim_cloud", "model": "sim-gpt-4o-mini", "base_url": "x"},
                 "selfhosted": {"kind": "sim_vllm", "model": "m", "base_url": "y"}},
    }  # fmt: skip
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run_dir


@pytest.fixture(scope="module")
def run40(tmp_path_factory) -> Path:
    return write_mirrored_run(tmp_path_factory.mktemp("whatif") / "run", 40)


@pytest.fixture(scope="module")
def mirrored(run40):
    return mirrored_items(load_run(run40), "selfhosted", "cloud")


def _cfg(**raw):
    return policy_from_config({"small": "selfhosted", "large": "cloud", **raw})


PURE_SMALL = {"escalation": {"enabled": False}, "failover": {"enabled": False},
              "rules": {"sensitive_tags": []}}  # fmt: skip
PURE_LARGE = {"first": "large", "escalation": {"enabled": False},
              "failover": {"enabled": False}, "rules": {"sensitive_tags": []}}  # fmt: skip


def test_items_are_read_from_the_mirrored_run(mirrored):
    m = mirrored
    assert m.n == 40 and m.unmatched == {"selfhosted": 0, "cloud": 0}
    assert list(m.sample_id[:3]) == ["q0", "q1", "q2"]
    assert m.tags[1] == frozenset({"pii"}) and m.tags[2] == frozenset()
    assert "SSN" in m.prompt[7]
    assert np.allclose(m.t_s, np.arange(40.0))
    assert m.arms["cloud"].cost_usd == pytest.approx(np.full(40, CLOUD_USD))
    assert (m.arms["selfhosted"].cost_usd == 0).all()
    assert m.arms["selfhosted"].elapsed_s[3] == pytest.approx(0.1)
    assert not m.arms["selfhosted"].ok[3] and m.arms["selfhosted"].error_type[3] == "server_error"
    em = m.arms["selfhosted"].scores["exact_match"]
    assert em[0] == 0 and em[1] == 1 and math.isnan(em[3])  # refusal, right, failed


def test_default_policy_replayed_by_hand(mirrored):
    r = replay(mirrored, _cfg())
    esc, fo, failed = {0, 5, 10, 15, 20, 30, 35}, {3, 13, 23}, {33}
    for i in range(40):
        want = "escalate:refusal" if i in esc else "failover:server_error" if i in fo else None
        assert r.hop_reason[i] == want, i
        assert r.large_call[i] == (i in esc | fo), i
        assert r.first_reason[i] == ("sensitive" if i % 8 == 1 else "first"), i
    assert not r.large_call[[1, 9, 17, 25, 33]].any()  # sensitive: refusal and 503 stay
    assert set(np.flatnonzero(r.failed).tolist()) == failed
    e2e = np.full(40, 0.5)
    e2e[list(esc)] = 0.5 + 1.0  # small E2E + large E2E
    e2e[list(fo)] = 0.1 + 1.0  # the 503 after 0.1 s, then the cloud
    e2e[33] = np.inf
    assert r.e2e_s == pytest.approx(e2e)
    ttft = np.full(40, 0.05)
    ttft[list(esc)], ttft[list(fo)], ttft[33] = 0.5 + 0.2, 0.1 + 0.2, np.inf
    assert r.ttft_s == pytest.approx(ttft)
    f = policy_figures(mirrored, r, None, None, 0.95, "exact_match")
    assert f["failure_rate"]["value"] == pytest.approx(1 / 40)
    assert f["cloud_share"]["value"] == pytest.approx(10 / 40)
    assert f["escalation_rate"]["value"] == pytest.approx(7 / 40)
    assert f["failover_rate"]["value"] == pytest.approx(3 / 40)
    assert f["api_usd_per_request"]["value"] == pytest.approx(10 * CLOUD_USD / 40)
    assert f["quality"]["value"] == pytest.approx(38 / 39)  # 25 refused, 33 unanswered
    assert f["e2e_p50_s"]["value"] == pytest.approx(0.5)
    assert f["e2e_p99_s"]["value"] is None  # the rank falls on the failed (censored) request
    assert f["ttft_p50_s"]["value"] == pytest.approx(0.05)


def test_pure_paths_are_the_arms(mirrored):
    small = replay(mirrored, _cfg(**PURE_SMALL))
    large = replay(mirrored, _cfg(**PURE_LARGE))
    assert not small.large_call.any() and not large.small_call.any()
    assert small.failed.sum() == 4 and not large.failed.any()
    assert np.nanmean(small.scores["exact_match"]) == pytest.approx(28 / 36)
    assert np.nanmean(large.scores["exact_match"]) == 1.0
    assert large.api_usd == pytest.approx(np.full(40, CLOUD_USD))
    assert large.e2e_s == pytest.approx(np.full(40, 1.0))


def test_monthly_cost_at_the_traffic_model(run40, mirrored):
    mm = monthly_model(load_run(run40), "selfhosted")
    r = replay(mirrored, _cfg())
    api = float(r.api_usd.mean())
    m = monthly_usd(mm, api, float(r.small_call.mean()))
    assert m["api_usd"] == pytest.approx(CALLS * 10 * CLOUD_USD / 40)
    assert m["selfhost_usd"] == pytest.approx(SELF_MONTH)
    assert m["total_usd"] == pytest.approx(CALLS * 10 * CLOUD_USD / 40 + SELF_MONTH)
    assert monthly_usd(mm, CLOUD_USD, 0.0)["total_usd"] == pytest.approx(CALLS * CLOUD_USD)
    # a disjoint split is harness.cost.model.hybrid_month at that share
    from harness.cost import model as cm

    want = cm.hybrid_month(mm.calls, cm.D(0.5), cm.D(CLOUD_USD), mm.profile, mm.selfhost)
    assert monthly_usd(mm, CLOUD_USD / 2, 0.5)["total_usd"] == pytest.approx(float(want))


def test_ttft_budget_abandons_the_small_arm_and_trips_the_breaker(mirrored):
    r = replay(mirrored, _cfg(failover={"ttft_budget_s": 0.03}, rules={"sensitive_tags": []}))
    # every small attempt misses 0.03 s: abandoned there (a failure for the breaker); after 20
    # of them (the 20th ends at 19.03 s) the breaker opens for 30 s: arrivals 20..39 skip it
    assert r.first_reason == ["first"] * 20 + ["breaker_open"] * 20
    assert r.hop_reason[:20] == ["failover:ttft_budget"] * 20
    assert r.e2e_s[:20] == pytest.approx(np.full(20, 0.03 + 1.0))
    assert r.e2e_s[20:] == pytest.approx(np.full(20, 1.0))
    assert r.state["breaker_trips_s"] == [pytest.approx(19.03)]
    assert r.large_call.all() and not r.failed.any()


def test_sensitive_pattern_reads_the_prompt_from_the_workload(mirrored):
    r = replay(mirrored, _cfg(rules={"sensitive_tags": [],
                                     "sensitive_patterns": [r"\b\d{3}-\d{2}-\d{4}\b"]}))  # fmt: skip
    assert np.flatnonzero(r.sensitive).tolist() == [7]


def test_budget_cap_per_day(mirrored):
    # 3 cloud calls a day at most (3 x 210e-6 = 630e-6 reaches the cap): then self-hosted only
    r = replay(mirrored, _cfg(budget={"daily_api_usd": 3 * CLOUD_USD}))
    assert r.large_call.sum() == 3
    assert np.flatnonzero(r.large_call).tolist() == [0, 3, 5]
    assert r.state["dropped_hops"] == 10 - 3
    rj = replay(mirrored, _cfg(budget={"daily_api_usd": 0.0, "on_exhausted": "reject"},
                               first="large"))  # fmt: skip
    # cloud-first with no budget: every non-sensitive request is rejected, sensitive ones served
    assert rj.rejected.sum() == 35 and not rj.large_call.any()
    assert np.flatnonzero(~rj.rejected).tolist() == [1, 9, 17, 25, 33]


def test_held_out_split():
    class M:
        n = 10
        sample_id = np.array([f"q{i}" for i in range(10)], dtype=object)

    t = split_items(M(), "time", 0.3)  # type: ignore[arg-type]
    assert t.tolist() == [True] * 3 + [False] * 7
    import hashlib

    h = split_items(M(), "hash", 0.5)  # type: ignore[arg-type]
    want = [int(hashlib.sha256(f"q{i}".encode()).hexdigest()[:16], 16) < 2**63 for i in range(10)]
    assert h.tolist() == want
    assert split_items(M(), "hash", 0.5).tolist() == want  # stable


def test_apgr_and_cpt_on_a_hand_computed_curve():
    # small 0.6, large 0.8: points (0.25, 0.7) -> PGR 0.5 and (0.5, 0.78) -> 0.9
    curve = routing_curve([(0.5, 0.78), (0.25, 0.7)], 0.6, 0.8)
    assert curve == [(0.0, 0.0), (0.25, pytest.approx(0.5)), (0.5, pytest.approx(0.9)),
                     (1.0, 1.0)]  # fmt: skip
    # trapezoids: 0.25 x 0.25 + 0.25 x 0.7 + 0.5 x 0.95
    assert apgr(curve) == pytest.approx(0.0625 + 0.175 + 0.475)
    assert cpt(curve, 0.5) == pytest.approx(0.25)
    assert cpt(curve, 0.7) == pytest.approx(0.25 + 0.25 * 0.2 / 0.4)
    assert apgr(routing_curve([], 0.6, 0.8)) == pytest.approx(0.5)  # the random router's line
    assert routing_curve([(0.5, 0.7)], 0.7, 0.7) == []  # no gap to recover


# ---------------------------------------------------------------- whatif: recommendation, CLI


@pytest.fixture(scope="module")
def passable_run(tmp_path_factory) -> Path:
    """400 arrivals where escalating refusals matches the cloud arm: sensitive items are easy,
    the self-hosted arm is fast (TTFT 0.02 s, E2E 0.05 s, 503 after 0.04 s) and the cloud
    slow (0.5 s, 2.0 s), same output length; 100M calls a month, 50 req/s a replica (the
    2-replica minimum serves them all: the same 10765.4 USD at any share)."""
    return write_mirrored_run(
        tmp_path_factory.mktemp("whatif") / "run", 400, hard_sensitive=False,
        cloud=(0.5, 2.0), small=(0.02, 0.05, 0.04), small_tokens=100,
        judge={"min_tail": 1, "metrics": {"failure_rate": {"margin": 0.05}}},
        cost={"traffic": {"calls_per_month": 1e8}, "selfhost": {"capacity_rps": 50}},
    )  # fmt: skip


def test_whatif_recommends_the_cheapest_policy_the_judge_passes(passable_run, capsys):
    from harness.cli import main

    grid = "policy.escalation.validators=[empty],[empty,refusal]"
    assert main(["whatif", str(passable_run), "--grid", grid]) == 0
    out = passable_run / "whatif"
    s = json.loads((out / "summary.json").read_text())
    assert (out / "plots" / "pareto.png").is_file() and (
        out / "plots" / "routing_curve.png"
    ).is_file()
    m = mirrored_items(load_run(passable_run), "selfhosted", "cloud")
    ev = ~split_items(m, "hash", 0.5)
    k = np.array([int(str(x)[1:]) % 40 for x in m.sample_id])
    to_cloud = np.isin(k, [0, 5, 10, 15, 20, 30, 35, 3, 13, 23])
    share = to_cloud[ev].mean()
    best = "escalation.validators=[empty,refusal]"
    p = s["policies"][best]["evaluation"]
    assert s["items"]["evaluation"] == int(ev.sum())
    assert p["cloud_share"]["value"] == pytest.approx(share)
    assert p["quality"]["value"] == 1.0 and p["failure_rate"]["value"] == 0.0
    assert p["ttft_p99_s"]["value"] == pytest.approx(0.05 + 0.5)  # escalated: small E2E + TTFT
    assert p["e2e_p99_s"]["value"] == pytest.approx(0.05 + 2.0)
    assert p["monthly"]["total_usd"] == pytest.approx(1e8 * CLOUD_USD * share + SELF_MONTH)
    rec = s["recommendation"]
    assert rec["policy"] == best and rec["evaluation_verdict"] == "GO"
    assert rec["monthly_cloud_only_usd"] == pytest.approx(1e8 * CLOUD_USD)
    assert rec["monthly_selfhost_only_usd"] == pytest.approx(SELF_MONTH)
    # refusals kept: quality below the cloud arm's, so the judge says NO_GO
    assert s["policies"]["escalation.validators=[empty]"]["calibration"]["verdict"][
        "decision"] == "NO_GO"  # fmt: skip
    assert s["routing"]["apgr"] is not None and 0 < s["routing"]["cpt50"] < share
    memo = (out / "whatif.md").read_text()
    assert f"Recommendation: `{best}`" in memo and "$21,000" in memo
    assert "recommended: escalation.validators=[empty,refusal]" in capsys.readouterr().out


def test_policy_file_overrides_and_grid(tmp_path):
    from harness.config import ConfigError
    from harness.routing.whatif import grid_policies, policy_raw

    f = tmp_path / "p.yaml"
    f.write_text("policy:\n  failover:\n    ttft_budget_s: 0.8\n  first: small\n")
    raw = policy_raw(f, ["policy.budget.daily_api_usd=5", "escalation.validators=[empty]"])
    pols = grid_policies(raw, ["policy.failover.ttft_budget_s=0.3,0.5",
                               "policy.escalation.validators=[empty],[empty,refusal]"])  # fmt: skip
    assert [n for n, _ in pols] == [
        "failover.ttft_budget_s=0.3 escalation.validators=[empty]",
        "failover.ttft_budget_s=0.3 escalation.validators=[empty,refusal]",
        "failover.ttft_budget_s=0.5 escalation.validators=[empty]",
        "failover.ttft_budget_s=0.5 escalation.validators=[empty,refusal]",
    ]
    assert pols[1][1].escalation.validators == ["empty", "refusal"]
    assert pols[2][1].failover.ttft_budget_s == 0.5 and pols[2][1].budget.daily_api_usd == 5
    assert grid_policies(raw, [])[0][1].failover.ttft_budget_s == 0.8
    with pytest.raises(ConfigError, match="policy.failover.ttft_budge"):
        grid_policies(policy_raw(None, ["policy.failover.ttft_budge=1"]), [])


def test_choice_is_made_on_calibration_and_reported_on_evaluation():
    from harness.routing.whatif import PURE_LARGE, PURE_SMALL, _recommend

    def e(cal: str, ev: str, cost: float) -> dict:
        return {part: {"verdict": {"decision": d}, "monthly": {"total_usd": cost}}
                for part, d in (("calibration", cal), ("evaluation", ev))}  # fmt: skip

    pol = {"a": e("GO", "NO_GO", 10.0), "b": e("GO", "GO", 20.0), "c": e("NO_GO", "GO", 1.0),
           PURE_SMALL: e("NO_GO", "NO_GO", 5.0), PURE_LARGE: e("GO", "GO", 30.0)}  # fmt: skip
    rec = _recommend(pol, ["a", "b", "c"])
    # the cheapest that passes on calibration, whatever the evaluation part then says
    assert rec["policy"] == "a" and rec["evaluation_verdict"] == "NO_GO"
    assert rec["passing_on_calibration"] == ["a", "b"]
    assert rec["monthly_cloud_only_usd"] == 30.0 and rec["monthly_selfhost_only_usd"] == 5.0


# ---------------------------------------------------------------- review fixes


def _rewrite_manifest(run_dir: Path, edit) -> None:
    p = run_dir / "manifest.json"
    m = json.loads(p.read_text())
    edit(m)
    p.write_text(json.dumps(m), encoding="utf-8")


def test_whatif_policy_arms_must_have_their_roles(run40):
    from harness.config import ConfigError
    from harness.routing.whatif import whatif_section

    swapped = policy_from_config({"small": "cloud", "large": "selfhosted"})
    with pytest.raises(ConfigError, match=r"^policy\.small: 'cloud' is a sim_cloud arm; the "
                                          r"small arm must be self-hosted"):  # fmt: skip
        whatif_section(load_run(run40), [("p", swapped)])


@pytest.mark.parametrize("mode", ["hash", "drop"])
def test_whatif_refuses_text_validators_without_the_text(tmp_path, mode, capsys):
    """Validators read the recorded answers: hashed or dropped, the replay would escalate on
    hashes (none refuse) or on nothing (every answer empty). Refused, naming the setting (a
    run without reference answers: nothing else refuses it)."""
    from harness.cli import main

    run = write_mirrored_run(tmp_path / "run", 40, reference=None)
    _rewrite_manifest(run, lambda m: m["config"]["record"].update(output_text=mode))
    assert main(["whatif", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: run run-r recorded record.output_text={mode}, but policy")
    assert "\n" not in err and not (run / "whatif").exists()
    # without text validators the policy reads no text: not refused for that
    from harness.routing.whatif import check_output_text

    check_output_text(load_run(run), [("p", _cfg(escalation={"enabled": False}))])


def test_bootstrap_resamples_items_not_arrivals(run40, mirrored, monkeypatch):
    """Two items answered 20 times each (all failures on one): a resample is a mix of whole
    items, so the self-hosted failure rate's CI spans 0 (the good item twice) to 0.2."""
    from dataclasses import replace

    from harness.routing import whatif
    from harness.routing.replay import Resampler

    two = replace(mirrored, sample_id=np.array([f"q{i % 2}" for i in range(40)], object))
    rs = Resampler.over_items(two.sample_id, 50, 0)
    for w in rs.weights():
        assert (w[:, 0::2] == w[:, [0]]).all() and (w[:, 1::2] == w[:, [1]]).all()
        assert (w.sum(axis=1) == 40).all()
    monkeypatch.setattr(whatif, "mirrored_items", lambda data, small, large: two)
    s = whatif.whatif_section(load_run(run40), [("p", _cfg())], split="none")
    fr = s["policies"]["selfhost_only"]["evaluation"]["failure_rate"]
    assert fr["value"] == pytest.approx(0.1) and fr["ci"] == pytest.approx([0.0, 0.2])
    assert "bootstrap over items" in "\n".join(whatif.memo_lines(s))


def test_stale_queue_depth_is_no_signal():
    """A scrape older than QUEUE_DEPTH_MAX_AGE_S (30 s, as live: test_live checks the
    constant) at an arrival is not a signal."""
    import pyarrow as pa

    from harness.routing.replay import _queue_depth

    QUEUE_METRIC, QUEUE_DEPTH_MAX_AGE_S = "vllm:num_requests_waiting", 30.0  # noqa: N806

    class D:
        metrics = pa.table({"arm": ["selfhosted"] * 2, "name": [QUEUE_METRIC] * 2,
                            "t": pa.array([T0, T0], pa.timestamp("ns")), "value": [3.0, 4.0]})  # fmt: skip

    age = int(QUEUE_DEPTH_MAX_AGE_S * NS)
    got = _queue_depth(D(), "selfhosted", np.array([T0 - 1, T0, T0 + age, T0 + age + 1]))
    assert np.isnan(got[0]) and got[1] == got[2] == 7.0 and np.isnan(got[3])


def _add_router(run_dir: Path, policy: dict) -> None:
    """A router arm: request 0 has a retried 503 then a refusal on selfhosted, escalated to
    cloud; requests 1..3 are answered by selfhosted at once."""
    recs = []
    for i in range(4):
        legs = [("selfhosted", False), ("selfhosted", True), ("cloud", True)] if i == 0 else [
            ("selfhosted", True)]  # fmt: skip
        for k, (route, ok) in enumerate(legs):
            r = _rec(route, i, ok=ok, ttft=0.05, e2e=0.5, text="42", tokens=(1000, 100))
            r.arm, r.request_id, r.attempt, r.target_kind = "router", f"router-{i}", k, (
                "sim_cloud" if route == "cloud" else "sim_vllm")  # fmt: skip
            r.route, r.escalated = route, route == "cloud"
            r.route_reason = "escalate:refusal" if route == "cloud" else "first"
            r.will_retry = not ok
            recs.append(r)
    pq.write_table(records_to_table(recs), run_dir / "requests" / "part-9.parquet")
    _rewrite_manifest(run_dir, lambda m: m["arms"].update(router={
        "kind": "router", "small": "selfhosted", "large": "cloud", "policy": policy}))  # fmt: skip


def test_router_retry_rate_counts_retries_within_legs_only(tmp_path):
    """The escalated leg's first attempt (attempt 2) is no retry: 1 retry in 4 requests."""
    from harness.analysis.errors import errors_summary
    from harness.cost.section import run_cost

    run = write_mirrored_run(tmp_path / "run", 40)
    _add_router(run, {"small": "selfhosted", "large": "cloud"})
    data = load_run(run)
    e = errors_summary(data)["router"]
    assert (e["retries"], e["logical_requests"], e["retry_rate"]) == (1, 4, 0.25)
    assert run_cost(data)[0]["arms"]["router"]["measured"]["retry_rate"] == pytest.approx(0.25)


def test_whatif_defaults_to_the_router_arms_policy(tmp_path, capsys):
    from harness.cli import main

    run = write_mirrored_run(tmp_path / "run", 40)
    policy = {"small": "selfhosted", "large": "cloud", "escalation": {"enabled": False},
              "failover": {"ttft_budget_s": 0.4}}  # fmt: skip
    _add_router(run, policy)
    assert main(["whatif", str(run), "--split", "none"]) == 0
    assert "the base policy is router arm 'router''s" in capsys.readouterr().out
    s = json.loads((run / "whatif" / "summary.json").read_text())
    cfg = s["policies"]["policy"]["config"]
    assert cfg["escalation"]["enabled"] is False and cfg["failover"]["ttft_budget_s"] == 0.4
    assert "router arm 'router'" in (run / "whatif" / "whatif.md").read_text()
    # an explicit override still applies on top of it
    assert main(["whatif", str(run), "--split", "none", "policy.failover.ttft_budget_s=0.3"]) == 0
    s = json.loads((run / "whatif" / "summary.json").read_text())
    cfg = s["policies"]["policy"]["config"]
    assert cfg["escalation"]["enabled"] is False and cfg["failover"]["ttft_budget_s"] == 0.3
