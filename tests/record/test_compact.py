"""Day partitions and crash-safe compaction: layout, numbering, crashes at every step, the
reader's view while a compaction runs, and a whole compressed month."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harness.canary.clock import ExperimentClock
from harness.record import compact, reader
from harness.record.compact import (
    COMPACTED_FROM,
    STEPS,
    CompactionBusy,
    compact_all,
    compact_partition,
    recover,
)
from harness.record.reader import iter_request_parts, list_parts, partition_days, read_requests
from harness.record.schema import REQUEST_SCHEMA, SCHEMA_VERSION
from harness.record.shipping import RowCollector
from harness.record.writer import RequestWriter

ORIGIN = 1_780_000_000_000_000_000
NS = 1_000_000_000
DAY_NS = 86_400 * NS
CLOCK = ExperimentClock(ORIGIN, time_scale=3600.0)  # a day in 24 wall seconds


def row(i: int, arm: str = "cloud", day: float = 0.0, *, attempt: int = 0, virtual=True) -> dict:
    """A request row whose t_virtual is ``day`` days (fractional) after the origin."""
    tv = ORIGIN + int(day * DAY_NS)
    return {
        "run_id": "r",
        "experiment": "e",
        "arm": arm,
        "target_kind": "sim_cloud",
        "request_id": f"{arm}-{i:09d}",
        "attempt": attempt,
        "status": "ok",
        "phase": "main",
        # wall clock: the experiment clock runs 3600x faster from the origin
        "t_scheduled": ORIGIN + int(day * DAY_NS / 3600),
        "t_virtual": tv if virtual else None,
        "completion_tokens": i,
    }


def keys(table) -> Counter:
    """The multiset of (request_id, attempt) of a table."""
    return Counter(
        zip(
            table.column("request_id").to_pylist(),
            table.column("attempt").to_pylist(),
            strict=True,
        )
    )


def write(w: RequestWriter, rows: list[dict]) -> None:
    w.extend(rows)
    batch = w.take()
    assert batch is not None
    w.write_batch(*batch)


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# -- layout ----------------------------------------------------------------------------------


def test_batches_are_split_by_day_and_arm_and_read_back_by_day(tmp_path):
    w = RequestWriter(tmp_path, day_clock=CLOCK, flush_interval_s=2.0)
    rows = [row(0, "cloud", 0.1), row(1, "selfhosted", 0.2), row(2, "cloud", 1.5)]
    # no t_virtual: the day of t_scheduled on the experiment clock (day 2)
    rows.append(row(3, "cloud", 2.25, virtual=False))
    write(w, rows)
    req = tmp_path / "requests"
    files = sorted(str(p.relative_to(req)) for p in list_parts(req))
    assert files == [
        "day=000/arm=cloud/w0-part-000001.parquet",
        "day=000/arm=selfhosted/w0-part-000001.parquet",
        "day=001/arm=cloud/w0-part-000001.parquet",
        "day=002/arm=cloud/w0-part-000001.parquet",
    ]
    assert partition_days(tmp_path) == [0, 1, 2]
    assert keys(read_requests(tmp_path)) == keys_of(rows)
    assert keys(read_requests(tmp_path, days=[1, 2])) == keys_of(rows[2:])
    assert read_requests(tmp_path, days=[7]).num_rows == 0
    # the arm column is the file's own, the hive folder only mirrors it
    assert read_requests(tmp_path, ["arm"], days=[0]).column("arm").to_pylist() == [
        "cloud",
        "selfhosted",
    ]


def keys_of(rows: list[dict]) -> Counter:
    return Counter((r["request_id"], r["attempt"]) for r in rows)


def test_days_filter_keeps_flat_files_of_an_unpartitioned_run(tmp_path):
    w = RequestWriter(tmp_path)  # flat, as before
    write(w, [row(0, day=0.5), row(1, day=3.5)])
    assert [p.name for p in list_parts(tmp_path / "requests")] == ["w0-part-000001.parquet"]
    assert partition_days(tmp_path) == []
    # flat files cannot be pruned by day: read, the caller filters by t_virtual
    assert read_requests(tmp_path, days=[0]).num_rows == 2


def test_partition_by_day_waits_for_the_clock(tmp_path):
    w = RequestWriter(tmp_path, partition_by_day=True)
    w.set_day_clock(CLOCK)
    write(w, [row(0, day=4.2)])
    assert (tmp_path / "requests/day=004/arm=cloud/w0-part-000001.parquet").is_file()
    off = RequestWriter(tmp_path / "flat")  # not partitioned: a clock given later is ignored
    off.set_day_clock(CLOCK)
    write(off, [row(0, day=4.2)])
    assert (tmp_path / "flat/requests/w0-part-000001.parquet").is_file()


def test_a_failed_batch_keeps_only_its_unwritten_rows(tmp_path, monkeypatch):
    w = RequestWriter(tmp_path, day_clock=CLOCK)
    rows = [row(0, day=0.1), row(1, day=1.1), row(2, day=2.1)]
    w.extend(rows)
    batch = w.take()
    real = RequestWriter._write_part
    calls = []

    def flaky(self, group, folder, seq):
        calls.append(folder.parent.name)
        if len(calls) == 2:
            raise OSError("disk hiccup")
        return real(self, group, folder, seq)

    monkeypatch.setattr(RequestWriter, "_write_part", flaky)
    with pytest.raises(OSError):
        w.write_batch(*batch)
    assert [r["request_id"] for r in batch[0]] == ["cloud-000000001", "cloud-000000002"]
    w.requeue(batch[0])  # what the engine and the collector do
    monkeypatch.setattr(RequestWriter, "_write_part", real)
    w.write_batch(*w.take())
    table = read_requests(tmp_path)
    assert keys(table) == keys_of(rows)  # every row once: the written day is not written again


# -- compaction ------------------------------------------------------------------------------


def _partition(tmp_path: Path, n_parts: int = 4, per_part: int = 25) -> tuple[Path, list[dict]]:
    """Day 0 of arm cloud with ``n_parts`` parts of prefix w0 (t_scheduled shuffled)."""
    w = RequestWriter(tmp_path, day_clock=CLOCK)
    rows = []
    for p in range(n_parts):
        chunk = [row(p * per_part + k, day=((k * 7919 + p) % 97) / 100) for k in range(per_part)]
        write(w, chunk)
        rows += chunk
    return tmp_path / "requests/day=000/arm=cloud", rows


def test_compaction_merges_sorts_and_lists_its_sources(tmp_path):
    folder, rows = _partition(tmp_path)
    before = read_requests(tmp_path, phases=None)
    result = compact_partition(folder, "w0")
    assert result is not None and result.rows == len(rows) and result.generation == 1
    assert names(folder) == ["w0-compact-g1.parquet"]
    table = pq.read_table(folder / "w0-compact-g1.parquet")
    assert table.schema.equals(REQUEST_SCHEMA, check_metadata=False)
    meta = table.schema.metadata
    assert meta[b"harness.schema_version"] == str(SCHEMA_VERSION).encode()
    assert json.loads(meta[COMPACTED_FROM]) == [f"w0-part-{i:06d}.parquet" for i in (1, 2, 3, 4)]
    sched = table.column("t_scheduled").to_pylist()
    assert sched == sorted(sched) and len(set(sched)) > 50  # sorted, not trivially
    after = read_requests(tmp_path, phases=None)
    assert keys(after) == keys(before)
    # same rows, same values
    by_id = {r: v for r, v in zip(after["request_id"].to_pylist(), after["completion_tokens"].to_pylist(), strict=True)}  # fmt: skip
    assert by_id == {r["request_id"]: r["completion_tokens"] for r in rows}
    assert compact_partition(folder, "w0") is None  # nothing left to merge

    # late rows of day 0 arrive as new parts and go into the next generation
    w = RequestWriter(tmp_path, day_clock=CLOCK)
    assert w._seq == 5  # numbering continues after the merged (deleted) parts
    late = [row(1000, day=0.99), row(1001, day=0.98)]
    write(w, late)
    assert "w0-part-000005.parquet" in names(folder)
    assert keys(read_requests(tmp_path)) == keys_of(rows + late)  # the new part is not ignored
    result = compact_partition(folder, "w0")
    assert result is not None and result.generation == 2
    assert names(folder) == ["w0-compact-g2.parquet"]
    listed = json.loads(pq.read_metadata(folder / "w0-compact-g2.parquet").metadata[COMPACTED_FROM])
    assert "w0-compact-g1.parquet" in listed and "w0-part-000005.parquet" in listed
    assert "w0-part-000001.parquet" in listed  # what g1 replaced stays superseded
    assert keys(read_requests(tmp_path)) == keys_of(rows + late)


def test_prefixes_are_compacted_separately(tmp_path):
    folder, rows = _partition(tmp_path, n_parts=2)
    w1 = RequestWriter(tmp_path, day_clock=CLOCK, prefix="w1")
    other = [row(500 + k, day=0.3) for k in range(5)]
    write(w1, other)
    write(w1, [row(600, day=0.4)])
    stats = compact_all(tmp_path / "requests")
    assert stats.partitions == 2 and stats.files_in == 4 and stats.rows == len(rows) + 6
    assert names(folder) == ["w0-compact-g1.parquet", "w1-compact-g1.parquet"]
    assert keys(read_requests(tmp_path)) == keys_of(rows + other + [row(600)])
    assert compact_all(tmp_path).partitions == 0  # a run folder is accepted; nothing to do


def test_compaction_of_a_day_is_well_under_a_second(tmp_path):
    folder, rows = _partition(tmp_path, n_parts=12, per_part=400)  # a day: 12 flushes
    result = compact_partition(folder, "w0")
    assert result is not None and result.rows == 4800
    assert result.seconds < 1.0, result.seconds


def _crash_at(step: str, nth: int = 1):
    """A hook that raises at the ``nth`` time ``step`` is reached."""
    seen = Counter()

    class Crash(BaseException):  # not an Exception: nothing on the way catches it
        pass

    def hook(s: str) -> None:
        seen[s] += 1
        if s == step and seen[s] == nth:
            raise Crash(s)

    return hook, Crash


CRASH_POINTS = [(s, 1) for s in STEPS] + [("source_deleted", 2), ("source_deleted", 4)]


def _second_generation_setup(tmp_path: Path) -> tuple[Path, list[dict]]:
    """A partition holding g1 (2 parts merged) and 3 newer parts: the crash hits g2."""
    folder, rows = _partition(tmp_path, n_parts=2, per_part=10)
    assert compact_partition(folder, "w0") is not None
    w = RequestWriter(tmp_path, day_clock=CLOCK)
    for p in range(3):
        chunk = [row(100 + 10 * p + k, day=0.5 + k / 100, attempt=k % 2) for k in range(10)]
        write(w, chunk)
        rows += chunk
    return folder, rows


def _check_after_crash(tmp_path: Path, folder: Path, rows: list[dict]) -> None:
    expected = keys_of(rows)
    table = read_requests(tmp_path, phases=None)
    assert keys(table) == expected  # nothing lost, nothing twice
    assert max(keys(table).values()) == 1
    recover(tmp_path / "requests")
    assert keys(read_requests(tmp_path)) == expected
    left = names(folder)
    assert not [n for n in left if n.endswith(".tmp")]
    listed = set()
    for n in left:
        if "-compact-" in n:
            listed |= compact.compacted_sources(folder / n)
    assert not listed & set(left)  # recovery removed every superseded source
    compact_all(tmp_path / "requests")
    assert len(names(folder)) == 1
    assert keys(read_requests(tmp_path)) == expected


@pytest.mark.parametrize("step,nth", CRASH_POINTS)
def test_a_crash_at_any_step_loses_nothing_and_duplicates_nothing(tmp_path, step, nth):
    folder, rows = _second_generation_setup(tmp_path)
    hook, crash = _crash_at(step, nth)
    with pytest.raises(crash):
        compact_partition(folder, "w0", hook=hook)
    _check_after_crash(tmp_path, folder, rows)


@pytest.mark.parametrize("step,nth", CRASH_POINTS)
def test_sigkill_at_any_step_loses_nothing_and_duplicates_nothing(tmp_path, step, nth):
    folder, rows = _second_generation_setup(tmp_path)
    seen = Counter()

    def die(s: str) -> None:
        seen[s] += 1
        if s == step and seen[s] == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    pid = os.fork()
    if pid == 0:  # the child compacts and is killed at the step
        try:
            compact_partition(folder, "w0", hook=die)
        finally:
            os._exit(3)  # not reached when the kill came
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:  # never hang the suite on a child
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the compacting child did not finish in 60 s")
        time.sleep(0.01)
    status = done[1]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    _check_after_crash(tmp_path, folder, rows)


def test_recover_deletes_stale_part_temporaries_only(tmp_path):
    folder, rows = _partition(tmp_path, n_parts=1)
    fresh, stale = folder / ".w0-part-000009.parquet.tmp", folder / ".w0-part-000008.parquet.tmp"
    fresh.write_bytes(b"half")
    stale.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    stats = recover(tmp_path / "requests")
    assert stats.temps_deleted == 1 and fresh.exists() and not stale.exists()
    assert keys(read_requests(tmp_path)) == keys_of(rows)


def test_a_second_compactor_is_refused_while_one_holds_the_folder(tmp_path):
    folder, rows = _partition(tmp_path, n_parts=3)
    with compact._folder_lock(folder, 0.0):
        with pytest.raises(CompactionBusy):
            compact_partition(folder, "w0")
        assert compact_all(tmp_path / "requests").busy == 1
    assert len(names(folder)) == 3
    assert compact_all(tmp_path / "requests").partitions == 1


def test_a_compaction_between_listing_and_reading_is_read_once(tmp_path, monkeypatch):
    """A report reading the day while the canary compacts it: neither a gap nor a duplicate."""
    folder, rows = _second_generation_setup(tmp_path)
    real = reader._read_part
    fired = []

    def read_then_compact(path, *args, **kwargs):
        table = real(path, *args, **kwargs)
        if not fired:  # the first file has been read; the rest is replaced under the reader
            fired.append(compact_partition(folder, "w0"))
        return table

    monkeypatch.setattr(reader, "_read_part", read_then_compact)
    tables = list(iter_request_parts(tmp_path, ("request_id", "attempt"), phases=None))
    assert fired[0] is not None
    got = Counter()
    for t in tables:
        got += keys(t)
    assert got == keys_of(rows)


# -- during the run --------------------------------------------------------------------------


@pytest.mark.slow  # 720 part files and ~90 compactions: 5-15 s on a busy 2-core machine
def test_a_compressed_month_ends_with_one_file_per_day_arm_and_prefix(tmp_path):
    """30 days at time_scale 3600 (a day in 24 s), a flush every 2 s, two arms; some rows end
    late (a slow request scheduled at 23:59 written after the day was compacted)."""
    fake = FakeClock()
    w = RequestWriter(tmp_path, day_clock=CLOCK, flush_interval_s=2.0, clock=fake)
    req = tmp_path / "requests"
    all_rows: list[dict] = []
    late: list[dict] = []
    i = 0
    checked_mid_run = False
    for tick in range(30 * 12):  # one flush every 2 wall seconds
        fake.t = tick * 2.0
        day_pos = tick * 2.0 / 24.0  # experiment-clock days since the origin
        for k in range(4):
            vday = day_pos + k * 2.0 / 24.0 / 4
            for arm in ("cloud", "selfhosted"):
                r = row(i, arm, vday)
                i += 1
                # one request per day of cloud, near the end of the day, ends 10 s (wall) late
                if arm == "cloud" and tick % 12 == 11 and k == 3:
                    late.append((fake.t + 10.0, r))
                    continue
                w.add(r)
                all_rows.append(r)
        for due in [x for x in late if x[0] <= fake.t]:
            late.remove(due)
            w.add(due[1])
            all_rows.append(due[1])
        batch = w.take()
        if batch is not None:
            w.write_batch(*batch)
        if tick == 10 * 12 and not checked_mid_run:  # day 10 begins: days 0-8 compacted
            checked_mid_run = True
            for d in range(9):
                for arm in ("cloud", "selfhosted"):
                    got = names(req / f"day={d:03d}/arm={arm}")
                    assert len(got) == 1 and got[0].startswith("w0-compact-g"), (d, arm, got)
    for _, r in late:
        w.add(r)
        all_rows.append(r)
    w.close()
    assert checked_mid_run
    folders = compact.partition_dirs(req)
    assert len(folders) == 60
    for folder in folders:
        got = names(folder)
        assert len(got) == 1 and got[0].startswith("w0-compact-g"), (folder, got)
    assert w.compaction_errors == 0 and w.compactions >= 60
    table = read_requests(tmp_path)
    assert keys(table) == keys_of(all_rows) and table.num_rows == len(all_rows)
    day = read_requests(tmp_path, ["t_virtual"], days=[17])
    assert set(CLOCK.days_of(day.column("t_virtual").to_numpy())) == {17}


def test_a_resumed_writer_compacts_what_a_killed_segment_left(tmp_path):
    fake = FakeClock()
    w = RequestWriter(tmp_path, day_clock=CLOCK, flush_interval_s=2.0, clock=fake)
    first = [row(k, day=0.1 + k / 100) for k in range(5)] + [row(50, day=1.2)]
    for r in first:  # one part each: killed before any compaction
        write(w, [r])
    req = tmp_path / "requests"
    assert len(names(req / "day=000/arm=cloud")) == 5
    # the next segment (same prefix) writes day 2 rows; day 0 and 1 get compacted
    fake2 = FakeClock()
    w2 = RequestWriter(tmp_path, day_clock=CLOCK, flush_interval_s=2.0, clock=fake2)
    assert w2._seq == 7
    second = [row(100, day=2.5)]
    write(w2, second)
    fake2.t = 100.0
    write(w2, [row(101, day=2.6)])
    assert names(req / "day=000/arm=cloud") == ["w0-compact-g1.parquet"]
    assert names(req / "day=001/arm=cloud") == ["w0-compact-g1.parquet"]
    w2.close()
    assert names(req / "day=002/arm=cloud") == ["w0-compact-g1.parquet"]
    assert keys(read_requests(tmp_path)) == keys_of(first + second + [row(101)])


def test_the_collector_partitions_and_compacts_each_workers_rows(tmp_path):
    from harness.record.schema import REQUEST_COLUMNS

    c = RowCollector(tmp_path, flush_interval_s=2.0, partition_by_day=True)
    c.set_day_clock(CLOCK)
    sent = []
    for worker in (1, 2):
        for seq, day in enumerate((0.2, 0.7, 1.3), start=1):
            rs = [row(worker * 1000 + seq * 10 + k, "cloud", day) for k in range(3)]
            sent += rs
            c.receive(
                {
                    "worker": worker,
                    "seq": seq,
                    "columns": list(REQUEST_COLUMNS),
                    "rows": [[r.get(n) for n in REQUEST_COLUMNS] for r in rs],
                }
            )
            c.flush()
    req = tmp_path / "requests"
    assert sorted(names(req / "day=000/arm=cloud")) == [
        "w1-part-000001.parquet",
        "w1-part-000002.parquet",
        "w2-part-000001.parquet",
        "w2-part-000002.parquet",
    ]
    c.close()
    assert names(req / "day=000/arm=cloud") == ["w1-compact-g1.parquet", "w2-compact-g1.parquet"]
    assert names(req / "day=001/arm=cloud") == ["w1-compact-g1.parquet", "w2-compact-g1.parquet"]
    assert keys(read_requests(tmp_path)) == keys_of(sent)
    assert c.receive({"worker": 1, "seq": 9, "columns": ["arm"], "rows": [["cloud"]]}) == 0
    assert c.late_rows == 1


def test_run_spec_carries_the_partition_setting():
    from harness.load.spec import RunSpec

    assert RunSpec.__dataclass_fields__["partition_by_day"].default is False
    d = {
        "run_id": "r",
        "experiment": "e",
        "run_dir": "/tmp/x",
        "project_root": "/tmp",
        "arms": {},
        "workload": {},
        "load": {},
        "record": {},
        "partition_by_day": True,
    }
    assert RunSpec.from_dict(d).partition_by_day is True
    d.pop("partition_by_day")
    assert RunSpec.from_dict(d).partition_by_day is False


def test_compaction_waits_for_the_grace_after_the_day_ends(tmp_path):
    fake = FakeClock()
    w = RequestWriter(tmp_path, day_clock=CLOCK, flush_interval_s=2.0, clock=fake)
    assert w.compact_grace_s == 6.0  # three flush intervals
    day0 = tmp_path / "requests/day=000/arm=cloud"
    write(w, [row(0, day=0.9)])
    write(w, [row(1, day=0.95)])
    fake.t = 10.0
    write(w, [row(2, day=1.01)])  # day 1 begins at t=10
    fake.t = 15.9
    write(w, [row(3, day=0.99)])  # a late row of day 0, within the grace: a part of its own
    assert len(names(day0)) == 3
    fake.t = 16.0
    write(w, [row(4, day=1.1)])
    assert names(day0) == ["w0-compact-g1.parquet"]
    assert compact.compacted_sources(day0 / "w0-compact-g1.parquet") == {
        "w0-part-000001.parquet",
        "w0-part-000002.parquet",
        "w0-part-000004.parquet",
    }
    fake.t = 30.0
    write(w, [row(5, day=0.999)])  # later still: day 0 is due again 6 s after this part
    fake.t = 35.0
    write(w, [row(6, day=1.2)])
    assert len(names(day0)) == 2
    fake.t = 36.0
    write(w, [row(7, day=1.3)])
    assert names(day0) == ["w0-compact-g2.parquet"]
    assert len(names(tmp_path / "requests/day=001/arm=cloud")) == 4  # the current day: parts
    w.close()
    assert names(tmp_path / "requests/day=001/arm=cloud") == ["w0-compact-g1.parquet"]
    assert keys(read_requests(tmp_path)) == keys_of([row(i) for i in range(8)])


@pytest.mark.slow
def test_a_distributed_canary_run_ends_with_one_file_per_day_arm_and_worker(tmp_path):
    """The real path: spec.partition_by_day from canary.enabled, the master's collector gets
    the clock at t0, compacts as days end and at close. Three days of 2 wall seconds."""
    from tests.load.e2e import manifest, only_run_dir, run_harness, smoke_args

    reports = tmp_path / "reports"
    res = run_harness(
        smoke_args(
            reports,
            "canary.enabled=true",
            "canary.daily_reports=false",
            "load.time_scale=3600",
            "canary.day_s=7200",
            "load.duration_s=5",
            "load.workers=1",
            flush_interval_s=0.5,
        )
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run = only_run_dir(reports)
    req = run / "requests"
    files = sorted(str(p.relative_to(req)) for p in req.rglob("*") if p.is_file())
    folders = [f"day={d:03d}/arm={arm}" for d in range(3) for arm in ("cloud", "selfhosted")]
    assert [f.rsplit("/", 1)[0] for f in files] == folders, files  # one file each
    assert all(re.fullmatch(r"w0-compact-g\d+\.parquet", f.rsplit("/", 1)[1]) for f in files)
    table = read_requests(run, phases=None)
    assert max(keys(table).values()) == 1
    clock = ExperimentClock(**manifest(run)["clock"])
    for d in range(3):
        day = read_requests(run, ["t_virtual"], phases=None, days=[d])
        assert day.num_rows > 0
        assert set(clock.days_of(day.column("t_virtual").to_numpy())) == {d}


def test_a_day_in_real_time_is_compacted_as_its_parts_pile_up(tmp_path):
    fake = FakeClock()
    w = RequestWriter(tmp_path, day_clock=CLOCK, clock=fake, compact_max_parts=4)
    folder = tmp_path / "requests/day=000/arm=cloud"
    for k in range(3):
        write(w, [row(k, day=0.01 * k)])
    assert len(names(folder)) == 3  # the day runs, few parts: left alone
    write(w, [row(3, day=0.04)])
    assert names(folder) == ["w0-compact-g1.parquet"]  # 4 parts: merged mid-day
    for k in range(4, 8):
        write(w, [row(k, day=0.01 * k)])
    assert names(folder) == ["w0-compact-g2.parquet"]
    assert keys(read_requests(tmp_path)) == keys_of([row(k) for k in range(8)])


def test_new_parts_written_while_a_day_is_read_do_not_stall_the_reader(tmp_path, monkeypatch):
    """The live canary keeps adding parts to the current day while a report reads it: the
    reader keeps the snapshot it listed (no compaction happened) instead of starting over."""
    folder, rows = _partition(tmp_path, n_parts=3)
    w = RequestWriter(tmp_path, day_clock=CLOCK)
    real = reader._read_part
    extra = iter(range(10_000, 20_000))

    def read_while_writing(path, *args, **kwargs):
        write(w, [row(next(extra), day=0.5)])  # a new part lands on every read
        return real(path, *args, **kwargs)

    monkeypatch.setattr(reader, "_read_part", read_while_writing)
    table = read_requests(tmp_path, ["request_id", "attempt"], phases=None)
    assert keys(table) == keys_of(rows)  # the listed snapshot, read once


def test_parts_of_an_older_schema_version_are_upgraded_when_compacted(tmp_path):
    folder, rows = _partition(tmp_path, n_parts=2)
    old = pq.read_table(folder / "w0-part-000001.parquet").drop_columns(["system_fingerprint"])
    old = old.replace_schema_metadata({b"harness.schema_version": b"4"})
    pq.write_table(old, folder / "w0-part-000001.parquet")  # as a v4 harness wrote it
    result = compact_partition(folder, "w0")
    table = pq.read_table(result.output)
    assert table.schema.equals(REQUEST_SCHEMA, check_metadata=False)
    assert table.schema.metadata[b"harness.schema_version"] == str(SCHEMA_VERSION).encode()
    assert table.column("system_fingerprint").null_count == table.num_rows
    assert keys(table) == keys_of(rows)
