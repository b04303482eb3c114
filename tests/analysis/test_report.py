"""build_report end to end on synthetic runs: values recomputed independently with pandas."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.config import AnalysisConfig, SLOConfig
from harness.report import build_report

from .conftest import default_manifest, make_records, write_run


def _frame(run_dir: Path) -> pd.DataFrame:
    """Every row of the run, read with pandas straight from the part files."""
    files = sorted((run_dir / "requests").rglob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def test_summary_matches_pandas_recomputation(built_report):
    run_dir, s = built_report
    df = _frame(run_dir)
    main = df[df["phase"] == "main"]
    assert s["schema_version"] == 1 and s["run_id"] == "run-test" and s["experiment"] == "unit"
    assert list(s["arms"]) == ["cloud", "selfhosted"]
    assert s["run"]["rows"] == len(main)
    t0 = min(main["t_scheduled"].min(), main["t_sent"].min())
    t1 = max(main["t_end"].max(), main["t_sent"].max())
    duration = (t1 - t0).total_seconds()
    assert s["run"]["analysed_duration_s"] == pytest.approx(duration)
    slo = SLOConfig(ttft_s=0.3, tpot_s=0.05, e2e_s=None)
    for arm, g in main.groupby("arm"):
        ok = g[g["status"] == "ok"]
        lat = s["latency"][arm]
        for col in ("ttft_s", "tpot_s", "e2e_s", "queue_delay_s", "ttft_sched_s", "e2e_sched_s"):
            v = ok[col].dropna().to_numpy()
            assert lat[col]["n"] == len(v)
            assert lat[col]["mean"] == pytest.approx(v.mean())
            for key, q in (
                ("p50", 0.5),
                ("p90", 0.9),
                ("p95", 0.95),
                ("p99", 0.99),
                ("p99_9", 0.999),
            ):
                assert lat[col][key] == pytest.approx(np.quantile(v, q)), (arm, col, key)
            lo, hi = lat[col]["ci"]["p50"]
            assert lo <= lat[col]["p50"] <= hi
        gaps = np.concatenate([np.asarray(x) for x in ok["itl_s"]])
        assert lat["itl_s"]["n"] == gaps.size and lat["itl_s"]["quantile_n"] == gaps.size
        assert lat["itl_s"]["p50"] == pytest.approx(np.median(gaps))
        assert lat["itl_s"]["mean"] == pytest.approx(gaps.mean())
        # failures
        err = g[g["status"] == "error"]
        e = s["errors"][arm]
        assert e["requests"] == len(g) and e["errors"] == len(err)
        assert e["per_1000"] == pytest.approx(1000 * len(err) / len(g))
        for t, c in err["error_type"].value_counts().items():
            assert e["by_type"][t]["count"] == c
        assert e["retry_rate"] == pytest.approx(
            (g["attempt"] > 0).sum() / (g["attempt"] == 0).sum()
        )
        assert sum(p["errors"] for p in e["over_time"]["points"]) == len(err)
        # goodput: ok and TTFT <= 0.3 and (TPOT <= 0.05 or no TPOT)
        meets = (g["status"] == "ok") & (g["ttft_s"] <= slo.ttft_s)
        meets &= (g["tpot_s"] <= slo.tpot_s) | g["tpot_s"].isna()
        gp = s["goodput"][arm]
        assert gp["meeting_slo"] == int(meets.sum())
        assert gp["share"] == pytest.approx(meets.mean())
        assert gp["rate_rps"] == pytest.approx(meets.sum() / duration)
        # throughput
        th = s["throughput"][arm]
        assert th["requests_ok"] == len(ok)
        assert th["request_rps"] == pytest.approx(len(ok) / duration)
        assert th["output_tps"] == pytest.approx(ok["completion_tokens"].sum() / duration)
        first = g[g["attempt"] == 0]["t_scheduled"]
        span = (first.max() - first.min()).total_seconds()
        assert th["achieved_arrival_rps"] == pytest.approx((len(first) - 1) / span)
        assert th["offered_rps"] == 5.0
    # arm vs arm: selfhosted minus cloud, medians of TTFT
    pair = s["comparison"]["pairs"][0]
    assert (pair["baseline"], pair["other"]) == ("cloud", "selfhosted")
    ok = main[main["status"] == "ok"]
    med = ok.groupby("arm")["ttft_s"].median()
    d = pair["metrics"]["ttft_s"]["p50"]
    assert d["diff"] == pytest.approx(med["selfhosted"] - med["cloud"])
    assert d["significant"] and d["ci"][0] <= d["diff"] <= d["ci"][1] < 0
    assert [p["q"] for p in pair["shift"]["ttft_s"]] == pytest.approx(
        [0.1 * i for i in range(1, 10)]
    )
    # per slice
    for (arm, sl), g in ok.groupby(["arm", "slice"]):
        assert s["latency_by_slice"][arm][sl]["ttft_s"]["p99"] == pytest.approx(
            np.quantile(g["ttft_s"], 0.99)
        )


def test_summary_json_is_strict_json_and_matches_return(built_report):
    run_dir, s = built_report

    def no_nan(x):
        raise ValueError(f"non-finite constant {x} in summary.json")

    on_disk = json.loads((run_dir / "summary.json").read_text(), parse_constant=no_nan)
    assert on_disk["latency"]["cloud"]["ttft_s"]["p50"] == s["latency"]["cloud"]["ttft_s"]["p50"]
    for key in ("latency", "goodput", "errors", "throughput", "server", "comparison", "run"):
        assert key in on_disk


def test_plots_exist_with_labelled_axes(built_report):
    run_dir, s = built_report
    names = {"latency_cdf", "latency_over_time", "shift_function", "throughput", "errors"}
    for name in names:
        png = run_dir / "plots" / f"{name}.png"
        svg = run_dir / "plots" / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert svg.stat().st_size > 2000
        assert f"plots/{name}.png" in s["plots"]
    cdf = (run_dir / "plots" / "latency_cdf.svg").read_text()
    for label in ("TTFT (s)", "TPOT (s)", "ITL (s)", "E2E latency (s)", "Cumulative share"):
        assert label in cdf
    assert "Requests per second (req/s)" in (run_dir / "plots" / "throughput.svg").read_text()
    assert "Errors per 1,000 requests" in (run_dir / "plots" / "errors.svg").read_text()


def test_html_is_self_contained_and_escapes_untrusted_text(built_report):
    run_dir, _ = built_report
    html = (run_dir / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("data:image/png;base64,") >= 5
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from outside
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#x27;out&#x27;)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(&#x27;err&#x27;)&lt;/script&gt;" in html
    assert html.count("<script>") == 1  # only the table-sorting snippet


def test_memo_escapes_and_states_the_headline(built_report):
    run_dir, _ = built_report
    memo = (run_dir / "memo.md").read_text()
    assert "<script>" not in memo and "&lt;script&gt;" in memo
    assert "\\| upstream 503" in memo  # a pipe in a message cannot break a table
    assert "TTFT p50: selfhosted is faster than cloud by" in memo
    assert "95% CI of the difference" in memo
    assert "## Goodput" in memo and "## Failures" in memo and "per 1,000" in memo


def test_arm_with_zero_successes(tmp_path: Path):
    recs = make_records("cloud", 40, seed=1)
    recs += make_records("selfhosted", 30, error_every=1, error_type="connection")
    run = write_run(tmp_path / "r", recs)
    s = build_report(run, analysis=AnalysisConfig(bootstrap_resamples=100))
    assert s["latency"]["selfhosted"]["ttft_s"]["n"] == 0
    assert s["latency"]["selfhosted"]["ttft_s"]["p50"] is None
    assert s["errors"]["selfhosted"]["per_1000"] == 1000.0
    assert s["goodput"]["selfhosted"]["share"] == 0.0
    memo = (run / "memo.md").read_text()
    assert "selfhosted has no successful requests" in memo
    assert "Arm 'selfhosted' had no successful requests" in memo
    assert (run / "report.html").stat().st_size > 0


def test_empty_run(tmp_path: Path):
    run = tmp_path / "r"
    (run / "requests").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps(default_manifest(status="failed")))
    s = build_report(run)
    assert s["run"]["rows"] == 0
    assert s["latency"]["cloud"]["ttft_s"]["n"] == 0
    assert any("No requests were recorded" in c for c in s["caveats"])
    assert (run / "memo.md").exists() and (run / "report.html").exists()


def test_single_request_without_manifest(tmp_path: Path):
    recs = make_records("solo", 1)
    run = write_run(tmp_path / "exp" / "r1", recs, manifest={})
    s = build_report(run)
    assert s["run_id"] == "r1" and s["experiment"] == "exp"
    st = s["latency"]["solo"]["ttft_s"]
    assert st["n"] == 1 and st["p50"] == st["p99"] == pytest.approx(recs[0].ttft_s)
    assert st["ci"]["p50"] == [None, None]
    assert s["comparison"]["pairs"] == []
    assert any("manifest.json is missing" in c for c in s["caveats"])
    assert "only one arm" in (run / "memo.md").read_text().lower()


def test_server_metrics_section(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.record.schema import METRICS_SCHEMA

    from .conftest import T0

    run = write_run(tmp_path / "r", make_records("selfhosted", 20))
    folder = run / "metrics"
    folder.mkdir()
    n = 10
    rows = {
        "run_id": ["r"] * 3 * n,
        "arm": ["selfhosted"] * 3 * n,
        "t": [T0 + i * 10**9 for i in range(n)] * 3,
        "name": ["vllm:num_requests_waiting"] * n
        + ["vllm:num_requests_running"] * n
        + ["vllm:kv_cache_usage_perc"] * n,
        "labels": ["model_name=m"] * 3 * n,
        "value": [float(i) for i in range(n)] + [2.0] * n + [0.5] * n,
    }
    pq.write_table(pa.Table.from_pydict(rows, schema=METRICS_SCHEMA), folder / "part-1.parquet")
    s = build_report(run, analysis=AnalysisConfig(bootstrap_resamples=50))
    w = s["server"]["selfhosted"]["vllm:num_requests_waiting"]
    assert w["samples"] == n and w["max"] == 9.0 and w["mean"] == pytest.approx(4.5)
    assert s["server"]["selfhosted"]["vllm:kv_cache_usage_perc"]["p50"] == 0.5
    assert "KV-cache use (%)" in (run / "plots" / "server.svg").read_text()


def test_nan_free_numbers_are_finite(built_report):
    _, s = built_report
    lat = s["latency"]["cloud"]["ttft_s"]
    assert all(isinstance(lat[k], float) and math.isfinite(lat[k]) for k in ("p50", "p99", "mean"))
