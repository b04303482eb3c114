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


# -- the composed experiment config: Hydra overrides, then validate_config ------------------

import os  # noqa: E402
import shlex  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

from harness.config import (  # noqa: E402
    check_overrides,
    project_root,
    register_configs,
    rewrite_arm_overrides,
    validate_config,
)

CONFIGS = project_root() / "configs"


def compose(overrides, tmp_path):
    """What `harness experiment OVERRIDES` resolves, up to (not including) any traffic."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    overrides = rewrite_arm_overrides([f"record.reports_dir={tmp_path}", *overrides])
    check_overrides(CONFIGS, overrides)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides)
    validate_config(cfg)
    return cfg, {str(n): resolve_arm(str(n), arm, CONFIGS) for n, arm in cfg.arms.items()}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["+load.rat=5"], r"load\.rat: unknown key \(did you mean load\.rate\?\)"),
        (["load.rat=5"], r"load\.rat: unknown key"),
        (["+analysis.slo.ttft=0.3"], r"analysis\.slo\.ttft: unknown key.*ttft_s"),
        (["+arms.cloud.modle=x"], r"arms\.cloud\.modle: unknown key.*arms\.cloud\.model"),
        (["arms.cloud.max_connections=0"], r"arms\.cloud\.max_connections: must be >= 1"),
        (["analysis.confidence=2"], r"analysis\.confidence"),
        (["analysis.bootstrap_resamples=0"], r"analysis\.bootstrap_resamples"),
        (["load.max_requests=0"], r"load\.max_requests: must be >= 1"),
        (["load.steps=3"], r"load\.steps: expected a list of \[t_s, multiplier\] pairs"),
        (["~arms"], r"^arms: removed \(~arms\)"),
        (["run_id=../.."], r"run_id: '\.\./\.\.' is not a simple name"),
        (["run_id=a/b"], r"run_id: 'a/b' is not a simple name"),
        (["experiment.name=../x"], r"experiment\.name: '\.\./x' is not a simple name"),
        (
            ["arms.selfhosted.target=vllm", "arms.selfhosted.base_url=ftp://gpu-box/v1"],
            r"arms\.selfhosted\.base_url: 'ftp://gpu-box/v1' is not an http",
        ),
    ],
)
def test_bad_experiment_configs_name_the_key(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as info:
        compose(overrides, tmp_path)
    assert "\n" not in str(info.value)


def test_reused_run_id_is_rejected(tmp_path):
    (tmp_path / "smoke" / "r1").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"run_id: 'r1' was used before"):
        compose(["run_id=r1"], tmp_path)
    compose(["run_id=r2"], tmp_path)  # a new one is fine


def test_unwritable_reports_dir_is_rejected(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: Path(p) != ro and real_access(p, m))
    with pytest.raises(ConfigError, match=r"record\.reports_dir: .*ro is not writable"):
        compose([f"record.reports_dir={ro / 'reports'}"], tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(ConfigError, match=r"record\.reports_dir: .*afile is not a directory"):
        compose([f"record.reports_dir={afile / 'reports'}"], tmp_path)


@pytest.mark.parametrize("key", ["web_port", "master_port"])
def test_busy_port_is_rejected(key, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        extra = ["load.web_ui=true"] if key == "web_port" else ["load.workers=1"]
        with pytest.raises(
            ConfigError, match=rf"load\.{key}: cannot listen on 127\.0\.0\.1:{port}"
        ):
            compose([*extra, f"load.{key}={port}"], tmp_path)


def test_arm_fields_need_no_plus_and_new_arms_can_be_added(tmp_path):
    _, arms = compose(
        [
            "arms.cloud.model=m1",
            "arms.cloud.timeouts.first_token_s=3",
            "arms.extra.target=sim_vllm",
            "arms.extra.client=lean",
        ],
        tmp_path,
    )
    assert set(arms) == {"cloud", "selfhosted", "extra"}
    assert arms["cloud"].model == "m1" and arms["cloud"].timeouts.first_token_s == 3
    assert arms["extra"].kind == "sim_vllm" and arms["extra"].client == "lean"


def test_arms_assignment_replaces_the_arms(tmp_path):
    _, arms = compose(
        ["arms={a: {target: sim_cloud}, b: {target: sim_vllm, model: m}}", "arms.a.client=lean"],
        tmp_path,
    )
    assert set(arms) == {"a", "b"}
    assert arms["a"].kind == "sim_cloud" and arms["a"].client == "lean"
    assert arms["b"].model == "m"
    # the old spelling still works
    _, arms = compose(["~arms", "+arms={c: {target: sim_vllm}}", "+arms.c.client=lean"], tmp_path)
    assert set(arms) == {"c"} and arms["c"].client == "lean"


def readme_one_liners() -> list[list[str]]:
    text = (project_root() / "README.md").read_text(encoding="utf-8")
    section = text.split("<!-- SECTION:experiments -->")[1].split("<!-- /SECTION")[0]
    block = section.split("<!-- one-liners:")[1].split("```bash")[1].split("```")[0]
    lines = [ln for ln in block.replace("\\\n", " ").splitlines() if ln.strip()]
    assert lines and all(ln.startswith("harness experiment ") for ln in lines)
    return [shlex.split(ln)[2:] for ln in lines]


def test_readme_one_liners_resolve(tmp_path):
    mine_vs_vllm, replaced = readme_one_liners()
    _, arms = compose(mine_vs_vllm, tmp_path)
    assert set(arms) == {"cloud", "selfhosted"}
    assert arms["cloud"].kind == "openai" and arms["cloud"].model == "gpt-4o-mini"
    assert arms["cloud"].api_key_env == "OPENAI_API_KEY"
    assert arms["cloud"].base_url == "https://api.openai.com/v1"
    assert arms["selfhosted"].kind == "vllm"
    assert arms["selfhosted"].base_url == "http://gpu-box:8000/v1"
    assert arms["selfhosted"].model == "meta-llama/Llama-3.1-8B-Instruct"
    _, arms = compose(replaced, tmp_path)
    assert set(arms) == {"api", "mine"}
    assert arms["api"].kind == "openai" and arms["mine"].kind == "vllm"
    assert arms["mine"].base_url == "http://gpu-box:8000/v1"
    assert arms["mine"].model == "meta-llama/Llama-3.1-8B-Instruct"


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml")))
def test_every_experiment_config_composes_and_validates(name, tmp_path):
    """Each shipped experiment resolves and passes validate_config (the checks run before any
    traffic), its arms included; the month canaries turn the canary on."""
    cfg, arms = compose([f"experiment={name}"], tmp_path)
    assert arms
    if name.startswith("month_canary"):
        assert cfg.canary.enabled and cfg.load.weekend_frac < 1
        days = cfg.load.duration_s * cfg.load.time_scale / 86400
        assert days == pytest.approx(30)
    if name == "hybrid":
        assert arms["router"].kind == "router"
