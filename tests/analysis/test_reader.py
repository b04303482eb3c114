"""Reader: recursive part discovery, phase filter, schema upgrades, clear errors."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.record.reader import (
    ReaderError,
    file_schema_version,
    list_parts,
    read_metrics,
    read_requests,
)
from harness.record.schema import METRICS_SCHEMA, REQUEST_SCHEMA, records_to_table

from .conftest import T0, make_records, write_run


def test_reads_parts_recursively_and_skips_hidden(tmp_path: Path):
    recs = make_records("cloud", 30, phase_of=lambda i: "warmup" if i < 5 else "main")
    run = write_run(tmp_path / "r", recs, parts=3)
    req = run / "requests"
    table = records_to_table(recs[:4])
    pq.write_table(table, req / ".in-progress.parquet")
    pq.write_table(table, req / "_tmp.parquet")
    (req / "_staging").mkdir()
    pq.write_table(table, req / "_staging" / "part.parquet")
    (req / "x.parquet.tmp").write_bytes(b"partial")
    assert len(list_parts(req)) == 3
    assert read_requests(run).num_rows == 25  # main only
    assert read_requests(run, phases=None).num_rows == 30
    assert read_requests(run, phases=("warmup",)).num_rows == 5


def test_column_selection_and_dictionary_strings(tmp_path: Path):
    run = write_run(tmp_path / "r", make_records("cloud", 10), parts=2)
    t = read_requests(run, columns=["ttft_s", "arm"])
    assert t.column_names == ["ttft_s", "arm"]
    assert pa.types.is_dictionary(t.schema.field("arm").type)
    assert set(t.column("arm").to_pylist()) == {"cloud"}
    with pytest.raises(ReaderError, match="unknown request column"):
        read_requests(run, columns=["nope"])


def test_empty_run_gives_empty_table(tmp_path: Path):
    (tmp_path / "r" / "requests").mkdir(parents=True)
    t = read_requests(tmp_path / "r", columns=["arm", "ttft_s"])
    assert t.num_rows == 0 and t.column_names == ["arm", "ttft_s"]
    assert read_metrics(tmp_path / "r") is None


def test_older_schema_version_is_upgraded(tmp_path: Path):
    """A version-0 file without slice/phase/tpot_s/itl_s/worker columns reads with nulls."""
    full = records_to_table(make_records("cloud", 6))
    old_cols = [
        c for c in full.column_names if c not in ("slice", "phase", "tpot_s", "itl_s", "worker")
    ]
    old = full.select(old_cols).replace_schema_metadata({b"harness.schema_version": b"0"})
    folder = tmp_path / "r" / "requests" / "worker=3"
    folder.mkdir(parents=True)
    pq.write_table(old, folder / "part-000001.parquet")
    assert file_schema_version(folder / "part-000001.parquet") == 0
    t = read_requests(tmp_path / "r")  # phase missing -> treated as main
    assert t.num_rows == 6
    assert t.column_names == list(REQUEST_SCHEMA.names)
    assert t.column("tpot_s").null_count == 6 and t.column("slice").null_count == 6
    assert t.column("itl_s").type == pa.list_(pa.float64())
    assert t.column("worker").to_pylist() == [3] * 6  # from the Hive folder name
    assert t.column("ttft_s").to_pylist() == full.column("ttft_s").to_pylist()


def test_corrupt_file_error_names_it(tmp_path: Path):
    run = write_run(tmp_path / "r", make_records("cloud", 4), parts=1)
    bad = run / "requests" / "part-broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(ReaderError, match="part-broken.parquet") as exc:
        read_requests(run)
    assert "not a readable Parquet file" in str(exc.value)


def test_foreign_parquet_error_names_it(tmp_path: Path):
    folder = tmp_path / "r" / "requests"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), folder / "foreign.parquet")
    with pytest.raises(ReaderError, match=r"foreign\.parquet.*not a harness requests file"):
        read_requests(tmp_path / "r")


def test_wrong_column_type_error_names_file_and_column(tmp_path: Path):
    folder = tmp_path / "r" / "requests"
    folder.mkdir(parents=True)
    t = pa.table({"arm": ["a"], "status": ["ok"], "ttft_s": [[1.0]]})
    pq.write_table(t, folder / "odd.parquet")
    with pytest.raises(ReaderError, match=r"odd\.parquet: column 'ttft_s'"):
        read_requests(tmp_path / "r", columns=["arm", "ttft_s"])


def test_read_metrics(tmp_path: Path):
    folder = tmp_path / "r" / "metrics" / "arm=selfhosted"
    folder.mkdir(parents=True)
    t = pa.Table.from_pydict(
        {
            "run_id": ["r"] * 2,
            "arm": ["selfhosted"] * 2,
            "t": [T0, T0 + 10**9],
            "name": ["vllm:num_requests_waiting"] * 2,
            "labels": ["", ""],
            "value": [1.0, 3.0],
        },
        schema=METRICS_SCHEMA,
    )
    pq.write_table(t, folder / "m-part-000001.parquet")
    out = read_metrics(tmp_path / "r")
    assert out is not None and out.num_rows == 2
    assert out.column("value").to_pylist() == [1.0, 3.0]
