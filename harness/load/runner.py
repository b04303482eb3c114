"""The experiment run loop: from a resolved config to a run directory full of data.

Stages, in order: resolve arms (presets + overrides) and check API-key variables before any
traffic -> create the run directory and manifest -> start simulators / managed vLLM servers
-> preflight every endpoint -> start /metrics scrapers -> drive load with locust (locally or
master + N worker processes on one coordinated schedule) while printing live progress ->
drain, flush, close the manifest -> one-screen summary -> report.

SIGINT/SIGTERM stop the schedule, give requests in flight a short grace, flush everything and
close the manifest as ``interrupted``; a second one ends the grace at once (requests in flight
are cancelled) but still flushes and closes the manifest. During start-up (simulators,
preflight, workers connecting) a signal ends the run at once as ``interrupted``
(:class:`RunInterrupted`). The handlers stay installed until the manifest is closed. Embedded
simulators run in their own session, so a terminal's Ctrl-C (sent to the whole process group)
or a group SIGTERM reaches only the harness and its workers: the load stops first, the
simulators last. A SIGKILL loses at most the last flush interval of rows.

Segments: ``resume=RUN_ID`` (or ``latest``) continues a stopped or killed open-loop run in
place (:mod:`harness.load.resume` checks it may). Every segment keeps the experiment clock of
the first (``manifest.clock``, origin = the first ``t0``): the simulators are told it
(``harness.sim.process.set_clock``) right after ``t0`` is fixed, the schedule continues from
now, and the gap is recorded as ``downtime``. With ``canary.enabled`` and
``canary.daily_reports`` each experiment-clock day that ended gets ``harness report RUN_DIR
--day N`` in a child process of its own (own session, lowest priority, one at a time; a
failure is logged, never stops the run), reaped before the run closes.
"""

# ruff: noqa: I001  (locust is imported first on purpose)
from __future__ import annotations

# locust must be imported first: it monkey-patches sockets, ssl and threading for gevent.
import locust  # noqa: F401  (monkey-patches for gevent before anything else)

import contextlib
import dataclasses
import errno
import logging
import math
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import STATE_MISSING
from omegaconf import DictConfig, OmegaConf

from harness import redaction
from harness.canary.clock import ExperimentClock, clock_from_manifest
from harness.config import (
    Config,
    ConfigError,
    LoadConfig,
    RecordConfig,
    TargetConfig,
    WorkloadConfig,
    check_connection_caps,
    check_router_arms,
    project_root,
    resolve_arm,
    validate_config,
    validate_load,
    validate_record,
)
from harness.load.arrivals import build_schedule
from harness.load.daily import DailyReports
from harness.load.engine import LoadEngine, first_index_at
from harness.load.resume import (
    check_same_config,
    downtime_entry,
    find_run,
    last_sign_of_life_ns,
    open_resumable,
)
from harness.load.spec import RunSpec
from harness.load.users import ClosedLoopUser, PacerUser, install_engine
from harness.record.manifest import (
    RunLock,
    RunManifest,
    iso_from_ns,
    make_run_dir,
    new_run_id,
    point_latest,
    redact_argv,
    utc_now_iso,
)
from harness.record.schema import RequestRecord
from harness.record.shipping import ROWS_MESSAGE, RowCollector
from harness.record.writer import MetricsWriter, warm_up_parquet
from harness.workloads import build_workload

log = logging.getLogger(__name__)

STATS_REQUEST = "request"  # locust stats entry per arm: every attempt, e2e ms
STATS_TTFT = "ttft"  # locust stats entry per arm: time to first token, ms


class RunError(RuntimeError):
    """The run could not start or went wrong in a way the user must fix."""


class RunInterrupted(BaseException):
    """SIGINT/SIGTERM arrived before the load started; the manifest says ``interrupted``."""

    def __init__(self, run_dir: Path | None = None, signame: str = "signal") -> None:
        super().__init__(f"interrupted by {signame} during start-up")
        self.run_dir = run_dir
        self.signame = signame


def fire_locust_event(env: Environment, rec: RequestRecord) -> None:
    """Report one attempt to locust's statistics (console, web UI, distributed totals)."""
    exc = None if rec.status == "ok" else RuntimeError(rec.error_type or "error")
    env.events.request.fire(
        request_type=rec.arm,
        name=STATS_REQUEST,
        response_time=(rec.e2e_s or 0.0) * 1000.0,
        response_length=rec.completion_tokens or 0,
        exception=exc,
        context={},
    )
    if rec.ttft_s is not None:
        env.events.request.fire(
            request_type=rec.arm,
            name=STATS_TTFT,
            response_time=rec.ttft_s * 1000.0,
            response_length=0,
            exception=None,
            context={},
        )


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def guard_disk_full(writer: Any, what: str, on_full: Any) -> None:
    """Make ``writer.write_batch`` stop writing, instead of failing over and over, on a full disk.

    The first ENOSPC/EDQUOT calls ``on_full(message)`` -- from whatever thread wrote, so it
    must only set plain attributes -- and from then on batches are counted, not written (what
    is on disk stays as it is). Other errors propagate unchanged (the caller retries them).
    """
    write = writer.write_batch
    lost = {"rows": 0, "full": False}

    def guarded(rows: list[dict[str, Any]], seq: int) -> Any:
        if not lost["full"]:
            try:
                return write(rows, seq)
            except OSError as exc:
                if exc.errno not in _DISK_FULL:
                    raise
                lost["full"] = True
                with contextlib.suppress(OSError):  # the half-written temporary part
                    (
                        Path(writer.directory) / f".{writer.prefix}-part-{seq:06d}.parquet.tmp"
                    ).unlink()
                on_full(
                    f"disk full: cannot write {what} to {writer.directory} "
                    f"({exc.strerror or exc}); the load was stopped, parts already on disk are kept"
                )
        lost["rows"] += len(rows)
        return None

    writer.write_batch = guarded
    writer.rows_lost = lambda: lost["rows"]


