"""The live router arm (harness/routing/live.py): rows per leg, escalation and failover,
sensitive items kept self-hosted (also under overload and budget exhaustion), the router's
cost priced by route, and the replay of the same policy agreeing with a live run.

Unit tests drive :class:`RouterClient` with scripted leg clients (no server); the end-to-end
ones (``slow``) run ``configs/experiment/hybrid.yaml`` on the simulators in a subprocess.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.canary.clock import ExperimentClock
from harness.config import ConfigError, TargetConfig, check_router_arms, validate_target
from harness.record.schema import ERROR_TYPES, RequestRecord
from harness.routing.live import QueueDepths, RouterClient, attempt_pricer
from harness.routing.policy import RouterPolicy
from harness.routing.settings import policy_from_config
from harness.workloads.base import WorkItem

T0 = 1_780_000_000_000_000_000
NS = 1_000_000_000
REFUSAL = "I can't help with that."


# ---------------------------------------------------------------- scripted legs


class ScriptedLeg:
    """A leg client: each call plays the next script, a list of attempts
    ``(ok, error_type, text)``; rows are stamped like the real client's (the arm recorded is
    the router's, the kind the leg's)."""

    def __init__(self, arm: str, kind: str, scripts: list[list[tuple]]) -> None:
        self.arm, self.kind, self.scripts, self.calls = arm, kind, list(scripts), 0
        self.cancelled = False

    def execute(self, item, *, request_id, pair_id=None, t_scheduled_ns=None, phase="main",
                t_virtual_ns=None, on_row=None, time_scale=None):  # fmt: skip
        self.calls += 1
        script = self.scripts.pop(0)
        rows, t = [], t_scheduled_ns
        for k, (ok, etype, text) in enumerate(script):
            last = k == len(script) - 1
            rec = RequestRecord(
                run_id="r", experiment="e", arm=self.arm, target_kind=self.kind,
                request_id=request_id, attempt=k, status="ok" if ok else "error",
                model=f"m-{self.kind}", pair_id=pair_id, sample_id=item.sample_id,
                t_scheduled=t, t_sent=t, t_first_token=t + NS // 10 if ok else None,
                t_end=t + NS // 2, t_arrival=t_scheduled_ns, t_virtual=t_virtual_ns,
                ttft_s=0.1 if ok else None, e2e_s=0.5, error_type=None if ok else etype,
                output_text=text, prompt_tokens=1000, completion_tokens=100 if ok else None,
                will_retry=not last and not ok,
            )  # fmt: skip
            rows.append(rec)
            if on_row is not None:
                on_row(rec)
            t += NS
        return rows

    def failure_record(self, item, *, request_id, error_type, message, pair_id=None,
                       t_scheduled_ns=None, phase="main", t_virtual_ns=None):  # fmt: skip
        return RequestRecord(run_id="r", experiment="e", arm=self.arm, target_kind=self.kind,
                             request_id=request_id, attempt=0, status="error",
                             error_type=error_type, error_message=message,
                             sample_id=item.sample_id, pair_id=pair_id,
                             t_scheduled=t_scheduled_ns, t_arrival=t_scheduled_ns)  # fmt: skip

    def cancel(self) -> None:
        self.cancelled = True

    def close(self) -> None:
        pass


def _router(policy: dict, small: list, large: list, *, price: float = 0.001,
            output_text: str = "keep", queues: QueueDepths | None = None):  # fmt: skip
    cfg = policy_from_config({"small": "selfhosted", "large": "cloud", **policy})
    legs = {"selfhosted": ScriptedLeg("router", "sim_vllm", small),
            "cloud": ScriptedLeg("router", "sim_cloud", large)}  # fmt: skip
    client = RouterClient(
        "router", RouterPolicy(cfg), legs, experiment_clock=lambda: ExperimentClock(T0),
        queue_depths=queues, pricer=lambda rec: price, output_text=output_text,
    )  # fmt: skip
    return client, legs


def _item(i: int = 0, tags: tuple[str, ...] = ()) -> WorkItem:
    return WorkItem(sample_id=f"s{i}", prompt=f"What is {i} + 1?", tags=tags)


def _send(client, i: int = 0, tags: tuple[str, ...] = ()) -> tuple[list, list]:
    got: list[RequestRecord] = []
    rows = client.execute(_item(i, tags), request_id=f"router-{i:09d}", pair_id=f"p{i:09d}",
                          t_scheduled_ns=T0 + i * NS, t_virtual_ns=T0 + i * NS,
                          on_row=got.append)  # fmt: skip
    return rows, got


OK = (True, None, "42")


def test_escalation_is_a_second_row_of_the_same_request():
    client, legs = _router({}, small=[[(True, None, REFUSAL)]], large=[[OK]])
    rows, got = _send(client, 3)
    assert got == rows and len(rows) == 2
    a, b = rows
    assert {a.request_id, b.request_id} == {"router-000000003"}
    assert (a.attempt, b.attempt) == (0, 1)
    assert (a.route, a.route_reason, a.escalated) == ("selfhosted", "first", False)
    assert (b.route, b.route_reason, b.escalated) == ("cloud", "escalate:refusal", True)
    assert (a.target_kind, b.target_kind) == ("sim_vllm", "sim_cloud")
    assert {a.arm, b.arm} == {"router"}
    assert a.t_arrival == b.t_arrival == T0 + 3 * NS
    assert b.pair_id == a.pair_id == "p000000003" and b.sample_id == "s3"
    assert a.will_retry is False and b.will_retry is False  # an ok leg is not a retry
    assert b.t_scheduled >= a.t_end  # the second leg starts after the first ended


def test_failover_after_the_arms_own_retries_continues_the_attempt_numbers():
    small = [[(False, "server_error", None), (False, "server_error", None)]]
    client, _ = _router({}, small=small, large=[[(False, "rate_limited", None), OK]])
    rows, _ = _send(client)
    assert [r.attempt for r in rows] == [0, 1, 2, 3]
    assert [r.route for r in rows] == ["selfhosted", "selfhosted", "cloud", "cloud"]
    assert [r.escalated for r in rows] == [False, False, True, True]
    assert [r.route_reason for r in rows][1:3] == ["first", "failover:server_error"]
    # every attempt but the last is followed by another: the logical request ends at row 3
    assert [r.will_retry for r in rows] == [True, True, True, False]
    assert rows[-1].status == "ok"


def test_good_answer_stands_and_no_cloud_call():
    client, legs = _router({}, small=[[OK]], large=[])
    rows, _ = _send(client)
    assert len(rows) == 1 and rows[0].route == "selfhosted" and legs["cloud"].calls == 0


def test_sensitive_item_never_leaves_selfhosted_even_failing():
    small = [[(False, "server_error", None)], [(True, None, REFUSAL)]]
    client, legs = _router({}, small=small, large=[])
    for i in range(2):
        rows, _ = _send(client, i, tags=("pii",))
        assert [r.route for r in rows] == ["selfhosted"]
        assert rows[0].route_reason == "sensitive" and rows[0].will_retry is False
    assert legs["cloud"].calls == 0


def test_budget_exhausted_keeps_requests_selfhosted_or_rejects_them():
    # small-first: two escalations spend 2 x 1.0 >= 1.5, the third refusal stands
    client, legs = _router({"budget": {"daily_api_usd": 1.5}}, price=1.0,
                           small=[[(True, None, REFUSAL)]] * 3, large=[[OK], [OK]])  # fmt: skip
    routes = [[r.route for r in _send(client, i)[0]] for i in range(3)]
    assert routes == [["selfhosted", "cloud"], ["selfhosted", "cloud"], ["selfhosted"]]
    assert client.state()["dropped_hops"] == 1
    # cloud-first, reject mode: the third request is one `rejected` row, routed nowhere
    client, legs = _router({"first": "large", "budget": {"daily_api_usd": 1.5,
                            "on_exhausted": "reject"}}, price=1.0, small=[],
                           large=[[OK], [OK]])  # fmt: skip
    _send(client, 0), _send(client, 1)
    rows, got = _send(client, 2)
    assert "rejected" in ERROR_TYPES
    assert len(rows) == 1 and got == rows
    r = rows[0]
    assert (r.status, r.error_type, r.route, r.route_reason) == ("error", "rejected", None,
                                                                 "reject:budget")  # fmt: skip
    assert r.target_kind == "router" and r.t_arrival == T0 + 2 * NS and r.will_retry is False
    assert legs["cloud"].calls == 2 and legs["selfhosted"].calls == 0


def test_queue_depth_signal_fails_over_before_sending():
    q = QueueDepths()
    client, legs = _router({"failover": {"queue_depth_max": 10}}, small=[[OK]], large=[[OK]],
                           queues=q)  # fmt: skip
    q.update([{"arm": "selfhosted", "name": "vllm:num_requests_waiting", "value": 6.0},
              {"arm": "selfhosted", "name": "vllm:num_requests_waiting", "value": 6.0},
              {"arm": "selfhosted", "name": "vllm:num_requests_running", "value": 99.0}])  # fmt: skip
    assert q.get("selfhosted") == 12.0 and q.get("cloud") is None
    rows, _ = _send(client)
    assert [(r.route, r.route_reason, r.escalated) for r in rows] == [
        ("cloud", "failover:queue", False)
    ]
    q.set("selfhosted", 3)
    rows, _ = _send(client, 1)
    assert rows[0].route == "selfhosted"
    stale = QueueDepths(max_age_s=0.0)
    stale.set("selfhosted", 50)
    assert stale.get("selfhosted") is None  # an old value is no signal


def test_validators_read_the_text_even_when_rows_hash_it():
    client, _ = _router({}, small=[[(True, None, REFUSAL)]], large=[[OK]], output_text="hash")
    rows, _ = _send(client)
    assert [r.route for r in rows] == ["selfhosted", "cloud"]  # the refusal was seen
    assert all(len(r.output_text) == 64 and r.output_text != REFUSAL for r in rows)


def test_a_killed_leg_still_records_its_last_row():
    client, legs = _router({}, small=[], large=[])

    def dies(item, *, on_row=None, **kw):
        rec = RequestRecord(run_id="r", experiment="e", arm="router", target_kind="sim_vllm",
                            request_id=kw["request_id"], attempt=0, status="error",
                            error_type="cancelled", will_retry=False)  # fmt: skip
        on_row(rec)
        raise KeyboardInterrupt

    legs["selfhosted"].execute = dies
    got: list = []
    with pytest.raises(KeyboardInterrupt):
        client.execute(_item(), request_id="router-x", t_scheduled_ns=T0, on_row=got.append)
    assert [(r.route, r.error_type) for r in got] == [("selfhosted", "cancelled")]
    client.cancel()
    assert legs["selfhosted"].cancelled and legs["cloud"].cancelled


def test_attempt_pricer_uses_the_catalog_and_billing_policy():
    import yaml

    from harness.config import project_root

    pricing = yaml.safe_load((project_root() / "configs/pricing/default.yaml").read_text())
    price = attempt_pricer(
        pricing, "cloud", TargetConfig(kind="sim_cloud", model="sim-gpt-4o-mini")
    )
    ok = RequestRecord(run_id="r", experiment="e", arm="x", target_kind="sim_cloud",
                       request_id="a", attempt=0, status="ok", t_first_token=1,
                       prompt_tokens=1000, completion_tokens=100)  # fmt: skip
    assert price(ok) == pytest.approx(1000 * 0.15e-6 + 100 * 0.6e-6)  # gpt-4o-mini
    err = RequestRecord(run_id="r", experiment="e", arm="x", target_kind="sim_cloud",
                        request_id="a", attempt=0, status="error", error_type="server_error",
                        prompt_tokens=1000)  # fmt: skip
    assert price(err) == 0.0  # before_output: none
    free = attempt_pricer(pricing, "selfhosted", TargetConfig(kind="sim_vllm"))
    assert free(ok) == 0.0


# ---------------------------------------------------------------- config


def _arms(**router) -> dict[str, TargetConfig]:
    return {"cloud": TargetConfig(kind="sim_cloud"), "selfhosted": TargetConfig(kind="sim_vllm"),
            "router": TargetConfig(kind="router", router=router)}  # fmt: skip


def test_router_arms_default_and_are_checked_before_traffic():
    arms = _arms()
    check_router_arms(arms)
    assert (arms["router"].router["small"], arms["router"].router["large"]) == ("selfhosted",
                                                                                "cloud")  # fmt: skip
    for router, msg in [
        ({"small": "gpu"}, r"arms\.router\.router\.small: 'gpu' is not an arm"),
        ({"large": "router"}, r"arms\.router\.router\.large: 'router' is a router arm"),
        ({"small": "cloud", "large": "cloud"}, r"arms\.router\.router\.small: 'cloud' is a "),
    ]:
        with pytest.raises(ConfigError, match=msg):
            check_router_arms(_arms(**router))
    two = {**_arms(), "cloud2": TargetConfig(kind="sim_cloud")}
    with pytest.raises(ConfigError, match=r"router\.large: not set, and the experiment has 2 API"):
        check_router_arms(two)
    with pytest.raises(ConfigError, match=r"arms\.r\.router: required for a router arm"):
        validate_target("r", TargetConfig(kind="router"))
    with pytest.raises(ConfigError, match=r"arms\.r\.router\.escalation\.validators"):
        validate_target("r", TargetConfig(kind="router", router={"escalation": {
            "validators": ["vibes"]}}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"arms\.c\.router: only for kind router"):
        validate_target("c", TargetConfig(kind="sim_cloud", router={}))


def test_router_arms_roles_are_checked_when_named():
    """``small`` must be self-hosted and ``large`` an API arm even when both are named: with
    them swapped, sensitive requests would be kept on the cloud."""
    for router, msg in [
        ({"small": "cloud", "large": "selfhosted"},
         r"^arms\.router\.router\.small: 'cloud' is a sim_cloud arm; the small arm must be "
         r"self-hosted \(vllm, sim_vllm\): name one of selfhosted, gpu2$"),
        ({"small": "selfhosted", "large": "gpu2"},
         r"^arms\.router\.router\.large: 'gpu2' is a sim_vllm arm; the large arm must be API "
         r"\(openai, sim_cloud\): name one of cloud$"),
    ]:  # fmt: skip
        arms = {**_arms(**router), "gpu2": TargetConfig(kind="sim_vllm")}
        with pytest.raises(ConfigError, match=msg):
            check_router_arms(arms)


def test_ttft_budget_needs_a_streamed_small_arm():
    """With ``stream: false`` the first token comes with the whole body: a TTFT budget cannot
    be enforced live, so it is a config error (a failover without a budget is fine)."""
    arms = _arms(failover={"ttft_budget_s": 0.5})
    arms["selfhosted"].stream = False
    with pytest.raises(ConfigError, match=r"^arms\.router\.router\.failover\.ttft_budget_s: "
                                          r"the small arm 'selfhosted' has stream: false"):  # fmt: skip
        check_router_arms(arms)
    for router in ({"failover": {"ttft_budget_s": None}},
                   {"failover": {"ttft_budget_s": 0.5, "enabled": False}}):  # fmt: skip
        arms = _arms(**router)
        arms["selfhosted"].stream = False
        check_router_arms(arms)
    check_router_arms(_arms(failover={"ttft_budget_s": 0.5}))  # streamed: fine


def test_queue_depth_staleness_is_the_replays_rule():
    from harness.routing.settings import QUEUE_DEPTH_MAX_AGE_S

    q = QueueDepths()
    assert q.max_age_s == QUEUE_DEPTH_MAX_AGE_S == 30.0
    q.set("selfhosted", 5)
    assert q.get("selfhosted") == 5.0


# ---------------------------------------------------------------- live and replay agree


def _mirrored_like(n: int, spacing_s: float, small: tuple[float, float], large: tuple[float, float],
                   price: float):  # fmt: skip
    """A replay input whose every arrival's recorded logical requests are ``small`` / ``large``
    (TTFT, E2E from the arrival), answered ``"42"``, ``spacing_s`` apart."""
    from harness.routing.replay import ArmOutcomes, Mirrored

    def arm(ttft: float, e2e: float, cost: float) -> ArmOutcomes:
        return ArmOutcomes(ok=np.ones(n, bool), ttft_s=np.full(n, ttft), elapsed_s=np.full(n, e2e),
                           tpot_s=np.full(n, np.nan), cost_usd=np.full(n, cost),
                           error_type=[None] * n, output_text=["42"] * n,
                           finish_reason=[None] * n, scores={})  # fmt: skip

    return Mirrored(
        small="selfhosted", large="cloud", sample_id=np.array([f"s{i}" for i in range(n)], object),
        t_s=np.arange(n) * spacing_s, day=np.zeros(n, np.int64), time_scale=1.0,
        prompt=[_item(i).prompt_text() for i in range(n)], tags=[frozenset()] * n,
        queue_depth=np.full(n, np.nan), arms={"selfhosted": arm(*small, 0.0),
                                              "cloud": arm(*large, price)},
        scorers={}, role={"selfhosted": "selfhost", "cloud": "api"}, unmatched={},
    )  # fmt: skip


@pytest.mark.parametrize(
    "failover",
    [
        # two 503s then an ok per small leg: one ok leg for the breaker, never 2/3 failures
        {"breaker_min_requests": 3, "breaker_error_rate": 0.5, "cooldown_s": 1000},
        # each attempt's TTFT (0.1 s) is within the budget, the leg's (2.1 s) is not
        {"ttft_budget_s": 1.0, "breaker_min_requests": 3, "breaker_error_rate": 0.5,
         "breaker_window_s": 100, "cooldown_s": 1000},
    ],
)  # fmt: skip
def test_live_and_replay_feed_the_policy_the_same_legs(failover):
    """The same outcomes (per small leg: two retried 503s, then an ok; per cloud leg: an ok)
    through the live router and through the replay give the same decisions and the same
    policy state: both observe one attempt per leg, its TTFT / E2E from the leg's start."""
    from harness.routing.replay import replay

    n, spacing = 8, 10.0
    policy = {"escalation": {"enabled": False}, "failover": failover,
              "budget": {"daily_api_usd": 1.0}}  # fmt: skip
    fail = (False, "server_error", None)
    client, _ = _router(policy, small=[[fail, fail, OK]] * n, large=[[OK]] * n, price=0.001)
    live = []
    for i in range(n):
        t = T0 + int(i * spacing * NS)
        rows = client.execute(_item(i), request_id=f"router-{i}", pair_id=f"p{i}",
                              t_scheduled_ns=t, t_virtual_ns=t)  # fmt: skip
        legs = [r for r in rows if r.attempt == 0 or r.escalated and r.route != rows[0].route]
        live.append(tuple(r.route_reason for r in legs[:2]))
    m = _mirrored_like(n, spacing, small=(2.1, 2.5), large=(0.1, 0.5), price=0.001)
    cfg = policy_from_config({"small": "selfhosted", "large": "cloud", **policy})
    rep = replay(m, cfg)
    replayed = [(f,) if h is None else (f, h)
                for f, h in zip(rep.first_reason, rep.hop_reason, strict=True)]  # fmt: skip
    assert live == replayed
    assert client.state() == rep.state


