"""Signals, dead masters and the last /metrics scrape, end to end (real processes, real time).

Every run talks only to the simulators it starts on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.load.e2e import (
    ROOT,
    manifest,
    only_run_dir,
    read_rows,
    run_harness,
    smoke_args,
    spawn_harness,
)

pytestmark = pytest.mark.slow


def _base(reports, *extra: str) -> list[str]:
    return smoke_args(reports, *extra, flush_interval_s=None)


def _wait_line(proc: subprocess.Popen, pred, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if pred(line):
            return seen
        assert time.monotonic() < deadline, "".join(seen[-40:])
    raise AssertionError("harness exited early:\n" + "".join(seen[-40:]))


def _traffic(line: str) -> bool:
    return "selfhosted: " in line and " 0 req" not in line.split("selfhosted:")[1][:6]


def _children(pid: int) -> dict[int, str]:
    """pid -> command line of the processes whose parent is ``pid``."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cleanup(proc: subprocess.Popen, pids: list[int]) -> None:
    for pid in [proc.pid, *pids]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


# -- 6: a killed master leaves no worker sending --------------------------------------------


def test_sigkill_of_master_stops_its_workers(reports):
    proc = spawn_harness(
        _base(
            reports,
            "load.workers=2",
            "load.arrival=constant",
            "load.rate=10",
            "load.duration_s=60",
            "record.flush_interval_s=0.5",
            "analysis.report=false",
        )
    )
    workers: list[int] = []
    try:
        _wait_line(proc, _traffic)
        workers = [p for p, cmd in _children(proc.pid).items() if " worker " in cmd]
        assert len(workers) == 2, _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the master alone: no cleanup at all
        proc.wait(timeout=10)
        t_kill = time.monotonic()
        while any(_alive(p) for p in workers) and time.monotonic() < t_kill + 15:
            time.sleep(0.1)
        stopped_after = time.monotonic() - t_kill
        assert not any(_alive(p) for p in workers), "workers still running 15 s after the kill"
        assert stopped_after < 6, f"workers took {stopped_after:.1f} s to stop"
        run_dir = only_run_dir(reports)
        parts = sorted((run_dir / "requests").glob("*.parquet"))
        time.sleep(1.5)
        assert sorted((run_dir / "requests").glob("*.parquet")) == parts  # nothing writes now
        assert manifest(run_dir)["status"] == "running"  # never closed: the master was killed
        table = pq.read_table(run_dir / "requests")  # every part on disk is complete
        assert set(table.column("worker").to_pylist()) == {0, 1}
    finally:
        _cleanup(proc, workers)


# -- 7: a group signal stops the load first and the simulators last --------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_group_signal_stops_load_before_simulators(reports, sig):
    proc = spawn_harness(
        _base(
            reports,
            "load.arrival=constant",
            "load.rate=8",
            "load.duration_s=60",
            "record.flush_interval_s=30",
            "analysis.report=false",
        )
    )
    sims: list[int] = []
    try:
        _wait_line(proc, _traffic)
        time.sleep(1.0)
        sims = [p for p, cmd in _children(proc.pid).items() if "harness.sim" in cmd]
        assert len(sims) == 2
        os.killpg(proc.pid, sig)  # Ctrl-C in a terminal / systemd stop: the whole group
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out[-3000:]
        assert not any(_alive(p) for p in sims)  # stopped by the harness, after the load
    finally:
        _cleanup(proc, sims)
    run_dir = only_run_dir(reports)
    m = manifest(run_dir)
    assert m["status"] == "interrupted" and "signal" in m["stop_reason"], m
    df = read_rows(run_dir)
    assert (df.status == "ok").sum() > 0
    bad = df[(df.status != "ok") & (df.error_type != "cancelled")]
    # nothing the harness did to its own simulators shows up as a target failure
    assert bad.empty, bad[["arm", "error_type", "error_message"]].to_string()


# -- 8: a second Ctrl-C still flushes and closes; signals during start-up -------------------


