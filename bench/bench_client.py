"""Client overhead benchmark: both client implementations against a fixed-latency simulator.

For each implementation (``lean``, ``sdk``) the client runs in its own gevent-monkey-patched
subprocess (as in the locust load process) and the simulator (profile ``cloud`` with
``ttft_ms=50``, ``itl_jitter=0``) in another. Printed figures:

* TTFT overhead (measured TTFT - injected 50 ms), p50 and p99, at 1, 100 and 1,000
  concurrent streams (closed loop, users started at random offsets, first round discarded).
  It includes the simulator's own scheduling lag, which this 2-core box shares with the
  client, so it is an upper bound on the client's overhead.
* A throughput sweep at 200 streams with shrinking inter-token gaps: delivered content
  chunks/s, client CPU per chunk, and TTFT overhead; the "sustained" figure is the highest
  delivered chunks/s whose TTFT overhead p50 stays within 2 ms. ``cpu-bound chunks/s`` =
  1 / (client CPU per chunk): what one worker process could read with a core to itself.

``python -m bench client`` (or ``make bench``); about 2 minutes. ``--quick`` for a smoke run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

INJECTED_TTFT_MS = 50.0
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- child process


def _child(argv: list[str]) -> None:
    """Run one load level in this (monkey-patched) process; print a JSON result line."""
    from gevent import monkey

    monkey.patch_all()
    import gevent

    from harness.config import TargetConfig
    from harness.targets import make_arm_client
    from harness.workloads.base import WorkItem

    url, impl = argv[0], argv[1]
    streams, tokens, itl_ms = int(argv[2]), int(argv[3]), float(argv[4])
    warm_s, measure_s = float(argv[5]), float(argv[6])
    t = TargetConfig(kind="sim_cloud", model="sim-cloud-mini", base_url=url, client=impl)
    t.max_connections = streams + 16
    t.retry.max_attempts = 1
    t.timeouts.first_token_s = 30
    t.timeouts.total_s = 120
    client = make_arm_client("bench", t, run_id="bench", experiment="bench", output_text="drop")
    item = WorkItem(sample_id="b", prompt="benchmark prompt", max_tokens=tokens, force_length=True)
    client.execute(item, request_id="warm")  # lazy imports, first connection

    duration_s = INJECTED_TTFT_MS / 1e3 + (tokens - 1) * itl_ms / 1e3
    t0 = time.perf_counter_ns()
    t_start = t0 + int(warm_s * 1e9)
    t_stop = t_start + int(measure_s * 1e9)
    results: list[tuple[int, float, list[float], str | None]] = []
    rng = random.Random(0)

    def user(k: int, delay: float) -> None:
        gevent.sleep(delay)
        i = 0
        while time.perf_counter_ns() < t_stop:
            rows = client.execute(item, request_id=f"{k}-{i}")
            i += 1
            r = rows[-1]
            from harness.targets import clock

            results.append(
                (clock.perf_from_wall(r.t_sent), r.ttft_s or 0.0, r.itl_s or [], r.error_type)
            )

    cpu0 = None
    jobs = [gevent.spawn(user, k, rng.uniform(0, min(duration_s, warm_s))) for k in range(streams)]
    gevent.sleep(max(0.0, (t_start - time.perf_counter_ns()) / 1e9))
    cpu0 = time.process_time()
    gevent.sleep(max(0.0, (t_stop - time.perf_counter_ns()) / 1e9))
    cpu1 = time.process_time()
    gevent.joinall(jobs, timeout=duration_s * 3 + 10)
    client.close()

    over = []
    chunks = 0
    errors = 0
    for t_sent, ttft, itl, err in results:
        if err is not None:
            if t_start <= t_sent < t_stop:
                errors += 1
            continue
        if t_start <= t_sent < t_stop:
            over.append(ttft * 1e3 - INJECTED_TTFT_MS)
        # content chunks that arrived inside the window
        t = t_sent + ttft * 1e9
        for gap in [0.0, *itl]:
            t += gap * 1e9
            if t_start <= t < t_stop:
                chunks += 1
    print(
        "RESULT "
        + json.dumps(
            {
                "overhead_ms": over,
                "chunks": chunks,
                "measure_s": measure_s,
                "cpu_s": (cpu1 - cpu0) if cpu0 is not None else None,
                "errors": errors,
            }
        ),
        flush=True,
    )


# --------------------------------------------------------------------------- parent


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def _level(
    url: str, impl: str, streams: int, tokens: int, itl_ms: float, warm_s: float, measure_s: float
) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_client", "--child", url, impl, str(streams),
           str(tokens), str(itl_ms), str(warm_s), str(measure_s)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=warm_s + measure_s + 120, env=env, cwd=ROOT
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
            o = res["overhead_ms"]
            res["n"] = len(o)
            res["p50"] = _pct(o, 0.5)
            res["p99"] = _pct(o, 0.99)
            res["chunks_s"] = res["chunks"] / res["measure_s"]
            res["cpu_us_per_chunk"] = (
                res["cpu_s"] / res["chunks"] * 1e6 if res["chunks"] and res["cpu_s"] else None
            )
            return res
    raise RuntimeError(f"bench child failed ({impl}, {streams} streams): {out.stderr[-1500:]}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    from harness.sim.process import SimProcess

    scale = 0.4 if quick else 1.0
    # (streams, tokens per request, inter-token ms, warmup s, measured s)
    conc_levels = [(1, 10, 5.0, 0.5, 3.0), (100, 40, 20.0, 1.5, 5.0), (1000, 40, 100.0, 5.0, 6.0)]
    sweep = [(200, 300, itl, 1.5, 4.0) for itl in (20.0, 10.0, 5.0, 2.5, 1.25)]
    if quick:
        conc_levels = conc_levels[:2]
        sweep = sweep[1:3]

    print(f"fixed-latency simulator: TTFT {INJECTED_TTFT_MS:g} ms, jitter 0; client in a "
          f"gevent-patched subprocess; {os.cpu_count()} CPUs shared with the simulator")  # fmt: skip
    summary: dict[str, dict] = {}
    for impl in ("lean", "sdk"):
        summary[impl] = {}
        print(f"\n[{impl}] TTFT overhead = measured - injected (ms)")
        print(f"  {'streams':>8} {'n':>6} {'p50':>8} {'p99':>8} {'chunks/s':>9} {'errors':>6}")
        for streams, tokens, itl, warm, meas in conc_levels:
            params = {"ttft_ms": INJECTED_TTFT_MS, "itl_ms": itl, "itl_jitter": 0.0}
            with SimProcess("cloud", params=params) as sim:
                r = _level(sim.base_url, impl, streams, tokens, itl, warm * scale, meas * scale)
            summary[impl][f"ttft_overhead_{streams}"] = (r["p50"], r["p99"])
            print(f"  {streams:>8} {r['n']:>6} {r['p50']:>8.2f} {r['p99']:>8.2f} "
                  f"{r['chunks_s']:>9.0f} {r['errors']:>6}", flush=True)  # fmt: skip
        print(f"[{impl}] throughput sweep, 200 streams")
        print(f"  {'itl ms':>7} {'chunks/s':>9} {'cpu us/chunk':>12} {'cpu-bound/s':>11} "
              f"{'ttft p50':>8} {'p99':>8}")  # fmt: skip
        best = 0.0
        cpu_bound = []
        for streams, tokens, itl, warm, meas in sweep:
            params = {"ttft_ms": INJECTED_TTFT_MS, "itl_ms": itl, "itl_jitter": 0.0}
            with SimProcess("cloud", params=params) as sim:
                r = _level(sim.base_url, impl, streams, tokens, itl, warm * scale, meas * scale)
            us = r["cpu_us_per_chunk"]
            cap = 1e6 / us if us else float("nan")
            cpu_bound.append(cap)
            if r["p50"] <= 2.0 and r["errors"] == 0:
                best = max(best, r["chunks_s"])
            print(f"  {itl:>7g} {r['chunks_s']:>9.0f} {us or float('nan'):>12.1f} {cap:>11.0f} "
                  f"{r['p50']:>8.2f} {r['p99']:>8.2f}", flush=True)  # fmt: skip
        summary[impl]["sustained_chunks_s"] = best
        summary[impl]["cpu_bound_chunks_s"] = max(cpu_bound) if cpu_bound else float("nan")
    print("\nsummary (TTFT overhead ms p50/p99; chunks/s sustained with overhead p50 <= 2 ms)")
    for impl, s in summary.items():
        parts = [f"{k.split('_')[-1]} streams {v[0]:.2f}/{v[1]:.2f}"
                 for k, v in s.items() if k.startswith("ttft")]  # fmt: skip
        print(f"  {impl:>4}: " + "; ".join(parts)
              + f"; sustained {s['sustained_chunks_s']:.0f} chunks/s"
              + f"; cpu-bound {s['cpu_bound_chunks_s']:.0f} chunks/s")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
    else:
        t0 = time.perf_counter()
        main()
        print(f"({time.perf_counter() - t0:.0f} s)")
