"""Figures under adverse but ordinary conditions, recomputed from the raw timestamps.

The fixture run has what the happy-path fixtures lack:

- ``cloud``: a hosted API that answers a third of its requests 429 with a 5 s Retry-After,
  retried to success; its tokens arrive 4 per chunk; at the end of the run the harness
  cancels 2 requests in flight and stops 2 more during their retry backoff;
- ``selfhosted``: one token per chunk, 3% of requests time out after 10 s, one straggler
  ends 100 s after the schedule, one request's tokens arrive in a single chunk (TPOT not
  measurable), and one row has an impossible (negative) TTFT.

Every expected value is recomputed here with pandas from ``t_arrival``, ``t_scheduled``,
``t_sent``, ``t_first_token``, ``t_end`` and ``itl_s`` only, never from the derived columns
the fixture wrote.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.record.schema import RequestRecord
from harness.report import build_report

from .conftest import NS, T0, default_manifest, write_run

RATE = 5.0
N = 300  # logical requests per arm
TIMEOUT_S = 10.0
RETRY_WAIT_S = 5.0


def _ok_row(common: dict, sent: int, ttft: float, gaps: list[float], tokens: int) -> RequestRecord:
    first = sent + int(ttft * NS)
    end = first + int(sum(gaps) * NS)
    sched = common["t_scheduled"]
    tpot = ((end - first) / NS) / (tokens - 1) if tokens > 1 and end > first else None
    return RequestRecord(
        **common,
        status="ok",
        t_sent=sent,
        t_first_token=first,
        t_end=end,
        queue_delay_s=(sent - sched) / NS,
        ttft_s=(first - sent) / NS,
        e2e_s=(end - sent) / NS,
        ttft_sched_s=(first - sched) / NS,
        e2e_sched_s=(end - sched) / NS,
        tpot_s=tpot,
        itl_s=gaps,
        prompt_tokens=50,
        completion_tokens=tokens,
        tokens_source="usage",
        finish_reason="length",
        will_retry=False,
    )


def _err_row(
    common: dict, sent: int | None, took: float, etype: str, *, will_retry: bool
) -> RequestRecord:
    sched = common["t_scheduled"]
    end = (sent if sent is not None else sched) + int(took * NS)
    return RequestRecord(
        **common,
        status="error",
        t_sent=sent,
        t_end=end,
        queue_delay_s=(sent - sched) / NS if sent is not None else None,
        error_type=etype,
        http_status=429 if etype == "rate_limited" else None,
        error_message=etype,
        retry_after_s=RETRY_WAIT_S if etype == "rate_limited" else None,
        will_retry=will_retry,
    )


def adverse_records(seed: int = 7) -> list[RequestRecord]:
    rng = np.random.default_rng(seed)
    out: list[RequestRecord] = []
    for arm in ("cloud", "selfhosted"):
        for i in range(N):
            arrival = T0 + int(i / RATE * NS)
            base = dict(run_id="run-adv", experiment="adv", arm=arm, target_kind="sim",
                        request_id=f"{arm}-{i:09d}", pair_id=f"p{i}", sample_id=f"s{i}",
                        slice="all", phase="main", t_arrival=arrival, t_virtual=arrival)  # fmt: skip

            def common(attempt: int, sched: int, base=base) -> dict:
                return {**base, "attempt": attempt, "t_scheduled": sched}

            sent = arrival + int(rng.uniform(0, 0.002) * NS)
            ttft = float(rng.lognormal(np.log(0.15 if arm == "cloud" else 0.08), 0.4))
            if arm == "cloud":
                chunks = int(rng.integers(3, 8))
                gaps = [float(g) for g in rng.uniform(0.02, 0.06, chunks - 1)]
                if i >= N - 2:  # in flight when the run stopped
                    out.append(_err_row(common(0, arrival), sent, 0.3, "cancelled",
                                        will_retry=False))  # fmt: skip
                    continue
                if i % 3 == 0 or i >= N - 4:  # 429, then a retry after the Retry-After wait
                    out.append(_err_row(common(0, arrival), sent, 0.05, "rate_limited",
                                        will_retry=True))  # fmt: skip
                    if i >= N - 4:  # the run stopped during the backoff: no retry row
                        continue
                    retry_sched = sent + int((0.05 + RETRY_WAIT_S) * NS)
                    out.append(_ok_row(common(1, retry_sched), retry_sched + 1000, ttft, gaps,
                                       4 * chunks))  # fmt: skip
                    continue
                out.append(_ok_row(common(0, arrival), sent, ttft, gaps, 4 * chunks))
                continue
            # selfhosted
            if i % 33 == 5:  # 3% time out before the first token
                out.append(_err_row(common(0, arrival), sent, TIMEOUT_S, "timeout",
                                    will_retry=False))  # fmt: skip
                continue
            k = int(rng.integers(4, 12))
            gaps = [float(g) for g in rng.uniform(0.01, 0.02, k - 1)]
            if i == N // 2:  # the straggler: ends 100 s after the last arrival
                gaps[-1] = (N - i) / RATE + 100.0
            if i == 7:  # all tokens in one chunk: TPOT not measurable
                out.append(_ok_row(common(0, arrival), sent, ttft, [], 5))
                continue
            rec = _ok_row(common(0, arrival), sent, ttft, gaps, k)
            if i == 11:  # an impossible row: first token before the request was sent
                rec.t_first_token = sent - int(0.069 * NS)
                rec.ttft_s = -0.069
            out.append(rec)
    return out


@pytest.fixture(scope="module")
def adverse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, pd.DataFrame]:
    manifest = default_manifest(run_id="run-adv", experiment="adv")
    manifest["config"]["analysis"]["slo"] = {"ttft_s": 10.0, "tpot_s": None, "e2e_s": 30.0}
    manifest["config"]["analysis"]["bootstrap_resamples"] = 200
    run = write_run(tmp_path_factory.mktemp("adv") / "adv" / "run-adv", adverse_records(),
                    manifest=manifest, parts=4)  # fmt: skip
    build_report(run)
    s = json.loads((run / "summary.json").read_text())
    files = sorted((run / "requests").rglob("*.parquet"))
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return run, s, df


def _secs(x: pd.Series) -> np.ndarray:
    return (x - pd.Timestamp(T0, tz="UTC")).dt.total_seconds().to_numpy()


def _logical(df: pd.DataFrame) -> pd.DataFrame:
    """Per logical request from raw timestamps: final attempt, outcome, latencies."""
    df = df.sort_values(["arm", "request_id", "attempt"])
    final = df.groupby(["arm", "request_id"], sort=False).tail(1).copy()
    cancelled = (final["error_type"] == "cancelled") | (
        (final["status"] != "ok") & final["will_retry"].fillna(False).astype(bool)
    )
    final["outcome"] = np.where(final["status"] == "ok", "ok",
                                np.where(cancelled, "cancelled", "failed"))  # fmt: skip
    arr = _secs(final["t_arrival"])
    final["req_ttft"] = _secs(final["t_first_token"]) - arr
    final["req_e2e"] = _secs(final["t_end"]) - arr
    for col in ("req_ttft", "req_e2e"):
        final.loc[final["outcome"] == "failed", col] = np.inf
        final.loc[final["outcome"] == "cancelled", col] = np.nan
    bad = (final["status"] == "ok") & (final["t_first_token"] < final["t_sent"])
    final.loc[bad, ["req_ttft", "req_e2e"]] = np.nan
    return final


def _q(v: np.ndarray, q: float) -> float:
    """Type-7 quantile with +inf as a censored value: +inf when interpolation touches one."""
    v = np.sort(v)
    h = (v.size - 1) * q
    j, g = int(math.floor(h)), h - math.floor(h)
    k = min(j + 1, v.size - 1)
    if math.isinf(v[j]) or (g > 0 and math.isinf(v[k])):
        return math.inf
    return float(v[j] + g * (v[k] - v[j]))


def _json_q(x: float) -> float | None:
    return None if math.isinf(x) else x


def test_each_arm_has_its_own_window(adverse):
    """Item 1: the selfhosted straggler (100 s late) must not dilute cloud's throughput."""
    _, s, df = adverse
    for arm, g in df.groupby("arm"):
        g = g[g["error_type"] != "cancelled"]
        lo = min(_secs(g["t_scheduled"]).min(), np.nanmin(_secs(g["t_sent"])))
        hi = max(np.nanmax(_secs(g["t_end"])), np.nanmax(_secs(g["t_sent"])))
        th = s["throughput"][arm]
        assert th["duration_s"] == pytest.approx(hi - lo, rel=1e-9)
        n_ok = int((g["status"] == "ok").sum())
        assert th["request_rps"] == pytest.approx(n_ok / (hi - lo))
        tokens = g.loc[g["status"] == "ok", "completion_tokens"].sum()
        assert th["output_tps"] == pytest.approx(tokens / (hi - lo))
        assert s["goodput"][arm]["rate_rps"] == pytest.approx(
            s["goodput"][arm]["meeting_slo"] / (hi - lo)
        )
    # cloud's last retry ends ~5 s after its last arrival: ~4.6 req/s, not ~0.8
    assert 4.0 < s["throughput"]["cloud"]["request_rps"] < 5.0
    assert s["throughput"]["selfhosted"]["duration_s"] > 150


