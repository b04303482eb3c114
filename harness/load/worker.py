"""A locust worker process: ``harness worker --master-host H --master-port P [--run-dir DIR]``.

It connects to the master and learns its worker index. The master's ``harness_spec``
message carries the resolved run spec: the worker builds its own :class:`LoadEngine` (own
clients, own part files ``w<index>-part-*.parquet``) and answers ``harness_ready``; once all
workers are ready, ``harness_t0`` fixes the common start time, and each worker runs its share
of the one coordinated schedule.
``--run-dir`` redirects its part files (a worker on another machine writes locally; copy
``requests/w<index>-part-*`` into the run directory afterwards, the names never collide).
SIGINT/SIGTERM stop it gracefully: requests in flight get a short grace, then everything
is flushed; a second signal cancels what is still in flight at once (still flushed).
``--exit-with-parent`` (set by a master that spawns its local workers) makes it stop the
same way within about a second when the process that started it dies, however it died
(SIGKILL included): it never keeps sending a schedule nobody records the end of.
"""

# ruff: noqa: I001  (locust is imported first on purpose)
from __future__ import annotations

import locust  # noqa: F401  (monkey-patches for gevent before anything else)

import argparse
import logging
import os
import signal
import sys
from typing import Any

import gevent
import gevent.event
from locust.env import Environment

from harness import redaction
from harness.load.engine import LoadEngine
from harness.load.runner import fire_locust_event, guard_disk_full
from harness.load.spec import RunSpec
from harness.load.users import ClosedLoopUser, PacerUser, install_engine


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="harness worker", description="a locust load worker")
    ap.add_argument("--master-host", default="127.0.0.1")
    ap.add_argument("--master-port", type=int, default=5557)
    ap.add_argument("--run-dir", default=None, help="write part files here instead")
    ap.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s worker %(levelname)s %(name)s: %(message)s"
    )

    # Both user classes are known; the master spawns only the one its load mode uses.
    env = Environment(user_classes=[PacerUser, ClosedLoopUser], events=locust.events)
    runner = env.create_worker_runner(args.master_host, args.master_port)
    index = max(0, runner.worker_index)
    ready = gevent.event.Event()
    holder: dict[str, LoadEngine] = {}
    disk_full: list[str] = []  # appended from the writer's thread

    def on_spec(environment: Environment, msg: Any, **kw: Any) -> None:
        """Phase 1: build the engine (clients, workload, warm-ups), then report ready."""
        try:
            spec = RunSpec.from_dict(msg.data["spec"])
            redaction.register_targets(spec.arms)  # this process writes rows and logs too
            if args.run_dir:
                spec.run_dir = args.run_dir
            engine = LoadEngine(
                spec,
                worker_index=index,
                n_workers=spec.n_workers,
                on_record=lambda r: fire_locust_event(env, r),
            )
        except Exception as exc:  # tell the master at once instead of leaving it waiting
            logging.getLogger(__name__).exception("worker %d could not start", index)
            runner.send_message("harness_failed", {"worker": index, "error": f"{exc}"})
            return
        guard_disk_full(engine.writer, "request records", disk_full.append)
        install_engine(engine)
        engine.start_flusher()
        holder["engine"] = engine
        gevent.spawn(_stop_on_disk_full, engine, disk_full)
        runner.send_message("harness_ready", {"worker": index})

    def on_t0(environment: Environment, msg: Any, **kw: Any) -> None:
        """Phase 2: the common start time; the pacer starts at t0."""
        holder["engine"].set_t0(int(msg.data["t0_ns"]))
        ready.set()

    def on_stop(environment: Environment, msg: Any, **kw: Any) -> None:
        if "engine" in holder:
            holder["engine"].stop()
            if (msg.data or {}).get("cancel"):  # the master was interrupted twice
                _cancel_in_flight(holder["engine"])

    runner.register_message("harness_spec", on_spec)
    runner.register_message("harness_t0", on_t0)
    runner.register_message("harness_stop", on_stop)

    def report_done() -> None:
        ready.wait()
        engine = holder["engine"]
        engine.done.wait()
        try:
            engine.writer.flush()
        except Exception as exc:
            engine.failure = engine.failure or f"writing request records failed: {exc}"
        runner.send_message("harness_done", engine.stats())

    gevent.spawn(report_done)

    signals = {"n": 0}

    def on_signal() -> None:
        signals["n"] += 1
        if "engine" in holder:
            holder["engine"].stop()
            if signals["n"] > 1:  # a second interrupt: no grace for requests in flight
                _cancel_in_flight(holder["engine"])
        else:
            runner.quit()

    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, on_signal)
    if args.exit_with_parent:
        gevent.spawn(_watch_parent, os.getppid(), holder)
    try:
        runner.greenlet.join()
    finally:
        if "engine" in holder:
            holder["engine"].stop()
            holder["engine"].close()
    return 0


def _stop_on_disk_full(engine: LoadEngine, disk_full: list[str]) -> None:
    """Stop this worker's schedule once its disk is full; the master fails the run."""
    while not disk_full and not engine.done.is_set():
        gevent.sleep(0.1)
    if disk_full:
        engine.failure = engine.failure or disk_full[0]
        engine.stop()


def _cancel_in_flight(engine: LoadEngine) -> None:
    for client in engine.clients.values():
        try:
            client.cancel()  # in-flight attempts end as `cancelled` rows
        except Exception:
            logging.getLogger(__name__).debug("cancel failed", exc_info=True)


def _watch_parent(parent: int, holder: dict[str, LoadEngine], interval_s: float = 0.25) -> None:
    """Stop sending, flush and exit once the master that started this worker is gone.

    A dead parent is seen as a changed ``os.getppid()`` (the orphan is re-parented), which
    covers SIGKILL too. Locust's own heartbeat check would take a minute, sending meanwhile.
    """
    while os.getppid() == parent:
        gevent.sleep(interval_s)
    log = logging.getLogger(__name__)
    log.warning("the master (pid %d) is gone: stopping this worker", parent)
    engine = holder.get("engine")
    code = 0
    if engine is not None:
        try:
            engine.stop()
            if not engine.done.wait(2.5):
                _cancel_in_flight(engine)
                engine.done.wait(2.5)
            engine.close()  # flush what is buffered: rows already sent are kept
        except Exception:
            log.exception("flushing after the master died failed")
            code = 1
    logging.shutdown()
    os._exit(code)  # no master to say goodbye to: locust's quit would wait for it


if __name__ == "__main__":
    sys.exit(main())
