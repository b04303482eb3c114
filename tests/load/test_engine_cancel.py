"""The engine's last-resort kill of a request greenlet: rows it writes, and the ones it must not.

A request killed during a retry backoff keeps its last row (``will_retry`` set) and gets no
synthetic "retry" row; a request killed before its first attempt began gets one
``cancelled`` attempt-0 row; an attempt killed in flight is recorded by the client itself.
"""

from __future__ import annotations

from types import SimpleNamespace

import gevent
import pytest

from harness.load.engine import LoadEngine
from harness.record.schema import RequestRecord


def _row(attempt: int, **kw) -> RequestRecord:
    return RequestRecord(run_id="r", experiment="e", arm="a", target_kind="sim_cloud",
                         request_id="a-000000001", attempt=attempt, **kw)  # fmt: skip


def _engine(execute) -> tuple[SimpleNamespace, list[RequestRecord]]:
    written: list[RequestRecord] = []
    eng = SimpleNamespace(arm_caps={})
    eng._execute = lambda arm, item, rid, pid, ts, phase, on_row: execute(on_row)
    eng._record = lambda arm, rec: written.append(rec)
    eng._failure = lambda arm, item, rid, pid, ts, phase, et, msg: _row(
        0, status="error", error_type=et, error_message=msg
    )
    return eng, written


def _kill_after(eng: SimpleNamespace, delay: float) -> None:
    g = gevent.spawn(LoadEngine._send, eng, "a", None, "a-000000001", "p1", 0, "main")
    gevent.sleep(delay)
    g.kill(block=True, timeout=2)
    assert g.dead


def test_kill_during_backoff_writes_no_synthetic_retry_row():
    def execute(on_row):
        on_row(_row(0, status="error", error_type="rate_limited", will_retry=True))
        gevent.sleep(10)  # the backoff

    eng, written = _engine(execute)
    _kill_after(eng, 0.05)
    assert [(r.attempt, r.error_type, r.will_retry) for r in written] == [(0, "rate_limited", True)]


def test_kill_before_first_attempt_writes_one_cancelled_row():
    def execute(on_row):
        gevent.sleep(10)  # e.g. waiting for a connection slot

    eng, written = _engine(execute)
    _kill_after(eng, 0.05)
    assert [(r.attempt, r.error_type) for r in written] == [(0, "cancelled")]


@pytest.mark.parametrize("rows_before", [0, 1])
def test_kill_in_flight_is_recorded_once(rows_before):
    """The client records the attempt it was in (``cancelled``), the engine adds nothing."""

    def execute(on_row):
        for i in range(rows_before):
            on_row(_row(i, status="error", error_type="server_error", will_retry=True))
        try:
            gevent.sleep(10)  # an attempt in flight
        except BaseException:
            on_row(_row(rows_before, status="error", error_type="cancelled", will_retry=False))
            raise

    eng, written = _engine(execute)
    _kill_after(eng, 0.05)
    assert [r.attempt for r in written] == list(range(rows_before + 1))
    assert written[-1].error_type == "cancelled"
