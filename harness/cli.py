"""Command-line entry points: ``harness experiment | report | compare | sim``.

``harness experiment`` is a Hydra app: ``harness experiment experiment=smoke load.rate=20``
runs one experiment; ``harness experiment -m load.rate=1,2,4,8`` runs a sweep and ends with
a sweep report (latency vs load, the highest load meeting the SLO).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("harness")

USAGE = """usage: harness <command> [args]

commands:
  experiment [HYDRA OVERRIDES]   run an experiment (default: experiment=smoke); -m for sweeps
  report RUN_DIR [--day N]       (re)write summary.json, plots/, report.html, memo.md;
                                 --day N: experiment-clock day N's own report, from its rows
                                 only, in RUN_DIR/days/NNN/ (also while the run is going)
  compare RUN_A RUN_B [-o DIR]   compare two runs side by side
  cost RUN_DIR|SWEEP_DIR [KEY=VALUE ...]
                                 recompute the cost section with other prices, traffic or
                                 self-hosting settings (pricing.*, traffic.*, selfhost.*)
  score RUN_DIR [--no-report] [--llm-judge]
                                 recompute the quality scores (scores/scores.parquet) and
                                 the report, without rerunning load; --llm-judge also asks
                                 the configured judge model (optional, see README)
  judge RUN_DIR [--baseline-run OTHER_RUN]
                                 canary verdict (GO / NO_GO / INCONCLUSIVE) of the candidate
                                 arm vs the baseline arm, or vs OTHER_RUN; rewrites the report
  whatif RUN_DIR [policy=FILE.yaml] [policy.KEY=VALUE ...] [--grid policy.KEY=V1,V2 ...]
                                 replay routing policies over a mirrored run: cost, latency,
                                 quality, APGR; the cheapest policy the judge passes
  sim --profile vllm|cloud ...   run the embedded simulator (see `harness sim --help`)
  worker --master-host H --master-port P   a load worker for distributed runs
"""


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("harness").setLevel(logging.INFO)


# -- experiment (Hydra) --------------------------------------------------------------------


def _sweep_info() -> dict[str, Any] | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    overrides = list(hc.overrides.task)
    info: dict[str, Any] = {
        "id": Path(hc.sweep.dir).name,
        "dir": str(hc.sweep.dir),
        "index": hc.job.num,
        "overrides": overrides,
    }
    swept = _swept_keys()
    for ov in overrides:
        key, _, value = ov.partition("=")
        if key.lstrip("+~") in swept:  # the first swept key is the sweep's load variable
            info["param"] = key.lstrip("+~")
            try:
                info["value"] = float(value)
            except ValueError:
                info["value"] = value
            break
    return info


def _swept_keys() -> list[str]:
    """Keys given several values on the command line (``load.rate=1,2,4``), in order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:
        return []
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def _experiment_task(cfg: Any) -> None:
    from harness.config import ConfigError, project_root
    from harness.load.runner import RunError, RunInterrupted, run_experiment
    from harness.redaction import redact_text
    from harness.targets.errors import TargetError

    sweep = _sweep_info()
    try:
        if sweep is not None and cfg.get("resume"):  # one run continues, never a sweep
            raise ConfigError(
                f"resume: {cfg.resume!r} continues one run; it cannot be part of a sweep (-m)"
            )
        run_dir = run_experiment(cfg, sweep=sweep)
    except ConfigError as exc:
        print(f"config error: {redact_text(str(exc))}", file=sys.stderr)
        raise SystemExit(2) from exc
    except (TargetError, RunError) as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        raise SystemExit(2) from exc
    except RunInterrupted as exc:  # a signal before any traffic: manifest `interrupted`
        where = f" (run directory: {exc.run_dir})" if exc.run_dir else ""
        print(f"{exc}{where}", file=sys.stderr)
        raise SystemExit(130 if exc.signame == "SIGINT" else 143) from None
    if sweep is not None:
        sweep_dir = (
            project_root() / sweep["dir"]
            if not Path(sweep["dir"]).is_absolute()
            else Path(sweep["dir"])
        )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with open(sweep_dir / "runs.txt", "a", encoding="utf-8") as fh:
            fh.write(str(run_dir) + "\n")
    if cfg.analysis.report:
        _report(run_dir)
    print(f"\nrun directory: {run_dir}")


def _report(run_dir: Path, day: int | None = None) -> dict[str, Any] | None:
    from harness.report import build_report
    from harness.report.build import day_dir

    what = "" if day is None else f" (experiment-clock day {day})"
    print(f"writing report for {run_dir}{what} ...", flush=True)
    summary = build_report(Path(run_dir), day=day)
    out = Path(run_dir) if day is None else day_dir(run_dir, day)
    print_summary(summary)
    print(f"report: {out / 'report.html'}")
    print(f"memo:   {out / 'memo.md'}")
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """A one-screen summary of a run from its summary dict."""
    from harness.report.console import format_summary

    print(format_summary(summary), flush=True)


def cmd_experiment(argv: list[str]) -> int:
    import hydra

    from harness.config import (
        check_overrides,
        project_root,
        register_configs,
        rewrite_arm_overrides,
    )

    register_configs()
    configs = project_root() / "configs"
    if not configs.is_dir():
        print(f"error: no configs/ directory at {configs}", file=sys.stderr)
        return 2
    argv = rewrite_arm_overrides(argv)  # `arms={...}` replaces the experiment's arms
    if all(not a.startswith("-") or a in ("-m", "--multirun") for a in argv):
        # Compose once first: a bad override is one line naming the key (ConfigError, exit 2).
        check_overrides(configs, [a for a in argv if not a.startswith("-")])
    main = hydra.main(config_path=str(configs), config_name="config", version_base="1.3")(
        _experiment_task
    )
    sys.argv = ["harness experiment", *argv]
    main()
    return 0


