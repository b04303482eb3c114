"""A managed ``vllm serve`` subprocess for a ``vllm`` target with ``launch.enabled``.

Runs ``COMMAND MODEL --host HOST --port PORT ARGS...`` (``launch.command`` defaults to
``["vllm", "serve"]``) in its own process group with stdout and stderr in a log file, waits
until ``GET /health`` answers 200, and on exit sends SIGTERM to the whole group, then SIGKILL
after a grace period. A process that exits during startup, or a startup that exceeds
``launch.startup_timeout_s``, raises :class:`TargetError` quoting the tail of the log.
The server's output passes through a redacting filter (``python -m harness.redaction --tee``)
on its way to the log: the key it echoes in its arguments never reaches the disk.

vLLM itself is an optional GPU install, never a test dependency: tests launch a stand-in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness.config import TargetConfig
from harness.redaction import (
    TEE_SECRETS_ENV,
    argv_secrets,
    redact_argv,
    redact_text,
    registered,
    target_secrets,
)
from harness.targets.errors import TargetError, redact

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # where ``import harness`` works


def log_tail(path: Path, max_bytes: int = 4000) -> str:
    """The last ``max_bytes`` of a log file ("" when unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def masked_command(cmd: list[str]) -> tuple[str, tuple[str, ...]]:
    """``cmd`` as one printable line with secrets masked, and the secrets it held.

    The value after ``--api-key`` (or in ``--api-key=VALUE``, or any other secret flag such as
    ``--hf-token``) becomes ``***``; any other argument that looks like a key is scrubbed too
    (:func:`~harness.redaction.redact_argv`, :func:`~harness.redaction.redact_text`).
    """
    shown = [redact_text(word) for word in redact_argv(cmd)]
    return " ".join(shown), tuple(argv_secrets(cmd))


class VllmLauncher:
    """Start/stop ``vllm serve`` for one arm; a context manager. ``base_url`` once started."""

    def __init__(
        self,
        arm: str,
        target: TargetConfig,
        *,
        run_dir: str | Path | None = None,
        stop_timeout_s: float = 30.0,
        poll_s: float = 0.5,
    ) -> None:
        self.arm = arm
        self.target = target
        self.launch = target.launch
        self.model = self.launch.model or target.model
        self.host = self.launch.host
        self.port = int(self.launch.port)
        self.url = f"http://{self.host}:{self.port}"
        self.base_url = self.url + "/v1"
        if self.launch.log_file:
            self.log_path = Path(self.launch.log_file)
        else:
            self.log_path = Path(run_dir or ".") / f"vllm-{arm}.log"
        self.stop_timeout_s = stop_timeout_s
        self.poll_s = poll_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._tee: subprocess.Popen[bytes] | None = None
        self._shown_cmd, flag_secrets = masked_command(self.command())
        self._secrets = tuple(dict.fromkeys([*flag_secrets, *target_secrets(target)]))

    def command(self) -> list[str]:
        """The command line: ``COMMAND MODEL --host HOST --port PORT ARGS...``."""
        return [
            *self.launch.command,
            self.model,
            "--host",
            self.host,
            "--port",
            str(self.port),
            *[str(a) for a in self.launch.args],
        ]

    def start(self) -> VllmLauncher:
        """Spawn the server and wait for ``/health``; raises :class:`TargetError`."""
        if self.proc is not None:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **{k: str(v) for k, v in self.launch.env.items()}}
        cmd = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"$ {self._shown_cmd}\n".encode())
        # vLLM prints its arguments (the key among them): its output reaches the log through
        # a redacting line filter in its own process, so no thread of ours has to pump it
        # and the log stays redacted even if this process dies first.
        read_fd, write_fd = os.pipe()
        try:
            self._tee = self._start_tee(read_fd)
            try:
                self.proc = subprocess.Popen(
                    cmd,
                    stdout=write_fd,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,  # own process group: stop() reaches its children
                )
            except OSError as exc:
                raise TargetError(
                    f"arms.{self.arm}.launch: cannot run {redact(cmd[0], self._secrets)!r}: "
                    f"{redact(str(exc), self._secrets)} (is vLLM installed on this machine?)"
                ) from None
        finally:
            os.close(read_fd)
            os.close(write_fd)  # EOF for the filter once vLLM and its children are gone
            if self.proc is None:
                self._wait_tee()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_tee(self, read_fd: int) -> subprocess.Popen[bytes]:
        """``python -m harness.redaction --tee LOG`` reading the server's output from ``read_fd``."""
        secrets = list(dict.fromkeys([*self._secrets, *registered()]))
        path = os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path, TEE_SECRETS_ENV: json.dumps(secrets)}
        with open(self.log_path, "ab") as log:  # its own failure, if any, lands in the log
            return subprocess.Popen(
                [sys.executable, "-m", "harness.redaction", "--tee", str(self.log_path)],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
                start_new_session=True,  # Ctrl-C and the server's group kill leave it to drain
            )

    def _wait_tee(self, timeout_s: float = 5.0) -> None:
        """Let the log filter write what the server printed (it ends at EOF)."""
        tee, self._tee = self._tee, None
        if tee is None:
            return
        try:
            tee.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:  # a leftover child still holds the pipe open
            tee.kill()
            tee.wait()

    def wait_healthy(self) -> None:
        """Poll ``/health`` until 200, the process exits, or the startup timeout passes."""
        assert self.proc is not None
        timeout = float(self.launch.startup_timeout_s)
        deadline = time.monotonic() + timeout
        health = self.url + "/health"
        while True:
            code = self.proc.poll()
            if code is not None:
                self._wait_tee()
                raise TargetError(
                    f"arms.{self.arm}: vLLM exited with code {code} during startup "
                    f"(log {self.log_path}):\n{self._log_tail()}"
                )
            try:
                with _OPENER.open(health, timeout=min(5.0, max(0.1, self.poll_s * 4))) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TargetError(
                    f"arms.{self.arm}: vLLM did not answer {health} within {timeout:g} s "
                    f"(launch.startup_timeout_s; log {self.log_path}):\n{self._log_tail()}"
                )
            time.sleep(self.poll_s)

    def _log_tail(self) -> str:
        """The log's tail for an error message, secrets masked (vLLM prints its arguments)."""
        return redact(log_tail(self.log_path), self._secrets)

    def stop(self) -> int | None:
        """SIGTERM the process group, SIGKILL after ``stop_timeout_s``; returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            self._wait_tee()
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        try:  # leftovers of the group (engine workers) whose leader is gone
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._wait_tee()
        return proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> VllmLauncher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