def test_request_latency_includes_retries_and_backoff(adverse):
    """Item 2: request_ttft/e2e from t_arrival through the final attempt; p99 shows the 5 s
    Retry-After wait that per-attempt figures never see."""
    _, s, df = adverse
    lr = _logical(df)
    for arm, g in lr.groupby("arm"):
        kept = g[g["outcome"] != "cancelled"]
        for key, col in (("request_ttft_s", "req_ttft"), ("request_e2e_s", "req_e2e")):
            v = kept[col].dropna().to_numpy()
            st = s["latency"][arm][key]
            assert st["n"] == v.size, (arm, key)
            assert st["censored_n"] == int(np.isinf(v).sum())
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999)):
                want = _q(v, q)
                assert st[name] == (pytest.approx(want) if math.isfinite(want) else None), (
                    arm, key, name)  # fmt: skip
                assert (name in st["censored"]) == math.isinf(want)
            assert st["mean"] == pytest.approx(v[np.isfinite(v)].mean())
    cloud = s["latency"]["cloud"]
    assert cloud["request_e2e_s"]["p99"] > RETRY_WAIT_S  # the wait is in the user's latency
    assert cloud["e2e_s"]["p99"] < 1.0  # ... and in no attempt's
    assert cloud["request_ttft_s"]["p50"] < 1.0


