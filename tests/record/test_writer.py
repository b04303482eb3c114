"""The buffered Parquet writer: atomic parts, interval flushes, resumed numbering."""

from __future__ import annotations

import pyarrow.parquet as pq

from harness.record.schema import REQUEST_SCHEMA, SCHEMA_VERSION, RequestRecord
from harness.record.writer import RequestWriter


def _rec(i: int) -> RequestRecord:
    return RequestRecord(
        run_id="r1",
        experiment="e",
        arm="a",
        target_kind="sim_vllm",
        request_id=f"a-{i}",
        attempt=0,
        status="ok",
        t_scheduled=1_700_000_000_000_000_000 + i,
        itl_s=[0.01, 0.02],
        completion_tokens=i,
    )


def test_flush_on_interval_and_rows(tmp_path):
    now = [0.0]
    w = RequestWriter(tmp_path, flush_interval_s=2.0, flush_rows=3, clock=lambda: now[0])
    w.add_record(_rec(0))
    assert not w.maybe_flush()  # interval not passed
    now[0] = 2.5
    assert w.maybe_flush()
    for i in range(1, 4):  # third row reaches flush_rows
        w.add_record(_rec(i))
    assert w.pending == 0
    parts = sorted((tmp_path / "requests").glob("*.parquet"))
    assert [p.name for p in parts] == ["w0-part-000001.parquet", "w0-part-000002.parquet"]
    table = pq.read_table(parts[1])
    assert table.schema.equals(REQUEST_SCHEMA, check_metadata=False)
    assert table.column("completion_tokens").to_pylist() == [1, 2, 3]
    assert table.column("itl_s").to_pylist()[0] == [0.01, 0.02]
    assert not list((tmp_path / "requests").glob(".*"))  # no temporaries left behind


def test_close_flushes_and_resume_continues_numbering(tmp_path):
    w = RequestWriter(tmp_path, flush_interval_s=100)
    w.add_records([_rec(i) for i in range(5)])
    w.close()
    w2 = RequestWriter(tmp_path, flush_interval_s=100)
    w2.add_record(_rec(9))
    w2.close()
    names = sorted(p.name for p in (tmp_path / "requests").glob("*.parquet"))
    assert names == ["w0-part-000001.parquet", "w0-part-000002.parquet"]
    assert w.rows_written == 5 and w2.rows_written == 1


def test_schema_metadata_has_version(tmp_path):
    w = RequestWriter(tmp_path)
    w.add_record(_rec(1))
    path = w.flush()
    meta = pq.read_schema(path).metadata
    assert meta[b"harness.schema_version"] == str(SCHEMA_VERSION).encode()
