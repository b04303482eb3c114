"""Helpers for end-to-end experiment runs: `python -m harness experiment` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]


def run_harness(args: list[str], *, timeout: float = 180, env: dict | None = None):
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def spawn_harness(args: list[str]) -> subprocess.Popen:
    """``python -m harness ARGS`` in its own session, as a terminal would run it (its own
    process group), output piped (text, unbuffered)."""
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def smoke_args(reports: Path, *extra: str, flush_interval_s: float | None = 1) -> list[str]:
    """``experiment=smoke`` writing into ``reports``, progress every second, no warmup;
    ``flush_interval_s`` None keeps the configured flush interval."""
    flush = [] if flush_interval_s is None else [f"record.flush_interval_s={flush_interval_s:g}"]
    return [
        "experiment",
        "experiment=smoke",
        f"record.reports_dir={reports}",
        *flush,
        "progress_interval_s=1",
        "load.warmup_s=0",
        *extra,
    ]


def only_run_dir(reports: Path) -> Path:
    runs = [p.parent for p in reports.glob("*/*/manifest.json")]
    assert len(runs) == 1, runs
    return runs[0]


def read_rows(run_dir: Path):
    return pq.read_table(run_dir / "requests").to_pandas()


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())