def resolve_arms(
    cfg: Config | DictConfig, configs_dir: Path | None = None
) -> dict[str, TargetConfig]:
    arms_cfg = cfg.arms
    if not arms_cfg:
        raise ConfigError(
            "arms: the experiment names no arms (e.g. arms: {cloud: {target: sim_cloud}})"
        )
    arms = {name: resolve_arm(str(name), arm, configs_dir) for name, arm in arms_cfg.items()}
    check_router_arms(arms)  # a router arm's small / large: two plain arms, filled in
    return arms


def check_api_keys(arms: dict[str, TargetConfig]) -> None:
    """Fail before any traffic when an arm's API-key variable is not set."""
    from harness.targets import resolve_api_key

    for name, target in arms.items():
        resolve_api_key(name, target)


def _typed(klass: type, node: Any) -> Any:
    """A config node as its dataclass (defaults filled, types checked)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(klass), node))


def _reap(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Wait for a child process, then terminate it, then kill it."""
    if proc.poll() is not None:
        return
    try:
        proc.wait(timeout=grace_s)
        return
    except subprocess.TimeoutExpired:
        proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _quiet_quit(runner: Any) -> None:
    try:
        runner.quit()
    except Exception:
        log.debug("locust runner quit failed", exc_info=True)


def _ns_from_iso(text: str | None) -> int | None:
    """The manifest's ISO UTC time as nanoseconds (None stays None)."""
    if not text:
        return None
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Progress:
    """Prints one line per interval: requests, rate, errors and p50 TTFT per arm.

    Elapsed time counts from the experiment clock's origin (a resumed run goes on where it
    was); with ``clock`` (accelerated or month-long runs) the line also shows the
    experiment-clock day, 1-based: ``day 12/30``.
    """

    def __init__(
        self,
        env: Environment,
        arms: list[str],
        duration_s: float,
        t0_ns: int,
        clock: ExperimentClock | None = None,
    ) -> None:
        self.env = env
        self.arms = arms
        self.duration_s = duration_s
        self.t0_ns = t0_ns  # the experiment clock's origin
        self.clock = clock
        self.n_days = (
            max(1, math.ceil(duration_s * clock.time_scale / clock.day_s - 1e-9))
            if clock is not None and math.isfinite(duration_s)
            else None
        )
        self.t_start = time.monotonic()
        self.last: dict[str, tuple[float, int]] = {}

    def day(self, now_ns: int) -> str:
        """``day D of 0..N-1`` on the experiment clock (0-based, as ``--day`` and ``days/NNN``
        number them), or '' without a clock."""
        if self.clock is None:
            return ""
        d = self.clock.day_of(self.clock.virtual_ns(now_ns))
        if self.n_days is not None:
            return f" day {min(d, self.n_days - 1)} of 0-{self.n_days - 1}"
        return f" day {d}"

    @property
    def stats(self) -> Any:
        return self.env.runner.stats if self.env.runner else self.env.stats

    def line(self) -> str:
        stats = self.stats
        now = time.monotonic()
        now_ns = time.time_ns()
        elapsed = max(0.0, (now_ns - self.t0_ns) / 1e9)
        parts = [f"[{elapsed:5.0f}s/{self.duration_s:.0f}s{self.day(now_ns)}]"]
        for arm in self.arms:
            req = stats.get(STATS_REQUEST, arm)
            ttft = stats.get(STATS_TTFT, arm)
            t_last, n_last = self.last.get(arm, (self.t_start, 0))
            rate = (req.num_requests - n_last) / max(now - t_last, 1e-9)
            self.last[arm] = (now, req.num_requests)
            p50 = ttft.get_response_time_percentile(0.5) if ttft.num_requests else None
            p50s = f"{p50:.0f} ms" if p50 is not None else "-"
            parts.append(
                f"{arm}: {req.num_requests} req ({rate:.1f}/s) {req.num_failures} err, p50 TTFT {p50s}"
            )
        return parts[0] + " " + " | ".join(parts[1:])

    def error_rates(self) -> dict[str, tuple[int, float]]:
        stats = self.stats
        out = {}
        for arm in self.arms:
            req = stats.get(STATS_REQUEST, arm)
            out[arm] = (
                req.num_requests,
                req.num_failures / req.num_requests if req.num_requests else 0.0,
            )
        return out