def test_hybrid_experiment_config_composes(tmp_path):
    from hydra import compose, initialize_config_dir

    from harness.config import project_root, register_configs, resolve_arm, validate_config

    register_configs()
    configs = project_root() / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=hybrid",
                                           f"record.reports_dir={tmp_path}"])  # fmt: skip
    validate_config(cfg)
    arms = {str(n): resolve_arm(str(n), a, configs) for n, a in cfg.arms.items()}
    check_router_arms(arms)  # as the runner resolves them
    assert arms["router"].kind == "router"
    assert arms["router"].router["small"] == "selfhosted" and arms["router"].router["large"] == (
        "cloud"
    )
    assert arms["router"].router["budget"]["daily_api_usd"] > 0
    assert arms["router"].router["failover"]["ttft_budget_s"] > 0
    assert cfg.workload.path == "workloads/eval/canary.jsonl"


def test_eval_items_carry_their_tags():
    from harness.config import WorkloadConfig, project_root
    from harness.workloads import build_workload

    wl = build_workload(WorkloadConfig(name="c", kind="eval", path="workloads/eval/canary.jsonl",
                                       shuffle=False), project_root())  # fmt: skip
    tagged = [wl.item(i) for i in range(len(wl)) if "pii" in wl.item(i).tags]
    assert len(tagged) == 40 and all("person" in it.prompt for it in tagged)


