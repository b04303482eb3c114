"""Daily reports of a month-long canary: ``harness report RUN_DIR --day N`` as days end.

The run loop (:mod:`harness.load.runner`) ticks :class:`DailyReports` with the wall clock; at
each experiment-clock day boundary (plus a grace for the last rows to be flushed) the day that
ended is queued, and one child process at a time writes its report. The child never slows or
stops the run: it runs at the lowest CPU priority, in a session of its own (a terminal's
Ctrl-C reaches only the harness), and a failure is logged and counted, nothing more.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.canary.clock import ExperimentClock
from harness.record.manifest import utc_now_iso

log = logging.getLogger(__name__)

#: Runs the command given after it at the lowest CPU priority: ``os.nice`` in the child, then
#: exec (no ``preexec_fn``: forking a threaded process must run no Python before exec).
_NICE_EXEC = "import os, sys; os.nice(19); os.execv(sys.argv[1], sys.argv[1:])"


def report_command(run_dir: Path, day: int) -> list[str]:
    """``python -m harness report RUN_DIR --day N``."""
    return [sys.executable, "-m", "harness", "report", str(run_dir), "--day", str(day)]


def _stop(proc: subprocess.Popen) -> None:
    """Terminate a child, then kill it; always reap it."""
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class DailyReports:
    """``harness report RUN_DIR --day N`` for each experiment-clock day that ended.

    A day is reported ``grace_s`` (wall) after it ended, so the rows of its last requests are
    flushed first. One child at a time, queued in day order; each child runs in a session of
    its own (a terminal's Ctrl-C never reaches it) at the lowest CPU priority (``os.nice``)
    and writes to ``RUN_DIR/daily_reports.log``. A failing child is logged, never stops the
    run. :meth:`close` reports the days that ended by the end of the load and reaps the child.
    """

    def __init__(
        self,
        run_dir: Path,
        root: Path,
        clock: ExperimentClock,
        n_days: int,
        grace_s: float,
        command: Callable[[Path, int], list[str]] | None = None,
        written: list[int] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.command = command or report_command
        self.on_change = on_change  # called when a child ends (the runner saves the manifest)
        self.run_dir = run_dir
        self.root = root
        self.clock = clock
        self.n_days = n_days
        self.grace_ns = int(grace_s * 1e9)
        self.next_day = 0  # the first day not yet queued
        self.pending: list[int] = []
        self.proc: subprocess.Popen | None = None
        self.proc_day: int | None = None
        self.written: list[int] = sorted(set(written or []))  # by earlier segments too
        self.failed: list[int] = []
        self.log_path = run_dir / "daily_reports.log"

    def _ended_by(self, wall_ns: int) -> int:
        """How many days had ended at ``wall_ns`` (capped at the run's days)."""
        return min(self.clock.day_of(self.clock.virtual_ns(wall_ns)), self.n_days)

    def due(self, end_ns: int) -> bool:
        """Whether a day that ended by ``end_ns`` is not yet queued."""
        return any(d not in self.written for d in range(self.next_day, self._ended_by(end_ns)))

    def _queue(self, ended: int) -> None:
        """Queue the days before ``ended`` with no report yet (an earlier segment's too)."""
        while self.next_day < ended:
            if self.next_day not in self.written:
                self.pending.append(self.next_day)
            self.next_day += 1

    def tick(self, now_ns: int) -> None:
        self._queue(self._ended_by(now_ns - self.grace_ns))
        self._poll()

    def _poll(self) -> None:
        if self.proc is not None:
            rc = self.proc.poll()
            if rc is None:
                return
            self._done(rc)
        if self.pending:
            self._spawn(self.pending.pop(0))

    def _done(self, rc: int) -> None:
        day, self.proc, self.proc_day = self.proc_day, None, None
        if rc == 0:
            self.written.append(day)  # type: ignore[arg-type]
        else:
            self.failed.append(day)  # type: ignore[arg-type]
            log.warning(
                "the daily report for day %s failed (exit %s; see %s); the run goes on",
                day, rc, self.log_path,
            )  # fmt: skip
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.debug("saving the daily report state failed", exc_info=True)

    def _spawn(self, day: int) -> None:
        cmd = [sys.executable, "-c", _NICE_EXEC, *self.command(self.run_dir, day)]
        try:
            with open(self.log_path, "ab") as fh:
                fh.write(f"--- {utc_now_iso()} harness report --day {day}\n".encode())
                fh.flush()
                self.proc = subprocess.Popen(
                    cmd,
                    cwd=self.root,
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # no terminal signal reaches it
                )
            self.proc_day = day
        except OSError as exc:
            self.failed.append(day)
            log.warning("could not start the daily report for day %s: %s", day, exc)

    def close(self, end_ns: int, *, wait_s: float, stop: Any = lambda: False) -> None:
        """Report the days ended by ``end_ns`` (within ``wait_s``, until ``stop()``), then
        reap the child."""
        self._queue(self._ended_by(end_ns))
        deadline = time.monotonic() + wait_s
        while (self.proc is not None or self.pending) and time.monotonic() < deadline:
            if stop():
                break
            self._poll()
            time.sleep(0.1)
        if self.proc is not None:
            log.warning(
                "the daily report for day %s is taking too long: stopping it", self.proc_day
            )
            _stop(self.proc)
            self._done(-1)
        if self.pending:
            log.warning(
                "daily reports not written for days %s: run `harness report %s --day N`",
                ", ".join(map(str, self.pending)), self.run_dir,
            )  # fmt: skip
            self.pending.clear()

    def summary(self) -> dict[str, Any]:
        """``{written, failed}``: the days with a report (this segment or earlier), and those
        whose report failed (and was not written since)."""
        written = sorted(set(self.written))
        return {"written": written, "failed": sorted(set(self.failed) - set(written))}