@pytest.mark.parametrize("to_group", [True, False], ids=["group", "process"])
def test_second_ctrl_c_still_flushes_and_closes_manifest(reports, to_group):
    send = (
        (lambda sig: os.killpg(proc.pid, sig)) if to_group else (lambda sig: proc.send_signal(sig))
    )
    proc = spawn_harness(
        _base(
            reports,
            "load.arrival=constant",
            "load.rate=5",
            "load.duration_s=60",
            "record.flush_interval_s=30",  # nothing is flushed by the timer
            "+arms.cloud.sim.params={itl_ms:300,itl_jitter:0}",  # cloud streams take ~20 s
        )
    )
    try:
        _wait_line(proc, _traffic)
        time.sleep(1.0)
        t_first = time.monotonic()
        send(signal.SIGINT)
        time.sleep(0.3)
        send(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        _cleanup(proc, [])
    assert proc.returncode == 0, out[-3000:]
    run_dir = only_run_dir(reports)
    m = manifest(run_dir)
    assert m["status"] == "interrupted", m
    assert m["ended_at"]
    df = read_rows(run_dir)  # flushed although the timer never fired
    cloud = df[df.arm == "cloud"]
    assert len(cloud) > 0 and (cloud.error_type == "cancelled").all()
    assert (df[df.arm == "selfhosted"].status == "ok").sum() > 0
    assert (run_dir / "summary.json").is_file(), out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert time.monotonic() - t_first < 60


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_startup_closes_manifest_interrupted(reports, sig):
    proc = spawn_harness(_base(reports, "load.duration_s=30", "analysis.report=false"))
    sims: list[int] = []
    try:
        _wait_line(proc, lambda line: "starting simulator" in line)
        time.sleep(0.2)
        sims = [p for p, cmd in _children(proc.pid).items() if "harness.sim" in cmd]
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        _cleanup(proc, sims)
    assert proc.returncode != 0
    assert "Traceback" not in out, out[-3000:]
    assert "interrupted" in out, out[-3000:]
    m = manifest(only_run_dir(reports))
    assert m["status"] == "interrupted", m
    assert not any(_alive(p) for p in sims)


# -- 13: the last /metrics scrape is written ----------------------------------------------


def test_last_metrics_scrape_is_written(reports):
    res = run_harness(
        _base(
            reports,
            "load.arrival=constant",
            "load.rate=5",
            "load.duration_s=3",
            "record.flush_interval_s=30",  # only the end of the run writes anything
            "+arms.selfhosted.metrics_interval_s=0.5",
            "analysis.report=false",
        )
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run_dir = only_run_dir(reports)
    parts = list((run_dir / "metrics").glob("*.parquet"))
    assert parts, "no /metrics rows written"
    metrics = pq.read_table(run_dir / "metrics").to_pandas()
    assert "selfhosted" in set(metrics.arm)
    t_last = metrics.t.astype("int64").max() / 1e9
    rows = read_rows(run_dir)
    t_end = rows.t_end.astype("int64").max() / 1e9
    assert t_last >= t_end - 0.1  # the final scrape after the load ended is on disk


# -- 9: a full disk stops the run, keeps what is on disk, ends `failed` in one line ----------

_ENOSPC_AFTER_TWO_PARTS = """
import errno, sys
from gevent import monkey
monkey.patch_all()
from harness.record import writer
real = writer.RequestWriter.write_batch
calls = []
def write_batch(self, rows, seq):
    calls.append(seq)
    if len(calls) > 2:
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(self, rows, seq)
writer.RequestWriter.write_batch = write_batch
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_disk_full_stops_the_run_and_fails_in_one_line(reports):
    args = _base(
        reports,
        "load.arrival=constant",
        "load.rate=10",
        "load.duration_s=60",
        "record.flush_interval_s=0.5",
        "analysis.report=false",
    )
    t_start = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-c", _ENOSPC_AFTER_TWO_PARTS, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    took = time.monotonic() - t_start
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr[-3000:]
    assert took < 30, f"the run went on for {took:.0f} s on a full disk"
    assert "Traceback" not in res.stdout + res.stderr, res.stderr[-3000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0], res.stderr[-3000:]
    run_dir = only_run_dir(reports)
    m = manifest(run_dir)
    assert m["status"] == "failed" and "disk full" in m["error"], m
    assert "\n" not in m["error"]
    parts = sorted((run_dir / "requests").glob("*.parquet"))
    assert len(parts) == 2  # what was written before the disk filled is kept
    assert not list((run_dir / "requests").glob(".*.tmp"))
    assert pq.read_table(run_dir / "requests").num_rows > 0


_SITECUSTOMIZE = """
import errno, os
if os.environ.get("ENOSPC_AFTER"):
    from harness.record import writer
    real = writer.RequestWriter.write_batch
    calls = {}
    def write_batch(self, rows, seq):  # each writer (one per worker's rows) fills up alike
        calls.setdefault(self.prefix, []).append(seq)
        if len(calls[self.prefix]) > int(os.environ["ENOSPC_AFTER"]):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, rows, seq)
    writer.RequestWriter.write_batch = write_batch
"""


def test_disk_full_on_the_master_stops_the_distributed_run(reports, tmp_path):
    """The master writes the workers' rows (one writer each): its full disk stops them all."""
    (tmp_path / "sitecustomize.py").write_text(_SITECUSTOMIZE)  # patches every process
    pythonpath = os.pathsep.join(
        filter(None, [str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH")])
    )
    t_start = time.monotonic()
    res = run_harness(
        _base(
            reports,
            "load.workers=2",
            "load.arrival=constant",
            "load.rate=10",
            "load.duration_s=60",
            "record.flush_interval_s=0.5",
            "analysis.report=false",
        ),
        timeout=90,
        env={"ENOSPC_AFTER": "2", "PYTHONPATH": pythonpath},
    )
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr[-3000:]
    assert time.monotonic() - t_start < 40
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0].count("No space left on device") == 1, res.stderr
    run_dir = only_run_dir(reports)
    m = manifest(run_dir)
    assert m["status"] == "failed" and m["error"].count("disk full") == 1, m
    names = sorted(p.name for p in (run_dir / "requests").glob("*.parquet"))
    assert names == [f"w{w}-part-00000{k}.parquet" for w in (0, 1) for k in (1, 2)]
