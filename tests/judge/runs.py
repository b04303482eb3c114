"""Small mirrored eval runs written straight to Parquet (no load run) for the judge's tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from harness.record.schema import RequestRecord, records_to_table

T0 = 1_780_000_000_000_000_000
NS = 1_000_000_000


def arm_records(arm: str, n: int, *, seed: int, wrong: np.ndarray, ttft_shift_s: float = 0.0,
                run_id: str = "run-j") -> list[RequestRecord]:  # fmt: skip
    """``n`` logical requests of ``arm`` (one attempt each) on items ``q0..``; the answer is
    the reference ``"42"`` except where ``wrong``. Latency: a load factor shared by arms
    (seeded by the item) times the arm's own noise."""
    own = np.random.default_rng(seed)
    shared = np.random.default_rng(99)
    load = np.exp(shared.normal(0, 0.2, n))
    out = []
    for i in range(n):
        sched = T0 + i * NS // 5
        ttft = 0.03 * load[i] * float(np.exp(own.normal(0, 0.02))) + ttft_shift_s
        gaps = [0.01, 0.01, 0.01]
        first = sched + int(ttft * NS)
        end = first + int(sum(gaps) * NS)
        out.append(RequestRecord(
            run_id=run_id, experiment="judge", arm=arm, target_kind="sim_vllm", model="m",
            request_id=f"{arm}-{i}", attempt=0, pair_id=f"p{i:09d}", sample_id=f"q{i}",
            slice="eval:arith", phase="main", t_scheduled=sched, t_sent=sched, t_virtual=sched,
            t_arrival=sched, queue_delay_s=0.0, status="ok", t_first_token=first, t_end=end,
            ttft_s=(first - sched) / NS, e2e_s=(end - sched) / NS, ttft_sched_s=(first - sched) / NS,
            e2e_sched_s=(end - sched) / NS, tpot_s=0.01, itl_s=gaps, prompt_tokens=20,
            completion_tokens=3 + i % 3, tokens_source="usage", finish_reason="stop",
            output_text="41" if wrong[i] else "42", reference_answer="42",
        ))  # fmt: skip
    return out


def write_eval_run(run_dir: Path, *, n: int = 400, arms: tuple[str, ...] = ("base", "cand"),
                   drop: float = 0.0, ttft_shift_s: float = 0.0, first_drop: float = 0.0,
                   judge: dict[str, Any] | None = None, run_id: str = "run-j",
                   kinds: dict[str, str] | None = None) -> Path:  # fmt: skip
    """A mirrored run: the first arm misses 10% of the items (and ``first_drop`` more); each
    later arm misses those and ``drop`` more (one model's degraded copy), with TTFT +
    ``ttft_shift_s``."""
    rng = np.random.default_rng(5)
    u = rng.random(n)
    recs = []
    for k, arm in enumerate(arms):
        wrong = u >= 0.9 - first_drop - (drop if k else 0.0)
        recs += arm_records(arm, n, seed=k + 1, wrong=wrong,
                            ttft_shift_s=ttft_shift_s if k else 0.0, run_id=run_id)  # fmt: skip
    (run_dir / "requests").mkdir(parents=True, exist_ok=True)
    pq.write_table(records_to_table(recs), run_dir / "requests" / "part-000000.parquet")
    manifest = {
        "run_id": run_id, "experiment": "judge", "status": "completed",
        "config": {
            "analysis": {"include_phases": ["main"], "confidence": 0.95,
                         "bootstrap_resamples": 200, "seed": 0},
            "load": {"mode": "open", "rate": 5.0, "duration_s": n / 5, "pairing": "mirrored"},
            "judge": {"min_n": 50, "resamples": 300, **(judge or {})},
        },
        "arms": {a: {"kind": (kinds or {}).get(a, "sim_vllm"), "model": "m", "base_url": "http://x"}
                 for a in arms},
        "offered": {"rate": 5.0, "mode": "open"},
    }  # fmt: skip
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run_dir