# -- report / compare ------------------------------------------------------------------------


def cmd_report(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="harness report", description="write a run's report")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--day", default=None, metavar="N",
                    help="one experiment-clock day's report (0-based), in RUN_DIR/days/NNN/")  # fmt: skip
    args = ap.parse_args(argv)
    run_dir = args.run_dir.resolve()
    if not (run_dir / "manifest.json").is_file():
        print(f"error: {run_dir} is not a run directory (no manifest.json)", file=sys.stderr)
        return 2
    day = None
    if args.day is not None:
        try:
            day = int(args.day)
        except ValueError:
            day = -1
        if day < 0:
            print(f"error: --day {args.day!r}: expected an experiment-clock day, 0, 1, 2, ...",
                  file=sys.stderr)  # fmt: skip
            return 2
    _report(run_dir, day)
    return 0


def cmd_cost(argv: list[str]) -> int:
    """``harness cost DIR [KEY=VALUE ...]``: see :func:`harness.cost.cli.run_cost`."""
    from harness.cost.cli import run_cost

    return run_cost(argv)


def cmd_score(argv: list[str]) -> int:
    """``harness score RUN_DIR``: see :func:`harness.quality.cli.run_score`."""
    from harness.quality.cli import run_score

    return run_score(argv)


def cmd_judge(argv: list[str]) -> int:
    """``harness judge RUN_DIR [--baseline-run OTHER]``: see :func:`harness.judge.cli.run_judge`."""
    from harness.judge.cli import run_judge

    return run_judge(argv)


def cmd_whatif(argv: list[str]) -> int:
    """``harness whatif RUN_DIR policy=...``: see :func:`harness.routing.whatif.run_whatif`."""
    from harness.routing.whatif import run_whatif

    return run_whatif(argv)


def cmd_compare(argv: list[str]) -> int:
    from harness.report import compare_runs

    ap = argparse.ArgumentParser(prog="harness compare", description="compare two runs")
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("-o", "--out", type=Path, default=None)
    args = ap.parse_args(argv)
    for d in (args.run_a, args.run_b):
        if not (d / "manifest.json").is_file():
            print(f"error: {d} is not a run directory (no manifest.json)", file=sys.stderr)
            return 2
    out = compare_runs(args.run_a.resolve(), args.run_b.resolve(), args.out)
    print(f"comparison: {out}")
    return 0


def cmd_sweep_report(argv: list[str]) -> int:
    from harness.report import build_sweep_report

    ap = argparse.ArgumentParser(prog="harness sweep-report")
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("-o", "--out", type=Path, required=True)
    args = ap.parse_args(argv)
    summary = build_sweep_report([d.resolve() for d in args.run_dirs], args.out)
    for arm, info in (summary.get("arms") or {}).items():
        print(f"{arm}: highest load meeting the SLO: {info.get('max_load_meeting_slo')}")
    print(f"sweep report: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd in ("experiment", "worker"):
        # The load process runs on gevent: patch before anything imports sockets or ssl.
        from gevent import monkey

        monkey.patch_all()
        # Whatever it prints (progress, errors, log records, tracebacks, Hydra's "Error
        # executing job with overrides") passes through the redaction of known secrets.
        from harness.redaction import install_console_redaction, register_argv

        register_argv(rest)
        install_console_redaction()
    from harness.config import ConfigError

    _setup_logging()
    try:
        if cmd == "experiment":
            return cmd_experiment(rest)
        if cmd == "report":
            return cmd_report(rest)
        if cmd == "compare":
            return cmd_compare(rest)
        if cmd == "cost":
            return cmd_cost(rest)
        if cmd == "score":
            return cmd_score(rest)
        if cmd == "judge":
            return cmd_judge(rest)
        if cmd == "whatif":
            return cmd_whatif(rest)
        if cmd == "sweep-report":
            return cmd_sweep_report(rest)
        if cmd == "worker":
            from harness.load.worker import main as worker_main

            return worker_main(rest)
        if cmd == "sim":
            from harness.sim.cli import main as sim_main

            return sim_main(rest)
    except ConfigError as exc:
        from harness.redaction import redact_text

        print(f"config error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except ValueError as exc:  # unreadable run data: RunDataError, ReaderError
        from harness.analysis.data import RunDataError
        from harness.record.reader import ReaderError

        if not isinstance(exc, RunDataError | ReaderError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())


# -- Hydra multirun callback ----------------------------------------------------------------

try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[misc,assignment]


class SweepReportCallback(_HydraCallback):  # type: ignore[misc]
    """After a multirun sweep, write the sweep report (latency vs load, best load meeting SLO)."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from harness.config import project_root

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_absolute():
            sweep_dir = project_root() / sweep_dir
        runs_file = sweep_dir / "runs.txt"
        if not runs_file.is_file():
            return
        runs = [Path(line.strip()) for line in runs_file.read_text().splitlines() if line.strip()]
        if len(runs) < 2:
            return
        from harness.report import build_sweep_report

        out = runs[0].parent / f"sweep-{sweep_dir.name}"
        try:
            build_sweep_report(runs, out)
            print(f"\nsweep report ({len(runs)} runs): {out}")
        except Exception as exc:  # the runs themselves are safe on disk; say what failed
            print(
                f"sweep report failed: {exc!r} (runs: {', '.join(map(str, runs))})", file=sys.stderr
            )
