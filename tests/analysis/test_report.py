"""build_report end to end on synthetic runs: values recomputed independently with pandas."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.stats import (
    BootstrapSettings,
    bootstrap_quantile_diff_ci,
    bootstrap_quantiles_ci,
)
from harness.config import AnalysisConfig, SLOConfig
from harness.report import build_report

from .conftest import default_manifest, make_records, write_run


def _frame(run_dir: Path) -> pd.DataFrame:
    """Every row of the run, read with pandas straight from the part files."""
    files = sorted((run_dir / "requests").rglob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _rel(x: pd.Series, t0: pd.Timestamp) -> np.ndarray:
    return (x - t0).dt.total_seconds().to_numpy()


def test_summary_matches_pandas_recomputation(built_report):
    """Every figure recomputed from the raw timestamps (t_scheduled, t_sent, t_first_token,
    t_end, itl_s), not from the derived columns the fixture wrote."""
    run_dir, s = built_report
    df = _frame(run_dir)
    main = df[df["phase"] == "main"].copy()
    assert s["schema_version"] == 1 and s["run_id"] == "run-test" and s["experiment"] == "unit"
    assert list(s["arms"]) == ["cloud", "selfhosted"]
    assert s["run"]["rows"] == len(main)
    t0 = min(main["t_scheduled"].min(), main["t_sent"].min())
    t1 = max(main["t_end"].max(), main["t_sent"].max())
    assert s["run"]["analysed_duration_s"] == pytest.approx((t1 - t0).total_seconds())
    main["r_ttft"] = _rel(main["t_first_token"], t0) - _rel(main["t_sent"], t0)
    main["r_e2e"] = _rel(main["t_end"], t0) - _rel(main["t_sent"], t0)
    main["r_ttft_sched"] = _rel(main["t_first_token"], t0) - _rel(main["t_scheduled"], t0)
    main["r_e2e_sched"] = _rel(main["t_end"], t0) - _rel(main["t_scheduled"], t0)
    main["r_qd"] = _rel(main["t_sent"], t0) - _rel(main["t_scheduled"], t0)
    ntok = main["completion_tokens"]
    main["r_tpot"] = (_rel(main["t_end"], t0) - _rel(main["t_first_token"], t0)) / (ntok - 1)
    slo = SLOConfig(ttft_s=0.3, tpot_s=0.05, e2e_s=None)
    for arm, g in main.groupby("arm"):
        ok = g[g["status"] == "ok"]
        timeout = g[g["error_type"] == "timeout"]
        lat = s["latency"][arm]
        for col, raw, censored in (
            ("ttft_s", "r_ttft", True),
            ("e2e_s", "r_e2e", True),
            ("ttft_sched_s", "r_ttft_sched", True),
            ("e2e_sched_s", "r_e2e_sched", True),
            ("tpot_s", "r_tpot", False),
        ):
            v = ok[raw].dropna().to_numpy()
            if censored:  # timed-out attempts count, censored at +inf
                v = np.concatenate([v, np.full(len(timeout), np.inf)])
            assert lat[col]["n"] == len(v), (arm, col)
            assert lat[col]["censored_n"] == (len(timeout) if censored else 0)
            assert lat[col]["mean"] == pytest.approx(v[np.isfinite(v)].mean())
            for key, q in (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
                want = (
                    np.quantile(v, q)
                    if np.isfinite(np.sort(v)[int(np.ceil((len(v) - 1) * q))])
                    else None
                )
                got = lat[col][key]
                assert got == (pytest.approx(want) if want is not None else None), (arm, col, key)
            lo, hi = lat[col]["ci"]["p50"]
            assert lo <= lat[col]["p50"] <= hi
        qd = g.loc[g["t_sent"].notna(), "r_qd"].to_numpy()
        assert lat["queue_delay_s"]["n"] == qd.size
        assert lat["queue_delay_s"]["p50"] == pytest.approx(np.median(qd))
        gaps = np.concatenate([np.asarray(x) for x in ok["itl_s"]])
        assert lat["itl_s"]["n"] == gaps.size and lat["itl_s"]["quantile_n"] == gaps.size
        assert lat["itl_s"]["p50"] == pytest.approx(np.median(gaps))
        assert lat["itl_s"]["mean"] == pytest.approx(gaps.mean())
        # failures: per logical request (final attempt) and per attempt
        final = g.sort_values("attempt").groupby("request_id").tail(1)
        failed = final[final["status"] != "ok"]
        e = s["errors"][arm]
        assert e["requests"] == len(final) and e["errors"] == len(failed)
        assert e["per_1000"] == pytest.approx(1000 * len(failed) / len(final))
        for t, c in failed["error_type"].value_counts().items():
            assert e["by_type"][t]["count"] == c
        err = g[g["status"] == "error"]
        pa = e["per_attempt"]
        assert pa["attempts"] == len(g) and pa["errors"] == len(err)
        assert pa["per_1000"] == pytest.approx(1000 * len(err) / len(g))
        for t, c in err["error_type"].value_counts().items():
            assert pa["by_type"][t]["count"] == c
        assert e["retry_rate"] == pytest.approx(
            (g["attempt"] > 0).sum() / g["request_id"].nunique()
        )
        assert sum(p["errors"] for p in e["over_time"]["points"]) == len(err)
        # the arm's own window
        lo_t = min(_rel(g["t_scheduled"], t0).min(), _rel(g["t_sent"], t0).min())
        hi_t = max(np.nanmax(_rel(g["t_end"], t0)), _rel(g["t_sent"], t0).max())
        duration = hi_t - lo_t
        # goodput per logical request: final ok and request TTFT (from t_arrival, here the
        # first attempt's t_scheduled) <= 0.3 and (TPOT <= 0.05 or no TPOT)
        arrival = g.sort_values("attempt").groupby("request_id")["t_scheduled"].first()
        fin = final.set_index("request_id")
        req_ttft = _rel(fin["t_first_token"], t0) - _rel(arrival.loc[fin.index], t0)
        meets = (fin["status"] == "ok").to_numpy() & (req_ttft <= slo.ttft_s)
        tp = fin["r_tpot"].to_numpy()
        meets &= (tp <= slo.tpot_s) | np.isnan(tp)
        gp = s["goodput"][arm]
        assert gp["requests"] == len(fin)
        assert gp["meeting_slo"] == int(meets.sum())
        assert gp["share"] == pytest.approx(meets.mean())
        assert gp["rate_rps"] == pytest.approx(meets.sum() / duration)
        att_meets = (g["status"] == "ok") & (g["r_ttft"] <= slo.ttft_s)
        att_meets &= (g["r_tpot"] <= slo.tpot_s) | g["r_tpot"].isna()
        assert gp["per_attempt"]["meeting_slo"] == int(att_meets.sum())
        # throughput
        th = s["throughput"][arm]
        assert th["duration_s"] == pytest.approx(duration)
        assert th["requests_ok"] == len(ok)
        assert th["request_rps"] == pytest.approx(len(ok) / duration)
        assert th["output_tps"] == pytest.approx(ok["completion_tokens"].sum() / duration)
        first = g[g["attempt"] == 0]["t_scheduled"]
        span = (first.max() - first.min()).total_seconds()
        assert th["scheduled_rps"] == pytest.approx((len(first) - 1) / span)
        sent = g[g["attempt"] == 0]["t_sent"]
        span = (sent.max() - sent.min()).total_seconds()
        assert th["achieved_arrival_rps"] == pytest.approx((len(sent) - 1) / span)
        assert th["offered_rps"] == 5.0
    # arm vs arm: selfhosted minus cloud, medians of TTFT
    pair = s["comparison"]["pairs"][0]
    assert (pair["baseline"], pair["other"]) == ("cloud", "selfhosted")
    ok = main[main["status"] == "ok"]
    med = ok.groupby("arm")["r_ttft"].median()
    timeouts = main[main["error_type"] == "timeout"].groupby("arm").size()
    assert timeouts.get("cloud", 0) == 0  # selfhosted's timeouts shift its median:
    sh = np.concatenate(
        [ok[ok["arm"] == "selfhosted"]["r_ttft"], np.full(timeouts["selfhosted"], np.inf)]
    )
    med["selfhosted"] = np.median(sh)
    d = pair["metrics"]["ttft_s"]["p50"]
    assert d["diff"] == pytest.approx(med["selfhosted"] - med["cloud"])
    assert d["significant"] and d["ci"][0] <= d["diff"] <= d["ci"][1] < 0
    assert [p["q"] for p in pair["shift"]["ttft_s"]] == pytest.approx(
        [0.1 * i for i in range(1, 10)]
    )
    # per slice
    for (arm, sl), g in main.groupby(["arm", "slice"]):
        if (g["error_type"] == "timeout").any():
            continue  # censored: covered above
        g = g[g["status"] == "ok"]
        assert s["latency_by_slice"][arm][sl]["ttft_s"]["p99"] == pytest.approx(
            np.quantile(g["r_ttft"], 0.99)
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
    # one arm pair: 6 headline claims, each interval at 1 - 0.05/6 (Bonferroni)
    assert "99.2% CI of the difference" in memo and "Bonferroni over the 6 headline" in memo
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

    # requests scheduled over 9.5 s: every scrape (0..9 s) is inside the analysed window
    run = write_run(tmp_path / "r", make_records("selfhosted", 20, rate=2.0))
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


# ---------------------------------------------------------------- review fixes


def _summary(run: Path, analysis: AnalysisConfig | None = None) -> dict:
    """The run's summary (JSON-safe) without writing plots or files: faster than build_report."""
    from harness.analysis.data import load_run
    from harness.report.build import build_summary
    from harness.report.jsonio import json_safe

    return json_safe(build_summary(load_run(run, analysis)))