class ExperimentRun:
    """One experiment run (see the module docstring for the stages)."""

    def __init__(self, cfg: Config | DictConfig, *, sweep: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.root = project_root()
        self.sweep = sweep
        self.stack = contextlib.ExitStack()
        self.stop_reason: str | None = None
        self.interrupted = False
        self.worker_procs: list[subprocess.Popen] = []
        self.done_workers: dict[int, dict[str, Any]] = {}
        self.ready_workers: set[int] = set()
        self.worker_failures: list[str] = []
        self.worker_nodes: dict[int, dict[str, Any]] = {}  # harness_ready: node id, pid, host
        self.lost_workers: dict[int, dict[str, Any]] = {}  # died mid-run, never said done
        self.collector: RowCollector | None = None  # distributed: the workers' rows land here
        self._row_flusher: gevent.Greenlet | None = None
        self._signal_handles: list[Any] = []
        self._phase = "startup"  # startup -> load -> teardown -> done (what a signal does)
        self._signals = 0
        self._engine: LoadEngine | None = None
        self._runner: Any = None
        self.metrics_writer: MetricsWriter | None = None
        self.disk_error: str | None = None  # set from a writer thread: polled by drive()
        self.failures: list[str] = []
        self.engine_stats: list[dict[str, Any]] = []
        self.lock: RunLock | None = None  # held while this segment runs
        self.resumed = False  # this segment continues an earlier one (resume=)
        self.clock: ExperimentClock | None = None  # known once t0 is fixed
        self._resume_origin_ns: int | None = None  # the resumed run's clock origin
        self._last_alive_ns: int | None = None  # the previous segment's last sign of life
        self._daily: DailyReports | None = None

    # -- setup ---------------------------------------------------------------------------

    def prepare(self) -> RunSpec:
        cfg = self.cfg
        resume = getattr(cfg, "resume", None)
        checked = cfg
        if resume:  # the run directory exists on purpose: run_id is checked below
            checked = (
                OmegaConf.merge(cfg, {"run_id": None})
                if isinstance(cfg, DictConfig)
                else dataclasses.replace(cfg, run_id=None)
            )
        validate_config(checked, self.root)  # unknown keys (also `+key=`), values, ports, run dir
        load = _typed(LoadConfig, cfg.load)
        workload = _typed(WorkloadConfig, cfg.workload)
        record = _typed(RecordConfig, cfg.record)
        validate_load(load)
        validate_record(record)
        # Build what the load processes will build, so bad files fail before any process starts.
        build_workload(workload, self.root).item(0)
        if load.mode == "open":
            next(iter(build_schedule(load, self.root).offsets()), None)
        self.arms = resolve_arms(cfg, self.root / "configs")
        check_connection_caps(load, self.arms)  # each load process gets a share of each cap
        check_api_keys(self.arms)
        # Every key this run knows of is masked in whatever it writes from here on.
        redaction.register_targets(self.arms)
        experiment = str(cfg.experiment.name)
        reports_dir = Path(cfg.record.reports_dir)
        if not reports_dir.is_absolute():
            reports_dir = self.root / reports_dir
        self.reports_dir = reports_dir
        resolved = (
            OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
            if not isinstance(cfg, dict)
            else cfg
        )
        redaction.register_tree(resolved)
        if resume:
            run_id = self._open_resumed(str(resume), experiment, load, resolved)  # type: ignore[arg-type]
        else:
            run_id = self._create_run_dir(experiment, resolved, load)  # type: ignore[arg-type]
        point_latest(reports_dir, self.run_dir)
        return RunSpec(
            run_id=run_id,
            experiment=experiment,
            run_dir=str(self.run_dir),
            project_root=str(self.root),
            arms=self.arms,
            workload=workload,  # type: ignore[arg-type]
            load=load,  # type: ignore[arg-type]
            record=record,  # type: ignore[arg-type]
            n_workers=max(1, int(cfg.load.workers) + int(cfg.load.remote_workers)),
            seed=int(cfg.load.seed),
            clock_origin_ns=self._resume_origin_ns,
            day_s=float(cfg.canary.day_s),
            pricing=dict(resolved.get("pricing") or {}),  # type: ignore[union-attr]
            partition_by_day=bool(cfg.canary.enabled),  # day partitions, compacted
        )

    def _create_run_dir(self, experiment: str, resolved: dict[str, Any], load: LoadConfig) -> str:
        """A fresh run: its directory, lock and ``running`` manifest; returns the run id."""
        cfg, reports_dir = self.cfg, self.reports_dir
        run_id = str(cfg.run_id) if cfg.run_id else new_run_id()
        try:
            self.run_dir = make_run_dir(reports_dir, experiment, run_id)
        except OSError as exc:
            if (reports_dir / experiment / run_id).is_dir():
                raise ConfigError(f"run_id: {run_id!r} was used before: give a new one") from None
            raise ConfigError(
                f"record.reports_dir: cannot create {reports_dir / experiment / run_id}: "
                f"{exc.strerror or exc}"
            ) from None
        self.lock = RunLock(self.run_dir)
        self.lock.acquire()  # a new directory: nobody else holds it
        self.manifest = RunManifest.create(
            self.run_dir,
            run_id=run_id,
            experiment=experiment,
            config=resolved,  # type: ignore[arg-type]
            arms={n: self._arm_info(t) for n, t in self.arms.items()},
            extra={
                "offered": {
                    "mode": cfg.load.mode,
                    "rate": cfg.load.rate if cfg.load.mode == "open" else None,
                    "concurrency": cfg.load.concurrency,
                    "arrival": cfg.load.arrival,
                    "shape": cfg.load.shape,
                    "pairing": cfg.load.pairing,
                    **self._expected_arrivals(load),
                },
                "sweep": self.sweep,
            },
        )
        self.manifest.start_segment(resumed=False)
        return run_id

    def _open_resumed(
        self, resume: str, experiment: str, load: LoadConfig, resolved: dict[str, Any]
    ) -> str:
        """``resume=RUN_ID|latest``: check the run may go on, reopen its manifest; its id."""
        cfg = self.cfg
        run_dir = find_run(self.reports_dir, experiment, resume)
        if cfg.run_id and str(cfg.run_id) != run_dir.name:
            raise ConfigError(
                f"run_id: {str(cfg.run_id)!r} is not the run resume={resume} names "
                f"({run_dir.name!r}); leave run_id unset when resuming"
            )
        manifest, lock = open_resumable(run_dir)
        self.lock = lock  # released by run() whatever happens next
        if load.mode != "open":
            raise ConfigError(
                f"load.mode: only open-loop runs can be resumed; run {run_dir.name!r} is "
                f"{load.mode} loop (start a new run instead)"
            )
        check_same_config(manifest.data["config"], resolved, run_dir.name)
        self.run_dir, self.manifest, self.resumed = run_dir, manifest, True
        prev = manifest.data
        was = prev.get("status")
        clock = clock_from_manifest(prev)
        segments = manifest.segments
        last = segments[-1]
        # The downtime starts at the last sign of life of the last segment that sent load
        # (a segment that failed or was stopped during start-up lies inside the gap).
        ran = next((g for g in reversed(segments) if g.get("t0_ns") is not None), None)
        alive = [last_sign_of_life_ns(run_dir)]
        if ran is not None:
            alive += [ran.get("t0_ns"), _ns_from_iso(ran.get("ended_at"))]
        alive = [t for t in alive if t is not None]
        self._last_alive_ns = max(alive) if alive else None
        if clock is not None:  # the run had started its load: keep its clock
            self._resume_origin_ns = clock.origin_ns
        if last.get("ended_at") is None:  # killed: the process never closed its segment
            last.update(
                status="aborted",
                ended_at=iso_from_ns(self._last_alive_ns) if last is ran else last["started_at"],
                stop_reason="the harness process ended without closing the run "
                "(killed, crashed or its machine stopped); ended_at is its last recorded row",
            )
        manifest.data["segments"] = segments
        manifest.start_segment(resumed=True, argv=redact_argv(list(sys.argv)))
        print(
            f"resuming run {run_dir.name} (segment {len(segments)}, it was {was}) in {run_dir}",
            flush=True,
        )
        return run_dir.name

    def _expected_arrivals(self, load: LoadConfig) -> dict[str, Any]:
        """Offered load over the analysed (main-phase) window, from the arrival process itself.

        With a shape (ramp, steps, diurnal) or a trace, ``rate`` alone is not what was offered:
        the expected count ``Lambda(end) - Lambda(start)`` is. Per arm (mirrored arrivals go
        to every arm). Absent for closed loop and when ``max_requests`` caps the run.
        """
        if load.mode != "open" or load.max_requests is not None:
            return {}
        start = load.warmup_s
        end = load.duration_s - load.cooldown_s
        if not math.isfinite(end):
            return {}
        process = build_schedule(load, self.root, stream=0).process
        expected = process.expected_count(end) - process.expected_count(start)
        return {
            "expected_arrivals": expected,
            "window_s": end - start,
            "expected_rate": expected / (end - start) if end > start else None,
        }

    @staticmethod
    def _arm_info(t: TargetConfig) -> dict[str, Any]:
        if t.kind == "router":  # no endpoint of its own: the arms it routes between
            r = t.router or {}
            return {"kind": "router", "model": None, "base_url": None, "small": r.get("small"),
                    "large": r.get("large"), "policy": r}  # fmt: skip
        return {
            "kind": t.kind,
            "model": t.model,
            "base_url": redaction.redact_url(t.base_url) if t.base_url else t.base_url,
            "api": t.api,
            "client": t.client,
            "api_key_env": t.api_key_env,
        }

    def start_targets(self) -> None:
        """Start simulators and managed vLLM servers; fill in their URLs."""
        for name, target in self.arms.items():
            if target.kind in ("sim_vllm", "sim_cloud"):
                from harness.sim.process import SimProcess, SimProcessError

                profile = "vllm" if target.kind == "sim_vllm" else "cloud"
                print(f"starting simulator for arm {name!r} (profile {profile})", flush=True)
                params = dict(target.sim.params or {})
                params.setdefault("model", target.model)  # the simulator serves the arm's model
                sim = SimProcess(
                    profile,
                    params=params,
                    config_file=target.sim.config_file,
                    seed=target.sim.seed,
                )
                try:
                    self.stack.enter_context(sim)
                except SimProcessError as exc:
                    raise RunError(f"arm {name!r}: the simulator did not start: {exc}") from exc
                target.base_url = sim.base_url
            elif target.kind == "vllm" and target.launch.enabled:
                from harness.targets.launcher import VllmLauncher

                print(f"launching vLLM for arm {name!r}", flush=True)
                launcher = VllmLauncher(name, target, run_dir=self.run_dir)
                self.stack.enter_context(launcher)
                target.base_url = launcher.base_url
        self.manifest.update(arms={n: self._arm_info(t) for n, t in self.arms.items()})

    def preflight(self) -> None:
        from harness.targets.preflight import preflight

        for name, target in self.arms.items():
            if target.preflight and target.kind != "router":  # its arms are checked
                preflight(name, target)

    def start_scrapers(self, spec: RunSpec) -> None:
        from harness.targets.metrics import MetricsScraper

        self.metrics_writer = MetricsWriter(
            self.run_dir,
            prefix="m",
            flush_interval_s=spec.record.flush_interval_s,
            auto_flush=False,
        )
        guard_disk_full(self.metrics_writer, "/metrics rows", self._on_disk_full)
        # Runs after every scraper's stop (LIFO), so their last scrape is written too.
        self.stack.callback(self._close_metrics_writer)
        from harness.routing.live import QueueDepths

        self.queue_depths = QueueDepths()  # the router arms' signals (a local load process)
        for name, target in self.arms.items():
            on = target.scrape_metrics
            if on is None:
                on = target.kind not in ("openai", "router")
            if not on or target.kind == "router":
                continue
            scraper = MetricsScraper(
                name,
                target,
                run_id=spec.run_id,
                interval_s=target.metrics_interval_s,
                on_rows=self._on_metric_rows,
            )
            scraper.start()
            self.stack.callback(scraper.stop)

    def _on_disk_full(self, message: str) -> None:
        self.disk_error = self.disk_error or message  # a plain attribute: any thread may set it

    def _close_metrics_writer(self) -> None:
        writer = self.metrics_writer
        if writer is None:
            return
        try:
            writer.close()  # flushes the rows of the last scrapes
        except Exception as exc:
            log.warning("writing the last /metrics rows failed: %s", exc)

    def _on_metric_rows(self, rows: list[dict[str, Any]]) -> None:
        queue_depths = getattr(self, "queue_depths", None)
        if queue_depths is not None:
            queue_depths.update(rows)
        if self.metrics_writer is None or self.metrics_writer._closed:
            return
        self.metrics_writer.extend(rows)
        if self.metrics_writer.due():  # write in gevent's thread pool: fsync never stalls sends
            batch = self.metrics_writer.take()
            if batch is not None:
                try:
                    gevent.get_hub().threadpool.apply(self.metrics_writer.write_batch, batch)
                except Exception:
                    self.metrics_writer.requeue(batch[0])  # kept for the next (or last) flush
                    raise

    # -- load ----------------------------------------------------------------------------

    def _user_class(self, spec: RunSpec) -> type:
        return PacerUser if spec.load.mode == "open" else ClosedLoopUser

    def _user_count(self, spec: RunSpec) -> int:
        return spec.n_workers if spec.load.mode == "open" else int(spec.load.concurrency or 1)

    def drive(self, spec: RunSpec) -> None:
        load = spec.load
        user_class = self._user_class(spec)
        env = Environment(user_classes=[user_class], events=locust.events)
        self.env = env
        distributed = load.workers + load.remote_workers > 0
        engine: LoadEngine | None = None
        if distributed:
            runner = env.create_master_runner(
                load.master_bind_host, load.master_port or _free_port()
            )
            port = runner.master_bind_port
            # whatever fails from here, connected (remote) workers are told to quit at once
            # instead of waiting out locust's 60 s heartbeat; a second quit is harmless
            self.stack.callback(_quiet_quit, runner)
            # Workers write nothing: their rows arrive as messages, and this process writes
            # them (one part-file prefix per worker), so no load machine needs this disk.
            self.collector = RowCollector(
                self.run_dir,
                flush_interval_s=spec.record.flush_interval_s,
                flush_rows=spec.record.flush_rows,
                partition_by_day=spec.partition_by_day,  # by day once t0 is fixed
                on_writer=lambda w: guard_disk_full(w, "request records", self._on_disk_full),
            )
            warm_up_parquet()
            runner.register_message(ROWS_MESSAGE, self._on_worker_rows)
            self._row_flusher = gevent.spawn(self._flush_rows_loop, spec.record.flush_interval_s)
            self.stack.callback(self._stop_row_flusher)
            runner.register_message("harness_done", self._on_worker_done)
            runner.register_message("harness_ready", self._on_worker_ready)
            runner.register_message("harness_failed", self._on_worker_failed)
            for _ in range(load.workers):
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "harness",
                        "worker",
                        "--master-port",
                        str(port),
                        "--exit-with-parent",  # a killed master leaves no worker sending
                    ],  # fmt: skip
                )
                self.worker_procs.append(proc)
                self.stack.callback(_reap, proc)  # never leave a worker behind, whatever fails
            if load.remote_workers:
                print(
                    f"waiting for {load.remote_workers} remote worker(s): run `harness worker "
                    f"--master-host <this host> --master-port {port}` on each machine",
                    flush=True,
                )
            timeout = 60 if not load.remote_workers else 600
            self._wait_workers(lambda: runner.worker_count, spec.n_workers, timeout, "connected")
            # Two phases: every worker builds its engine (clients, workload, Parquet warm-up)
            # from the spec, says it is ready, and only then is the common start time fixed,
            # so no worker starts late and bursts its first arrivals.
            runner.send_message("harness_spec", {"spec": asdict(spec)})
            self._wait_workers(lambda: len(self.ready_workers), spec.n_workers, 120, "ready")
            self._runner = runner
            self._phase = "load"  # from here a signal stops the schedule and drains
            t0 = time.time_ns() + int(0.5e9)
            self._start_clock(spec, t0)
            runner.send_message("harness_t0", {"t0_ns": t0})
        else:
            runner = env.create_local_runner()
            engine = LoadEngine(
                spec,
                worker_index=0,
                n_workers=1,
                on_record=lambda r: fire_locust_event(env, r),
                queue_depths=getattr(self, "queue_depths", None),
            )
            guard_disk_full(engine.writer, "request records", self._on_disk_full)
            install_engine(engine)
            engine.start_flusher()
            self._engine = engine
            self._phase = "load"
            t0 = time.time_ns() + int(0.2e9)
            self._start_clock(spec, t0)
            engine.set_t0(t0)
        assert self.clock is not None
        origin = self.clock.origin_ns
        skip_s = max(0.0, (t0 - origin) / 1e9)  # a resumed segment: the schedule goes on here
        if load.web_ui:
            env.create_web_ui("127.0.0.1", load.web_port)
            print(f"locust web UI on http://127.0.0.1:{load.web_port}", flush=True)

        if self.stop_reason is not None and engine is not None:
            engine.stop()
        n_users = self._user_count(spec)
        runner.start(n_users, spawn_rate=max(n_users, 1) * 100)
        if self.resumed and load.mode == "open":
            self._note_first_index(spec, skip_s)
        show_day = load.time_scale != 1 or bool(self.cfg.canary.enabled)
        progress = _Progress(
            env, list(spec.arms), load.duration_s, origin, self.clock if show_day else None
        )
        if self.cfg.canary.enabled and self.cfg.canary.daily_reports and progress.n_days:
            earlier = self.manifest.data.get("daily_reports") if self.resumed else None
            self._daily = DailyReports(
                self.run_dir,
                self.root,
                self.clock,
                progress.n_days,
                grace_s=2 * spec.record.flush_interval_s + 1.0,
                written=list((earlier or {}).get("written") or []),
                on_change=self._save_daily,
            )
        left_s = max(0.0, load.duration_s - skip_s)
        hard_deadline = time.monotonic() + left_s + load.stop_timeout_s + 60
        next_progress = time.monotonic() + self.cfg.progress_interval_s
        closed_end = time.monotonic() + load.duration_s + 0.2 if load.mode == "closed" else None
        ended = False
        try:
            while True:
                if engine is not None and engine.done.is_set():
                    break
                if distributed:
                    self._check_lost_workers(runner)
                    if len(self.done_workers) + len(self.lost_workers) >= spec.n_workers:
                        break  # a lost worker's share is not waited for
                if self.disk_error is not None:
                    self.stop_reason = self.stop_reason or "disk full"
                    print(f"stopping: {self.disk_error}", flush=True)
                    break
                if self.stop_reason is not None:
                    break
                now = time.monotonic()
                if closed_end is not None and now >= closed_end and engine is not None:
                    engine.stop_event.set()  # closed users end at the duration; done follows drain
                if now > hard_deadline:
                    self.stop_reason = "hard deadline passed (requests did not finish)"
                    break
                if now >= next_progress:
                    print(progress.line(), flush=True)
                    next_progress = now + self.cfg.progress_interval_s
                    self._check_error_rate(progress, load.max_error_rate)
                if self._daily is not None:
                    self._daily.tick(time.time_ns())
                gevent.sleep(0.1)
            ended = True
        finally:
            self._finish_load(runner, engine, spec)
            self._phase = "teardown"  # load drained and flushed: the rest is quick
            if not ended:  # failing: reap the daily report child, write no more
                self._close_daily(origin, wait_s=0.0)
        print(progress.line(), flush=True)
        self._close_daily(origin + int(load.duration_s * 1e9))

    # -- the experiment clock across segments --------------------------------------------

    def _start_clock(self, spec: RunSpec, t0: int) -> None:
        """``t0`` is fixed: the clock (origin: the first segment's t0), manifest, simulators."""
        origin = spec.clock_origin_ns if spec.clock_origin_ns is not None else t0
        clock = ExperimentClock(origin, spec.load.time_scale, spec.day_s)
        self.clock = clock
        if self.collector is not None:  # the workers' rows: day partitions on this clock
            self.collector.set_day_clock(clock)
        self._tell_simulators(clock)
        fields: dict[str, Any] = {"clock": clock.to_dict()}
        if spec.clock_origin_ns is None:
            fields["t0_ns"] = t0  # the first segment's start: relative time 0
        if self.resumed and spec.clock_origin_ns is not None and self._last_alive_ns is not None:
            gap = downtime_entry(clock, min(self._last_alive_ns, t0), t0)
            fields["downtime"] = [*(self.manifest.data.get("downtime") or []), gap]
            print(
                f"harness downtime: {gap['wall_s']:.1f} s ({gap['virtual_s']:.0f} s on the "
                f"experiment clock, day {gap['from_day']} to day {gap['to_day']}); "
                "the schedule continues from now",
                flush=True,
            )
        self.manifest.update(**fields)
        first = 0 if spec.clock_origin_ns is None else None
        self.manifest.update_segment(t0_ns=t0, first_index=first)

    def _note_first_index(self, spec: RunSpec, skip_s: float) -> None:
        """The resumed segment's first arrival index (independent pairing: the first arm's)."""
        stream = 0 if spec.load.pairing != "independent" else 1
        try:
            first = first_index_at(build_schedule(spec.load, self.root, stream=stream), skip_s)
        except Exception:  # informational only
            log.debug("first arrival index of the segment unknown", exc_info=True)
            return
        self.manifest.update_segment(first_index=first)
        print(f"arrivals continue at index {first} ({skip_s:.1f} s into the schedule)", flush=True)

    def _tell_simulators(self, clock: ExperimentClock) -> None:
        """Every simulator arm learns the experiment clock (scenario steps ``at_day``)."""
        sims = [(n, t) for n, t in self.arms.items() if t.kind in ("sim_vllm", "sim_cloud")]
        if not sims:
            return
        try:
            from harness.sim.process import set_clock
        except ImportError:
            log.warning("the simulators cannot be told the experiment clock (no set_clock)")
            return
        for name, target in sims:
            try:
                set_clock(target.base_url, clock.origin_ns, clock.time_scale)
            except Exception as exc:
                raise RunError(
                    f"arm {name!r}: the simulator did not take the experiment clock: {exc}"
                ) from exc

    def _save_daily(self) -> None:
        """The daily reports written so far, in the manifest (a resumed run skips them)."""
        if self._daily is not None:
            self.manifest.update(daily_reports=self._daily.summary())

    def _close_daily(self, end_ns: int, wait_s: float | None = None) -> None:
        """Write the daily reports of the days that ended by ``end_ns``; reap the child."""
        daily, self._daily = self._daily, None
        if daily is None:
            return
        try:
            # an interrupted run does not wait for reports; a finished one writes its last days
            if wait_s is None:
                wait_s = 5.0 if self.interrupted else 120.0
            if wait_s > 1 and (daily.proc is not None or daily.pending or daily.due(end_ns)):
                print("writing the last daily reports ...", flush=True)
            daily.close(min(end_ns, time.time_ns()), wait_s=wait_s, stop=lambda: self.interrupted)
            self.manifest.update(daily_reports=daily.summary())
        except Exception:  # never lose the run for a report
            log.exception("closing the daily reports failed")

    def _wait_workers(self, count: Any, n: int, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while count() < n:
            if self._phase != "startup":
                raise RunInterrupted(getattr(self, "run_dir", None))
            if self.worker_failures:
                raise RunError(f"a locust worker failed: {self.worker_failures[0]}")
            if time.monotonic() > deadline:
                raise RunError(f"only {count()} of {n} locust workers {what} in {timeout_s:.0f} s")
            if any(p.poll() is not None for p in self.worker_procs):
                raise RunError("a locust worker process exited during start-up (see above)")
            gevent.sleep(0.05)

    def _on_worker_ready(self, environment: Environment, msg: Any, **kw: Any) -> None:
        data = msg.data or {}
        index = int(data.get("worker", -1))
        self.ready_workers.add(index)
        local = data.get("host") == socket.gethostname()
        proc = next((p for p in self.worker_procs if local and p.pid == data.get("pid")), None)
        self.worker_nodes[index] = {
            "node_id": msg.node_id,
            "host": data.get("host"),
            "pid": data.get("pid"),
            "proc": proc,  # a worker this process started: its exit is seen at once
        }

    def _on_worker_rows(self, environment: Environment, msg: Any, **kw: Any) -> None:
        """A worker's rows: buffered here (cheap), written by the row flusher."""
        assert self.collector is not None
        try:
            self.collector.receive(msg.data)
        except ValueError as exc:  # another harness version on the worker: stop, say so
            error = f"a locust worker sent rows this master cannot read: {exc}"
            if error not in self.worker_failures:
                self.worker_failures.append(error)
            self.stop_reason = self.stop_reason or error

    def _flush_rows_loop(self, interval_s: float) -> None:
        """Write the workers' due rows in gevent's thread pool: fsync never stalls the loop."""
        assert self.collector is not None
        pool = gevent.get_hub().threadpool
        while self._row_flusher is not None:
            gevent.sleep(min(0.25, interval_s / 4))
            try:
                self.collector.flush(pool.apply, only_if_due=True)
            except Exception:  # the batch was put back: the next flush retries it
                log.exception("writing request records failed; will retry")

    def _stop_row_flusher(self) -> None:
        flusher, self._row_flusher = self._row_flusher, None
        if flusher is not None:
            flusher.join(timeout=30)  # a write in progress finishes: never kill it

    def _close_collector(self) -> None:
        """Write every row the workers sent, before the manifest closes and the report reads."""
        if self.collector is None:
            return
        self._stop_row_flusher()
        try:  # the last rows, then (day partitions) the final compaction, off the loop
            self.collector.close(gevent.get_hub().threadpool.apply)
        except Exception as exc:
            log.error("writing the workers' last request records failed: %s", exc)
            self.failures.append(f"writing the last request records failed: {exc}")

    def _check_lost_workers(self, runner: Any) -> None:
        """Notice a worker that died mid-run (SIGKILL, its machine gone): it never says done.

        A worker this process started: its process exited. Any worker: locust's heartbeat
        check marked it missing (no heartbeat for about 3 s), or it left. One whose heartbeat
        comes back is not lost (its rows were kept all along).
        """
        for index, node in self.worker_nodes.items():
            if index in self.done_workers:
                continue
            client = runner.clients.get(node["node_id"])
            proc = node["proc"]
            if proc is not None and proc.poll() is not None:
                reason = f"its process exited with code {proc.returncode}"
            elif client is None:
                reason = "it left the master without reporting its end"
            elif client.state == STATE_MISSING:
                reason = "no heartbeat for about 3 s (locust marked it missing)"
            else:
                self._unlose_worker(index)
                continue
            if index not in self.lost_workers:
                self._lose_worker(index, reason)

    def _lose_worker(self, index: int, reason: str) -> None:
        node = self.worker_nodes.get(index, {})
        got = self.collector.received.get(index) if self.collector is not None else None
        last = iso_from_ns(got.last_rows_ns) if got is not None else None
        self.lost_workers[index] = {
            "worker": index,
            "host": node.get("host"),
            "pid": node.get("pid"),
            "reason": reason,
            "lost_at": utc_now_iso(),
            "last_rows_at": last,
        }
        print(
            f"locust worker {index} lost mid-run: {reason}; the run goes on without its share "
            f"(its rows up to {last or 'the start'} are kept)",
            flush=True,
        )

    def _unlose_worker(self, index: int) -> None:
        if self.lost_workers.pop(index, None) is not None:
            print(f"locust worker {index} is back (it was only slow): not lost", flush=True)

    def _degraded(self) -> dict[str, Any]:
        """The manifest's ``degraded`` / ``lost_workers`` (/ ``missing_row_messages``)."""
        col = self.collector
        lost = [
            {**e, "rows_received": col.received[w].rows if col and w in col.received else 0}
            for w, e in sorted(self.lost_workers.items())
        ]
        missing = {}
        if col is not None:
            for w, st in sorted(self.done_workers.items()):
                n = col.missing(w, st.get("rows_seq"))
                if n:
                    missing[str(w)] = n
        out: dict[str, Any] = {"degraded": bool(lost or missing), "lost_workers": lost}
        if missing:
            out["missing_row_messages"] = missing
        return out

    def _on_worker_failed(self, environment: Environment, msg: Any, **kw: Any) -> None:
        error = str((msg.data or {}).get("error", "unknown error"))
        self.worker_failures.append(error)
        self.stop_reason = self.stop_reason or f"a locust worker failed: {error}"

    def _check_error_rate(self, progress: _Progress, limit: float | None) -> None:
        if limit is None:
            return
        for arm, (n, rate) in progress.error_rates().items():
            if n >= 20 and rate > limit:
                self.stop_reason = (
                    f"arm {arm!r} error rate {rate:.1%} passed load.max_error_rate={limit:.1%}"
                )
                print(f"stopping: {self.stop_reason}", flush=True)

    def _on_worker_done(self, environment: Environment, msg: Any, **kw: Any) -> None:
        data = msg.data or {}
        index = int(data.get("worker", len(self.done_workers)))
        self.done_workers[index] = data  # its rows came before this message
        self._unlose_worker(index)
        if data.get("failure"):  # e.g. its disk is full: stop the other workers too
            self.stop_reason = self.stop_reason or f"a locust worker failed: {data['failure']}"

    def _install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM for the whole run (start-up, load, drain, flush, manifest)."""
        main = gevent.get_hub().parent

        def handler(signame: str) -> None:
            if self._phase in ("teardown", "done"):  # nothing left to stop: let it finish
                print(f"{signame}: closing the run, please wait", flush=True)
                self.interrupted = True  # e.g. no more waiting for daily reports
                return
            self._signals += 1
            self.interrupted = True
            self.stop_reason = self.stop_reason or "interrupted by signal"
            if self._phase == "startup":
                # Nothing was sent yet: end the start-up where it is (the ExitStack stops
                # whatever was started); the manifest is closed as `interrupted`.
                self._phase = "done"
                print(f"{signame}: stopping during start-up", flush=True)
                main.throw(RunInterrupted(getattr(self, "run_dir", None), signame))
                return
            if self._signals == 1:
                print(f"{signame}: stopping the load (again to cancel requests in flight)",
                      flush=True)  # fmt: skip
            else:
                print(f"{signame} again: cancelling requests in flight, then flushing",
                      flush=True)  # fmt: skip
            engine = self._engine
            if engine is not None:
                engine.stop()
                if self._signals > 1:
                    self._cancel_in_flight(engine)
            elif self._runner is not None:  # workers: stop now (and cancel, the second time)
                gevent.spawn(
                    self._runner.send_message, "harness_stop", {"cancel": self._signals > 1}
                )

        for sig in (signal.SIGINT, signal.SIGTERM):
            name = signal.Signals(sig).name
            self._signal_handles.append(gevent.signal_handler(sig, handler, name))

    def _remove_signal_handlers(self) -> None:
        for handle in self._signal_handles:  # Ctrl-C works normally again (e.g. in the report)
            handle.cancel()
        self._signal_handles.clear()
        # libev leaves SIG_DFL behind: give Python its usual handlers back
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    @staticmethod
    def _cancel_in_flight(engine: LoadEngine) -> None:
        for client in engine.clients.values():
            try:
                client.cancel()  # in-flight attempts end as `cancelled` rows
            except Exception:
                log.debug("cancel failed", exc_info=True)

    def _finish_load(self, runner: Any, engine: LoadEngine | None, spec: RunSpec) -> None:
        if engine is not None:
            engine.stop()
            if not engine.done.is_set():
                engine.drain(0.0 if self._signals > 1 else 2.0)
            runner.quit()
            try:
                engine.close()
            except Exception as exc:  # the last flush failed: say so, keep what is on disk
                log.error("closing the request writer failed: %s", exc)
                self.failures.append(f"writing the last request records failed: {exc}")
            install_engine(None)
            self.engine_stats = [engine.stats()]
        else:
            if self.stop_reason is not None:
                runner.send_message("harness_stop", {})
                deadline = time.monotonic() + 10
                while (
                    len(self.done_workers) + len(self.lost_workers) < spec.n_workers
                    and time.monotonic() < deadline
                ):
                    self._check_lost_workers(runner)
                    gevent.sleep(0.1)
                for index in self.worker_nodes.keys() - self.done_workers.keys():
                    if index not in self.lost_workers:
                        self._lose_worker(
                            index, "it did not report its end within 10 s of the stop"
                        )
            runner.quit()
            for p in self.worker_procs:
                _reap(p, grace_s=15)
            self.worker_procs.clear()
            self._close_collector()  # every row received is on disk before the report
            self.engine_stats = list(self.done_workers.values())
            if self.lost_workers and not self.done_workers:
                self.failures.append("every locust worker was lost mid-run")
        failures = [st["failure"] for st in self.engine_stats if st.get("failure")]
        failures += self.worker_failures
        if self.disk_error is not None and self.disk_error not in failures:
            failures.insert(0, self.disk_error)
        failures += [f for f in self.failures if f not in failures]
        if failures:
            self.failures = list(dict.fromkeys(failures))  # N workers, one full disk: once

    # -- the whole run -------------------------------------------------------------------

    def run(self) -> Path:
        self._install_signal_handlers()
        try:
            return self._run()
        except RunInterrupted as exc:
            manifest = getattr(self, "manifest", None)
            if manifest is not None:
                manifest.finish("interrupted", stop_reason=str(exc))
            exc.run_dir = getattr(self, "run_dir", None)
            raise
        finally:
            self._phase = "done"
            self._remove_signal_handlers()
            if self.lock is not None:
                self.lock.release()

    def _run(self) -> Path:
        spec = self.prepare()
        status = "failed"
        try:
            with self.stack:
                self.start_targets()
                spec.arms = self.arms
                self.preflight()
                self.start_scrapers(spec)
                print(
                    f"run {spec.run_id}: "
                    + ", ".join(
                        f"{n} -> {redaction.redact_url(t.base_url or '')}"
                        for n, t in self.arms.items()
                    ),
                    flush=True,
                )
                self.drive(spec)
            status = "interrupted" if self.stop_reason else "completed"
            if self.disk_error is not None and self.disk_error not in self.failures:
                self.failures.insert(0, self.disk_error)  # e.g. the last /metrics flush
        except RunInterrupted:
            raise
        except BaseException as exc:
            error = redaction.redact_text(f"{type(exc).__name__}: {exc}")[:2000]
            self.manifest.finish("failed", error=error)
            raise
        if self.failures:
            error = redaction.redact_text("; ".join(self.failures))[:2000]
            self.manifest.finish(
                "failed",
                error=error,
                stop_reason=self.stop_reason,
                load_processes=self._load_processes(),
                **self._degraded(),
            )
            raise RunError(f"the load failed: {error} (rows recorded so far are in {self.run_dir})")
        self.manifest.finish(
            status,
            stop_reason=self.stop_reason,
            load_processes=self._load_processes(),
            **self._degraded(),
        )
        return self.run_dir

    def _load_processes(self) -> list[dict[str, Any]]:
        """The manifest's ``load_processes``: every segment's, each tagged with its segment."""
        segment = len(self.manifest.segments) - 1
        earlier = []
        if self.resumed:
            earlier = [
                st
                for st in self.manifest.data.get("load_processes") or []
                if isinstance(st, dict) and st.get("segment", 0) < segment
            ]
        return [*earlier, *({**st, "segment": segment} for st in self.engine_stats)]


def run_experiment(cfg: Config | DictConfig, *, sweep: dict[str, Any] | None = None) -> Path:
    """Run one experiment; returns its run directory."""
    return ExperimentRun(cfg, sweep=sweep).run()
