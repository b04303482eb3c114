"""Rows over the worker -> master channel: batching, order, resends, gaps, the written parts."""

from __future__ import annotations

import errno

import msgpack
import pyarrow.parquet as pq
import pytest

from harness import redaction
from harness.record.schema import REQUEST_COLUMNS, RequestRecord
from harness.record.shipping import ROWS_MESSAGE, RowCollector, RowShipper

KEY = "S3NTINEL-ship-0123456789"


@pytest.fixture(autouse=True)
def _fresh_registry():
    redaction.clear()
    yield
    redaction.clear()


def _rec(i: int, text: str | None = None, worker: int = 1) -> RequestRecord:
    return RequestRecord(
        run_id="r1",
        experiment="e",
        arm="a",
        target_kind="sim_vllm",
        request_id=f"a-{i:09d}",
        attempt=0,
        status="ok",
        worker=worker,
        t_scheduled=1_700_000_000_000_000_000 + i,
        t_end=1_700_000_000_500_000_000 + i,
        itl_s=[0.01, 0.02],
        completion_tokens=i,
        streamed=True,
        output_text=text,
    )


def _wire(message: dict) -> dict:
    """What the master's handler gets: the message through msgpack as locust's
    ``locust.rpc.protocol.Message`` packs it (importing locust here would monkey-patch pytest)."""
    raw = msgpack.dumps((ROWS_MESSAGE, message, "node-1"))
    return msgpack.loads(raw, raw=False, strict_map_key=False)[1]


