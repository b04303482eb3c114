"""Start and stop a simulator in a subprocess (tests, the experiment runner, benchmarks).

``SimProcess`` spawns ``sys.executable -m harness.sim``, reads its ``listening on`` line,
waits for ``GET /health`` to answer 200, and stops it with SIGTERM (then SIGKILL). The child
runs in its own session (process group), so a terminal's Ctrl-C or a group SIGTERM aimed at
the harness does not stop it under the load: its owner stops it, last. It runs with
``--exit-with-parent``, so a killed parent (even SIGKILL) leaves no simulator behind. Its stderr
(logs) goes to ``log_file`` or a temporary file whose tail is quoted when startup fails.

    with SimProcess("cloud", params={"ttft_ms": 50, "itl_ms": 5, "itl_jitter": 0}) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="x")

:func:`set_clock` puts a running simulator's scenario on the run's experiment clock
(``POST /admin/clock``), by URL, for a simulator this process did not start too.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

_LISTENING = re.compile(r"harness-sim listening on http://([^:\s]+):(\d+)")


class SimProcessError(RuntimeError):
    """The simulator did not start, or refused a request to change its parameters."""


def _admin_root(base_url: str) -> str:
    """The server root of ``base_url`` (``http://h:p``, ``http://h:p/`` or ``http://h:p/v1``):
    the admin endpoints are at the root."""
    root = base_url.rstrip("/")
    return root.removesuffix("/v1").rstrip("/")


def set_clock(
    base_url: str, origin_ns: int, time_scale: float, timeout_s: float = 2.0
) -> dict[str, Any]:
    """``POST /admin/clock``: from now on the simulator at ``base_url`` (its root or its
    ``/v1`` URL) runs its scenario on experiment time ``(now - origin_ns) * time_scale``
    (steps already passed fire at once). Returns its admin state; raises
    :class:`SimProcessError` naming the URL when it cannot be reached or refuses."""
    url = _admin_root(base_url) + "/admin/clock"
    data = json.dumps({"origin_ns": origin_ns, "time_scale": time_scale}).encode()
    req = urllib.request.Request(
        url, data=data, method="POST", headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - http only
            body = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise SimProcessError(
            f"simulator at {url} refused the clock (origin_ns={origin_ns}, "
            f"time_scale={time_scale}): HTTP {exc.code}: {detail}"
        ) from None
    except OSError as exc:  # URLError, timeouts, refused connections
        raise SimProcessError(
            f"cannot set the experiment clock at {url}: {exc} (is the simulator running?)"
        ) from None
    try:
        return json.loads(body)
    except ValueError:
        raise SimProcessError(f"{url}: not a JSON answer: {body[:200]!r}") from None


class SimProcess:
    """A simulator subprocess; a context manager (``with SimProcess(...) as sim``)."""

    def __init__(
        self,
        profile: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        params: dict[str, Any] | None = None,
        config_file: str | None = None,
        seed: int = 0,
        startup_timeout_s: float = 20,
        log_file: str | None = None,
        log_level: str = "WARNING",
        clock_origin_ns: int | None = None,
        time_scale: float = 1.0,
    ) -> None:
        self.profile = profile
        self.host = host
        self.port = port
        self.params = dict(params or {})
        self.config_file = config_file
        self.seed = seed
        self.startup_timeout_s = startup_timeout_s
        self.log_file = log_file
        self.log_level = log_level
        self.clock_origin_ns = clock_origin_ns  # the experiment clock from the start
        self.time_scale = time_scale
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.base_url = ""
        self._log = None

    def command(self) -> list[str]:
        """The command line that starts the simulator."""
        cmd = [
            sys.executable,
            "-m",
            "harness.sim",
            "--profile",
            self.profile,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--seed",
            str(self.seed),
            "--log-level",
            self.log_level,
            "--exit-with-parent",
        ]
        if self.config_file:
            cmd += ["--config", str(self.config_file)]
        if self.clock_origin_ns is not None:
            cmd += ["--clock-origin-ns", str(self.clock_origin_ns)]
            cmd += ["--time-scale", repr(float(self.time_scale))]
        for k, v in self.params.items():
            cmd += ["--param", f"{k}={json.dumps(v)}"]
        return cmd

    def start(self) -> SimProcess:
        """Spawn the simulator and wait until it answers ``/health``; raises SimProcessError."""
        if self.proc is not None:
            return self
        if self.log_file:
            self._log = open(self.log_file, "ab")  # noqa: SIM115 - lives as long as the child
        else:
            self._log = tempfile.TemporaryFile()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # group signals (Ctrl-C, systemd stop) reach only the owner
        )
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            line = self._read_line(deadline)
            m = _LISTENING.search(line)
            if not m:
                raise SimProcessError(f"unexpected first line from the simulator: {line!r}")
            self.url = f"http://{m.group(1)}:{m.group(2)}"
            self.base_url = self.url + "/v1"
            while True:
                try:
                    status, _ = self.request("GET", "/health", timeout=2)
                    if status == 200:
                        return self
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SimProcessError("simulator did not answer /health in time")
                time.sleep(0.02)
        except BaseException as exc:
            tail = self._log_tail()
            self.stop()
            if isinstance(exc, SimProcessError):
                raise SimProcessError(f"{exc}\n--- simulator log ---\n{tail}") from None
            raise

    def _read_line(self, deadline: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SimProcessError(f"simulator did not start in {self.startup_timeout_s} s")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    code = self.proc.wait(timeout=5)
                    raise SimProcessError(f"simulator exited with code {code} before listening")
                buf += chunk
        return buf.decode(errors="replace").splitlines()[0]

    def _log_tail(self, n: int = 4000) -> str:
        if self._log is None:
            return ""
        try:
            self._log.flush()
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - n))
            return self._log.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 10
    ) -> tuple[int, bytes]:
        """One HTTP request to the simulator: (status, body)."""
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"content-type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def set_params(self, **params: Any) -> None:
        """Change parameters while running (``POST /admin/config``)."""
        status, body = self.request("POST", "/admin/config", params)
        if status != 200:
            raise SimProcessError(f"simulator refused {params}: {body.decode(errors='replace')}")

    def set_clock(self, origin_ns: int, time_scale: float) -> dict[str, Any]:
        """Put the scenario on an experiment clock (``POST /admin/clock``); the admin state."""
        return set_clock(self.url, origin_ns, time_scale)

    def get_config(self) -> dict[str, Any]:
        """``GET /admin/config``: profile, seed, uptime and current parameters."""
        status, body = self.request("GET", "/admin/config")
        if status != 200:
            raise SimProcessError(f"GET /admin/config: HTTP {status}")
        return json.loads(body)

    def metrics_text(self) -> str:
        """The Prometheus text of ``GET /metrics``."""
        return self.request("GET", "/metrics")[1].decode()

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
