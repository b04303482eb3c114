"""``harness cost DIR [KEY=VALUE ...]``: recompute a run's cost section without rerunning load.

``DIR`` is a run directory, or a sweep report directory: then the run at the self-hosted
arm's highest load meeting the SLO supplies the measured tokens and retries, and the sweep
supplies the capacity (``selfhost.sweep_dir``). The overrides (``pricing.*``, ``traffic.*``,
``selfhost.*``) are checked before anything is written, appended to
``RUN_DIR/cost_overrides.yaml`` (so a later ``harness report`` keeps them; delete the file to
return to the run's own settings), and the whole report is rewritten.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from harness.analysis.data import read_manifest
from harness.config import ConfigError
from harness.cost.report import big, usd
from harness.cost.section import OVERRIDES_FILE, check_for_arms, read_overrides, settings_from

USAGE = "usage: harness cost RUN_DIR|SWEEP_DIR [KEY=VALUE ...]"


def _sweep_run(sweep_dir: Path) -> Path:
    doc = json.loads((sweep_dir / "summary.json").read_text(encoding="utf-8"))
    runs = doc.get("runs") or []
    if not runs:
        raise ConfigError(f"{sweep_dir}: the sweep lists no runs")
    from harness.cost.measure import role_of

    best = None
    for arm, curve in (doc.get("arms") or {}).items():
        rd = next((r for r in runs if curve.get("max_load_meeting_slo") is not None
                   and r.get("load") == curve["max_load_meeting_slo"]), None)  # fmt: skip
        if rd is None:
            continue
        kind = (read_manifest(Path(rd["dir"])).get("arms") or {}).get(arm, {}).get("kind")
        if role_of(kind) == "selfhost":
            best = rd
            break
    chosen = best or runs[-1]
    return Path(chosen["dir"])


def run_cost(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n\n" + (__doc__ or ""))
        return 0 if argv else 2
    target, overrides = Path(argv[0]).resolve(), list(argv[1:])
    summary_path = target / "summary.json"
    if summary_path.is_file() and not (target / "manifest.json").is_file():
        try:
            kind = json.loads(summary_path.read_text(encoding="utf-8")).get("kind")
        except json.JSONDecodeError:
            kind = None
        if kind != "sweep":
            raise ConfigError(f"{target}: neither a run directory nor a sweep report")
        run_dir = _sweep_run(target)
        overrides = [f"selfhost.sweep_dir={target}", *overrides]
        print(f"sweep {target}: costing run {run_dir} with the sweep's capacity")
    else:
        run_dir = target
    if not (run_dir / "manifest.json").is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no manifest.json)")
    manifest = read_manifest(run_dir)
    stored = read_overrides(run_dir)
    settings = settings_from(manifest.get("config"), [*stored, *overrides])  # checks values
    arms: dict[str, Any] = manifest.get("arms") or {}
    check_for_arms(settings, {a: (str(i.get("kind")), str(i.get("model") or ""))
                              for a, i in arms.items()})  # fmt: skip
    # a dry run first: a setting that only fails while computing writes nothing
    from harness.analysis.data import load_run
    from harness.cost.section import compute_cost

    compute_cost(load_run(run_dir), settings)
    if overrides:
        (run_dir / OVERRIDES_FILE).write_text(
            yaml.safe_dump([*stored, *overrides], sort_keys=False), encoding="utf-8"
        )
    from harness.report import build_report

    summary = build_report(run_dir)
    c = summary.get("cost") or {}
    for arm, b in (c.get("arms") or {}).items():
        print(f"{arm} ({b.get('role')}): {usd(b.get('monthly_total_usd'))} per month")
    be = c.get("break_even") or {}
    if be.get("monthly_api_spend_usd") is not None:
        print(f"break-even: {usd(be['monthly_api_spend_usd'])}/month of API spend "
              f"({big(be['monthly_tokens'])} tokens/month)")  # fmt: skip
    elif be.get("never"):
        print("break-even: never at the measured capacity")
    for n in c.get("notes", []):
        print(f"note: {n}", file=sys.stderr)
    print(f"report: {run_dir / 'report.html'}")
    return 0