class _Link:
    """A send function that records messages (and fails while ``down``)."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.down = False

    def __call__(self, message: dict) -> None:
        if self.down:
            raise OSError("the master is unreachable")
        self.sent.append(_wire(message))


def test_flushes_on_the_writer_cadence_in_numbered_messages():
    now = [0.0]
    link = _Link()
    s = RowShipper(link, worker=1, flush_interval_s=2.0, flush_rows=5, clock=lambda: now[0])
    s.add_record(_rec(0))
    assert not s.due()  # interval not passed, few rows
    now[0] = 2.1
    assert s.due() and s.flush() == 1
    for i in range(1, 6):  # flush_rows reached
        s.add_record(_rec(i))
    assert s.due()
    s.flush()
    assert [m["seq"] for m in link.sent] == [1, 2] and s.last_seq == 2
    assert [len(m["rows"]) for m in link.sent] == [1, 5]
    assert link.sent[0]["worker"] == 1 and link.sent[0]["columns"] == list(REQUEST_COLUMNS)
    assert s.rows_written == 6 and s.pending == 0 and not s.due()


def test_a_flush_splits_by_rows_and_by_bytes():
    link = _Link()
    s = RowShipper(link, worker=0, max_rows=3, max_bytes=50_000)
    for i in range(7):
        s.add_record(_rec(i))
    s.flush()
    assert [len(m["rows"]) for m in link.sent] == [3, 3, 1]
    link.sent.clear()
    for i in range(4):  # ~20 kB of output_text each: two rows per message fit
        s.add_record(_rec(i, text="x" * 20_000))
    s.flush()
    assert [len(m["rows"]) for m in link.sent] == [2, 2]
    assert [m["seq"] for m in link.sent] == [4, 5]  # numbering continues without gaps
    one = RowShipper(_Link(), worker=0, max_bytes=10)
    one.add_record(_rec(0, text="y" * 100))  # a row bigger than the limit still goes, alone
    assert one.flush() == 1


def test_a_failed_send_keeps_the_messages_in_order_for_the_next_flush():
    link = _Link()
    s = RowShipper(link, worker=2, max_rows=2)
    for i in range(3):
        s.add_record(_rec(i))
    link.down = True
    with pytest.raises(OSError):
        s.flush()
    assert link.sent == [] and s.pending == 3 and s.due()
    s.add_record(_rec(3))
    link.down = False
    s.flush()
    assert [m["seq"] for m in link.sent] == [1, 2, 3]
    ids = [row[REQUEST_COLUMNS.index("request_id")] for m in link.sent for row in m["rows"]]
    assert ids == [f"a-{i:09d}" for i in range(4)]  # each row once, in the order recorded
    assert s.pending == 0 and s.last_seq == 3


def test_secrets_are_scrubbed_before_the_rows_leave_the_worker():
    link = _Link()
    s = RowShipper(link, worker=0)
    redaction.register(KEY)
    s.add_record(_rec(0, text=f"you sent Bearer {KEY}"))
    s.flush()
    row = link.sent[0]["rows"][0]
    assert row[REQUEST_COLUMNS.index("output_text")] == "you sent Bearer ***"


def test_abandon_drops_what_was_not_sent():
    link = _Link()
    s = RowShipper(link, worker=0)
    s.add_record(_rec(0))
    assert s.abandon() == 1
    s.add_record(_rec(1))  # a request that ends now has nowhere to go
    s.close()  # nothing left to send
    assert link.sent == [] and s.pending == 0
    closed = RowShipper(link, worker=0)
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):  # a bug, not a dead master: say so
        closed.add_record(_rec(0))


def test_rows_round_trip_into_one_writer_per_worker(tmp_path):
    col = RowCollector(tmp_path, flush_interval_s=0.01)
    for worker in (0, 1):
        link = _Link()
        s = RowShipper(link, worker=worker, max_rows=2)
        for i in range(worker, 6, 2):
            s.add_record(_rec(i, text=f"answer {i}", worker=worker))
        s.flush()
        for m in link.sent:
            assert col.receive(m) == len(m["rows"])
    col.flush()
    names = sorted(p.name for p in (tmp_path / "requests").glob("*.parquet"))
    assert names == ["w0-part-000001.parquet", "w1-part-000001.parquet"]
    table = pq.read_table(tmp_path / "requests").to_pylist()
    got = {r["request_id"]: r for r in table}
    assert sorted(got) == [f"a-{i:09d}" for i in range(6)]
    want = _rec(3, text="answer 3", worker=1)
    row = got["a-000000003"]
    assert row["t_scheduled"].value == want.t_scheduled and row["t_end"].value == want.t_end
    assert row["itl_s"] == [0.01, 0.02] and row["streamed"] is True
    assert row["output_text"] == "answer 3" and row["worker"] == 1
    assert col.summary()[1]["rows"] == 3 and col.summary()[1]["last_rows_ns"] is not None


def test_resends_are_dropped_and_gaps_are_counted(tmp_path):
    col = RowCollector(tmp_path)
    link = _Link()
    s = RowShipper(link, worker=0, max_rows=1)
    for i in range(4):
        s.add_record(_rec(i))
    s.flush()
    m1, m2, m3, m4 = link.sent
    assert col.receive(m1) == 1
    assert col.receive(m1) == 0  # a resend
    assert col.receive(m3) == 1  # m2 never came
    assert col.missing(0) == 1
    assert col.missing(0, sent_seq=4) == 2  # ... and m4, which the worker says it sent
    assert col.receive(m4) == 1 and col.missing(0, sent_seq=4) == 1
    assert col.receive(m2) == 0  # too late: the run already counted it missing
    assert col.received[0].duplicates == 2 and col.received[0].rows == 3
    assert col.missing(5, sent_seq=2) == 2  # a worker never heard from


def test_columns_line_up_by_name(tmp_path):
    """A worker on another schema version: columns in another order, one extra, one absent."""
    col = RowCollector(tmp_path)
    names = ["status", "request_id", "run_id", "experiment", "arm", "target_kind", "attempt"]
    col.receive(
        {
            "worker": 3,
            "seq": 1,
            "columns": [*names, "from_the_future"],
            "rows": [["ok", "a-1", "r1", "e", "a", "sim_vllm", 0, "ignored"]],
        }
    )
    col.flush()
    (row,) = pq.read_table(tmp_path / "requests").to_pylist()
    assert row["request_id"] == "a-1" and row["status"] == "ok" and row["run_id"] == "r1"
    assert row["ttft_s"] is None and "from_the_future" not in row


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([1, 2], "expected a mapping"),
        ({"worker": -1, "seq": 1, "columns": [], "rows": []}, f"{ROWS_MESSAGE}.worker"),
        ({"worker": 0, "seq": 0, "columns": [], "rows": []}, f"{ROWS_MESSAGE}.seq"),
        ({"worker": 0, "seq": 1, "columns": [1], "rows": []}, f"{ROWS_MESSAGE}.columns"),
        ({"worker": 0, "seq": 1, "columns": ["a", "b"], "rows": [[1]]}, f"{ROWS_MESSAGE}.rows"),
    ],
)
def test_a_malformed_message_names_the_field(tmp_path, data, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        RowCollector(tmp_path).receive(data)


def _one_message(worker: int) -> dict:
    link = _Link()
    s = RowShipper(link, worker=worker)
    s.add_record(_rec(worker, worker=worker))
    s.flush()
    return link.sent[0]


def test_a_failed_write_is_put_back_and_retried(tmp_path):
    col = RowCollector(tmp_path)
    col.receive(_one_message(0))

    def broken(fn, args):
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError):
        col.flush(broken)
    assert col.writers[0].pending == 1  # put back for the next flush
    col.flush()
    assert pq.read_table(tmp_path / "requests").num_rows == 1


def test_each_worker_writer_is_handed_to_on_writer_once(tmp_path):
    """The master installs its disk-full guard there: it must see every worker's writer."""
    seen = []
    col = RowCollector(tmp_path, on_writer=seen.append)
    for worker in (0, 1, 0):
        col.receive(_one_message(worker)) if worker not in col.received else None
    assert [w.prefix for w in seen] == ["w0", "w1"]
    assert all(w.auto_flush is False for w in seen)  # parts are written off the event loop
