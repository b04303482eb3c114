"""Run checks (harness/analysis/checks.py) and the caveats that phrase them.

The saturation check is a statistical claim, so it ships with its calibration: its false-alarm
rate over hundreds of seeds of stationary latencies (independent and autocorrelated) and its
power on real ramps.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.stats
from scipy.signal import lfilter

from harness.analysis.checks import (
    SaturationSettings,
    autocorrelation_time,
    endpoint_key,
    kendall_trend,
    run_checks,
    saturation,
    shared_endpoints,
    split_medians,
    theil_sen_slope,
)
from harness.analysis.data import load_run
from harness.record.schema import RequestRecord, records_to_table
from harness.report.build import build_summary, render_html
from harness.report.jsonio import json_safe

from .conftest import NS, T0, default_manifest, make_records, write_run

# ---------------------------------------------------------------- building blocks


@pytest.mark.parametrize("n", [5, 7, 10])
def test_kendall_trend_matches_scipy_exact(n):
    rng = np.random.default_rng(n)
    y = rng.normal(size=(50, n)) + np.linspace(0, 1, n)  # a mild trend: p values spread out
    tau, p = kendall_trend(y)
    for row, t_, p_ in zip(y, tau, p, strict=True):
        ref = scipy.stats.kendalltau(np.arange(n), row, alternative="greater", method="exact")
        assert t_ == pytest.approx(ref.statistic) and p_ == pytest.approx(ref.pvalue)
    # a perfectly increasing sequence: p = 1/n!
    assert kendall_trend(np.arange(5.0))[1] == pytest.approx(1 / 120)
    assert kendall_trend(np.arange(5.0)[::-1])[1] == pytest.approx(1.0)


def test_theil_sen_and_split_medians_match_references():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(20, 10)) + 0.3 * np.arange(10)
    for row, s in zip(y, theil_sen_slope(y), strict=True):
        assert s == pytest.approx(scipy.stats.theilslopes(row).slope)
    v = rng.normal(size=103)
    ref = [np.median(g) for g in np.array_split(v, 10)]
    assert split_medians(v, 10) == pytest.approx(ref)


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """A stationary AR(1) series with marginal standard deviation ``sd``."""
    e = rng.normal(0.0, sd * math.sqrt(1 - phi**2), n)
    e[0] = rng.normal(0.0, sd)
    return lfilter([1.0], [1.0, -phi], e)


def test_autocorrelation_time_of_known_series():
    rng = np.random.default_rng(5)
    assert autocorrelation_time(rng.normal(size=20_000)) == pytest.approx(1.0, abs=0.1)
    # AR(1): tau = (1 + phi) / (1 - phi) = 9 for phi = 0.8
    assert autocorrelation_time(_ar1(rng, 50_000, 0.8, 1.0)) == pytest.approx(9.0, rel=0.15)


# ---------------------------------------------------------------- saturation: calibration


def _null_series(rng, kind: str, n: int) -> np.ndarray:
    """log TTFT around log(0.1 s), stationary: iid, AR(1), or slow AR(1) plus per-request
    noise (correlation time a tenth of the run)."""
    if kind == "iid":
        x = rng.normal(0.0, 0.5, n)
    elif kind.startswith("ar"):
        x = _ar1(rng, n, float(kind[2:]), 0.5)
    else:  # "slow": slow drift hidden under per-request noise
        x = _ar1(rng, n, 1 - 10 / n, 0.3) + rng.normal(0.0, 0.5, n)
    return np.log(0.1) + x


NULL_CASES = [("iid", 120), ("iid", 400), ("ar0.5", 400), ("ar0.9", 1000), ("ar0.98", 1000),
              ("slow", 2000)]  # fmt: skip


def test_saturation_false_alarm_rate_on_stationary_latencies():
    """Over 400 seeds per case the check must fire on at most ~5% of stationary runs: the
    assertion (< 7% per case, < 5% pooled) would fail for a true rate of 10% with
    probability > 97% per case."""
    seeds = 400
    rates = {}
    for kind, n in NULL_CASES:
        rng = np.random.default_rng([7, n, len(kind)])
        fired = 0
        for _ in range(seeds):
            t = np.sort(rng.uniform(0, 120, n))
            ttft = np.exp(_null_series(rng, kind, n))
            fired += saturation(t, ttft, rng.uniform(0, 0.003, n))["saturated"]
        rates[(kind, n)] = fired / seeds
    assert all(r < 0.07 for r in rates.values()), rates
    assert sum(rates.values()) / len(rates) < 0.05, rates


@pytest.mark.parametrize(("n", "ramp"), [(200, 3.0), (1000, 2.0)])
def test_saturation_power_on_a_ramp(n, ramp):
    rng = np.random.default_rng([11, n])
    fired = 0
    for _ in range(200):
        t = np.sort(rng.uniform(0, 120, n))
        ttft = 0.1 * np.exp(rng.normal(0.0, 0.5, n) + math.log(ramp) * t / 120)
        fired += saturation(t, ttft, rng.uniform(0, 0.003, n))["saturated"]
    assert fired / 200 >= 0.9


def test_saturation_adverse_cases():
    rng = np.random.default_rng(2)
    t = np.arange(500.0)
    ramp = 0.1 * np.exp(rng.normal(0, 0.3, 500) + math.log(4) * t / 500)
    small_qd = np.full(500, 0.002)
    got = saturation(t, ramp, small_qd)
    assert got["saturated"] and got["tested"] and got["bins"] == 10
    assert got["growth"] == pytest.approx(4.0 * 0.9, rel=0.25)  # fitted over bin centres
    assert got["ttft_p50_last"] > 3 * got["ttft_p50_first"] and got["p_value"] < 1e-4
    # the client fell behind too (queue delay p99 0.5 s): the queue may be the client's
    assert not saturation(t, ramp, np.linspace(0, 1, 500))["saturated"]
    # TTFT falling over the run is no saturation
    assert not saturation(t, ramp[::-1], small_qd)["saturated"]
    # a rise below the minimum effect size (1.2x) is not reported, however significant
    mild = 0.1 * np.exp(rng.normal(0, 0.05, 500) + math.log(1.2) * t / 500)
    r = saturation(t, mild, small_qd)
    assert r["p_value"] < 0.001 and not r["saturated"]
    # too few requests: not tested, with the reason; NaN rows are dropped first
    few = saturation(t[:99], ramp[:99], small_qd[:99])
    assert not few["tested"] and "99 successful requests" in few["reason"]
    holes = ramp.copy()
    holes[::2] = np.nan
    assert saturation(t, holes, small_qd)["n"] == 250
    # strongly autocorrelated at this length: fewer independent bins, not tested
    walk = 0.1 * np.exp(np.cumsum(rng.normal(0, 0.1, 500)))
    r = saturation(t, walk, small_qd)
    assert not r["tested"] and "autocorrelated" in r["reason"]
    # a custom effect size is honoured
    assert not saturation(t, ramp, small_qd, SaturationSettings(min_growth=10))["saturated"]


# ---------------------------------------------------------------- endpoints


def test_endpoint_key_normalises_and_groups():
    same = ["http://LOCALHOST:8000/v1/", "http://127.0.0.1:8000/v1", "http://***@localhost:8000/v1"]
    assert len({endpoint_key(u) for u in same}) == 1
    assert endpoint_key("https://api.openai.com/v1") == endpoint_key(
        "https://api.openai.com:443/v1?api-version=1"
    )
    assert endpoint_key("http://h:8000/v1") != endpoint_key("http://h:8001/v1")
    assert endpoint_key("http://h:8000/a/v1") != endpoint_key("http://h:8000/b/v1")
    assert endpoint_key(None) is None and endpoint_key("not a url") is None
    assert endpoint_key("http://h:notaport/v1") is None
    info = {
        "a": {"base_url": "http://localhost:8000/v1"},
        "b": {"base_url": "http://127.0.0.1:8000/v1/"},
        "c": {"base_url": "http://127.0.0.1:8001/v1"},
        "d": {"base_url": None},
        "e": {},
    }
    assert shared_endpoints(info) == [{"endpoint": "http://localhost:8000/v1", "arms": ["a", "b"]}]


# ---------------------------------------------------------------- run checks and caveats


def _row(arm: str, i: int, **over) -> RequestRecord:
    """One successful attempt at ``i`` seconds: TTFT 0.1 s, 4 tokens asked and served."""
    sent = T0 + i * NS
    base = dict(
        run_id="run-test",
        experiment="unit",
        arm=arm,
        target_kind="sim_vllm",
        model="m",
        client="lean",
        request_id=f"{arm}-{i}",
        attempt=0,
        sample_id=f"s{i}",
        phase="main",
        status="ok",
        t_scheduled=sent,
        t_sent=sent,
        t_first_token=sent + NS // 10,
        t_end=sent + NS // 5,
        t_virtual=sent,
        queue_delay_s=0.0,
        ttft_s=0.1,
        e2e_s=0.2,
        ttft_sched_s=0.1,
        e2e_sched_s=0.2,
        tpot_s=0.03,
        itl_s=[0.03, 0.03, 0.04],
        prompt_tokens=40,
        completion_tokens=4,
        tokens_source="usage",
        prompt_tokens_source="usage",
        requested_max_tokens=4,
        forced_length=True,
        streamed=True,
        finish_reason="length",
    )
    base.update(over)
    return RequestRecord(**base)


def _summary(tmp_path: Path, records, **manifest) -> dict:
    run = write_run(tmp_path / "run", records, manifest=default_manifest(**manifest))
    return build_summary(load_run(run))


def _mine(caveats: list[str]) -> list[str]:
    keys = ("saturated", "share one endpoint", "different clients", "did not stream",
            "not streamed", "forced-length", "sent no usage")  # fmt: skip
    return [c for c in caveats if any(k in c for k in keys)]


def test_clean_run_has_no_check_caveats(tmp_path: Path):
    recs = [_row("cloud", i) for i in range(120)] + [_row("selfhosted", i) for i in range(60)]
    s = _summary(tmp_path, recs)
    assert _mine(s["caveats"]) == []
    c = s["checks"]["arms"]["cloud"]
    assert c["clients"] == ["lean"] and c["streaming"] == {"ok": 120, "non_streamed": 0}
    assert c["short_forced"] == {"forced": 120, "checked": 120, "short": 0, "share": 0.0,
                                 "example_request_id": None}  # fmt: skip
    assert c["count_sources"] == {"prompt": {"usage": 120}, "completion": {"usage": 120}}
    assert c["saturation"]["tested"] and not c["saturation"]["saturated"]
    few = s["checks"]["arms"]["selfhosted"]["saturation"]
    assert not few["tested"] and few["reason"] == "60 successful requests: the trend test needs 100"
    assert s["checks"]["shared_endpoints"] == []


def test_check_caveats_name_arm_count_and_example(tmp_path: Path):
    cloud = []
    for i in range(60):
        over = {}
        if i % 6 == 5:  # 10 short rows, 8 of them usage-counted; the first is cloud-5
            over.update(completion_tokens=2, finish_reason="stop")
        if i >= 50:  # 10 rows without usage: prompt counted locally, output by chunks
            over.update(prompt_tokens_source="tokenizer", tokens_source="chunks")
        if i == 59:  # a locally counted short row is not judged (the count may differ)
            over.update(completion_tokens=1)
        cloud.append(_row("cloud", i, client="sdk", **over))
    self_rows = []
    noise = np.random.default_rng(0).lognormal(0.0, 0.3, 150)
    for i in range(150):  # a queue that grows inside the server: TTFT 0.1 s -> 1.9 s
        ttft = float((0.1 + 0.012 * i) * noise[i])
        first = T0 + i * NS + int(ttft * NS)
        self_rows.append(_row("selfhosted", i, ttft_s=ttft, t_first_token=first,
                              t_end=first + NS // 10, e2e_s=ttft + 0.1, ttft_sched_s=ttft,
                              e2e_sched_s=ttft + 0.1, streamed=False,
                              prompt_tokens_source="tokenize", itl_s=[], tpot_s=None))  # fmt: skip
    arms = {
        "cloud": {"kind": "vllm", "model": "m", "base_url": "http://127.0.0.1:8000/v1"},
        "selfhosted": {"kind": "vllm", "model": "m", "base_url": "http://localhost:8000/v1/"},
    }
    s = _summary(tmp_path, cloud + self_rows, arms=arms)
    sf = s["checks"]["arms"]["cloud"]["short_forced"]
    assert sf == {"forced": 60, "checked": 50, "short": 8, "share": 8 / 50,
                  "example_request_id": "cloud-5"}  # fmt: skip
    got = "\n".join(_mine(s["caveats"]))
    assert "Arm 'cloud': 8 of 50 forced-length requests (16.0%)" in got
    assert "e.g. request cloud-5" in got
    assert "Arms 'cloud' and 'selfhosted' share one endpoint (http://localhost:8000/v1)" in got
    assert "different clients (cloud: sdk; selfhosted: lean)" in got
    assert "Arm 'selfhosted' did not stream" in got and "TTFT equals its E2E" in got
    assert "Arm 'selfhosted': the server saturated during the run" in got
    sat = s["checks"]["arms"]["selfhosted"]["saturation"]
    assert sat["saturated"] and sat["growth"] > 5
    assert "Arm 'cloud': the server sent no usage: the prompt token counts of 16.7% of its " \
        "successful requests are local estimates" in got  # fmt: skip
    assert "; the completion tokens of 16.7% were counted locally (10 as one token per " \
        "streamed chunk)." in got  # fmt: skip
    assert "Arm 'selfhosted': the server sent no usage: the prompt token counts of 100.0% come " \
        "from the server's /tokenize endpoint (its own tokenizer and chat template)." in got  # fmt: skip
    assert "Arm 'cloud' did not stream" not in got and "'cloud': the server saturated" not in got
    html = render_html(json_safe(s), {})  # the run table names each arm's client
    assert "<td>sdk</td>" in html and "<td>lean</td>" in html


def test_files_without_the_new_columns_read_as_unknown(tmp_path: Path):
    """A file older than schema v4 (no streamed/forced_length/prompt_tokens_source, client):
    nothing is claimed about them."""
    recs = [_row("cloud", i, completion_tokens=1) for i in range(60)]
    table = records_to_table(recs)
    table = table.drop_columns(["streamed", "forced_length", "prompt_tokens_source", "client"])
    run = tmp_path / "old"
    (run / "requests").mkdir(parents=True)
    pq.write_table(table, run / "requests" / "w0-part-000000.parquet")
    data = load_run(run)
    assert (data.flag("streamed") == -1).all() and data.labels["client"][0] == []
    c = run_checks(data)["arms"]["cloud"]
    assert c["short_forced"]["forced"] == 0 and c["streaming"]["non_streamed"] == 0
    assert c["clients"] == [] and c["count_sources"]["prompt"] == {}


def test_request_ids_at_reads_rows_in_load_order(tmp_path: Path):
    recs = make_records("cloud", 30, seed=4)
    recs = [dataclasses.replace(r, request_id=f"id-{i}") for i, r in enumerate(recs)]
    data = load_run(write_run(tmp_path / "r", recs, parts=3))  # part files: not record order
    row_of = np.argsort(data.cols["t_scheduled"])  # record i is scheduled i-th
    picks = [0, 29, 11, 11]
    assert data.request_ids_at(row_of[picks]) == [f"id-{i}" for i in picks]
    assert data.request_ids_at([]) == []
