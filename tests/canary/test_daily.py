"""Daily canary figures from a small run written with the real writer, hand-computed:
a straggler across midnight, retries with waits, a cancelled request, costs, scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from harness.analysis.data import load_run
from harness.canary.clock import ExperimentClock
from harness.canary.daily import TICKET_TYPES, daily_entries, daily_frame
from harness.quality.score import SCORES_SCHEMA
from harness.record.schema import RequestRecord
from harness.record.writer import RequestWriter

T0 = 1_780_000_000_000_000_000
NS = 1_000_000_000
DAY = 86_400
CLOCK = ExperimentClock(origin_ns=T0)


def _s(x: float) -> int:
    return T0 + int(round(x * NS))


def _att(arm: str, rid: str, attempt: int, arrival: float, sched: float, *, ttft: float | None,
         end: float, status: str = "ok", error_type: str | None = None, will_retry=False,
         prompt: int = 0, out: int = 0, fp: str | None = None, virtual: bool = True,
         ) -> RequestRecord:  # fmt: skip
    """One attempt; times in seconds since T0 (``ttft`` after the attempt's send)."""
    kind = "sim_cloud" if arm == "cloud" else "sim_vllm"
    first = None if ttft is None else _s(sched + ttft)
    ok = status == "ok"
    return RequestRecord(
        run_id="run-d", experiment="unit", arm=arm, target_kind=kind, model="m",
        request_id=rid, attempt=attempt, pair_id=rid, sample_id=rid, phase="main",
        status=status, t_scheduled=_s(sched), t_sent=_s(sched), t_first_token=first,
        t_end=_s(end), t_virtual=_s(sched) if virtual else None, t_arrival=_s(arrival),
        queue_delay_s=0.0, ttft_s=ttft if ok else None, e2e_s=end - sched if ok else None,
        error_type=error_type, will_retry=will_retry, prompt_tokens=prompt or None,
        completion_tokens=out or None, finish_reason="stop" if ok else None,
        response_model="gpt-x" if ok and arm == "cloud" else None,
        system_fingerprint=fp if ok else None,
    )  # fmt: skip


def _records(virtual: bool = True) -> list[RequestRecord]:
    c, v = "cloud", virtual
    d1 = DAY
    return [
        # day 0
        _att(c, "A", 0, 100, 100, ttft=0.2, end=101.0, prompt=1000, out=100, fp="fp_a", virtual=v),
        # B: 429, a 2 s wait, then ok: request TTFT 202.35 - 200 = 2.35, E2E 3.05
        _att(c, "B", 0, 200, 200, ttft=None, end=200.05, status="error",
             error_type="rate_limited", will_retry=True, virtual=v),
        _att(c, "B", 1, 200, 202.05, ttft=0.3, end=203.05, prompt=500, out=50, fp="fp_a",
             virtual=v),
        # C: arrives 23:59:59 on day 0, ends on day 1: a day-0 request
        _att(c, "C", 0, DAY - 1, DAY - 1, ttft=0.5, end=DAY + 1, prompt=400, out=40, fp="fp_a",
             virtual=v),
        _att(c, "D", 0, 300, 300, ttft=None, end=300.1, status="error",
             error_type="server_error", virtual=v),
        _att(c, "E", 0, 400, 400, ttft=None, end=400.5, status="error", error_type="cancelled",
             virtual=v),
        # day 1
        _att(c, "F", 0, d1 + 10, d1 + 10, ttft=0.1, end=d1 + 10.4, prompt=100, out=10,
             fp="fp_b", virtual=v),
        # G: two timeouts with waits, then ok: TTFT 5.3, E2E 6.0 from the arrival
        _att(c, "G", 0, d1 + 20, d1 + 20, ttft=None, end=d1 + 21, status="error",
             error_type="timeout", will_retry=True, virtual=v),
        _att(c, "G", 1, d1 + 20, d1 + 22, ttft=None, end=d1 + 23, status="error",
             error_type="timeout", will_retry=True, virtual=v),
        _att(c, "G", 2, d1 + 20, d1 + 25, ttft=0.3, end=d1 + 26, prompt=200, out=20,
             fp="fp_b", virtual=v),
        # self-hosted: two requests a day
        *[_att("selfhosted", f"s{i}", 0, t, t, ttft=0.1 * (i + 1), end=t + 1, prompt=10,
               out=5, virtual=v)
          for i, t in enumerate((50, 60, d1 + 50, d1 + 60))],
    ]  # fmt: skip


def _manifest() -> dict:
    return {
        "run_id": "run-d",
        "experiment": "unit",
        "config": {
            "analysis": {
                "include_phases": ["main"],
                "confidence": 0.95,
                "bootstrap_resamples": 100,
                "seed": 0,
            },
            "traffic": {"profile": [1]},
            "selfhost": {"capacity_rps": 2},
        },  # fmt: skip
        "arms": {
            "cloud": {"kind": "sim_cloud", "model": "sim-gpt-4o-mini"},
            "selfhosted": {"kind": "sim_vllm", "model": "m"},
        },
    }


def _write(run_dir: Path, records: list[RequestRecord]) -> Path:
    w = RequestWriter(run_dir, flush_rows=6, auto_flush=True)  # several part files
    w.add_records(records)
    w.close()
    (run_dir / "manifest.json").write_text(json.dumps(_manifest()), encoding="utf-8")
    return run_dir


def _scores() -> pa.Table:
    rows = []
    for rid, cat, em, refusal, fmt in (("A", "math", 1, 0, 1), ("B", "math", 0, 1, 0),
                                       ("C", "geo", 1, 0, 0), ("F", "geo", 1, 0, 1)):  # fmt: skip
        for scorer, v in (("exact_match", em), ("refusal", refusal), ("format_valid", fmt)):
            rows.append({"run_id": "run-d", "arm": "cloud", "sample_id": rid, "request_id": rid,
                         "attempt": 0, "pair_id": rid, "category": cat, "scorer": scorer,
                         "kind": "binary", "value": float(v)})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=SCORES_SCHEMA)


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> list[dict]:
    run = _write(tmp_path_factory.mktemp("daily") / "run", _records())
    return daily_entries(load_run(run), CLOCK, scores=_scores())


