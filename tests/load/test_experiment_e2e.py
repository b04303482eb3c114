"""End-to-end experiments against the embedded simulators (slow: real processes, real time).

Each test runs `python -m harness experiment ...` in a subprocess, exactly as a user does,
with results written under a temporary reports directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.load.e2e import ROOT, manifest, only_run_dir, read_rows, run_harness, smoke_args

pytestmark = pytest.mark.slow


def _base(reports, *extra: str) -> list[str]:
    return smoke_args(reports, *extra)


def test_smoke_mirrored_constant_rate(reports):
    rate, duration = 10.0, 6.0
    res = run_harness(
        _base(
            reports,
            "load.arrival=constant",
            f"load.rate={rate}",
            f"load.duration_s={duration}",
            "workload.output_tokens.mean=16",
            "analysis.report=false",
        )
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run_dir = only_run_dir(reports)
    m = manifest(run_dir)
    assert m["status"] == "completed"
    assert set(m["arms"]) == {"cloud", "selfhosted"}
    assert (reports / "latest").resolve() == run_dir.resolve()
    df = read_rows(run_dir)
    first = df[df.attempt == 0]
    # every arrival went to both arms, with the same pair_id and sample_id
    per_arm = first.groupby("arm").size()
    assert set(per_arm.index) == {"cloud", "selfhosted"}
    n_expected = int(rate * duration)
    assert abs(per_arm["cloud"] - n_expected) <= 1 and per_arm["cloud"] == per_arm["selfhosted"]
    pairs = first.groupby("pair_id").agg(n=("arm", "nunique"), s=("sample_id", "nunique"))
    assert (pairs.n == 2).all() and (pairs.s == 1).all()
    # mirrored: both arms' requests of a pair were scheduled at the same instant
    sched = first.groupby("pair_id").t_scheduled.nunique()
    assert (sched == 1).all()
    # delivered rate: sends track the schedule (client not saturated at this rate)
    sent = first.t_sent.astype("int64").to_numpy() / 1e9
    queue = first.queue_delay_s.to_numpy()
    assert np.median(queue) < 0.01
    span = sent.max() - sent.min()
    delivered = (len(sent) / 2 - 1) / span
    assert abs(delivered - rate) / rate < 0.02
    ok = df[df.status == "ok"]
    assert len(ok) > 0.9 * len(df)
    assert (ok.ttft_s > 0).all() and (ok.e2e_s >= ok.ttft_s).all()
    assert set(df.phase) == {"main"}
    assert "progress" in res.stdout or "p50 TTFT" in res.stdout


def test_poisson_rate_and_report(reports):
    rate, duration = 20.0, 8.0
    res = run_harness(
        _base(reports, f"load.rate={rate}", f"load.duration_s={duration}", "load.warmup_s=1")
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run_dir = only_run_dir(reports)
    df = read_rows(run_dir)
    first = df[(df.attempt == 0) & (df.arm == "selfhosted")]
    # Poisson count over the window: within 4 sigma of rate*duration
    n = len(first)
    assert abs(n - rate * duration) < 4 * np.sqrt(rate * duration)
    # the delivered rate matches the offered schedule within 2%: the scheduled arrivals
    # were all sent, and sends kept pace with the schedule
    sched = np.sort(first.t_scheduled.astype("int64").to_numpy()) / 1e9
    sent = np.sort(first.t_sent.astype("int64").to_numpy()) / 1e9
    offered = (n - 1) / (sched[-1] - sched[0])
    delivered = (n - 1) / (sent[-1] - sent[0])
    assert abs(delivered - offered) / offered < 0.02
    assert set(df.phase) == {"warmup", "main"}
    assert df[df.phase == "warmup"].t_scheduled.max() < df[df.phase == "main"].t_scheduled.min()
    for name in ("summary.json", "report.html", "memo.md"):
        assert (run_dir / name).is_file(), name
    assert "report:" in res.stdout


def test_retries_are_separate_attempts(reports):
    res = run_harness(
        _base(
            reports,
            "load.rate=10",
            "load.duration_s=5",
            "+arms.cloud.sim.params={error_rate:0.4}",
            "+arms.cloud.retry={max_attempts:3,backoff_base_s:0.05,backoff_max_s:0.2}",
            "analysis.report=false",
        )
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    df = read_rows(only_run_dir(reports))
    cloud = df[df.arm == "cloud"]
    retried = cloud[cloud.attempt > 0]
    assert len(retried) > 0
    # each retry shares its request_id with an earlier failed attempt of the same request
    for _rid, g in cloud[cloud.request_id.isin(retried.request_id)].groupby("request_id"):
        g = g.sort_values("attempt")
        assert list(g.attempt) == list(range(len(g)))
        assert (g.status.iloc[:-1] == "error").all()
        assert (g.error_type.iloc[:-1] == "server_error").all()
        assert (g.t_sent.diff().dropna().dt.total_seconds() > 0).all()


def test_distributed_workers_share_one_schedule(reports):
    rate, duration = 10.0, 6.0
    res = run_harness(
        _base(
            reports,
            "load.workers=2",
            "load.arrival=constant",
            f"load.rate={rate}",
            f"load.duration_s={duration}",
            "analysis.report=false",
        )
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run_dir = only_run_dir(reports)
    df = read_rows(run_dir)
    first = df[(df.attempt == 0) & (df.arm == "cloud")]
    # the configured total rate, not workers x rate
    assert abs(len(first) - rate * duration) <= 1
    assert set(first.worker) == {0, 1}
    names = {p.name.split("-part-")[0] for p in (run_dir / "requests").glob("*.parquet")}
    assert names == {"w0", "w1"}
    pairs = df[df.attempt == 0].groupby("pair_id").arm.nunique()
    assert (pairs == 2).all()


def test_closed_loop(reports):
    res = run_harness(
        _base(
            reports,
            "load=closed",
            "load.concurrency=3",
            "load.duration_s=4",
            "workload.output_tokens.mean=8",
            "+arms.cloud.sim.params={ttft_ms:1000,itl_ms:1,itl_jitter:0}",  # the slow arm
            "analysis.report=false",
        )
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    df = read_rows(only_run_dir(reports))
    first = df[df.attempt == 0]
    per_arm = first.groupby("arm").size()
    # each arm runs its own loops: the slow arm (~1 s a request) does not hold the fast one
    # back (~0.15 s), which sends several times as many requests
    assert per_arm["cloud"] >= 6
    assert per_arm["selfhosted"] >= 3 * per_arm["cloud"], per_arm.to_dict()
    # mirrored pairs even in closed loop: the same item order on both arms, so every pair id
    # of the slow arm is on the fast arm too, with the same sample
    pairs = first.groupby("pair_id").agg(n=("arm", "nunique"), s=("sample_id", "nunique"))
    assert (pairs.s == 1).all()
    assert set(first[first.arm == "cloud"].pair_id) <= set(first[first.arm == "selfhosted"].pair_id)
    assert (pairs.n == 2).sum() == per_arm["cloud"]


def test_closed_loop_independent_gives_each_arm_its_own_users(reports):
    res = run_harness(
        _base(
            reports,
            "load=closed",
            "load.concurrency=2",
            "load.pairing=independent",
            "load.duration_s=4",
            "analysis.report=false",
        )
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    df = read_rows(only_run_dir(reports))
    assert df.pair_id.isna().all()
    per_arm = df.groupby("arm").size()
    assert set(per_arm.index) == {"cloud", "selfhosted"}
    # one user per arm, each sending back to back: the faster arm sends more, never zero
    assert per_arm.min() >= 2


def test_sigkill_loses_at_most_one_flush_interval(reports):
    flush = 1.0
    args = _base(
        reports,
        "load.arrival=constant",
        "load.rate=10",
        "load.duration_s=60",
        f"record.flush_interval_s={flush}",
        "analysis.report=false",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        parts = []
        while time.monotonic() < deadline:
            parts = list(reports.glob("*/*/requests/*.parquet"))
            if len(parts) >= 4:
                break
            time.sleep(0.2)
        assert len(parts) >= 4, "no part files appeared"
        time.sleep(1.3)
        t_kill = time.time()
        os.killpg(proc.pid, signal.SIGKILL)  # the harness and its simulators, no cleanup
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run_dir = only_run_dir(reports)
    assert manifest(run_dir)["status"] == "running"  # never closed: it was killed
    table = pq.read_table(run_dir / "requests")  # every part on disk is complete
    t_end = table.column("t_end").cast("int64").to_numpy() / 1e9
    # rows that finished more than one flush interval (+ timer slack) before the kill are on disk
    assert t_end.max() >= t_kill - flush - 0.6
    # and rows are dense up to there: ~2 arms x 10/s from the first to the last row on disk
    span = t_end.max() - t_end.min()
    assert table.num_rows >= 0.9 * 2 * 10 * span


def test_multirun_sweep_writes_sweep_report(reports):
    res = run_harness(
        [
            "experiment",
            "-m",
            "load.rate=2,6",
            "load.duration_s=3",
            "load.warmup_s=0",
            f"record.reports_dir={reports}",
        ],
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = sorted(p.parent for p in reports.glob("smoke/*/manifest.json"))
    assert len(runs) == 2
    rates = sorted(manifest(r)["sweep"]["value"] for r in runs)
    assert rates == [2.0, 6.0]
    sweeps = list(reports.glob("smoke/sweep-*/summary.json"))
    assert len(sweeps) == 1
    assert (sweeps[0].parent / "report.html").is_file()


def test_sigint_flushes_cancels_in_flight_and_closes_manifest(reports):
    args = _base(
        reports,
        "load.arrival=constant",
        "load.rate=5",
        "load.duration_s=60",
        "record.flush_interval_s=30",  # nothing is flushed by the timer: SIGINT must flush
        "+arms.cloud.sim.params={itl_ms:300,itl_jitter:0}",  # cloud streams take ~20 s
        "analysis.report=false",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        for line in proc.stdout:  # wait until traffic flows
            if "selfhosted: " in line and " 0 req" not in line.split("selfhosted:")[1][:6]:
                break
            assert time.monotonic() < deadline
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    run_dir = only_run_dir(reports)
    m = manifest(run_dir)
    assert m["status"] == "interrupted" and "signal" in m["stop_reason"]
    df = read_rows(run_dir)
    cloud = df[df.arm == "cloud"]
    assert len(cloud) > 0 and (cloud.error_type == "cancelled").all()
    assert (cloud.model == "sim-gpt-4o-mini").all() and cloud.sample_id.notna().all()
    hosted = df[df.arm == "selfhosted"]
    assert (hosted.status == "ok").sum() > 0
