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

USAGE = "usage: harness score RUN_DIR [--no-report] [--llm-judge [--judge-target T] [--judge-base-url U] [--judge-model M]]"


def run_score(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="harness score", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--no-report", action="store_true", help="only write the scores table")
    ap.add_argument(
        "--llm-judge",
        action="store_true",
        help="also run the LLM judge (quality.llm_judge; on when the run enabled it)",
    )
    ap.add_argument("--judge-target", help="quality.llm_judge.target (a target preset)")
    ap.add_argument("--judge-base-url", help="quality.llm_judge.base_url")
    ap.add_argument("--judge-model", help="quality.llm_judge.model")
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
    rc = _llm_judge(run_dir, args)
    if rc:
        return rc
    if not args.no_report:
        from harness.report import build_report

        build_report(run_dir)
        print(f"report: {run_dir / 'report.html'}")
    return 0


def _llm_judge(run_dir: Path, args: argparse.Namespace) -> int:
    """Run the optional LLM judge when asked or enabled in the run's config; 2 on bad
    settings (one line)."""
    import json

    from harness.config import ConfigError
    from harness.quality.llm_judge import JUDGE_FILE, judge_run, settings_from, summarize_judge
    from harness.quality.score import ScoreError

    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    try:
        cfg = settings_from(manifest.get("config"))
        if not (cfg.enabled or args.llm_judge):
            return 0
        for key in ("target", "base_url", "model"):
            v = getattr(args, f"judge_{key}")
            if v is not None:
                setattr(cfg, key, v)
        table = judge_run(run_dir, cfg)
    except (ConfigError, ScoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    j = summarize_judge(table)
    pref = "n/a" if j["preference"] is None else f"{j['preference']:.3f}"
    print(f"llm judge: {j['n']} of {j['items_asked']} items judged (candidate preference "
          f"{pref}), {j['failures']} failure(s), {j['tokens']['total']} tokens: "
          f"{run_dir / JUDGE_FILE}")  # fmt: skip
    return 0
