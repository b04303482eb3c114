"""Shared fixtures: synthetic run directories written with records_to_table and a manifest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from harness.record.schema import RequestRecord, records_to_table

T0 = 1_780_000_000_000_000_000  # 2026-05-28, ns
NS = 1_000_000_000


def make_records(
    arm: str,
    n: int,
    *,
    seed: int = 0,
    ttft_scale: float = 0.2,
    itl_s: float = 0.02,
    rate: float = 5.0,
    error_every: int = 0,
    error_type: str = "server_error",
    slices: tuple[str, ...] = ("short",),
    phase_of: Callable[[int], str] = lambda i: "main",
    output_text: str | None = "hello world",
    error_message: str = "upstream 503",
    retry_every: int = 0,
) -> list[RequestRecord]:
    """``n`` attempts on one arm: lognormal TTFT, a few gaps of ~``itl_s``, some errors."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sched = T0 + int(i / rate * NS)
        qd = float(rng.uniform(0, 0.002))
        sent = sched + int(qd * NS)
        is_err = bool(error_every) and i % error_every == error_every - 1
        attempt = 1 if retry_every and i % retry_every == retry_every - 1 else 0
        common = dict(
            run_id="run-test",
            experiment="unit",
            arm=arm,
            target_kind="sim_vllm",
            model="m",
            request_id=f"{arm}-{i if not attempt else i - 1}",
            attempt=attempt,
            pair_id=f"p{i}",
            sample_id=f"s{i}",
            slice=slices[i % len(slices)],
            phase=phase_of(i),
            t_scheduled=sched,
            t_sent=sent,
            t_virtual=sched,
            queue_delay_s=(sent - sched) / NS,
        )
        if is_err:
            out.append(
                RequestRecord(
                    **common,
                    status="error",
                    t_end=sent + int(0.05 * NS),
                    http_status=503,
                    error_type=error_type,
                    error_message=error_message,
                )
            )
            continue
        ttft = float(rng.lognormal(np.log(ttft_scale), 0.5))
        k = int(rng.integers(2, 8))
        gaps = [float(g) for g in rng.uniform(0.5 * itl_s, 1.5 * itl_s, size=k - 1)]
        first = sent + int(ttft * NS)
        end = first + int(sum(gaps) * NS)
        out.append(
            RequestRecord(
                **common,
                status="ok",
                t_first_token=first,
                t_end=end,
                ttft_s=(first - sent) / NS,
                e2e_s=(end - sent) / NS,
                ttft_sched_s=(first - sched) / NS,
                e2e_sched_s=(end - sched) / NS,
                tpot_s=((end - first) / NS) / (k - 1),
                itl_s=gaps,
                prompt_tokens=100,
                completion_tokens=k,
                tokens_source="usage",
                finish_reason="length",
                output_text=output_text,
            )
        )
    return out


def write_run(
    run_dir: Path,
    records: list[RequestRecord],
    *,
    manifest: dict[str, Any] | None = None,
    parts: int = 2,
) -> Path:
    """Write records as ``parts`` part files (one in a Hive subfolder) plus manifest.json."""
    req = run_dir / "requests"
    (req / "worker=1").mkdir(parents=True, exist_ok=True)
    chunks = np.array_split(np.arange(len(records)), max(1, parts)) if records else []
    for j, idx in enumerate(chunks):
        table = records_to_table([records[i] for i in idx])
        folder = req / "worker=1" if j % 2 else req
        pq.write_table(table, folder / f"w-part-{j:06d}.parquet")
    if manifest is None:
        manifest = default_manifest()
    if manifest:
        (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run_dir


def default_manifest(**over: Any) -> dict[str, Any]:
    m = {
        "run_id": "run-test",
        "experiment": "unit",
        "status": "completed",
        "started_at": "2026-05-28T00:00:00Z",
        "config": {
            "load": {"mode": "open", "rate": 5.0, "duration_s": 60},
            "analysis": {
                "include_phases": ["main"],
                "slo": {"ttft_s": 0.3, "tpot_s": 0.05, "e2e_s": None},
                "confidence": 0.95,
                "bootstrap_resamples": 200,
                "seed": 0,
            },
        },
        "arms": {
            "cloud": {"kind": "sim_cloud", "model": "m-cloud", "base_url": "http://x"},
            "selfhosted": {"kind": "sim_vllm", "model": "m-vllm", "base_url": "http://y"},
        },
        "offered": {"rate": 5.0, "mode": "open"},
        "sweep": None,
    }
    m.update(over)
    return m


@pytest.fixture(scope="session")
def two_arm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cloud (TTFT ~0.2 s, 1 error in 10) vs selfhosted (TTFT ~0.1 s), 2 slices, warmup rows.

    Session-scoped and read-only: tests that write reports use :func:`built_report`."""
    tmp_path = tmp_path_factory.mktemp("two_arm")
    recs = make_records(
        "cloud",
        300,
        seed=1,
        ttft_scale=0.2,
        error_every=10,
        slices=("short", "long"),
        phase_of=lambda i: "warmup" if i < 20 else "main",
        retry_every=25,
        output_text="<script>alert('out')</script> ok",
        error_message="<script>alert('err')</script> | upstream 503",
    )
    recs += make_records(
        "selfhosted",
        300,
        seed=2,
        ttft_scale=0.1,
        error_every=50,
        error_type="timeout",
        slices=("short", "long"),
        phase_of=lambda i: "warmup" if i < 20 else "main",
    )
    return write_run(tmp_path / "unit" / "run-test", recs, parts=3)


@pytest.fixture(scope="session")
def built_report(two_arm_run: Path) -> tuple[Path, dict[str, Any]]:
    """``build_report`` run once on :func:`two_arm_run`: (run_dir, returned summary)."""
    from harness.report import build_report

    return two_arm_run, build_report(two_arm_run)
