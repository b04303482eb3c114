"""Every shipped configs/workload/*.yaml validates against WorkloadConfig and builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.config import WorkloadConfig
from harness.workloads import build_workload

ROOT = Path(__file__).resolve().parents[2]

FILES = sorted((ROOT / "configs/workload").glob("*.yaml"))


def test_there_are_presets():
    names = {p.stem for p in FILES}
    assert {"synthetic_short", "synthetic_long", "shared_prefix", "multiturn", "eval_qa"} <= names


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_preset_builds(path):
    schema = OmegaConf.structured(WorkloadConfig)
    cfg: WorkloadConfig = OmegaConf.to_object(OmegaConf.merge(schema, OmegaConf.load(path)))
    w = build_workload(cfg, ROOT)
    assert w.name == path.stem == cfg.name
    assert len(w) > 0
    for i in (0, 1, len(w) + 1):
        it = w.item(i)
        assert it.workload == cfg.name and it.max_tokens >= 1 and it.chat_messages()