def test_days_and_counts(entries):
    assert [e["day"] for e in entries] == [0, 1]
    assert entries[0]["start"] == "2026-05-28T20:26:40Z" and entries[0]["end"].startswith(
        "2026-05-29T20:26:40"
    )
    d0 = entries[0]["arms"]["cloud"]
    # A, B, C (the straggler), D; E cancelled; attempts 1 + 2 + 1 + 1
    assert (d0["requests"], d0["ok"], d0["cancelled"], d0["attempts"]) == (4, 3, 1, 5)
    assert d0["errors"] == {"server_error": 1} and d0["error_rate"] == 0.25
    assert d0["attempt_errors"] == {"rate_limited": 1, "server_error": 1}
    assert d0["retry_rate"] == {"share": 0.25, "attempts_per_request": 1.25}
    d1 = entries[1]["arms"]["cloud"]
    assert (d1["requests"], d1["attempts"], d1["cancelled"]) == (2, 4, 0)
    assert d1["attempt_errors"] == {"timeout": 2} and d1["errors"] == {}
    assert d1["retry_rate"] == {"share": 0.5, "attempts_per_request": 2.0}
    assert entries[1]["arms"]["selfhosted"]["requests"] == 2


def test_latency_from_arrival_with_retries(entries):
    d0, d1 = entries[0]["arms"]["cloud"], entries[1]["arms"]["cloud"]
    # day 0 TTFT: A 0.2, B 2.35, C 0.5, D failed (+inf): p50 = (0.5 + 2.35) / 2
    assert d0["ttft_s"]["p50"] == pytest.approx(1.425)
    assert d0["ttft_s"]["p99"] is None and d0["ttft_s"]["censored"] == 1  # among the censored
    assert d0["ttft_s"]["n"] == 4
    # answered requests only: A 0.2, C 0.5, B 2.35 -> p99 = 0.5 + 0.98 x 1.85
    assert d0["ttft_s"]["n_answered"] == 3 and d0["ttft_s"]["p50_answered"] == 0.5
    assert d0["ttft_s"]["p99_answered"] == pytest.approx(0.5 + 0.98 * 1.85)
    # E2E: A 1.0, B 3.05, C 2.0 (ends on day 1, counted on day 0), D +inf
    assert d0["e2e_s"]["p50"] == pytest.approx(2.525)
    # day 1: F 0.1, G 5.3 (two timeouts and their waits included)
    assert d1["ttft_s"]["p50"] == pytest.approx(2.7)
    assert d1["ttft_s"]["p99"] == pytest.approx(0.1 + 0.99 * 5.2)
    assert d1["e2e_s"]["p99"] == pytest.approx(0.4 + 0.99 * 5.6)


