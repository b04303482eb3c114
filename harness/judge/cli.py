"""``harness judge RUN_DIR [--baseline-run OTHER_RUN]``: judge a run, write the verdict into its
report (summary.json, report.html, memo.md are rewritten) and print the decision and reasons.

Without ``--baseline-run`` the run's two arms are compared (``judge.baseline`` /
``judge.candidate`` of the run's config, else the defaults); with it, the candidate arm of
RUN_DIR against the same arm (else the baseline arm) of OTHER_RUN, and the choice is kept in
``RUN_DIR/judge_baseline.json`` for later ``harness report`` runs (``harness judge RUN_DIR``
without the flag removes it). Exit status 0 for any decision; 2 for bad input (one line
naming the problem).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.judge.section import BASELINE_FILE, headline, reason_text


def _check_run_dir(path: Path) -> str | None:
    if not (path / "manifest.json").is_file():
        return f"{path} is not a run directory (no manifest.json)"
    return None


def run_judge(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="harness judge", description="judge a run: GO / NO_GO / "
                                 "INCONCLUSIVE, written into its report")  # fmt: skip
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--baseline-run", type=Path, default=None,
                    help="compare the candidate arm against this earlier run")  # fmt: skip
    args = ap.parse_args(argv)
    run_dir = args.run_dir.resolve()
    other = args.baseline_run.resolve() if args.baseline_run is not None else None
    for d in (run_dir, other):
        err = d is not None and _check_run_dir(d)
        if err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if other is not None and other == run_dir:
        print("error: --baseline-run: is RUN_DIR itself", file=sys.stderr)
        return 2
    from harness.analysis.data import load_run
    from harness.judge.preprocess import arm_kinds, candidate_arm, settings_of
    from harness.judge.settings import pick_arms

    # Bad settings or arms fail here, as one line (exit 2), before anything is written.
    data = load_run(run_dir)
    cfg = settings_of(data)
    if other is None:
        pick_arms(cfg, arm_kinds(data))
    else:
        candidate_arm(cfg, data)
    marker = run_dir / BASELINE_FILE
    if other is not None:
        marker.write_text(json.dumps({"baseline_run": str(other)}) + "\n", encoding="utf-8")
    elif marker.exists():
        marker.unlink()
    from harness.report import build_report

    summary = build_report(run_dir)
    v = summary.get("verdict") or {}
    if v.get("error"):
        print(f"error: {v['error']}", file=sys.stderr)
        return 2
    print(f"verdict: {headline(v)}")
    for r in v.get("reasons") or []:
        print(f"  - {r}: {reason_text(r)}")
    for line in (v.get("smallest_detectable_change") or [])[:1]:
        print(f"  {line}")
    print(f"report: {run_dir / 'report.html'}")
    print(f"memo:   {run_dir / 'memo.md'}")
    return 0