# ---------------------------------------------------------------- end to end

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *overrides: str, timeout: float = 85) -> Path:
    from tests.load.e2e import run_harness

    reports = tmp_path / "reports"
    args = ["experiment", "experiment=hybrid", f"record.reports_dir={reports}",
            "record.flush_interval_s=1", "progress_interval_s=5", *overrides]  # fmt: skip
    proc = run_harness(args, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [p.parent for p in reports.glob("*/*/manifest.json")]
    assert len(runs) == 1, runs
    return runs[0]


def _rows(run_dir: Path):
    from harness.record.reader import read_requests

    return read_requests(run_dir).to_pandas()


def _sensitive_ids() -> set[str]:
    ids = set()
    for line in (ROOT / "workloads/eval/canary.jsonl").read_text().splitlines():
        obj = json.loads(line)
        if "pii" in obj.get("tags", []):
            ids.add(obj["id"])
    return ids


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory) -> Path:
    """hybrid.yaml, 320 arrivals at 8/s, no report (the tests read the data). The cloud
    simulator draws its latency per request, not per item, so a live escalation and its
    replay draw different cloud latencies: a lighter queueing tail (``queue_sigma`` 0.3, not
    1.2) keeps the p99 comparison about the policy rather than about a few draws."""
    return _run(tmp_path_factory.mktemp("hybrid"), "load.max_requests=320", "load.rate=8",
                "load.duration_s=60", "analysis.report=false",
                "arms.cloud.sim.params.queue_sigma=0.3")  # fmt: skip