def test_quality_and_tickets(entries):
    d0, d1 = entries[0]["arms"]["cloud"], entries[1]["arms"]["cloud"]
    assert d0["quality"]["exact_match"] == pytest.approx(2 / 3)
    assert d0["quality_n"]["exact_match"] == 3
    cats = d0["quality_by_category"]["exact_match"]
    assert cats == {"geo": {"mean": 1.0, "n": 1}, "math": {"mean": 0.5, "n": 2}}
    # D failed (server_error); B refused (and broke format: one ticket); C broke the format
    assert set(d0["tickets"]) == set(TICKET_TYPES)
    nonzero = {k: v for k, v in d0["tickets"].items() if v}
    assert nonzero == {"server_error": 1, "refusal": 1, "format_break": 1}
    assert d0["tickets_total"] == 3 and d1["tickets_total"] == 0
    assert d1["quality"]["exact_match"] == 1.0


def test_cost_per_day(entries):
    d0, d1 = entries[0]["arms"]["cloud"], entries[1]["arms"]["cloud"]
    # gpt-4o-mini, $ per 1M: 0.15 in, 0.60 out; 429, 5xx, timeouts before output: 0
    # day 0: A 150 + 60, B 75 + 30, C 60 + 24 = 399e-6; day 1: F 15 + 6, G 30 + 12 = 63e-6
    assert d0["cost_usd"] == pytest.approx(399e-6)
    assert d1["cost_usd"] == pytest.approx(63e-6)
    assert d1["cumulative_usd"] == pytest.approx(462e-6)
    calls = 100_000 * 20 * 3
    assert d0["projected_monthly_usd"] == pytest.approx(calls * 399e-6 / 4)
    assert d1["projected_monthly_usd"] == pytest.approx(calls * 462e-6 / 6)
    sh = entries[0]["arms"]["selfhosted"]
    # 2 replicas (min) x 24 h x $2.99 + (40 h x $150 + 100 + 200 + 100) x 24 / 730
    assert sh["cost_usd"] == pytest.approx(2 * 24 * 2.99 + 6400 * 24 / 730)
    assert sh["cost_detail"]["engineering_usd"] == pytest.approx(6000 * 24 / 730)
    assert entries[1]["arms"]["selfhosted"]["cumulative_usd"] == pytest.approx(2 * sh["cost_usd"])
    assert sh["projected_monthly_usd"] == pytest.approx(1460 * 2.99 + 6400)


def test_provider_versions(entries):
    d0, d1 = entries[0]["arms"]["cloud"], entries[1]["arms"]["cloud"]
    assert d0["response_models"] == {"gpt-x": 3} and d0["system_fingerprints"] == {"fp_a": 3}
    assert d1["system_fingerprints"] == {"fp_b": 2}
    assert entries[0]["arms"]["selfhosted"]["response_models"] == {}


def test_frame_is_tidy(entries):
    f = daily_frame(entries)
    assert list(f.columns) == ["day", "arm", "metric", "value"]
    one = f[(f.day == 0) & (f.arm == "cloud")].set_index("metric")["value"]
    assert one["requests"] == 4 and one["retry_rate"] == 0.25
    assert one["ttft_p50"] == pytest.approx(1.425) and np.isnan(one["ttft_p99"])
    assert one["ttft_n_answered"] == 3
    assert one["quality:exact_match:math"] == 0.5 and one["tickets:refusal"] == 1
    assert not f.duplicated(["day", "arm", "metric"]).any()


