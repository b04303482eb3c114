"""The resolved, JSON-serialisable description of one run that every load process shares.

The master resolves the Hydra config once (arms merged with their presets, simulator URLs
filled in) and sends it to every locust worker process in a message, so all processes send
the same traffic to the same endpoints. It holds no secrets: API keys are read from the
environment by each process.

``clock_origin_ns`` is the experiment clock's origin (UTC ns) when it is not this segment's
start: a resumed run keeps its first segment's ``t0``, so every process skips the arrivals
already past and stamps ``t_virtual`` on the original clock (:mod:`harness.canary.clock`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from harness.canary.clock import DAY_S
from harness.config import LoadConfig, RecordConfig, TargetConfig, WorkloadConfig


def process_share(total: int, n_processes: int, index: int) -> int:
    """Load process ``index``'s share of a cap that holds per arm across the whole run.

    ``load.concurrency`` (open loop) and ``arms.<arm>.max_connections`` bound one arm across
    all ``n_processes`` load processes, but each process enforces its own slots, so each
    gets ``total // n`` plus one for the first ``total % n`` processes: the shares sum to
    ``total`` and differ by at most one. A process cannot borrow another's idle slots, so a
    cap split this way binds a little earlier than one shared pool would. A cap below the
    number of processes cannot be split (a process with no slot could send nothing); the
    config checks refuse it before the run (:func:`harness.config.validate_load`).
    """
    if n_processes < 1 or not 0 <= index < n_processes:
        raise ValueError(f"load process {index} is not one of {n_processes}")
    if total < n_processes:
        raise ValueError(f"a cap of {total} cannot be split across {n_processes} load processes")
    return total // n_processes + (1 if index < total % n_processes else 0)


@dataclass
class RunSpec:
    run_id: str
    experiment: str
    run_dir: str
    project_root: str
    arms: dict[str, TargetConfig]
    workload: WorkloadConfig
    load: LoadConfig
    record: RecordConfig
    n_workers: int = 1
    seed: int = 0
    clock_origin_ns: int | None = None  # None: this segment's t0 (a fresh run)
    day_s: float = DAY_S  # experiment-clock day length (canary.day_s)
    pricing: dict[str, Any] | None = None  # the run's pricing node (a router arm's budget)
    # canary.enabled: request rows go to requests/day=DDD/arm=ARM/ on the experiment clock
    # (known at t0) and each day is compacted (harness.record.writer.RequestWriter)
    partition_by_day: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        def typed(klass: type, value: Any) -> Any:
            return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(klass), value))

        return cls(
            run_id=d["run_id"],
            experiment=d["experiment"],
            run_dir=d["run_dir"],
            project_root=d["project_root"],
            arms={name: typed(TargetConfig, t) for name, t in d["arms"].items()},
            workload=typed(WorkloadConfig, d["workload"]),
            load=typed(LoadConfig, d["load"]),
            record=typed(RecordConfig, d["record"]),
            n_workers=int(d.get("n_workers", 1)),
            seed=int(d.get("seed", 0)),
            clock_origin_ns=(
                int(d["clock_origin_ns"]) if d.get("clock_origin_ns") is not None else None
            ),
            day_s=float(d.get("day_s", DAY_S)),
            pricing=d.get("pricing"),
            partition_by_day=bool(d.get("partition_by_day", False)),
        )