def test_goodput_and_failures_per_logical_request(adverse):
    """Item 3: every cloud request eventually succeeded: 100% goodput and no tickets per
    request, while per attempt a third failed; harness cancellations are counted apart."""
    _, s, df = adverse
    lr = _logical(df)
    cloud = lr[lr["arm"] == "cloud"]
    assert (cloud["outcome"] == "cancelled").sum() == 4
    g, e = s["goodput"]["cloud"], s["errors"]["cloud"]
    assert g["requests"] == N - 4 and g["cancelled"] == 4
    assert g["share"] == 1.0 and g["meeting_slo"] == N - 4
    assert e["requests"] == N - 4 and e["errors"] == 0 and e["per_1000"] == 0
    assert e["cancelled"] == 4 and e["per_attempt"]["cancelled"] == 2
    att = df[(df["arm"] == "cloud") & (df["error_type"] != "cancelled")]
    n_429 = int((att["error_type"] == "rate_limited").sum())
    assert e["per_attempt"]["attempts"] == len(att)
    assert e["per_attempt"]["errors"] == n_429
    assert e["per_attempt"]["per_1000"] == pytest.approx(1000 * n_429 / len(att))
    assert g["per_attempt"]["share"] == pytest.approx((len(att) - n_429) / len(att))
    assert "cancelled" not in e["by_type"] and "cancelled" not in e["per_attempt"]["by_type"]
    # retries: attempts with attempt > 0 per logical request (cancelled ones included)
    assert e["retry_rate"] == pytest.approx((df[df["arm"] == "cloud"]["attempt"] > 0).sum() / N)


def test_timeouts_are_censored_never_dropped(adverse):
    """Item 4: selfhosted's 3% timeouts are in its latency distributions as censored
    values, so its p99 is 'censored', not better; the SLO counts them as misses."""
    _, s, df = adverse
    sh = df[df["arm"] == "selfhosted"]
    n_to = int((sh["error_type"] == "timeout").sum())
    assert n_to == 9
    lat = s["latency"]["selfhosted"]
    for key in ("ttft_s", "e2e_s", "request_ttft_s", "request_e2e_s"):
        st = lat[key]
        assert st["censored_n"] == n_to, key
        assert st["p99"] is None and "p99" in st["censored"] and st["p95"] is not None
    ok = sh[(sh["status"] == "ok") & (sh["t_first_token"] >= sh["t_sent"])]
    assert lat["e2e_s"]["n"] == len(ok) + n_to
    # if timeouts were dropped, the straggler would be the max and p99 a finite number
    g = s["goodput"]["selfhosted"]
    lr = _logical(df)
    shl = lr[lr["arm"] == "selfhosted"]
    meets = (shl["outcome"] == "ok") & (shl["req_ttft"] <= 10.0) & (shl["req_e2e"] <= 30.0)
    # the row the data checks rejected is neither a hit nor a miss
    assert g["meeting_slo"] == int(meets.sum()) and g["requests"] == len(shl) - 1
    assert g["rejected"] == 1
    assert s["errors"]["selfhosted"]["by_type"]["timeout"]["count"] == n_to
    memo = (adverse[0] / "memo.md").read_text()
    assert "censored" in memo
    cmp = s["comparison"]["pairs"][0]["metrics"]["request_e2e_s"]["p99"]
    assert cmp["censored"] == "other" and cmp["slower"] == "other"
    # over time, the bins holding timeouts show them as censored, not a finite tail
    pts = s["latency_over_time"]["arms"]["selfhosted"]["e2e_s"]
    assert sum(p["censored"] for p in pts) == n_to
    assert all(p["p99"] is None for p in pts if p["censored"])
    assert sum(p["n"] for p in pts) == lat["e2e_s"]["n"]