def test_day_from_arrival_when_t_virtual_is_null(tmp_path):
    """Older rows without t_virtual: the arrival on the clock decides the day (same days)."""
    run = _write(tmp_path / "run", _records(virtual=False))
    e = daily_entries(load_run(run), CLOCK)
    assert [x["day"] for x in e] == [0, 1]
    assert e[0]["arms"]["cloud"]["requests"] == 4
    assert e[0]["arms"]["cloud"]["quality"] == {}  # no saved scores table: no quality


def test_accelerated_clock_days(tmp_path):
    """t_virtual on an accelerated clock: 1 wall second = 1 experiment hour."""
    recs = []
    for i in range(6):  # arrivals every 10 wall s -> t_virtual every 10 h
        wall = 10.0 * i
        r = _att("selfhosted", f"r{i}", 0, wall, wall, ttft=0.1, end=wall + 1, prompt=1, out=1)
        r.t_virtual = T0 + int(wall * 3600 * NS)
        recs.append(r)
    run = _write(tmp_path / "run", recs)
    e = daily_entries(load_run(run), ExperimentClock(origin_ns=T0, time_scale=3600))
    # 0, 10, 20 h -> day 0; 30, 40 h -> day 1; 50 h -> day 2
    assert [(x["day"], x["arms"]["selfhosted"]["requests"]) for x in e] == [(0, 3), (1, 2), (2, 1)]


def test_daily_entries_feed_drift_detection(tmp_path):
    """A 12-day run: the API arm's TTFT triples from day 8 with a new fingerprint; the
    self-hosted control stays put. daily -> drift names day 8 and calls it provider drift."""
    from harness.canary.drift import drift_section
    from harness.canary.settings import DriftConfig

    rng = np.random.default_rng(0)
    recs = []
    for day in range(12):
        for i in range(40):
            t = day * DAY + 600 + i * 60.0
            for arm in ("cloud", "selfhosted"):
                slow = 3.0 if arm == "cloud" and day >= 8 else 1.0
                ttft = float(rng.lognormal(np.log(0.2 * slow), 0.3))
                fp = "fp_b" if day >= 8 else "fp_a"
                recs.append(_att(arm, f"{arm}-{day}-{i}", 0, t, t, ttft=ttft, end=t + ttft + 0.5,
                                 prompt=100, out=10, fp=fp if arm == "cloud" else None))  # fmt: skip
    run = _write(tmp_path / "run", recs)
    entries = daily_entries(load_run(run), CLOCK)
    assert [e["day"] for e in entries] == list(range(12))
    sec = drift_section(entries, api_arm="cloud", control_arm="selfhosted",
                        cfg=DriftConfig(false_alarm_days=600))  # fmt: skip
    by = {(e["arm"], e["metric"]): e for e in sec["series"]}
    cloud = by[("cloud", "ttft_p99")]
    assert cloud["alarm"] and cloud["change_day"] == 8 and cloud["direction"] == "up"
    assert cloud["version_change"]["to"] == "fp_b"
    assert not by[("selfhosted", "ttft_p99")]["alarm"]
    kinds = {a["metric"]: a["kind"] for a in sec["attribution"]}
    assert kinds["ttft_p99"] == "provider drift" and kinds["error_rate"] == "none"


def test_extras_join_rows_by_key_after_the_parts_are_resorted(tmp_path):
    """A running canary compacts its parts between reads (rows re-sorted): the fingerprints,
    days and scores still land on their own rows (joined by arm, request_id, attempt)."""
    import pyarrow.parquet as pq

    from harness.record.reader import read_requests

    run = _write(tmp_path / "run", _records())
    data = load_run(run)
    table = read_requests(run)
    for f in (run / "requests").rglob("*.parquet"):
        f.unlink()
    rev = pa.array(np.arange(table.num_rows)[::-1].copy())
    pq.write_table(table.take(rev), run / "requests" / "compacted.parquet")
    e = daily_entries(data, CLOCK, scores=_scores())
    d0, d1 = e[0]["arms"]["cloud"], e[1]["arms"]["cloud"]
    assert d0["system_fingerprints"] == {"fp_a": 3} and d1["system_fingerprints"] == {"fp_b": 2}
    assert d0["requests"] == 4 and d0["quality_n"]["exact_match"] == 3
    assert d1["quality"]["exact_match"] == 1.0 and d1["quality_n"]["exact_match"] == 1
    assert d0["cumulative_scope"] == "run"
