"""The run directory and its ``manifest.json``: what ran, against what, when, with which versions.

The manifest is written when a run starts (``status: running``) and rewritten atomically when
it ends (``completed``, ``interrupted`` or ``failed``). A run that lost a locust worker mid-run
(killed, its machine gone) and finished with the others keeps its status and says
``degraded: true``, with one ``lost_workers`` entry per lost worker: ``worker``, ``host``,
``pid``, ``reason``, ``lost_at``, ``last_rows_at`` (when its last rows reached the master) and
``rows_received``; ``missing_row_messages`` (worker -> count) names row messages a worker sent
that never arrived. Every other run says ``degraded: false``. Secrets never reach it: config values
under keys that look like secrets are redacted, registered secret values, URL credentials and
secret flags' values are masked (:mod:`harness.redaction`), and API keys are only ever read
from the environment variables that the config names.

A run may have several segments (``resume=RUN_ID`` continues a stopped or killed run in place):
``segments`` lists them, ``{index, started_at, t0_ns, ended_at, status, stop_reason,
first_index}`` (``first_index``: the first arrival index the segment's schedule reached);
``clock`` is the experiment clock ``{origin_ns, time_scale, day_s}`` (origin: the first
segment's ``t0_ns``) and ``downtime`` one entry per gap between segments, ``{from, to, wall_s,
virtual_s, from_day, to_day}`` (harness downtime, never an outage of an arm). While a segment
runs the status is ``running``; a segment whose process was killed (no finish) is marked
``aborted`` when the run is resumed. :class:`RunLock` (``.harness.lock``, an ``flock`` the
kernel drops with the process) tells a live run from a killed one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import secrets
import socket
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.redaction import REDACTED, redact_tree  # noqa: F401  (REDACTED: re-exported)
from harness.redaction import redact_argv as _redact_argv

_KEY_PACKAGES = (
    "llm-canary-harness",
    "locust",
    "gevent",
    "geventhttpclient",
    "openai",
    "hydra-core",
    "pyarrow",
    "pandas",
    "numpy",
    "scipy",
    "matplotlib",
)


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_from_ns(t_ns: int | None) -> str | None:
    """UTC nanoseconds since the epoch as the manifest's ISO time (None stays None)."""
    if t_ns is None:
        return None
    t = datetime.fromtimestamp(t_ns / 1e9, UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def redact(obj: Any) -> Any:
    """Copy of a config tree with its secrets hidden (:func:`harness.redaction.redact_tree`).

    ``api_key_env`` (the *name* of an environment variable) is kept: it is not a secret.
    """
    return redact_tree(obj)


def redact_argv(argv: list[str]) -> list[str]:
    """Command-line words with secrets hidden (:func:`harness.redaction.redact_argv`)."""
    return _redact_argv(argv)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _KEY_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def host_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python_executable": sys.executable,
    }