@pytest.mark.slow
def test_live_router_rows_per_leg_and_request_latency(hybrid_run):
    from harness.analysis.data import load_run
    from harness.analysis.requests import OK, logical_requests

    d = _rows(hybrid_run)
    man = json.loads((hybrid_run / "manifest.json").read_text())
    assert man["arms"]["router"]["kind"] == "router"
    r = d[d.arm == "router"]
    plain = d[d.arm == "selfhosted"]
    # mirrored: the router got the same arrivals and items as the plain arms
    assert set(r.pair_id) == set(plain.pair_id) and len(set(r.request_id)) == 320
    assert set(r.sample_id) == set(plain.sample_id)
    assert set(r.route.dropna()) <= {"selfhosted", "cloud"}
    for _, g in r.groupby("request_id"):
        g = g.sort_values("attempt")
        assert list(g.attempt) == list(range(len(g)))
        assert g.t_arrival.nunique() == 1 and g.pair_id.nunique() == 1
        first_leg = g.route.iloc[0]
        assert not g.escalated.iloc[0]
        assert list(g.escalated) == [x != first_leg for x in g.route]
        assert (
            g.target_kind == g.route.map({"selfhosted": "sim_vllm", "cloud": "sim_cloud"})
        ).all()
    esc = r[r.route_reason == "escalate:refusal"]
    assert len(esc) >= 10  # refusal_rate 0.08 of 320 items, all escalated
    assert (esc.route == "cloud").all() and esc.escalated.all()
    refused = r[(r.route == "selfhosted") & (r.output_text == REFUSAL)]
    assert set(refused.request_id) <= set(esc.request_id) | set(
        r[r.sample_id.isin(_sensitive_ids())].request_id
    )
    # the logical request ends with the final leg: its latency includes the escalation
    data = load_run(hybrid_run)
    lr = logical_requests(data)
    code = data.arms.index("router")
    sel = np.flatnonzero((lr.arm == code) & (lr.outcome == OK) & (lr.attempts == 2))
    assert sel.size == esc.request_id.nunique()
    c = data.cols
    first_e2e = c["e2e_s"][lr.first[sel]]
    final_e2e = c["e2e_s"][lr.final[sel]]
    assert np.allclose(lr.e2e_s[sel], c["t_end"][lr.final[sel]] - lr.t_arrival[sel])
    assert (lr.e2e_s[sel] >= first_e2e + final_e2e - 1e-3).all()
    from harness.cost.section import run_cost

    summary_cost = run_cost(data)[0]["arms"]["router"]
    assert summary_cost["role"] == "router" and summary_cost["routes"]["cloud"]["attempts"] == (
        (r.route == "cloud").sum()
    )
    assert summary_cost["monthly_total_usd"] > 0 and summary_cost["usd_per_call"] > 0