def test_tpot_null_for_one_chunk_and_tokens_per_chunk(adverse):
    """Item 6: one multi-token chunk has no TPOT (not 0); the chunking of each arm is shown."""
    _, s, df = adverse
    ok = df[df["status"] == "ok"]
    one = ok[ok["itl_s"].map(len) == 0]
    assert len(one) == 1 and pd.isna(one["tpot_s"]).all()
    for arm, g in ok.groupby("arm"):
        chunks = g["itl_s"].map(len).sum() + len(g)
        assert s["throughput"][arm]["tokens_per_chunk"] == pytest.approx(
            g["completion_tokens"].sum() / chunks
        )
    assert s["throughput"]["cloud"]["tokens_per_chunk"] == pytest.approx(4.0)
    # TPOT from raw timestamps: (t_end - t_first_token) / (tokens - 1), multi-chunk ok rows
    sh = ok[(ok["arm"] == "selfhosted") & (ok["itl_s"].map(len) > 0)]
    sh = sh[sh["t_first_token"] >= sh["t_sent"]]
    tpot = (_secs(sh["t_end"]) - _secs(sh["t_first_token"])) / (sh["completion_tokens"] - 1)
    assert s["latency"]["selfhosted"]["tpot_s"]["n"] == len(sh)
    assert s["latency"]["selfhosted"]["tpot_s"]["p50"] == pytest.approx(np.median(tpot))
    assert any("tokens per chunk" in c for c in s["caveats"])
    assert "Request TTFT" in (adverse[0] / "memo.md").read_text()


def test_impossible_rows_are_named_not_averaged(adverse):
    """Data checks: the negative TTFT row is left out of every latency figure, and named."""
    _, s, df = adverse
    note = [c for c in s["caveats"] if "impossible latencies" in c]
    assert note and "selfhosted-000000011 attempt 0" in note[0]
    assert s["latency"]["selfhosted"]["ttft_s"]["mean"] > 0
    sh = df[(df["arm"] == "selfhosted") & (df["status"] == "ok")]
    good = sh[sh["t_first_token"] >= sh["t_sent"]]
    ttft = _secs(good["t_first_token"]) - _secs(good["t_sent"])
    assert s["latency"]["selfhosted"]["ttft_s"]["mean"] == pytest.approx(ttft.mean())


def test_difference_ci_through_censored_values_is_unbounded_not_huge():
    """A bootstrap replicate touching a censored value must give an unbounded (inf) bound,
    never a stand-in-sized number like -1e10 s."""
    from harness.analysis.compare import compare_samples
    from harness.analysis.stats import BootstrapSettings

    rng = np.random.default_rng(3)
    for n, nc in ((500, 2), (3000, 21)):
        a = np.sort(rng.exponential(1.0, n))
        a[-nc:] = np.inf
        b = np.sort(rng.exponential(1.0, n))
        res = compare_samples({"e2e_s": a}, {"e2e_s": b}, BootstrapSettings(resamples=400))
        span = float(max(a[np.isfinite(a)].max(), b.max()))
        for q in ("p50", "p99"):
            x = res["metrics"]["e2e_s"][q]
            for bound in x["ci"]:
                assert math.isnan(bound) or math.isinf(bound) or abs(bound) <= span, (n, q, x)
        for pt in res["shift"]["e2e_s"]:
            assert all(math.isinf(v) or abs(v) <= span for v in pt["ci"] if not math.isnan(v))


def test_negative_itl_gap_is_left_out_and_named(tmp_path: Path):
    recs = adverse_records()
    bad = next(r for r in recs if r.arm == "cloud" and r.status == "ok" and r.itl_s)
    bad.itl_s = [-5.0, *bad.itl_s[1:]]
    manifest = default_manifest(run_id="run-adv", experiment="adv")
    run = write_run(tmp_path / "adv" / "run-adv", recs, manifest=manifest)
    s = build_report(run)
    assert s["latency"]["cloud"]["itl_s"]["mean"] > 0
    assert any("negative or infinite inter-chunk gap" in c for c in s["caveats"])