def write_json_atomic(path: Path, data: Any, *, allow_nan: bool = True) -> None:
    """Write JSON via a temporary file, fsync and rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=str, allow_nan=allow_nan)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class RunManifest:
    """Holds the manifest dict and rewrites ``manifest.json`` on every change."""

    run_dir: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        run_dir: Path,
        *,
        run_id: str,
        experiment: str,
        config: dict[str, Any],
        arms: dict[str, dict[str, Any]],
        extra: dict[str, Any] | None = None,
    ) -> RunManifest:
        data: dict[str, Any] = {
            "run_id": run_id,
            "experiment": experiment,
            "status": "running",
            "started_at": utc_now_iso(),
            "ended_at": None,
            "duration_s": None,
            "config": redact(config),
            "arms": redact(arms),
            "versions": package_versions(),
            "host": host_info(),
            "argv": redact_argv(list(sys.argv)),
        }
        if extra:
            data.update(redact(extra))
        m = cls(Path(run_dir), data)
        m.save()
        return m

    @classmethod
    def load(cls, run_dir: Path) -> RunManifest:
        path = Path(run_dir) / "manifest.json"
        try:
            return cls(Path(run_dir), json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{path}: no manifest.json (is this a run directory?)") from exc
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc

    @property
    def path(self) -> Path:
        return self.run_dir / "manifest.json"

    def update(self, **fields_: Any) -> None:
        self.data.update(redact(fields_))
        self.save()

    # -- segments (resumed runs) ------------------------------------------------------------

    @property
    def segments(self) -> list[dict[str, Any]]:
        """The run's segments; a manifest written before segments existed has one implied."""
        segs = self.data.get("segments")
        if isinstance(segs, list):
            return segs
        d = self.data
        return [
            {
                "index": 0,
                "started_at": d.get("started_at"),
                "t0_ns": d.get("t0_ns"),
                "ended_at": d.get("ended_at"),
                "status": d.get("status"),
                "stop_reason": d.get("stop_reason"),
                "first_index": 0,
            }
        ]

    def start_segment(self, *, resumed: bool, **fields_: Any) -> dict[str, Any]:
        """Open a new segment (status ``running``); a resumed run's top-level end is cleared."""
        segs = list(self.segments) if resumed else []
        seg: dict[str, Any] = {
            "index": len(segs),
            "started_at": utc_now_iso(),
            "t0_ns": None,
            "ended_at": None,
            "status": "running",
            "stop_reason": None,
            "first_index": None,
            **fields_,
        }
        segs.append(seg)
        top: dict[str, Any] = {"segments": segs}
        if resumed:
            top.update(status="running", ended_at=None, duration_s=None, stop_reason=None)
            self.data.pop("error", None)
        self.update(**top)
        return seg

    def update_segment(self, **fields_: Any) -> None:
        """Set fields of the current (last) segment and save."""
        segs = self.segments
        segs[-1].update(redact(fields_))
        self.update(segments=segs)

    def finish(self, status: str, **fields_: Any) -> None:
        if isinstance(self.data.get("segments"), list) and self.data["segments"]:
            last = self.data["segments"][-1]
            if last.get("ended_at") is None:
                last.update(
                    ended_at=utc_now_iso(),
                    status=status,
                    stop_reason=fields_.get("stop_reason"),
                )
        ended = datetime.now(UTC)
        started = datetime.fromisoformat(self.data["started_at"].replace("Z", "+00:00"))
        self.update(
            status=status,
            ended_at=ended.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            duration_s=round((ended - started).total_seconds(), 3),
            **fields_,
        )

    def save(self) -> None:
        write_json_atomic(self.path, self.data)


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.harness.lock`` held while a run (segment) runs.

    The kernel releases it when the process ends, however it ends (SIGKILL included), so a
    run whose manifest still says ``running`` but whose lock is free was killed: resumable.
    """

    NAME = ".harness.lock"

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / self.NAME
        self._fh: Any = None

    def acquire(self) -> bool:
        """Take the lock; False when another live process holds it."""
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115  (held for the run)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()} {socket.gethostname()}\n")
        fh.flush()
        self._fh = fh
        return True

    def holder(self) -> str:
        """Who holds (or last held) it: ``PID HOST``, or '' when unknown."""
        with contextlib.suppress(OSError):
            return self.path.read_text(encoding="utf-8").strip()
        return ""

    def release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()


def make_run_dir(reports_dir: Path, experiment: str, run_id: str) -> Path:
    run_dir = Path(reports_dir) / experiment / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir


def point_latest(reports_dir: Path, run_dir: Path) -> None:
    """Make ``reports/latest`` a relative symlink to ``run_dir`` (replaced atomically)."""
    reports_dir = Path(reports_dir)
    link = reports_dir / "latest"
    tmp = reports_dir / f".latest.{os.getpid()}"
    target = os.path.relpath(run_dir, reports_dir)
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError:  # filesystems without symlinks: a text file naming the run
        (reports_dir / "latest.txt").write_text(str(run_dir) + "\n", encoding="utf-8")