@pytest.mark.slow
def test_sensitive_items_stay_selfhosted_in_a_live_run(hybrid_run):
    r = _rows(hybrid_run)
    r = r[r.arm == "router"]
    sens = r[r.sample_id.isin(_sensitive_ids())]
    assert sens.request_id.nunique() >= 8
    assert (sens.route == "selfhosted").all() and (sens.target_kind == "sim_vllm").all()
    assert (sens[sens.attempt == 0].route_reason == "sensitive").all()
    assert set(r[r.route_reason == "sensitive"].sample_id) <= _sensitive_ids()


@pytest.mark.slow
def test_sensitive_items_stay_selfhosted_under_overload_and_budget_exhaustion(tmp_path):
    """The self-hosted simulator fails half its requests and serves one sequence at a time
    (TTFT budget failovers; legs failing after their retry, about 25%, open the breaker at its
    15% error rate); two routers, both with a daily API budget a few
    cloud requests spend: one keeps the rest self-hosted, the other rejects them."""
    reject = ("{small: selfhosted, large: cloud, failover: {ttft_budget_s: 0.3, "
              "breaker_min_requests: 10, breaker_window_s: 10, breaker_error_rate: 0.15, "
              "cooldown_s: 5}, budget: {daily_api_usd: 0.0001, on_exhausted: reject}}")  # fmt: skip
    run = _run(
        tmp_path,
        "load.max_requests=200", "load.rate=10", "load.duration_s=40", "analysis.report=false",
        "arms.selfhosted.sim.params.error_rate=0.5", "arms.selfhosted.sim.params.max_num_seqs=1",
        "arms.selfhosted.retry.max_attempts=2", "arms.selfhosted.retry.backoff_base_s=0.05",
        "arms.router.router.budget.daily_api_usd=0.0001",
        "arms.router.router.failover.ttft_budget_s=0.3",
        "arms.router.router.failover.breaker_min_requests=10",
        "arms.router.router.failover.breaker_window_s=10",
        "arms.router.router.failover.breaker_error_rate=0.15",
        "arms.router.router.failover.cooldown_s=5",
        "arms.reject.kind=router", f"arms.reject.router={reject}",
    )  # fmt: skip
    d = _rows(run)
    sens_ids = _sensitive_ids()
    for arm in ("router", "reject"):
        r = d[d.arm == arm]
        assert r.request_id.nunique() == 200
        sens = r[r.sample_id.isin(sens_ids)]
        assert sens.request_id.nunique() >= 5
        assert (sens.route == "selfhosted").all(), sens[["route", "route_reason"]]
        reasons = set(r.route_reason.dropna())
        # overload was seen: failovers on errors / the TTFT budget, or an open breaker
        assert reasons & {"failover:server_error", "failover:ttft_budget", "breaker_open"}
        assert (sens.status == "error").any()  # a failing sensitive request is not rescued
        cloud = r[r.route == "cloud"]
        assert 1 <= cloud.request_id.nunique() < 60
    keep = d[d.arm == "router"]
    assert {"breaker_open", "budget_exhausted"} <= set(keep.route_reason)
    assert (keep[keep.route_reason == "budget_exhausted"].route == "selfhosted").all()
    rej = d[d.arm == "reject"]
    rejected = rej[rej.error_type == "rejected"]
    assert len(rejected) >= 1
    assert rejected.route.isna().all() and (rejected.status == "error").all()
    assert set(rejected.route_reason) == {"reject:budget"}
    assert not rejected.sample_id.isin(sens_ids).any()  # sensitive: never rejected, never cloud
    # the cap held: spend reached it, and passed it only by the cloud requests in flight then
    from harness.analysis.data import load_run
    from harness.cost.section import run_cost

    cost = run_cost(load_run(run))[0]["arms"]
    for arm in ("router", "reject"):
        spent = cost[arm]["routes"]["cloud"]["recorded_usd"]
        assert 0.5e-4 <= spent <= 1.5e-4, (arm, spent)


