"""Distributed runs without a shared disk, end to end (slow: real processes, real time).

Workers are started the way a second machine would start them (`harness worker
--master-port P`, each in its own empty working directory), and a ``sitecustomize`` makes the
master's reports directory invisible to them: a worker that tried to write its own part files
there would fail, as it would on another machine. Every run talks only to the simulators the
master starts on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.config import LoadConfig
from harness.load.arrivals import build_schedule
from tests.load.e2e import ROOT, manifest, only_run_dir, read_rows, smoke_args

pytestmark = pytest.mark.slow

# The master's run directory is on "another machine": any path under it is out of reach.
_ELSEWHERE = """
import builtins, os, pathlib
_far = os.environ.get("HARNESS_TEST_ELSEWHERE")
if _far:
    def _blocked(p):
        try:
            return os.path.abspath(os.fspath(p)).startswith(_far)
        except TypeError:
            return False
    def _refuse(p):
        raise FileNotFoundError(2, "not on this machine", os.fspath(p))
    _mkdir, _open, _replace = pathlib.Path.mkdir, builtins.open, os.replace
    def mkdir(self, *a, **k):
        return _refuse(self) if _blocked(self) else _mkdir(self, *a, **k)
    def open_(file, *a, **k):
        ok = not isinstance(file, (str, os.PathLike)) or not _blocked(file)
        return _open(file, *a, **k) if ok else _refuse(file)
    def replace(src, dst, *a, **k):
        return _refuse(dst) if _blocked(src) or _blocked(dst) else _replace(src, dst, *a, **k)
    pathlib.Path.mkdir, builtins.open, os.replace = mkdir, open_, replace
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def _master(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=_env(),
    )


def _remote_worker(port: int, cwd: Path, site: Path, reports: Path) -> subprocess.Popen:
    cwd.mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "worker", "--master-port", str(port)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=_env(
            PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
            HARNESS_TEST_ELSEWHERE=str(reports.resolve()),
        ),
    )


def _wait_line(proc: subprocess.Popen, pred, timeout: float = 90) -> list[str]:
    deadline = time.monotonic() + timeout
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if pred(line):
            return seen
        assert time.monotonic() < deadline, "".join(seen[-40:])
    raise AssertionError("the harness exited early:\n" + "".join(seen[-40:]))


def _traffic(line: str) -> bool:
    return "selfhosted: " in line and " 0 req" not in line.split("selfhosted:")[1][:6]


def _children(pid: int) -> dict[int, str]:
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return out


def _kill_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        try:
            p.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError):
            pass


def _expected_arrivals(rate: float, duration: float) -> int:
    """What one process records for this schedule: every offset of the constant schedule."""
    load = LoadConfig(mode="open", arrival="constant", rate=rate, duration_s=duration)
    return sum(1 for _ in build_schedule(load, ROOT).offsets())


def test_remote_workers_in_their_own_directories_ship_every_row(reports, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_ELSEWHERE)
    rate, duration, port = 20.0, 3.0, _free_port()
    master = _master(
        smoke_args(
            reports,
            "load.remote_workers=2",
            f"load.master_port={port}",
            "load.arrival=constant",
            f"load.rate={rate}",
            f"load.duration_s={duration}",
            "record.flush_interval_s=0.5",
            "analysis.report=false",
        )
    )
    workers: list[subprocess.Popen] = []
    try:
        _wait_line(master, lambda line: "waiting for 2 remote worker(s)" in line)
        workers = [
            _remote_worker(port, tmp_path / f"machine{k}", tmp_path / "site", reports)
            for k in (0, 1)
        ]
        out, _ = master.communicate(timeout=90)
        worker_out = [w.communicate(timeout=30)[0] for w in workers]
    finally:
        _kill_all([master, *workers])
    assert master.returncode == 0, out[-3000:]
    assert all(w.returncode == 0 for w in workers), worker_out
    assert "Traceback" not in "".join(worker_out), worker_out
    for k in (0, 1):  # a worker wrote nothing where it ran
        assert list((tmp_path / f"machine{k}").rglob("*")) == []
    run_dir = only_run_dir(reports)
    m = manifest(run_dir)
    assert m["status"] == "completed" and m["degraded"] is False and m["lost_workers"] == []
    df = read_rows(run_dir)
    first = df[df.attempt == 0]
    n = _expected_arrivals(rate, duration)
    assert first.groupby("arm").size().to_dict() == {"cloud": n, "selfhosted": n}
    assert not df.duplicated(["request_id", "attempt"]).any()
    assert set(df.worker) == {0, 1}
    prefixes = {p.name.split("-part-")[0] for p in (run_dir / "requests").glob("*.parquet")}
    assert prefixes == {"w0", "w1"}  # written by the master, one prefix per worker
    shipped = {st["worker"]: st["rows_seq"] for st in m["load_processes"]}
    assert set(shipped) == {0, 1} and min(shipped.values()) >= 1


