"""``harness score RUN_DIR [--no-report]``: recompute a run's quality scores without
rerunning load (e.g. after adding a scorer or fixing an eval item), then rewrite its report.

Writes ``RUN_DIR/scores/scores.parquet`` (see :mod:`harness.quality.score`) and prints, per
arm, the logical eval requests answered and unanswered and the table's size. A run that
cannot be scored (no reference answers, output text hashed or dropped) or a malformed eval
file is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE = "usage: harness score RUN_DIR [--no-report]"


def run_score(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="harness score", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--no-report", action="store_true", help="only write the scores table")
    args = ap.parse_args(argv)
    run_dir = args.run_dir.resolve()
    if not (run_dir / "manifest.json").is_file():
        print(f"error: {run_dir} is not a run directory (no manifest.json)", file=sys.stderr)
        return 2
    from harness.quality.score import SCORES_FILE, ScoreError, score_run
    from harness.workloads.base import WorkloadError

    try:
        scores = score_run(run_dir)
    except (ScoreError, WorkloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for arm, c in scores.counts.items():
        print(f"{arm}: {c.answered} of {c.requests} eval requests scored, {c.unanswered} "
              f"unanswered (failed), {c.cancelled} cancelled")  # fmt: skip
    for note in scores.notes:
        print(f"note: {note}")
    print(f"scores: {run_dir / SCORES_FILE} ({scores.n_rows} rows)")
    if not args.no_report:
        from harness.report import build_report

        build_report(run_dir)
        print(f"report: {run_dir / 'report.html'}")
    return 0