def _correlated_itl(records, seed: int):
    """Give each ok record 20 gaps scaled by one per-request speed factor (correlated gaps)."""
    import dataclasses

    rng = np.random.default_rng(seed)
    out = []
    for r in records:
        if r.status == "ok":
            speed = float(rng.lognormal(0.0, 0.5))
            gaps = (speed * rng.uniform(0.9, 1.1, 20) * 0.02).tolist()
            r = dataclasses.replace(r, itl_s=gaps)
        out.append(r)
    return out


def test_itl_cis_resample_requests(tmp_path: Path):
    two = ("short", "long")
    recs = _correlated_itl(make_records("cloud", 120, seed=1, slices=two), 1)
    recs += _correlated_itl(make_records("selfhosted", 120, seed=2, slices=two), 2)
    m = default_manifest()
    m["config"]["analysis"]["bootstrap_resamples"] = 200
    run = write_run(tmp_path / "r", recs, manifest=m)
    s = _summary(run)
    itl = s["latency"]["cloud"]["itl_s"]
    assert itl["ci_method"] == "cluster" and itl["ci_requests"] == 120
    assert itl["n"] == 120 * 20
    lo, hi = itl["ci"]["p50"]
    assert lo <= itl["p50"] <= hi
    # 20 strongly correlated gaps per request carry far less information than 20 requests:
    # the CI is much wider than one that treats the 2,400 gaps as independent
    df = _frame(run)
    gaps = {a: np.concatenate(g["itl_s"].to_list()) for a, g in df.groupby("arm")}
    ind_lo, ind_hi, _ = bootstrap_quantiles_ci(
        gaps["cloud"], [0.5], BootstrapSettings(resamples=200)
    )
    assert hi - lo > 2 * (ind_hi[0] - ind_lo[0])
    pair = s["comparison"]["pairs"][0]["metrics"]["itl_s"]
    assert pair["ci_method"] == "cluster"
    _, d_lo, d_hi, _ = bootstrap_quantile_diff_ci(
        gaps["cloud"], gaps["selfhosted"], [0.5], BootstrapSettings(resamples=200)
    )
    assert pair["p50"]["ci"][1] - pair["p50"]["ci"][0] > 2 * (d_hi[0] - d_lo[0])
    sl = s["latency_by_slice"]["cloud"]["short"]["itl_s"]
    assert sl["ci_method"] == "cluster" and sl["ci_requests"] == 60


