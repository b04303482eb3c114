"""Arm resolution: presets merged under overrides; misspelled keys name the key."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from harness.config import ConfigError, TargetConfig, resolve_arm


def test_preset_then_override():
    t = resolve_arm("selfhosted", OmegaConf.create({"target": "sim_vllm", "model": "m2"}))
    assert isinstance(t, TargetConfig)
    assert t.kind == "sim_vllm" and t.model == "m2"
    t = resolve_arm("cloud", {"target": "openai", "timeouts": {"first_token_s": 3}})
    assert t.api_key_env == "OPENAI_API_KEY" and t.timeouts.first_token_s == 3
    assert t.timeouts.total_s == TargetConfig().timeouts.total_s


def test_misspelled_key_is_named():
    with pytest.raises(ConfigError, match="modle"):
        resolve_arm("a", {"target": "sim_vllm", "modle": "x"})


def test_unknown_preset_lists_known():
    with pytest.raises(ConfigError, match="sim_cloud"):
        resolve_arm("a", {"target": "nope"})


def test_real_target_needs_base_url():
    with pytest.raises(ConfigError, match="base_url"):
        resolve_arm("a", {"kind": "vllm"})


def test_load_and_record_validation_name_the_key():
    from harness.config import LoadConfig, RecordConfig, validate_load, validate_record

    with pytest.raises(ConfigError, match="load.pairing"):
        validate_load(LoadConfig(pairing="mirored"))
    with pytest.raises(ConfigError, match="load.concurrency"):
        validate_load(LoadConfig(mode="closed"))
    with pytest.raises(ConfigError, match="load.warmup_s"):
        validate_load(LoadConfig(duration_s=3, warmup_s=3))
    with pytest.raises(ConfigError, match="record.output_text"):
        validate_record(RecordConfig(output_text="bogus"))
    with pytest.raises(ConfigError, match="record.flush_interval_s"):
        validate_record(RecordConfig(flush_interval_s=0))
    validate_load(LoadConfig())
    validate_record(RecordConfig())


def test_retry_on_must_name_error_types():
    with pytest.raises(ConfigError, match="retry_on"):
        resolve_arm("a", {"target": "sim_vllm", "retry": {"retry_on": ["timeout", "oops"]}})