def _live_figures(run_dir: Path, scorer: str) -> dict[str, tuple[float, tuple[float, float]]]:
    """The live router arm's figures with percentile-bootstrap CIs over its requests."""
    from harness.analysis.data import load_run
    from harness.analysis.requests import CANCELLED, logical_requests
    from harness.quality.score import ensure_scores

    data = load_run(run_dir)
    lr = logical_requests(data)
    code = data.arms.index("router")
    keep = np.flatnonzero((lr.arm == code) & (lr.outcome != CANCELLED))
    cloud_rows = data.label_rows("route", "cloud") & (data.arm == code)
    hit = np.zeros(lr.n, bool)
    hit[lr.of_row[cloud_rows]] = True
    from harness.cost.section import run_cost

    cost = run_cost(data)[0]["arms"]["router"]
    t = ensure_scores(run_dir, ["main"]).table.to_pandas()
    q = t[(t.arm == "router") & (t.scorer == scorer)].value.dropna().to_numpy(float)
    rng = np.random.default_rng(1)
    e2e = lr.e2e_s[keep]
    share = hit[keep].astype(float)

    def ci(v: np.ndarray, f) -> tuple[float, float]:
        reps = [f(v[rng.integers(0, v.size, v.size)]) for _ in range(1000)]
        lo, hi = np.quantile(reps, [0.025, 0.975])
        return float(lo), float(hi)

    p99 = lambda v: float(np.quantile(v, 0.99))  # noqa: E731
    return {
        "cloud_share": (float(share.mean()), ci(share, np.mean)),
        "api_usd_per_request": (cost["usd_per_call"], tuple(cost["usd_per_call_ci"])),
        "quality": (float(q.mean()), ci(q, np.mean)),
        "e2e_p99_s": (p99(e2e), ci(e2e, p99)),
    }