def _lagging_records(n: int, lag_per_request: float):
    """Constant 5 req/s schedule; the client sends request i ``i * lag_per_request`` s late."""
    import dataclasses

    from .conftest import NS

    out = []
    for r in make_records("cloud", n, rate=5.0):
        i = int(r.request_id.split("-")[1])
        shift = int(i * lag_per_request * NS)
        out.append(
            dataclasses.replace(
                r,
                t_sent=r.t_sent + shift,
                t_first_token=r.t_first_token + shift,
                t_end=r.t_end + shift,
                queue_delay_s=r.queue_delay_s + shift / NS,
            )
        )
    return out


def test_offered_uses_expected_arrivals_and_achieved_uses_send_time(tmp_path: Path):
    # a ramp: rate 5 is the peak; 300 arrivals expected in 100 s -> offered 3/s
    m = default_manifest(arms={"cloud": {}})
    m["offered"] = {"mode": "open", "rate": 5.0, "shape": "ramp", "arrival": "poisson",
                    "expected_arrivals": 300.0, "window_s": 100.0}  # fmt: skip
    run = write_run(tmp_path / "ramp", _lagging_records(100, 0.05), manifest=m)
    s = _summary(run)
    th = s["throughput"]["cloud"]
    assert th["offered_rps"] == pytest.approx(3.0) and th["offered_arrivals"] == 300.0
    assert th["scheduled_rps"] == pytest.approx(5.0, rel=1e-3)
    # sends drift 0.05 s per request: 99 gaps over 19.8 + 4.95 s
    assert th["achieved_arrival_rps"] == pytest.approx(99 / (99 * 0.25), rel=1e-2)
    assert th["achieved_vs_offered"] == pytest.approx(4.0 / 3.0, rel=1e-2)
    assert not any("offered arrival rate" in c for c in s["caveats"])


