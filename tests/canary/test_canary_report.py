"""The canary report: summary keys on a synthetic multi-day run, the memo checklist (declared
factors shown, hostile text escaped), `harness report RUN_DIR --day N` and its errors.

Runs are written with the real writer (``RequestWriter``, day-partitioned when it supports a
day clock) or, for a flat run, one Parquet file. Stages built elsewhere (``daily``, ``drift``,
``sequential``) are used when installed; a missing one is replaced by a small fake, so these
tests check the section's wiring either way.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from harness.analysis.data import load_run
from harness.canary.clock import ExperimentClock
from harness.canary.section import HOSTED, HYBRID, SELFHOST, recommend
from harness.cli import main
from harness.record.reader import read_requests
from harness.record.schema import RequestRecord, records_to_table
from harness.record.writer import RequestWriter
from harness.report import build_report

T0 = 1_780_000_000_000_000_000
NS = 1_000_000_000
DAY_NS = 86_400 * NS
SCALE = 3600.0  # a day in 24 wall seconds
PER_DAY = 30  # logical requests per arm per day
HOSTILE = "<script>alert(1)</script> *x* | [l](u)"
FINGERPRINT_AFTER = "fp_<script>b</script>"
CLOCK = ExperimentClock(origin_ns=T0, time_scale=SCALE)


# ---------------------------------------------------------------- the run


def _records(days: int, reference: str | None = None) -> list[RequestRecord]:
    """PER_DAY mirrored requests per arm per day; the cloud arm has a rate-limited first
    attempt on every 10th request (retried), and its fingerprint changes on day 2. With
    ``reference`` every row carries that reference answer, and only day 1's answers match it."""
    rng = np.random.default_rng(3)
    out = []
    for d in range(days):
        for i in range(PER_DAY):
            tv = T0 + d * DAY_NS + i * (DAY_NS // PER_DAY)
            wall = CLOCK.wall_ns(tv)
            for arm, kind, base in (("cloud", "sim_cloud", 0.08), ("selfhosted", "sim_vllm", 0.05)):
                rid = f"{arm}-{d}-{i}"
                common = dict(run_id="run-c", experiment="month", arm=arm, target_kind=kind,
                              model="m", request_id=rid, pair_id=f"p{d:03d}{i:04d}",
                              sample_id=f"s{i}", slice="eval:arith", phase="main",
                              reference_answer=reference)  # fmt: skip
                text = reference if reference is not None and d == 1 else f"answer {HOSTILE}"
                attempt = 0
                if arm == "cloud" and i % 10 == 9:
                    out.append(RequestRecord(
                        **common, attempt=0, status="error", t_scheduled=wall, t_sent=wall,
                        t_virtual=tv, t_arrival=wall, t_end=wall + NS // 100, http_status=429,
                        error_type="rate_limited", error_message=HOSTILE, will_retry=True,
                        queue_delay_s=0.0))  # fmt: skip
                    attempt = 1
                ttft = base * float(np.exp(rng.normal(0, 0.2)))
                sent = wall + attempt * NS // 50
                first, end = sent + int(ttft * NS), sent + int((ttft + 0.03) * NS)
                fp = None
                if arm == "cloud":
                    fp = FINGERPRINT_AFTER if d >= 2 else "fp_a"
                out.append(RequestRecord(
                    **common, attempt=attempt, status="ok", t_scheduled=wall, t_sent=sent,
                    t_virtual=tv, t_arrival=wall, t_first_token=first, t_end=end,
                    queue_delay_s=(sent - wall) / NS, ttft_s=(first - sent) / NS,
                    e2e_s=(end - sent) / NS, ttft_sched_s=(first - wall) / NS,
                    e2e_sched_s=(end - wall) / NS, tpot_s=0.01, itl_s=[0.01, 0.01, 0.01],
                    prompt_tokens=50, completion_tokens=4, tokens_source="usage",
                    finish_reason="stop", output_text=text,
                    response_model="m-2026" if fp else "m", system_fingerprint=fp))  # fmt: skip
    return out


def _manifest(*, enabled: bool = True, status: str = "completed") -> dict[str, Any]:
    return {
        "run_id": "run-c", "experiment": "month", "status": status,
        "started_at": "2026-05-28T00:00:00Z", "t0_ns": T0,
        "clock": CLOCK.to_dict(),
        "segments": [{"index": 0, "t0_ns": T0}, {"index": 1, "t0_ns": T0 + 50 * NS}],
        "downtime": [{"from": T0 + 40 * NS, "to": T0 + 44 * NS, "wall_s": 4.0,
                      "virtual_s": 4.0 * SCALE, "from_day": 1, "to_day": 1}],
        "config": {
            "load": {"mode": "open", "rate": 1.0, "duration_s": 72, "time_scale": SCALE,
                     "pairing": "mirrored"},
            "analysis": {"include_phases": ["main"], "confidence": 0.95,
                         "bootstrap_resamples": 100, "seed": 0,
                         "slo": {"ttft_s": 0.5, "tpot_s": 0.05, "e2e_s": None}},
            "judge": {"baseline": "cloud", "candidate": "selfhosted", "min_n": 10,
                      "resamples": 100},
            "canary": {"enabled": enabled, "day_s": 86400.0,
                       "factors": {"data_sensitivity": HOSTILE, "compliance": "GDPR",
                                   "reproducible_weights": None}},
        },
        "arms": {"cloud": {"kind": "sim_cloud", "model": "m", "base_url": "http://x"},
                 "selfhosted": {"kind": "sim_vllm", "model": "m", "base_url": "http://y"}},
        "offered": {"rate": 1.0, "mode": "open"},
    }  # fmt: skip


def write_month(run_dir: Path, days: int = 3, reference: str | None = None,
                **manifest: Any) -> Path:  # fmt: skip
    """A multi-day run written by the real writer (day partitions when it has a day clock)."""
    kwargs = {}
    if "day_clock" in inspect.signature(RequestWriter.__init__).parameters:
        kwargs["day_clock"] = CLOCK
    w = RequestWriter(run_dir, flush_rows=10_000, **kwargs)
    w.add_records(_records(days, reference))
    w.close()
    (run_dir / "manifest.json").write_text(json.dumps(_manifest(**manifest)), encoding="utf-8")
    return run_dir


def rows_of_day(run_dir: Path, day: int) -> int:
    """Rows on experiment-clock day ``day``, counted straight from the Parquet files."""
    t = read_requests(run_dir, ["t_virtual"])
    ns = t.column("t_virtual").cast(pa.int64()).to_numpy()
    return int(np.sum((ns - T0) // DAY_NS == day))


# ---------------------------------------------------------------- stages (real or fake)


def _fake_daily(data, clock, scores=None):
    t = read_requests(data.run_dir, ["arm", "t_virtual", "system_fingerprint"])
    tday = clock.days_of(t.column("t_virtual").cast(pa.int64()).to_numpy())
    out = []
    for d in sorted({int(x) for x in data.day if x >= 0}):
        arms = {}
        for a in data.arms:
            rows = (data.day == d) & data.arm_mask(a)
            ok = rows & data.ok
            ttft = data.cols["ttft_s"][ok]
            errs = [data.error_types[c] for c in data.error[rows & ~data.ok]]
            fps = pc.filter(t.column("system_fingerprint"),
                            pa.array((tday == d) & (pc.equal(t.column("arm"), a).to_numpy(
                                zero_copy_only=False)))).to_pylist()  # fmt: skip
            arms[a] = {"requests": int(ok.sum()), "attempts": int(rows.sum()),
                       "ttft_s": {"p50": float(np.median(ttft)), "p99": float(np.quantile(ttft, .99))},
                       "e2e_s": {"p50": 0.1, "p99": 0.2}, "errors": {}, "attempt_errors": len(errs),
                       "tickets": {}, "retry_rate": len(errs) / max(1, int(ok.sum())),
                       "quality": {}, "quality_by_category": {}, "cost_usd": 1.0 + d,
                       "projected_monthly_usd": 30.0 * (1 + d),
                       "system_fingerprints": {f: fps.count(f) for f in set(fps) if f}}  # fmt: skip
        out.append({"day": d, "start": clock.day_start_ns(d), "end": clock.day_start_ns(d + 1),
                    "arms": arms})  # fmt: skip
    return out


def _fake_drift(entries, *, api_arm, control_arm, cfg):
    changes, last = [], None
    for e in entries:
        fps = e["arms"][api_arm].get("system_fingerprints") or {}
        fp = max(fps, key=fps.get) if fps else None
        if last is not None and fp != last:
            changes.append({"arm": api_arm, "day": e["day"], "from": last, "to": fp})
        last = fp
    return {"false_alarm_days": cfg.false_alarm_days, "k": 0.5, "h": 5.0, "series": [],
            "attribution": [], "fingerprint_changes": changes}  # fmt: skip


def _fake_verdicts(data, clock, *, judge_cfg=None, **_):
    days = sorted({int(x) for x in data.day if x >= 0})
    return [{"day": d, "decision": "INCONCLUSIVE", "score": None, "reasons": [], "offenders": [],
             "naive_decision": "GO", "naive_offenders": [], "n": 10} for d in days]  # fmt: skip


_FAKES = {"harness.canary.daily": ("daily_entries", _fake_daily),
          "harness.canary.drift": ("drift_section", _fake_drift),
          "harness.canary.sequential": ("daily_verdicts", _fake_verdicts)}  # fmt: skip


@pytest.fixture(autouse=True)
def stages(monkeypatch):
    """The real daily/drift/sequential stages when installed, else fakes."""
    for module, (name, fn) in _FAKES.items():
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            fake = types.ModuleType(module)
            setattr(fake, name, fn)
            monkeypatch.setitem(sys.modules, module, fake)


# ---------------------------------------------------------------- tests


def test_multi_day_run_daily_entries_checklist_and_escaping(tmp_path):
    run = write_month(tmp_path / "run", days=3)
    (run / "whatif").mkdir()
    (run / "whatif" / "summary.json").write_text(json.dumps({"recommendation": {
        "policy": "cascade<b>", "monthly_total_usd": 1234.0, "evaluation_verdict": "GO"}}))  # fmt: skip
    s = build_report(run)
    assert [e["day"] for e in s["daily"]] == [0, 1, 2]  # one entry per experiment-clock day
    for e in s["daily"]:
        assert set(e["arms"]) == {"cloud", "selfhosted"}
        assert e["arms"]["selfhosted"]["requests"] == PER_DAY
    c = s["canary"]
    assert (c["days"], c["first_day"], c["last_day"]) == (3, 0, 2)
    assert (c["api_arm"], c["control_arm"]) == ("cloud", "selfhosted")
    assert c["demonstration"] and c["recommendation"]["choice"] in (HOSTED, SELFHOST, HYBRID)
    assert s["downtime"]["total_wall_s"] == 4.0 and len(s["downtime"]["entries"]) == 1
    assert s["downtime"]["entries"][0]["x1_day"] > s["downtime"]["entries"][0]["x0_day"]
    assert [v["day"] for v in s["daily_verdict"]] == [0, 1, 2]
    assert any(f["to"] == FINGERPRINT_AFTER and f["day"] == 2
               for f in s["drift"]["fingerprint_changes"])  # fmt: skip
    for name in ("canary_latency", "canary_tickets", "canary_cost", "canary_verdict"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 1000

    memo = (run / "memo.md").read_text(encoding="utf-8")
    assert "<script>" not in memo and "&lt;script&gt;alert(1)&lt;/script&gt;" in memo
    assert "\\*x\\* \\| \\[l\\](u)" in memo  # markdown specials in the factor are inert
    canary_part = memo[memo.index("## Canary") :]
    assert "### Decision" in canary_part and "Recommendation:" in canary_part
    assert "Data sensitivity: &lt;script&gt;" in canary_part
    assert "Compliance regime: GDPR" in canary_part
    for label in ("Need for reproducible weights", "Ops/SRE capacity",
                  "Licence of the self-hosted model"):  # fmt: skip
        assert f"{label}: not declared" in canary_part
    assert "fingerprint changed on day 2" in canary_part and "fp\\_" not in canary_part
    assert "fp_&lt;script&gt;b&lt;/script&gt;" in canary_part
    assert "demonstration on simulators" in canary_part
    assert "make experiment config=month_canary_live" in canary_part
    assert "resume=latest" in canary_part
    assert "recommends policy cascade&lt;b&gt; at $1,234/month" in canary_part
    # the memo ends with the checklist (its last item: the declared factors)
    assert memo.rstrip().splitlines()[-1].endswith("Licence of the self-hosted model: not declared")

    html = (run / "report.html").read_text(encoding="utf-8")
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'id="canary"' in html and "not declared" in html


def test_day_report_has_only_that_days_rows(tmp_path):
    run = write_month(tmp_path / "run", days=3, status="running")
    want = rows_of_day(run, 1)
    assert want == 2 * PER_DAY + PER_DAY // 10  # both arms + the cloud arm's retried attempts
    data = load_run(run, days=[1])
    assert data.n_rows == want and set(data.day.tolist()) == {1} and data.days == (1,)
    assert load_run(run).n_rows == 3 * want

    s = build_report(run, day=1)
    out = run / "days" / "001"
    for f in ("summary.json", "report.html", "memo.md"):
        assert (out / f).is_file()
    assert (out / "plots").is_dir() and not (run / "summary.json").exists()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["day"] == 1 and on_disk["run"]["rows"] == want
    assert [e["day"] for e in s["daily"]] == [1]
    assert s["canary"]["view_day"] == 1 and s["drift"] is None
    assert s["errors"]["cloud"]["per_attempt"]["attempts"] == PER_DAY + PER_DAY // 10
    assert "day 1" in (out / "memo.md").read_text().splitlines()[0]


def test_day_report_keeps_that_days_fingerprints_and_quality(tmp_path):
    """A partitioned 3-day run with scores: day 1's report has day 1's fingerprints, and its
    quality (daily, quality section, judge) is day 1's scored rows only, not the month's."""
    run = write_month(tmp_path / "run", days=3, reference="42")
    assert (run / "requests" / "day=001").is_dir()  # day-partitioned
    whole = build_report(run)
    assert whole["quality"]["cloud"]["exact_match"]["occurrences"] == 3 * PER_DAY
    assert whole["daily"][0]["arms"]["cloud"]["cumulative_scope"] == "run"
    for day, fp in ((1, "fp_a"), (2, FINGERPRINT_AFTER)):
        s = build_report(run, day=day)
        cloud = s["daily"][0]["arms"]["cloud"]
        assert cloud["system_fingerprints"] == {fp: PER_DAY}
        assert cloud["quality_n"]["exact_match"] == PER_DAY
        assert cloud["quality"]["exact_match"] == (1.0 if day == 1 else 0.0)
        q = s["quality"]
        assert q["info"]["arms"]["cloud"] == {"requests": PER_DAY, "answered": PER_DAY,
                                              "unanswered": 0, "cancelled": 0}  # fmt: skip
        assert q["cloud"]["exact_match"]["occurrences"] == PER_DAY
        assert q["cloud"]["exact_match"]["rate"] == (1.0 if day == 1 else 0.0)
        judged = s["verdict"]["metrics"]["quality.exact_match"]
        assert judged["n"] == PER_DAY
        assert judged["baseline_value"] == q["cloud"]["exact_match"]["rate"]
        assert cloud["cumulative_scope"] == "day"
        memo = (run / "days" / f"{day:03d}" / "memo.md").read_text(encoding="utf-8")
        assert "its cost figures, cumulative and running projection, are this day's own" in memo


def test_day_report_while_the_run_is_writing(tmp_path):
    """Reads the parts there are: a hidden temporary part is ignored, a part that lands
    later is picked up by the next report."""
    run = write_month(tmp_path / "run", days=2, status="running")
    (run / "requests" / ".w9-part-000001.parquet.tmp").write_bytes(b"half-written")
    first = build_report(run, day=1)["run"]["rows"]
    late = [r for r in _records(3) if (r.t_virtual - T0) // DAY_NS == 1][:5]
    for r in late:
        r.request_id += "-late"
    pq.write_table(records_to_table(late), run / "requests" / "w9-part-000002.parquet")
    assert build_report(run, day=1)["run"]["rows"] == first + 5


def test_flat_run_is_filtered_on_t_virtual(tmp_path):
    run = tmp_path / "flat"
    (run / "requests").mkdir(parents=True)
    pq.write_table(records_to_table(_records(3)), run / "requests" / "one.parquet")
    (run / "manifest.json").write_text(json.dumps(_manifest()), encoding="utf-8")
    for d in range(3):
        assert load_run(run, days=[d]).n_rows == rows_of_day(run, d)
    assert load_run(run, days=[0, 2]).n_rows == rows_of_day(run, 0) + rows_of_day(run, 2)
    assert load_run(run, days=[5]).n_rows == 0


@pytest.mark.parametrize("arg, expect", [("7", "day 7 has no request rows (rows cover days 0-1)"),
                                          ("-1", "expected an experiment-clock day"),
                                          ("x", "expected an experiment-clock day")])  # fmt: skip
def test_bad_day_exits_2_with_one_line(tmp_path, capsys, arg, expect):
    run = write_month(tmp_path / "run", days=2)
    assert main(["report", str(run), "--day", arg]) == 2
    err = capsys.readouterr().err
    assert expect in err and len(err.strip().splitlines()) == 1
    assert not (run / "days").exists() or not any((run / "days").iterdir())


def test_cli_day_writes_the_days_report(tmp_path, capsys):
    run = write_month(tmp_path / "run", days=2)
    assert main(["report", str(run), "--day", "0"]) == 0
    assert str(run / "days" / "000" / "report.html") in capsys.readouterr().out


def test_one_day_benchmark_has_no_canary_keys(tmp_path):
    run = write_month(tmp_path / "run", days=1, enabled=False)
    s = build_report(run)
    assert s["canary"] is None
    assert not {"daily", "drift", "daily_verdict", "downtime"} & set(s)
    assert "## Canary" not in (run / "memo.md").read_text()


def _summary(decision: str, api: float | None, own: float | None, drift: bool) -> dict:
    attr = [{"metric": "quality", "kind": "provider drift"}] if drift else []
    return {"verdict": {"decision": decision},
            "cost": {"arms": {"a": {"monthly_total_usd": api}, "b": {"monthly_total_usd": own}}},
            "drift": {"attribution": attr, "series": []}}  # fmt: skip


@pytest.mark.parametrize("decision, api, own, drift, choice", [
    ("NO_GO", 900.0, 100.0, True, HOSTED),
    ("GO", 900.0, 100.0, False, SELFHOST),
    ("GO", 100.0, 900.0, False, HOSTED),
    ("GO", 100.0, 900.0, True, HYBRID),
    ("INCONCLUSIVE", 100.0, 900.0, False, HOSTED),
    ("INCONCLUSIVE", 900.0, 100.0, False, HYBRID),
    ("INCONCLUSIVE", 100.0, 900.0, True, HOSTED),  # drifted, but the API is far cheaper
    ("GO", None, 900.0, False, HYBRID),
])  # fmt: skip
def test_recommendation_rules(decision, api, own, drift, choice):
    rec = recommend(_summary(decision, api, own, drift), {"api_arm": "a", "control_arm": "b"})
    assert rec["choice"] == choice and rec["decision"] == decision
    assert any(decision in w for w in rec["why"])


def _entry(d: int) -> dict[str, Any]:
    def arm(q: float, tickets: dict[str, int]) -> dict[str, Any]:
        return {"requests": 100, "ttft_s": {"p50": 0.05, "p99": 0.2 + d / 100},
                "e2e_s": {"p50": 0.5, "p99": 1.5}, "tickets": tickets, "retry_rate": d / 100,
                "cost_usd": 2.0, "projected_monthly_usd": 60.0,
                "quality_by_category": {"exact": {"arith": {"mean": q, "n": 50},
                                                  "<b>cat</b>": {"mean": 0.7, "n": 50}}}}  # fmt: skip

    drop = 0.6 if d >= 4 else 0.9
    return {"day": d, "arms": {"cloud": arm(drop, {"rate_limited": d, "timeout": 1}),
                               "selfhosted": arm(0.85, {})}}  # fmt: skip


def test_plots_mark_change_points_fingerprints_and_downtime(tmp_path):
    from harness.canary.report import plot_quality, plot_tickets
    from harness.report.plots import PlotWriter

    s = {"daily": [_entry(d) for d in range(8)],
         "canary": {"api_arm": "cloud", "control_arm": "selfhosted", "day_s": 86400.0},
         "drift": {"series": [{"arm": "cloud", "metric": "quality", "alarm": True, "alarm_day": 5,
                               "change_day": 4, "size": -0.3, "ci": [-0.4, -0.2]}],
                   "fingerprint_changes": [{"arm": "cloud", "day": 4, "from": "fp_a",
                                            "to": "fp_<b>"}]},
         "downtime": {"entries": [{"x0_day": 2.2, "x1_day": 2.6}]}}  # fmt: skip
    w = PlotWriter(tmp_path)
    q = plot_quality(s, w)
    svg = q.svg.read_text()
    assert "change day 4" in svg and "fingerprint fp_a -&gt; fp_&lt;b&gt;" in svg
    assert "harness downtime" in svg and "&lt;b&gt;cat&lt;/b&gt;" in svg
    t = plot_tickets(s, w).svg.read_text()
    assert "rate_limited" in t and "timeout" in t and "cloud: tickets per day (count)" in t


class _Keep:
    """A PlotWriter stand-in that keeps the figure."""

    def save(self, fig, name, title):
        self.fig = fig
        return name


def test_cost_plot_is_the_cumsum_of_the_daily_cost(tmp_path):
    """The self-hosted cost_usd already includes its engineering time: the plot draws
    cumsum(cost_usd), with the engineering share as a part of it, never on top."""
    from harness.canary.report import cost_series, plot_cost

    daily = []
    for d in range(4):
        e = _entry(d)
        e["arms"]["selfhosted"]["cost_usd"] = 350.0
        e["arms"]["selfhosted"]["cost_detail"] = {"engineering_usd": 200.0, "compute_usd": 143.5}
        e["arms"]["cloud"]["cost_usd"] = 1.0 + d
        daily.append(e)
    s = {"daily": daily, "canary": {"api_arm": "cloud", "control_arm": "selfhosted",
                                    "day_s": 86400.0},
         "cost": {"inputs": {"selfhost": {"engineering_hours": 40, "hourly_rate_usd": 150}}}}  # fmt: skip
    cs = cost_series(daily, "selfhosted")
    assert cs["cumulative"].tolist() == [350.0, 700.0, 1050.0, 1400.0]
    assert cs["engineering"].tolist() == [200.0, 400.0, 600.0, 800.0]
    w = _Keep()
    assert plot_cost(s, w) == "canary_cost"
    lines = {ln.get_label(): ln.get_ydata() for ln in w.fig.axes[0].get_lines()}
    assert list(lines["selfhosted"]) == [350.0, 700.0, 1050.0, 1400.0]
    assert list(lines["cloud"]) == [1.0, 3.0, 6.0, 10.0]
    assert list(lines["selfhosted: of which engineering time"]) == [200.0, 400.0, 600.0, 800.0]
    assert max(max(v) for v in lines.values()) == 1400.0  # nothing added on top


def test_a_censored_p99_day_counts_above_the_slo():
    from harness.canary.report import _slo_lines, daily_slo_days

    daily = [_entry(d) for d in range(3)]  # p99 0.20, 0.21, 0.22: within a 0.5 s SLO
    daily[1]["arms"]["cloud"]["ttft_s"] = {"p50": 0.05, "p99": None, "n": 100, "censored": 5}
    for e in daily:
        for a in e["arms"].values():
            a["ttft_s"].setdefault("n", 100)
    del daily[2]["arms"]["selfhosted"]  # the arm had no requests that day
    assert daily_slo_days(daily, "cloud", 0.5) == ([1], 3, [1])
    assert daily_slo_days(daily, "selfhosted", 0.5) == ([], 2, [])
    s = {"daily": daily, "latency": {"cloud": {}, "selfhosted": {}}}
    lines = _slo_lines(s, {"slo": {"ttft_s": 0.5}})
    assert "daily TTFT p99 above the SLO on 1 of 3 day(s) (1 of them with p99 unknown" in lines[0]
    assert "day(s) 1)" in lines[0]
    assert "daily TTFT p99 above the SLO on 0 of 2 day(s)" in lines[1]
