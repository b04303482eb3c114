"""Run manifest: redaction of secrets, atomic rewrite, latest pointer."""

from __future__ import annotations

import json
import os

from harness.record.manifest import (
    REDACTED,
    RunManifest,
    make_run_dir,
    new_run_id,
    point_latest,
    redact,
    redact_argv,
)


def test_redact_keeps_env_var_names_but_hides_secrets():
    cfg = {
        "arms": {"cloud": {"api_key_env": "OPENAI_API_KEY", "api_key": "sk-live-123", "x": [1]}},
        "headers": [{"Authorization": "Bearer sk-live-123"}],
        "password": None,
        "launch": {
            "env": {"HF_TOKEN": "hf_abc", "AWS_SECRET_ACCESS_KEY": "aws", "OPENAI_KEY": "o"}
        },
    }
    out = redact(cfg)
    assert out["arms"]["cloud"]["api_key_env"] == "OPENAI_API_KEY"
    assert out["arms"]["cloud"]["api_key"] == REDACTED
    assert out["headers"][0]["Authorization"] == REDACTED
    assert "sk-live-123" not in json.dumps(out)
    assert set(out["launch"]["env"].values()) == {REDACTED}
    assert out["arms"]["cloud"]["x"] == [1]


def test_redact_argv():
    argv = ["harness", "experiment", "+arms.cloud.api_key=sk-1", "load.rate=2", "x.token=t"]
    assert redact_argv(argv) == [
        "harness",
        "experiment",
        f"+arms.cloud.api_key={REDACTED}",
        "load.rate=2",
        f"x.token={REDACTED}",
    ]


def test_manifest_lifecycle(tmp_path):
    run_id = new_run_id()
    run_dir = make_run_dir(tmp_path, "smoke", run_id)
    m = RunManifest.create(
        run_dir, run_id=run_id, experiment="smoke", config={"a": 1, "token": "t"}, arms={}
    )
    data = json.loads((run_dir / "manifest.json").read_text())
    assert data["status"] == "running" and data["config"]["token"] == REDACTED
    assert data["versions"]["pyarrow"]
    m.finish("completed", stop_reason=None)
    data = RunManifest.load(run_dir).data
    assert data["status"] == "completed" and data["duration_s"] >= 0
    point_latest(tmp_path, run_dir)
    assert os.path.realpath(tmp_path / "latest") == os.path.realpath(run_dir)
    run_dir2 = make_run_dir(tmp_path, "smoke", new_run_id())
    point_latest(tmp_path, run_dir2)
    assert os.path.realpath(tmp_path / "latest") == os.path.realpath(run_dir2)