def test_offered_unknown_with_shape_or_trace_and_no_expected_count(tmp_path: Path):
    for name, extra in (("ramp", {"shape": "ramp"}), ("trace", {"arrival": "trace"})):
        m = default_manifest(arms={"cloud": {}})
        m["offered"] = {"mode": "open", "rate": 50.0, **extra}
        run = write_run(tmp_path / name, make_records("cloud", 40), manifest=m)
        s = _summary(run)
        th = s["throughput"]["cloud"]
        assert th["offered_rps"] is None and th["achieved_vs_offered"] is None
        assert th["offered_note"] and th["offered_note"] in s["caveats"]
        # 5 req/s sent against a peak `rate` of 50: no false "did not deliver" caveat
        assert not any("did not deliver" in c for c in s["caveats"])


def test_client_lag_shows_against_offered(tmp_path: Path):
    m = default_manifest(arms={"cloud": {}})
    m["offered"] = {"mode": "open", "rate": 5.0}
    run = write_run(tmp_path / "lag", _lagging_records(200, 0.2), manifest=m)
    s = _summary(run)
    th = s["throughput"]["cloud"]
    assert th["offered_rps"] == 5.0 and th["scheduled_rps"] == pytest.approx(5.0, rel=1e-3)
    assert th["achieved_arrival_rps"] == pytest.approx(1 / 0.4, rel=1e-2)
    assert th["achieved_below_offered"] is True
    assert any("did not deliver its schedule" in c for c in s["caveats"])


def test_last_over_time_bin_is_divided_by_its_covered_width(tmp_path: Path):
    run = write_run(tmp_path / "r", make_records("cloud", 97, rate=5.0), manifest={})
    s = _summary(run, AnalysisConfig(bootstrap_resamples=20))
    th = s["throughput"]["cloud"]
    pts, width = th["over_time"]["points"], th["over_time"]["bin_s"]
    duration = s["run"]["analysed_duration_s"]
    assert pts[-1]["covered_s"] == pytest.approx(duration - pts[-1]["t"])
    assert 0 < pts[-1]["covered_s"] < width
    assert all(p["covered_s"] == width for p in pts[:-1])
    completed = sum(p["requests_per_s"] * p["covered_s"] for p in pts)
    arrivals = sum(p["arrivals_per_s"] * p["covered_s"] for p in pts)
    assert completed == pytest.approx(th["requests_ok"]) and arrivals == pytest.approx(97)
    # the last bin holds the last completion: its rate counts it over the covered seconds
    df = _frame(run)
    t_end = (df["t_end"] - df["t_scheduled"].min()).dt.total_seconds()
    last = int(((t_end >= pts[-1]["t"]) & (df["status"] == "ok")).sum())
    assert pts[-1]["requests_per_s"] == pytest.approx(last / pts[-1]["covered_s"])