@pytest.mark.slow
def test_replay_of_the_policy_agrees_with_the_live_router(hybrid_run):
    """The what-if replay of the router's own policy over the plain arms' rows of the same run
    estimates the live router arm's cost, cloud share, quality and p99 E2E: each live value
    lies in the replay's 95% CI (p99: the two CIs overlap)."""
    from harness.analysis.data import load_run
    from harness.routing.replay import Resampler, mirrored_items, policy_figures, replay

    data = load_run(hybrid_run)
    cfg = policy_from_config(data.arm_info["router"]["policy"])
    m = mirrored_items(data, "selfhosted", "cloud")
    assert m.n == 320
    rep = replay(m, cfg, "live policy")
    fig = policy_figures(m, rep, None, Resampler(m.n, 1000, 0), 0.95, "exact_match")
    live = _live_figures(hybrid_run, "exact_match")
    for name in ("cloud_share", "api_usd_per_request", "quality"):
        value, _ = live[name]
        lo, hi = fig[name]["ci"]
        assert lo - 1e-12 <= value <= hi + 1e-12, (name, value, fig[name])
    (lv, (llo, lhi)), rp = live["e2e_p99_s"], fig["e2e_p99_s"]
    assert rp["ci"][0] is not None and rp["ci"][1] is not None
    assert llo <= rp["ci"][1] and rp["ci"][0] <= lhi, (lv, (llo, lhi), rp)
    # the same items escalate live and in the replay (refusals are fixed per item)
    r = _rows(hybrid_run)
    live_esc = set(r[(r.arm == "router") & r.route_reason.str.startswith("escalate:",
                                                                          na=False)].pair_id)  # fmt: skip
    pairs = r[(r.arm == "selfhosted")].drop_duplicates("sample_id").set_index("sample_id").pair_id
    rep_esc = {pairs[s] for s, e in zip(m.sample_id, rep.escalated, strict=True) if e}
    assert len(live_esc ^ rep_esc) <= max(2, len(rep_esc) // 10), live_esc ^ rep_esc
