"""The resolved, JSON-serialisable description of one run that every load process shares.

The master resolves the Hydra config once (arms merged with their presets, simulator URLs
filled in) and sends it to every locust worker process in a message, so all processes send
the same traffic to the same endpoints. It holds no secrets: API keys are read from the
environment by each process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from harness.config import LoadConfig, RecordConfig, TargetConfig, WorkloadConfig


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
        )