@pytest.mark.parametrize("where", ["remote", "local"])
def test_a_worker_killed_mid_run_leaves_a_degraded_run_with_its_rows(reports, tmp_path, where):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_ELSEWHERE)
    rate, duration, flush, port = 20.0, 7.0, 0.5, _free_port()
    placement = (
        ["load.remote_workers=2", f"load.master_port={port}"]
        if where == "remote"
        else ["load.workers=2"]
    )
    t_start = time.monotonic()
    master = _master(
        smoke_args(
            reports,
            *placement,
            "load.arrival=constant",
            f"load.rate={rate}",
            f"load.duration_s={duration}",
            f"record.flush_interval_s={flush}",
            "workload.output_tokens.mean=8",
        )
    )
    workers: list[subprocess.Popen] = []
    try:
        if where == "remote":
            _wait_line(master, lambda line: "waiting for 2 remote worker(s)" in line)
            workers = [
                _remote_worker(port, tmp_path / f"machine{k}", tmp_path / "site", reports)
                for k in (0, 1)
            ]
        _wait_line(master, _traffic)
        time.sleep(1.5)
        if where == "remote":
            victim = workers[0].pid
        else:
            local = [p for p, cmd in _children(master.pid).items() if " worker " in cmd]
            assert len(local) == 2, _children(master.pid)
            victim = local[0]
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)  # no goodbye, no last flush
        out, _ = master.communicate(timeout=120)
    finally:
        _kill_all([master, *workers])
    took = time.monotonic() - t_start
    assert master.returncode == 0, out[-3000:]
    assert took < duration + 60, f"the run took {took:.0f} s"
    run_dir = only_run_dir(reports)
    m = manifest(run_dir)
    assert m["status"] == "completed" and m["degraded"] is True, m.get("lost_workers")
    (lost,) = m["lost_workers"]
    assert lost["pid"] == victim
    assert ("heartbeat" if where == "remote" else "exited with code -9") in lost["reason"]
    assert f"locust worker {lost['worker']} lost mid-run" in out
    df = read_rows(run_dir)
    dead = df[df.worker == lost["worker"]]
    alive = df[df.worker != lost["worker"]]
    assert lost["rows_received"] == len(dead) > 0
    dead_end = dead.t_end.astype("int64").max() / 1e9
    # its rows up to its last message are kept: at most one flush interval (+ slack) is lost
    assert t_kill - flush - 0.7 <= dead_end <= t_kill + 0.05
    # the other worker went on to the end of the schedule
    t0 = m["t0_ns"] / 1e9
    assert alive.t_scheduled.astype("int64").max() / 1e9 >= t0 + duration - 0.5
    assert not df.duplicated(["request_id", "attempt"]).any()
    summary = json.loads((run_dir / "summary.json").read_text())
    caveat = [c for c in summary["caveats"] if "was lost mid-run" in c]
    assert len(caveat) == 1 and f"Load worker {lost['worker']}" in caveat[0], summary["caveats"]
    assert lost["last_rows_at"] in caveat[0]
    assert (run_dir / "report.html").is_file()


def test_a_worker_that_stalls_and_comes_back_is_not_lost(reports, tmp_path):
    """A false alarm: a worker frozen past the heartbeat check (SIGSTOP), then resumed."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_ELSEWHERE)
    rate, duration, port = 20.0, 8.0, _free_port()
    master = _master(
        smoke_args(
            reports,
            "load.remote_workers=2",
            f"load.master_port={port}",
            "load.arrival=constant",
            f"load.rate={rate}",
            f"load.duration_s={duration}",
            "record.flush_interval_s=0.5",
            "workload.output_tokens.mean=8",
            "analysis.report=false",
        )
    )
    workers: list[subprocess.Popen] = []
    try:
        _wait_line(master, lambda line: "waiting for 2 remote worker(s)" in line)
        workers = [
            _remote_worker(port, tmp_path / f"machine{k}", tmp_path / "site", reports)
            for k in (0, 1)
        ]
        _wait_line(master, _traffic)
        os.kill(workers[0].pid, signal.SIGSTOP)
        seen = _wait_line(master, lambda line: "lost mid-run" in line, timeout=15)
        os.kill(workers[0].pid, signal.SIGCONT)
        out, _ = master.communicate(timeout=90)
        out = "".join(seen) + out
    finally:
        for w in workers:
            if w.poll() is None:
                os.kill(w.pid, signal.SIGCONT)
        _kill_all([master, *workers])
    assert master.returncode == 0, out[-3000:]
    assert "is back (it was only slow): not lost" in out, out[-3000:]
    run_dir = only_run_dir(reports)
    m = manifest(run_dir)
    assert m["status"] == "completed" and m["degraded"] is False, m["lost_workers"]
    df = read_rows(run_dir)
    n = _expected_arrivals(rate, duration)
    assert df[df.attempt == 0].groupby("arm").size().to_dict() == {"cloud": n, "selfhosted": n}
    assert not df.duplicated(["request_id", "attempt"]).any()
