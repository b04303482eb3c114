"""Analysis benchmark: time and peak memory of ``build_report`` on 1M and 10M synthetic rows.

Rows are generated vectorised with numpy/pyarrow straight into Parquet part files (1M rows
each, two arms, two slices, 3% errors, 4-12 inter-token gaps per request, no output text) in
a temporary directory. Each analysis runs in a fresh subprocess, so its peak RSS
(``ru_maxrss`` of the child) is an honest peak for the whole report: load, statistics,
bootstrap CIs, plots, HTML and memo. Run: ``python -m bench analysis`` (or ``make bench``).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.record.schema import REQUEST_SCHEMA

SIZES = tuple(int(x) for x in os.environ.get("BENCH_ANALYSIS_ROWS", "1000000,10000000").split(","))
PART_ROWS = 1_000_000
T0 = 1_780_000_000_000_000_000
NS = 1_000_000_000


def _part(n: int, offset: int, rng: np.random.Generator, rate: float) -> pa.Table:
    i = np.arange(offset, offset + n)
    arm_idx = (i % 2).astype(np.int32)
    sched = T0 + (i // 2 / rate * NS).astype(np.int64)
    qd = rng.exponential(0.001, n)
    sent = sched + (qd * NS).astype(np.int64)
    err = rng.random(n) < 0.03
    ttft = rng.lognormal(np.log(np.where(arm_idx == 0, 0.25, 0.12)), 0.5)
    k = rng.integers(5, 14, n)  # output tokens; k - 1 gaps
    gaps = rng.gamma(4.0, 0.005, int((k - 1).sum()))
    offsets = np.concatenate([[0], np.cumsum(k - 1)]).astype(np.int32)
    decode = np.add.reduceat(gaps, offsets[:-1])
    first = sent + (ttft * NS).astype(np.int64)
    end = first + (decode * NS).astype(np.int64)
    ts = pa.timestamp("ns", tz="UTC")

    def masked(x, typ):
        return pa.array(x, typ, mask=err)

    cols = {
        "run_id": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), ["bench"]),
        "experiment": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), ["bench"]),
        "arm": pa.DictionaryArray.from_arrays(arm_idx, ["cloud", "selfhosted"]),
        "target_kind": pa.DictionaryArray.from_arrays(arm_idx, ["sim_cloud", "sim_vllm"]),
        "request_id": pa.array(i).cast(pa.string()),
        "attempt": pa.array(np.zeros(n, np.int32)),
        "slice": pa.DictionaryArray.from_arrays((i // 2 % 2).astype(np.int32), ["short", "long"]),
        "phase": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), ["main"]),
        "status": pa.DictionaryArray.from_arrays(err.astype(np.int32), ["ok", "error"]),
        "error_type": pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(n, np.int32), mask=~err), ["server_error"]
        ),
        "t_scheduled": pa.array(sched, ts),
        "t_sent": pa.array(sent, ts),
        "t_first_token": masked(first, ts),
        "t_end": pa.array(np.where(err, sent + NS // 20, end), ts),
        "queue_delay_s": pa.array(qd),
        "ttft_s": masked(ttft, pa.float64()),
        "e2e_s": masked(ttft + decode, pa.float64()),
        "ttft_sched_s": masked(ttft + qd, pa.float64()),
        "e2e_sched_s": masked(ttft + decode + qd, pa.float64()),
        "tpot_s": masked(decode / (k - 1), pa.float64()),
        "itl_s": pa.ListArray.from_arrays(pa.array(offsets), pa.array(gaps), mask=pa.array(err)),
        "prompt_tokens": pa.array(np.full(n, 256, np.int64)),
        "completion_tokens": masked(k, pa.int64()),
    }
    schema = pa.schema(
        [
            pa.field(
                name,
                arr.type if pa.types.is_dictionary(arr.type) else REQUEST_SCHEMA.field(name).type,
            )
            for name, arr in cols.items()
        ],
        metadata=REQUEST_SCHEMA.metadata,
    )
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)


def generate(run_dir: Path, rows: int, seed: int = 0) -> float:
    """Write ``rows`` synthetic request rows (+ manifest) into ``run_dir``; return seconds."""
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    rate = 200.0  # arrivals per second per arm
    (run_dir / "requests").mkdir(parents=True, exist_ok=True)
    for j, start in enumerate(range(0, rows, PART_ROWS)):
        n = min(PART_ROWS, rows - start)
        pq.write_table(_part(n, start, rng, rate), run_dir / "requests" / f"part-{j:06d}.parquet")
    manifest = {
        "run_id": run_dir.name,
        "experiment": "bench",
        "status": "completed",
        "arms": {"cloud": {"kind": "sim_cloud"}, "selfhosted": {"kind": "sim_vllm"}},
        "offered": {"rate": rate, "mode": "open"},
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return time.perf_counter() - t


_CHILD = """
import json, sys, time
from pathlib import Path
t = time.perf_counter()
from harness.report import build_report
t_import = time.perf_counter() - t
t = time.perf_counter()
s = build_report(Path(sys.argv[1]))
print(json.dumps({"import_s": t_import, "report_s": time.perf_counter() - t,
                  "rows": s["run"]["rows"]}))
"""


def analyse(run_dir: Path) -> dict:
    """Run build_report in a child process; wall time and the child's peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(run_dir)], check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(wall_s=wall, peak_rss_mib=peak_kib / 1024, peak_is_new=peak_kib > before)
    return res


def main() -> None:
    print(
        f"analysis benchmark on {os.cpu_count()} CPUs; sizes {', '.join(f'{n:,}' for n in SIZES)}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as tmp:
        for rows in SIZES:
            run_dir = Path(tmp) / "bench" / f"rows-{rows}"
            gen = generate(run_dir, rows)
            size = sum(p.stat().st_size for p in (run_dir / "requests").glob("*.parquet"))
            r = analyse(run_dir)
            ok = "OK" if r["wall_s"] < 60 and r["peak_rss_mib"] < 4096 else "OVER GOAL"
            print(
                f"{rows:>11,} rows ({size / 2**20:,.0f} MiB Parquet, generated in {gen:.1f} s): "
                f"build_report {r['report_s']:.1f} s (+{r['import_s']:.1f} s imports, "
                f"{r['wall_s']:.1f} s wall), peak RSS {r['peak_rss_mib']:,.0f} MiB "
                f"[goal: <60 s, <4096 MiB: {ok}]",
                flush=True,
            )


if __name__ == "__main__":
    main()
