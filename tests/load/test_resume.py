"""Resuming a run in place (``resume=RUN_ID`` / ``resume=latest``): checks, clock, segments.

The end-to-end test runs a compressed 3-day month on the embedded simulators, SIGKILLs the
harness midway and resumes it; the others check the pieces (schedule skipping, config
comparison, lock, daily report children) without starting a run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from harness.canary.clock import ExperimentClock
from harness.config import ConfigError, LoadConfig
from harness.load.arrivals import build_schedule
from harness.load.daily import DailyReports
from harness.load.engine import arrivals_from, first_index_at
from harness.load.resume import (
    MAY_DIFFER,
    check_same_config,
    downtime_entry,
    find_run,
    first_difference,
    last_sign_of_life_ns,
    open_resumable,
)
from harness.record.manifest import RunLock, write_json_atomic
from tests.load.e2e import ROOT, manifest, run_harness, spawn_harness

# -- the schedule continues where it was -------------------------------------------------


def _load(**kw) -> LoadConfig:
    base = {"arrival": "poisson", "rate": 50.0, "duration_s": 100.0, "seed": 3}
    return LoadConfig(**{**base, **kw})


@pytest.mark.parametrize("arrival", ["constant", "poisson"])
@pytest.mark.parametrize("workers", [1, 3])
def test_arrivals_from_skips_exactly_the_past(arrival, workers):
    sched = build_schedule(_load(arrival=arrival), ROOT)
    offsets = np.array(list(sched.offsets()))
    assert len(offsets) > 4000  # several numpy blocks (the first holds 1024)
    for start_s in (0.0, 0.013, 20.5, 41.0, 99.99, 150.0):
        for w in range(workers):
            got = list(arrivals_from(sched, w, workers, start_s))
            want = [(i, o) for i, o in sched.for_worker(w, workers) if o >= start_s]  # the slow way
            assert got == want
        assert first_index_at(sched, start_s) == int(np.sum(offsets < start_s))


def test_resumed_indices_never_repeat_and_cover_the_rest():
    sched = build_schedule(_load(), ROOT)
    before = [i for i, o in sched.for_worker(0, 1) if o < 37.0]
    after = [i for i, _ in arrivals_from(sched, 0, 1, 37.0)]
    assert not set(before) & set(after)
    assert before + after == list(range(len(before) + len(after)))


# -- comparing the stored config with the one composed now -------------------------------


def test_first_difference_names_the_first_key_in_order():
    stored = {"load": {"rate": 2.0, "seed": 0}, "run_id": None, "arms": {"a": {"x": [1, 2]}}}
    assert first_difference(stored, json.loads(json.dumps(stored))) is None
    now = {"load": {"rate": 2, "seed": 1}, "run_id": "r9", "arms": {"a": {"x": [1, 3]}}}
    assert first_difference(stored, now) == ("load.seed", 0, 1)  # 2 == 2.0; run_id may differ
    now["load"]["seed"] = 0
    assert first_difference(stored, now) == ("arms.a.x", [1, 2], [1, 3])
    key, was, new = first_difference({"a": {}}, {"a": {"b": 1}})
    assert key == "a.b" and new == 1
    assert set(MAY_DIFFER) == {"resume", "run_id", "progress_interval_s"}


def test_check_same_config_ignores_may_differ_and_compares_redacted():
    cfg = {
        "load": {"rate": 4.0, "duration_s": float("inf")},
        "resume": None,
        "progress_interval_s": 5.0,
        "arms": {"cloud": {"api_key": "sk-live-abcdef0123456789"}},
    }
    from harness.record.manifest import redact

    stored = json.loads(json.dumps(redact(cfg), allow_nan=True))
    assert "sk-live" not in json.dumps(stored)
    check_same_config(stored, {**cfg, "resume": "latest", "progress_interval_s": 1.0}, "r1")
    with pytest.raises(ConfigError) as e:
        check_same_config(stored, {**cfg, "load": {"rate": 5.0, "duration_s": 1e9}}, "r1")
    assert str(e.value).startswith("load.rate: 5.0 differs from 4.0 in run 'r1'")


# -- finding and opening the run ---------------------------------------------------------


def _fake_run(reports: Path, run_id: str, status: str, started_at: str, **extra) -> Path:
    run_dir = reports / "smoke" / run_id
    run_dir.mkdir(parents=True)
    data = {"run_id": run_id, "status": status, "started_at": started_at, "config": {}, **extra}
    write_json_atomic(run_dir / "manifest.json", data)
    return run_dir


def test_latest_is_the_newest_run_that_did_not_complete(reports):
    _fake_run(reports, "a", "interrupted", "2026-01-01T00:00:00.000Z")
    _fake_run(reports, "b", "running", "2026-01-03T00:00:00.000Z")
    _fake_run(reports, "c", "completed", "2026-01-05T00:00:00.000Z")
    (reports / "smoke" / "d").mkdir()  # no manifest: not a run
    assert find_run(reports, "smoke", "latest").name == "b"
    assert find_run(reports, "smoke", "a").name == "a"
    with pytest.raises(ConfigError, match="no run 'zz' of experiment 'smoke'"):
        find_run(reports, "smoke", "zz")
    with pytest.raises(ConfigError, match="not a simple name"):
        find_run(reports, "smoke", "../smoke/a")
    with pytest.raises(ConfigError, match="has no run that did not complete"):
        find_run(reports, "other", "latest")


def test_open_resumable_refuses_completed_unreadable_and_live_runs(reports):
    done = _fake_run(reports, "done", "completed", "x", ended_at="2026-01-02T00:00:00.000Z")
    with pytest.raises(ConfigError, match="completed at 2026-01-02.*nothing to resume"):
        open_resumable(done)
    bad = reports / "smoke" / "bad"
    bad.mkdir(parents=True)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read its manifest"):
        open_resumable(bad)
    live = _fake_run(reports, "live", "running", "x")
    holder = RunLock(live)
    assert holder.acquire()  # a live run holds its lock
    try:
        with pytest.raises(ConfigError, match="is still running"):
            open_resumable(live)
    finally:
        holder.release()
    m, lock = open_resumable(live)  # a killed run leaves the lock free: resumable
    assert m.data["status"] == "running"
    lock.release()


def test_last_sign_of_life_and_downtime(tmp_path):
    import pyarrow as pa

    req = tmp_path / "requests" / "day=000" / "arm=a"
    req.mkdir(parents=True)
    ts = pa.timestamp("ns", tz="UTC")
    pq.write_table(
        pa.table({"t_end": pa.array([5_000, None], ts), "t_sent": pa.array([4_000, 9_500], ts)}),
        req / "w0-part-000001.parquet",
    )
    (tmp_path / "metrics").mkdir()
    pq.write_table(
        pa.table({"t": pa.array([7_000], ts)}), tmp_path / "metrics" / "m-part-1.parquet"
    )
    pq.write_table(pa.table({"t_end": pa.array([99_000], ts)}), req / ".w0-part-9.parquet.tmp")
    assert last_sign_of_life_ns(tmp_path) == 9_500
    clock = ExperimentClock(origin_ns=0, time_scale=1000.0, day_s=10.0)
    gap = downtime_entry(clock, 12_000_000, 31_000_000)  # 19 ms wall = 19 s virtual
    assert gap["wall_s"] == pytest.approx(0.019) and gap["virtual_s"] == pytest.approx(19.0)
    assert (gap["from_day"], gap["to_day"]) == (1, 3)


# -- daily reports: children of their own -------------------------------------------------

_CHILD = (
    "import os, sys, time; time.sleep(0.3); "
    "open(sys.argv[1], 'a').write(f'{sys.argv[2]} {os.getsid(0)} {os.nice(0)}\\n'); "
    "sys.exit(3 if sys.argv[2] == '1' else 0)"
)


def test_daily_reports_one_at_a_time_own_session_low_priority_reaped(tmp_path):
    out = tmp_path / "children.txt"
    clock = ExperimentClock(origin_ns=0, time_scale=1.0, day_s=1.0)
    saved = []
    daily = DailyReports(
        tmp_path,
        ROOT,
        clock,
        n_days=5,
        grace_s=0.5,
        command=lambda run_dir, day: [sys.executable, "-c", _CHILD, str(out), str(day)],
        written=[2],  # an earlier segment wrote day 2's report
        on_change=lambda: saved.append(daily.summary()),
    )
    daily.tick(int(2.4e9))  # 1.9 s with the grace taken off: day 0 ended, day 1 goes on
    assert daily.proc is not None and daily.pending == []
    daily.tick(int(2.6e9))  # day 1 ended too
    assert daily.pending == [1]
    pid = daily.proc.pid
    daily.tick(int(2.7e9))
    assert daily.pending == [1] and daily.proc.pid == pid  # never two at a time
    daily.close(int(9e9), wait_s=20)  # days 3 and 4 too (none past the run), then reaped
    assert daily.proc is None and not daily.pending
    lines = [ln.split() for ln in out.read_text().splitlines()]
    assert [int(ln[0]) for ln in lines] == [0, 1, 3, 4]  # day 2 not again
    assert all(int(sid) != os.getsid(0) for _, sid, _ in lines)  # own session: no Ctrl-C
    assert all(int(nice) == min(19, os.nice(0) + 19) for _, _, nice in lines)  # lowest
    # day 1's child failed (exit 3): counted, the others went on
    assert daily.summary() == {"written": [0, 2, 3, 4], "failed": [1]}
    assert saved[-1] == daily.summary() and len(saved) == 4  # saved as each child ended
    assert (tmp_path / "daily_reports.log").read_text().count("--day") == 4


# -- config errors: one line, exit 2 -----------------------------------------------------


def _composed(reports: Path, *overrides: str) -> dict:
    from hydra import compose, initialize_config_dir

    from harness.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=smoke", f"record.reports_dir={reports}",
                                           *overrides])  # fmt: skip
    return OmegaConf.to_container(cfg, resolve=True)


def _stored_run(reports: Path, status: str, *overrides: str) -> Path:
    from harness.record.manifest import redact

    return _fake_run(
        reports,
        "r1",
        status,
        "2026-01-01T00:00:00.000Z",
        config=redact(_composed(reports, *overrides)),
        ended_at="2026-01-01T01:00:00.000Z" if status != "running" else None,
    )


def _one_line_config_error(res, *needles: str) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert len(lines) == 1 and lines[0].startswith("config error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "case, status, extra, needles",
    [
        ("missing", None, ["resume=nope"], ["resume: no run 'nope' of experiment 'smoke'"]),
        ("completed", "completed", ["resume=r1"], ["resume: run 'r1' completed", "nothing"]),
        (
            "mismatch",
            "interrupted",
            ["resume=latest", "load.rate=7"],
            ["load.rate: 7.0 differs from 4.0 in run 'r1'"],
        ),  # fmt: skip
        (
            "closed",
            "interrupted",
            ["resume=r1", "load.mode=closed", "load.concurrency=2"],
            ["load.mode: only open-loop runs can be resumed"],
        ),  # fmt: skip
    ],
)
def test_resume_config_errors_are_one_line_exit_2(reports, case, status, extra, needles):
    if status is not None:
        run_dir = _stored_run(reports, status)
        before = (run_dir / "manifest.json").read_text()
    res = run_harness(["experiment", "experiment=smoke", f"record.reports_dir={reports}", *extra],
                      timeout=90)  # fmt: skip
    _one_line_config_error(res, *needles)
    if status is not None:
        assert (run_dir / "manifest.json").read_text() == before  # untouched
        assert not (run_dir / "requests").exists()


# -- end to end: a compressed month, SIGKILLed midway and resumed ------------------------

SCALE = 8640  # a 86400 s experiment day in 10 wall seconds
FLUSH_S = 1.0
TIMEOUT_S = 2.0  # each attempt's total timeout (and one attempt only: no retries later)


def _month_args(reports: Path, *extra: str) -> list[str]:
    return [
        "experiment",
        "experiment=smoke",
        f"record.reports_dir={reports}",
        "progress_interval_s=1",
        "load.warmup_s=0",
        "load.arrival=constant",
        "load.rate=3",
        "load.duration_s=30",  # 3 experiment-clock days
        f"load.time_scale={SCALE}",
        "canary.enabled=true",
        "canary.daily_reports=false",
        f"record.flush_interval_s={FLUSH_S:g}",
        f"arms.cloud.timeouts.total_s={TIMEOUT_S:g}",
        f"arms.selfhosted.timeouts.total_s={TIMEOUT_S:g}",
        "arms.cloud.retry.max_attempts=1",
        "arms.selfhosted.retry.max_attempts=1",
        "analysis.report=false",
        *extra,
    ]


def _wait_segment_t0(proc: subprocess.Popen, run_dir: Path, index: int) -> dict:
    """The manifest once segment ``index`` fixed its t0 (the harness still running)."""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            m = manifest(run_dir)
        except (OSError, ValueError):
            m = {}
        segs = m.get("segments") or []
        if len(segs) > index and segs[index].get("t0_ns") is not None:
            return m
        time.sleep(0.1)
    raise AssertionError(f"segment {index} never fixed its t0")


def _read_all(run_dir: Path):
    from harness.record.reader import read_requests

    cols = ["request_id", "attempt", "arm", "t_scheduled", "t_virtual", "status"]
    table = read_requests(run_dir, columns=cols)
    df = table.to_pandas()
    for c in ("t_scheduled", "t_virtual"):
        df[c] = df[c].astype("int64")
    return df


@pytest.mark.slow
def test_sigkill_midway_then_resume_latest_completes_the_month(reports):
    t_start = time.monotonic()
    proc = spawn_harness(_month_args(reports, "run_id=month1"))
    run_dir = reports / "smoke" / "month1"
    try:
        seg0 = _wait_segment_t0(proc, run_dir, 0)
        origin = seg0["clock"]["origin_ns"]
        time.sleep(max(0.0, (origin + 12e9 - time.time_ns()) / 1e9))  # 1.2 days in
        kill_ns = time.time_ns()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    killed = manifest(run_dir)
    assert killed["status"] == "running"  # a SIGKILL never closes the manifest
    on_disk = _read_all(run_dir)  # everything flushed before the kill
    assert len(on_disk)

    proc = spawn_harness(_month_args(reports, "resume=latest"))
    try:
        during = _wait_segment_t0(proc, run_dir, 1)
        assert during["status"] == "running"  # back to running while the segment runs
        assert during["segments"][0]["status"] == "aborted"
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 0, out[-4000:]
    assert "harness downtime" in out and "day 2 of 0-2" in out
    m = manifest(run_dir)
    assert m["status"] == "completed" and m["run_id"] == "month1"
    clock = m["clock"]
    assert clock == {"origin_ns": origin, "time_scale": SCALE, "day_s": 86400.0}
    segs = m["segments"]
    assert [s["index"] for s in segs] == [0, 1]
    assert [s["status"] for s in segs] == ["aborted", "completed"]
    assert segs[0]["t0_ns"] == origin and segs[0]["first_index"] == 0
    t1 = segs[1]["t0_ns"]
    assert t1 > kill_ns
    (gap,) = m["downtime"]
    assert kill_ns - 3e9 <= gap["from_ns"] <= kill_ns < gap["to_ns"] == t1
    assert gap["wall_s"] == pytest.approx((t1 - gap["from_ns"]) / 1e9, abs=1e-3)
    assert gap["virtual_s"] == pytest.approx(gap["wall_s"] * SCALE, rel=1e-3)
    assert gap["from_day"] == 1 and gap["to_day"] in (1, 2)

    df = _read_all(run_dir)
    first = df[df["attempt"] == 0]
    assert not first["request_id"].duplicated().any(), "a request id repeats across segments"
    assert not df.duplicated(["request_id", "attempt"]).any()
    # every arrival scheduled more than a flush interval + a request timeout before the kill
    # has its rows, on both arms; none was sent in the gap; every later one has its rows
    load = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(LoadConfig), m["config"]["load"])
    )
    offsets = list(build_schedule(load, ROOT).offsets())
    sched_ns = np.array([origin + int(o * 1e9) for o in offsets])  # as the engine does
    bound_ns = (FLUSH_S + TIMEOUT_S + 1.0) * 1e9
    kept = np.flatnonzero(sched_ns < kill_ns - bound_ns)
    gap_idx = np.flatnonzero((sched_ns >= kill_ns) & (sched_ns < t1))
    later = np.flatnonzero(sched_ns >= t1)
    assert len(kept) >= 15 and len(gap_idx) >= 3 and len(later) >= 10
    assert segs[1]["first_index"] == later[0]
    for arm in ("cloud", "selfhosted"):
        ids = set(first.loc[first["arm"] == arm, "request_id"])
        assert {f"{arm}-{i:09d}" for i in kept} <= ids, f"{arm}: rows lost beyond one flush"
        assert not {f"{arm}-{i:09d}" for i in gap_idx} & ids, f"{arm}: rows in the downtime"
        assert {f"{arm}-{i:09d}" for i in later} <= ids, f"{arm}: resumed arrivals missing"
        assert len(ids) <= len(offsets)
    # the experiment clock: one origin for both segments, t_virtual after the gap
    expect_v = origin + (df["t_scheduled"] - origin) * SCALE
    assert (df["t_virtual"] - expect_v).abs().max() < 1e4
    exp_clock = ExperimentClock(origin, SCALE, 86400.0)
    after = df[df["t_scheduled"] >= t1]
    assert len(after) and after["t_virtual"].min() >= exp_clock.virtual_ns(t1)
    assert (df["t_virtual"].max() - df["t_virtual"].min()) / 1e9 >= 2.5 * 86400
    # whatever was on disk at the kill is still there, once (compaction or not)
    pairs = set(zip(df["request_id"], df["attempt"], strict=True))
    assert set(zip(on_disk["request_id"], on_disk["attempt"], strict=True)) <= pairs
    assert len(pairs) == len(df)
    compacted = sorted((run_dir / "requests").rglob("*-compact-g*.parquet"))
    if compacted:  # day partitions compacted: one file per day per arm, nothing else left
        folders = sorted({p.parent for p in (run_dir / "requests").rglob("*.parquet")})
        days = sorted({f.parent.name for f in folders})
        assert days == ["day=000", "day=001", "day=002"], folders
        for folder in folders:
            files = [p.name for p in folder.glob("*.parquet")]
            assert len(files) == 1 and "-compact-g" in files[0], (folder, files)
        assert sum(pq.ParquetFile(p).metadata.num_rows for p in compacted) == len(df)
    print(f"resume e2e: {time.monotonic() - t_start:.1f} s wall, {len(df)} rows, "
          f"downtime {gap['wall_s']:.1f} s, compacted files {len(compacted)}")  # fmt: skip
