"""Judge calibration: how often the canary judge says GO / NO_GO, synthetic and end to end.

1. Synthetic mirrored runs (:mod:`harness.judge.calibration`, the judge's default 2,000
   resamples): A/A (different models, item correlation 0.5; and copies of one model) and the
   injected regression (accuracy 0.90 -> 0.80, TTFT p99 +25%), over ``--synthetic-seeds``.
2. End to end on the embedded simulators: ``configs/experiment/aa_check.yaml`` and
   ``regression_check.yaml``, each run ``--seeds`` times with a different seed (arrivals,
   item order, simulator, bootstrap), each verdict read from the run's summary.json.

Run: ``make calibrate`` (``seeds=N``), or ``python -m bench.calibrate_judge --seeds 3``.
About 2.5 minutes per end-to-end run here; not part of ``make bench`` or CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKS = (("aa_check", "GO"), ("regression_check", "NO_GO"))


def synthetic(seeds: int) -> None:
    from harness.judge.calibration import SyntheticRun, decision_rates

    cases = (
        ("A/A, different models (rho 0.5)", SyntheticRun(same_model=False, rho=0.5)),
        ("A/A, copies of one model", SyntheticRun()),
        ("regression (accuracy -10 pts, TTFT p99 +25%)", SyntheticRun().regressed()),
    )
    for label, run in cases:
        t0 = time.perf_counter()
        r = decision_rates(range(seeds), run)
        print(f"synthetic {label}: GO {r['GO']:.1%}  NO_GO {r['NO_GO']:.1%}  INCONCLUSIVE "
              f"{r['INCONCLUSIVE']:.1%}  ({r['seeds']} seeds, {time.perf_counter() - t0:.0f} s)",
              flush=True)  # fmt: skip


def run_check(name: str, seed: int, reports: Path) -> dict:
    overrides = [f"experiment={name}", f"record.reports_dir={reports}", f"load.seed={seed}",
                 f"workload.seed={seed}", f"arms.baseline.sim.seed={seed}",
                 f"arms.candidate.sim.seed={seed}", f"judge.seed={seed}",
                 f"run_id={name}-seed{seed}"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "experiment", *overrides], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    took = time.perf_counter() - t0
    summary = reports / name / f"{name}-seed{seed}" / "summary.json"
    if proc.returncode != 0 or not summary.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"decision": "FAILED", "reasons": tail, "seconds": took}
    v = json.loads(summary.read_text(encoding="utf-8")).get("verdict") or {}
    return {"decision": v.get("decision"), "reasons": v.get("reasons") or [], "seconds": took}


def end_to_end(seeds: int, reports: Path) -> None:
    for name, expected in CHECKS:
        counts: Counter[str] = Counter()
        for seed in range(seeds):
            r = run_check(name, seed, reports)
            counts[str(r["decision"])] += 1
            print(f"{name} seed {seed}: {r['decision']} in {r['seconds']:.0f} s; reasons: "
                  f"{', '.join(r['reasons']) or 'none'}", flush=True)  # fmt: skip
        share = counts[expected] / seeds if seeds else 0.0
        print(f"{name}: {expected} in {counts[expected]} of {seeds} runs ({share:.0%}); "
              f"all: {dict(counts)}", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.calibrate_judge", description=__doc__)
    ap.add_argument("--seeds", type=int, default=3, help="end-to-end runs per check")
    ap.add_argument("--synthetic-seeds", type=int, default=200)
    ap.add_argument("--reports-dir", type=Path, default=None,
                    help="where the runs go (default: a temporary directory)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.synthetic_seeds > 0:
        synthetic(args.synthetic_seeds)
    if args.seeds > 0:
        if args.reports_dir is not None:
            end_to_end(args.seeds, args.reports_dir.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="calibrate-judge-") as tmp:
                end_to_end(args.seeds, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
