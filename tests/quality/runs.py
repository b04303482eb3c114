"""Synthetic eval runs for the quality tests: request rows with reference answers and
outputs, written as Parquet with a manifest, without a load run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from harness.record.schema import RequestRecord, records_to_table

T0 = 1_780_000_000_000_000_000
NS = 1_000_000_000
KINDS = {"cloud": "sim_cloud", "selfhosted": "sim_vllm"}


def rec(
    arm: str,
    i: int,
    sample_id: str,
    reference: str,
    output: str | None,
    *,
    status: str = "ok",
    attempt: int = 0,
    error_type: str | None = None,
    slice_: str = "eval:c",
    tokens: int | None = 1,
    phase: str = "main",
) -> RequestRecord:
    """Attempt ``attempt`` of logical request ``i`` on ``arm`` (timings for load_run)."""
    sched = T0 + i * NS // 10 + attempt * NS // 100
    common = dict(
        run_id="run-q",
        experiment="unit",
        arm=arm,
        target_kind=KINDS.get(arm, "sim_vllm"),
        model="m",
        request_id=f"{arm}-{i}",
        attempt=attempt,
        pair_id=f"p{i}",
        sample_id=sample_id,
        slice=slice_,
        phase=phase,
        t_scheduled=sched,
        t_sent=sched,
        t_virtual=sched,
        t_arrival=T0 + i * NS // 10,
        queue_delay_s=0.0,
        reference_answer=reference,
    )
    if status != "ok":
        return RequestRecord(**common, status="error", t_end=sched + NS // 50, http_status=503,
                             error_type=error_type or "server_error", error_message="x")  # fmt: skip
    first, end = sched + NS // 20, sched + NS // 10
    return RequestRecord(
        **common, status="ok", t_first_token=first, t_end=end, ttft_s=0.05, e2e_s=0.1,
        ttft_sched_s=0.05, e2e_sched_s=0.1, tpot_s=0.01, itl_s=[0.01], prompt_tokens=10,
        completion_tokens=tokens, tokens_source="usage", finish_reason="stop",
        output_text=output,
    )  # fmt: skip


def manifest(**over: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "run_id": "run-q",
        "experiment": "unit",
        "status": "completed",
        "config": {
            "workload": {"name": "w", "kind": "eval", "path": None},
            "record": {"output_text": "keep"},
            "analysis": {
                "include_phases": ["main"],
                "confidence": 0.95,
                "bootstrap_resamples": 500,
                "seed": 0,
            },
        },  # fmt: skip
        "arms": {a: {"kind": k, "model": "m", "base_url": "http://x"} for a, k in KINDS.items()},
    }
    m.update(over)
    return m


def write_run(run_dir: Path, records: list[RequestRecord], **manifest_over: Any) -> Path:
    (run_dir / "requests").mkdir(parents=True, exist_ok=True)
    half = len(records) // 2
    for j, chunk in enumerate((records[:half], records[half:])):
        if chunk:
            pq.write_table(records_to_table(chunk), run_dir / "requests" / f"p-{j}.parquet")
    m = manifest(**manifest_over)
    (run_dir / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    return run_dir


def eval_file(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(it) + "\n" for it in items), encoding="utf-8")
    return path


def config_with_eval(path: Path) -> dict[str, Any]:
    c = manifest()["config"]
    c["workload"] = {"name": "w", "kind": "eval", "path": str(path)}
    return c