def test_server_metrics_window_ratio_gauges_and_nan(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.record.schema import METRICS_SCHEMA

    from .conftest import NS, T0

    run = write_run(tmp_path / "r", make_records("selfhosted", 20, rate=2.0))  # ~9.5 s window
    rows: dict[str, list] = {k: [] for k in METRICS_SCHEMA.names}

    def add(t_s: float, name: str, labels: str, value: float) -> None:
        for k, v in zip(METRICS_SCHEMA.names, ("r", "selfhosted", T0 + int(t_s * NS), name,
                                               labels, value), strict=True):  # fmt: skip
            rows[k].append(v)

    for i in range(600):  # every 0.015 s inside the window: binned over time
        t = i * 0.015
        add(t, "vllm:kv_cache_usage_perc", "model_name=a", 0.4)
        add(t, "vllm:kv_cache_usage_perc", "model_name=b", 0.6)
        add(t, "vllm:num_requests_running", "model_name=a", 2.0)
        add(t, "vllm:num_requests_running", "model_name=b", 3.0)
        add(t, "vllm:num_requests_waiting", "", math.nan if i % 2 else 4.0)
    for t in (-600.0, -60.0, 3600.0):  # warm-up scrapes and ones after the run: left out
        add(t, "vllm:num_requests_waiting", "", 100.0)
        add(t, "vllm:kv_cache_usage_perc", "model_name=a", 1.0)
    (run / "metrics").mkdir()
    pq.write_table(pa.Table.from_pydict(rows, schema=METRICS_SCHEMA), run / "metrics" / "p.parquet")
    s = _summary(run, AnalysisConfig(bootstrap_resamples=20))
    srv = s["server"]["selfhosted"]
    kv = srv["vllm:kv_cache_usage_perc"]
    assert kv["samples"] == 600 and kv["max"] == pytest.approx(0.5)  # mean of label sets
    assert srv["vllm:num_requests_running"]["mean"] == pytest.approx(5.0)  # counts are summed
    w = srv["vllm:num_requests_waiting"]
    assert w["samples"] == 300 and w["max"] == 4.0  # NaN dropped, out-of-window dropped
    assert w["over_time"]["bin_s"] is not None
    assert all(v == pytest.approx(4.0) for _, v in w["over_time"]["points"])


def test_math_text_in_arm_names_does_not_crash_plots(tmp_path: Path):
    arm = "$\\foo$"
    recs = make_records(arm, 30) + make_records("other $x^$", 30, seed=3)
    run = write_run(tmp_path / "r", recs, manifest={})
    s = build_report(run, analysis=AnalysisConfig(bootstrap_resamples=20))
    assert arm in s["latency"]
    assert arm in (run / "plots" / "latency_cdf.svg").read_text()


def test_markdown_in_arm_names_is_inert_in_memo_tables(tmp_path: Path):
    arm = "[c](http://e.vil) *b*"
    run = write_run(tmp_path / "r", make_records(arm, 30), manifest={})
    build_report(run, analysis=AnalysisConfig(bootstrap_resamples=20))
    memo = (run / "memo.md").read_text()
    table_rows = [line for line in memo.splitlines() if line.startswith("| ")]
    assert any("\\[c\\](http://e.vil) \\*b\\*" in line for line in table_rows)
    assert "[c](" not in memo and " *b*" not in memo


def test_corrupt_metrics_part_becomes_a_caveat(tmp_path: Path):
    run = write_run(tmp_path / "r", make_records("selfhosted", 20))
    (run / "metrics").mkdir()
    (run / "metrics" / "part-1.parquet").write_bytes(b"PAR1 not parquet")
    s = _summary(run, AnalysisConfig(bootstrap_resamples=20))
    assert s["server"] == {}
    assert any("Server metrics were left out" in c and "part-1.parquet" in c for c in s["caveats"])


@pytest.mark.parametrize(
    "analysis,match",
    [
        ({"confidence": None}, "config.analysis.confidence"),
        ({"confidence": "0.9"}, "config.analysis.confidence"),
        ({"confidence": 1.5}, "config.analysis.confidence"),
        ({"bootstrap_resamples": 0}, "config.analysis.bootstrap_resamples"),
        ({"include_phases": []}, "config.analysis.include_phases"),
        ({"include_phases": [1]}, "config.analysis.include_phases"),
        ({"slo": {"ttft_s": "fast"}}, "config.analysis.slo.ttft_s"),
        ({"slo": [1]}, "config.analysis.slo"),
        ("strict", "'config.analysis' must be an object"),
    ],
)
def test_manifest_analysis_settings_are_validated(tmp_path: Path, analysis, match):
    from harness.analysis.data import RunDataError, load_run

    m = default_manifest()
    m["config"]["analysis"] = analysis
    run = write_run(tmp_path / "r", make_records("cloud", 5), manifest=m)
    with pytest.raises(RunDataError, match=re.escape(match)) as exc:
        load_run(run)
    assert "manifest.json" in str(exc.value)


def test_manifest_config_not_an_object_and_string_phase(tmp_path: Path):
    from harness.analysis.data import RunDataError, load_run

    run = write_run(tmp_path / "r", make_records("cloud", 5), manifest=default_manifest(config=3))
    with pytest.raises(RunDataError, match="'config' must be an object"):
        load_run(run)
    m = default_manifest()
    m["config"]["analysis"]["include_phases"] = "main"  # one name, not a list of letters
    run = write_run(tmp_path / "r2", make_records("cloud", 5), manifest=m)
    data = load_run(run)
    assert data.analysis.include_phases == ["main"] and data.n_rows == 5
    with pytest.raises(RunDataError, match="confidence"):
        load_run(run, AnalysisConfig(confidence=0.0))
