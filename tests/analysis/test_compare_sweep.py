"""compare_runs (two runs, arms matched by name) and build_sweep_report (capacity at the SLO)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.analysis.sweep import load_value, sweep_curve
from harness.report import build_sweep_report, compare_runs

from .conftest import default_manifest, make_records, write_run

FAST = {"bootstrap_resamples": 100, "seed": 0, "slo": {"ttft_s": 0.3, "tpot_s": None}}


def _manifest(run_id: str, **over):
    m = default_manifest(run_id=run_id, **over)
    m["config"]["analysis"] = dict(FAST)
    return m


def test_compare_runs_default_location_and_direction(tmp_path: Path):
    a = write_run(
        tmp_path / "reports" / "exp" / "before",
        make_records("selfhosted", 120, seed=1, ttft_scale=0.3),
        manifest=_manifest("before"),
    )
    b = write_run(
        tmp_path / "reports" / "exp" / "after",
        make_records("selfhosted", 120, seed=2, ttft_scale=0.1) + make_records("extra", 10, seed=3),
        manifest=_manifest("after"),
    )
    out = compare_runs(a, b)
    assert out == (tmp_path / "reports" / "compare" / "before__vs__after").resolve()
    s = json.loads((out / "summary.json").read_text())
    assert s["kind"] == "compare" and s["arms"]["matched"] == [["selfhosted", "selfhosted"]]
    assert s["arms"]["only_in_b"] == ["extra"]
    p50 = s["comparison"]["pairs"][0]["metrics"]["ttft_s"]["p50"]
    assert p50["diff"] < 0 and p50["ci"][1] < 0 and p50["significant"]  # B faster
    memo = (out / "memo.md").read_text()
    assert "Request TTFT p50: selfhosted B after is faster than selfhosted A before" in memo
    assert (out / "plots" / "cdf_selfhosted.png").stat().st_size > 0
    assert (out / "plots" / "shift_function.svg").stat().st_size > 0
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_compare_runs_single_arms_with_different_names(tmp_path: Path):
    a = write_run(tmp_path / "a", make_records("cloud", 30), manifest={})
    b = write_run(tmp_path / "b", make_records("vllm", 30, seed=5), manifest={})
    out = compare_runs(a, b, tmp_path / "cmp")
    s = json.loads((out / "summary.json").read_text())
    assert s["arms"]["matched"] == [["cloud", "vllm"]]
    assert any("No arm names match" in n for n in s["notes"])


def test_sweep_report_capacity(tmp_path: Path):
    dirs = []
    # TTFT grows with load: 0.05 s, 0.06 s, 0.5 s, then a lucky 0.05 s at the top
    for load, scale in ((1.0, 0.05), (2.0, 0.06), (4.0, 0.5), (8.0, 0.05)):
        m = _manifest(
            f"r{load}", sweep={"id": "sw1", "index": 0, "param": "load.rate", "value": load}
        )
        recs = make_records("cloud", 60, seed=int(load), ttft_scale=scale, rate=load)
        dirs.append(write_run(tmp_path / f"r{load}", recs, manifest=m))
    s = build_sweep_report(dirs[::-1], tmp_path / "sweep")
    assert s["kind"] == "sweep" and s["sweep_id"] == "sw1" and s["param"] == "load.rate"
    pts = s["arms"]["cloud"]["points"]
    assert [p["load"] for p in pts] == [1.0, 2.0, 4.0, 8.0]
    assert [p["meets_slo"] for p in pts] == [True, True, False, True]
    assert s["arms"]["cloud"]["max_load_meeting_slo"] == 2.0  # 8.0 does not count
    assert pts[0]["ttft_s_p99"] < pts[2]["ttft_s_p99"]
    svg = (tmp_path / "sweep" / "plots" / "sweep_latency_vs_load.svg").read_text()
    assert "Achieved throughput (req/s)" in svg and "TTFT (s)" in svg
    assert "highest load meeting the SLO: 2" in (tmp_path / "sweep" / "memo.md").read_text()


def test_load_value_fallbacks():
    assert load_value({"sweep": {"value": "3.5"}}) == 3.5
    assert load_value({"offered": {"rate": 2}}) == 2.0
    assert load_value({"config": {"load": {"mode": "open", "rate": 7}}}) == 7.0
    assert load_value({"config": {"load": {"mode": "closed", "concurrency": 16, "rate": 2}}}) == 16
    assert load_value({}) is None


def test_sweep_curve_unknown_loads_and_empty():
    pts = [{"a": {"load": None, "goodput_share": 1.0}}, {"a": {"load": 1.0, "goodput_share": None}}]
    c = sweep_curve(pts)
    assert c["a"]["max_load_meeting_slo"] is None
    assert [p["load"] for p in c["a"]["points"]] == [1.0, None]
    assert sweep_curve([]) == {}


@pytest.mark.parametrize("attainment,expected", [(0.5, 4.0), (1.0, None)])
def test_sweep_attainment(attainment, expected):
    pts = [{"a": {"load": x, "goodput_share": g}} for x, g in ((1.0, 0.99), (2.0, 0.9), (4.0, 0.6))]
    assert sweep_curve(pts, attainment)["a"]["max_load_meeting_slo"] == expected


def test_sweep_repeated_loads_pass_only_when_every_run_meets_the_slo():
    pts = [
        {"a": {"load": x, "goodput_share": g}}
        for x, g in ((1.0, 0.995), (2.0, 0.995), (2.0, 0.5), (4.0, 1.0))
    ]
    c = sweep_curve(pts)["a"]
    assert c["max_load_meeting_slo"] == 1.0  # one of the two runs at 2.0 fails
    assert c["loads"] == [
        {"load": 1.0, "runs": 1, "runs_meeting_slo": 1, "meets_slo": True},
        {"load": 2.0, "runs": 2, "runs_meeting_slo": 1, "meets_slo": False},
        {"load": 4.0, "runs": 1, "runs_meeting_slo": 1, "meets_slo": True},
    ]
    assert [p["meets_slo"] for p in c["points"]] == [True, True, False, True]
    both = [{"a": {"load": 2.0, "goodput_share": 0.999}}] + pts[:2]
    assert sweep_curve(both)["a"]["max_load_meeting_slo"] == 2.0


def test_sweep_report_attainment_and_differing_slos(tmp_path: Path):
    dirs = []
    for load, ttft_bound in ((1.0, 0.3), (2.0, 0.25)):
        m = _manifest(f"r{load}", sweep={"id": "sw2", "param": "load.rate", "value": load})
        m["config"]["analysis"]["slo"] = {"ttft_s": ttft_bound, "tpot_s": None}
        recs = make_records("cloud", 40, seed=int(load), ttft_scale=0.05, rate=load)
        dirs.append(write_run(tmp_path / f"r{load}", recs, manifest=m))
    s = build_sweep_report(dirs, tmp_path / "sweep", attainment=0.5)
    assert s["attainment"] == 0.5 and s["slos_differ"] is True and s["slo"] is None
    assert [r["slo"]["ttft_s"] for r in s["runs"]] == [0.3, 0.25]
    memo = (tmp_path / "sweep" / "memo.md").read_text()
    assert "different SLOs" in memo and "r1.0 (load 1): TTFT" in memo and "250 ms" in memo
    assert ">= 50% of requests" in memo
    html = (tmp_path / "sweep" / "report.html").read_text()
    assert "r2.0 (load 2): TTFT" in html
