"""The managed vLLM launcher, with a stand-in command (vLLM itself is never installed here)."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from harness.config import TargetConfig
from harness.targets.errors import TargetError
from harness.targets.launcher import VllmLauncher
from harness.targets.preflight import preflight

FAKE = str(Path(__file__).with_name("fake_vllm.py"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _target(tmp_path, *args: str, timeout: float = 10.0) -> TargetConfig:
    t = TargetConfig(kind="vllm", model="meta-llama/Llama-3.1-8B-Instruct")
    t.launch.enabled = True
    t.launch.command = [sys.executable, FAKE]
    t.launch.port = _free_port()
    t.launch.args = list(args)
    t.launch.startup_timeout_s = timeout
    t.launch.log_file = str(tmp_path / "vllm.log")
    return t


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a non-reaping init counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_launch_health_preflight_and_stop(tmp_path):
    t = _target(tmp_path, "--startup-delay", "0.3", "--child")
    with VllmLauncher("selfhosted", t, poll_s=0.05) as launcher:
        assert launcher.running
        t.base_url = launcher.base_url
        assert preflight("selfhosted", t) == ["meta-llama/Llama-3.1-8B-Instruct"]
        pid = launcher.proc.pid
        log = Path(t.launch.log_file).read_text()
        child = int(log.split("child pid ")[1].split()[0])
        assert f"--port {t.launch.port}" in log and "meta-llama/Llama-3.1-8B-Instruct" in log
    assert not _alive(pid)
    for _ in range(50):  # the child of the process group went too
        if not _alive(child):
            break
        time.sleep(0.02)
    assert not _alive(child)


def test_exit_during_startup_quotes_the_log(tmp_path):
    t = _target(tmp_path, "--exit-code", "3")
    with pytest.raises(TargetError, match=r"(?s)exited with code 3.*no GPU found"):
        VllmLauncher("selfhosted", t, poll_s=0.05).start()


def test_startup_timeout(tmp_path):
    t = _target(tmp_path, "--startup-delay", "30", timeout=0.5)
    launcher = VllmLauncher("selfhosted", t, poll_s=0.05)
    t0 = time.monotonic()
    with pytest.raises(TargetError, match=r"did not answer .*/health within 0.5 s"):
        launcher.start()
    assert time.monotonic() - t0 < 5
    assert launcher.proc is None  # stopped after the failure


def test_sigkill_when_sigterm_is_ignored(tmp_path):
    t = _target(tmp_path, "--ignore-sigterm")
    launcher = VllmLauncher("selfhosted", t, poll_s=0.05, stop_timeout_s=0.5).start()
    pid = launcher.proc.pid
    t0 = time.monotonic()
    code = launcher.stop()
    assert code == -9 and 0.4 < time.monotonic() - t0 < 5
    assert not _alive(pid)


def test_missing_command(tmp_path):
    t = _target(tmp_path)
    t.launch.command = ["definitely-not-vllm-xyz", "serve"]
    with pytest.raises(TargetError, match="cannot run 'definitely-not-vllm-xyz'"):
        VllmLauncher("selfhosted", t).start()


def test_api_key_masked_in_log_and_errors(tmp_path):
    from harness.targets.launcher import masked_command

    key = "s3cret-launch-value-123"
    token = "hf-token-value-456789"
    t = _target(tmp_path, "--api-key", key, "--print-env", "HF_TOKEN", "--exit-code", "3")
    t.launch.env = {"HF_TOKEN": token}
    with pytest.raises(TargetError) as info:
        VllmLauncher("selfhosted", t, poll_s=0.05).start()
    assert "exited with code 3" in str(info.value)
    assert key not in str(info.value)  # the quoted log tail is masked too
    log = Path(t.launch.log_file).read_text()
    cmd_line = next(line for line in log.splitlines() if line.startswith("$ "))
    assert "--api-key ***" in cmd_line and key not in cmd_line
    # the server's own output, echoing its arguments and environment, is masked on the way in
    assert "'api_key': '***'" in log and "env HF_TOKEN=***" in log and "no GPU found" in log
    assert key not in log and token not in log

    shown, secrets = masked_command(
        ["vllm", "serve", "m", f"--api-key={key}", "--x", "sk-proj-abcdef123456", "--port", "1"]
    )
    assert shown == "vllm serve m --api-key=*** --x *** --port 1"
    assert secrets == (key,)
