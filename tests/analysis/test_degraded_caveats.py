"""The report's caveats for a run that lost a load worker mid-run (manifest ``lost_workers``)."""

from __future__ import annotations

from harness.record.manifest import iso_from_ns
from harness.report.sections import _degraded_caveats


def test_a_lost_worker_and_missing_messages_are_each_one_caveat():
    m = {
        "degraded": True,
        "lost_workers": [
            {
                "worker": 1,
                "host": "load-b",
                "pid": 4242,
                "reason": "no heartbeat for about 3 s (locust marked it missing)",
                "lost_at": "2026-01-02T03:04:09.000Z",
                "last_rows_at": iso_from_ns(1_767_323_045_500_000_000),
                "rows_received": 118,
            },
            {
                "worker": 2,
                "reason": "its process exited with code -9",
                "lost_at": "t",
                "last_rows_at": None,
                "rows_received": 0,
            },  # fmt: skip
        ],
        "missing_row_messages": {"0": 2},
    }
    one, two, gap = _degraded_caveats(m)
    assert one.startswith("Load worker 1 on load-b was lost mid-run at 2026-01-02T03:04:09.000Z")
    assert "(no heartbeat for about 3 s" in one
    assert "its last rows reached the master at 2026-01-02T03:04:05.500Z (118 rows kept)" in one
    assert "offered load was lower than configured" in one
    assert (
        "Load worker 2 was lost" in two
        and "none of its rows reached the master (0 rows kept)" in two
    )
    assert gap.startswith("2 row message(s) from load worker 0 never reached the master")


def test_a_whole_run_says_nothing():
    assert _degraded_caveats({"degraded": False, "lost_workers": []}) == []
    assert _degraded_caveats({}) == []  # an older manifest
    assert iso_from_ns(None) is None
