"""A locust worker process: ``harness worker --master-host H --master-port P [--run-dir DIR]``.

It connects to the master and learns its worker index. The master's ``harness_spec``
message carries the resolved run spec: the worker builds its own :class:`LoadEngine` (own
clients) and answers ``harness_ready``; once all workers are ready, ``harness_t0`` fixes the
common start time, and each worker runs its share of the one coordinated schedule.
It writes nothing to disk: its rows go to the master in ``harness_rows`` messages every
``record.flush_interval_s`` (:mod:`harness.record.shipping`), the last ones before
``harness_done``, and the master writes them into its run directory, so the load machines
need neither a shared filesystem nor the master's paths (relative data paths are read from
this worker's own checkout). ``--run-dir`` is accepted for old scripts and ignored.
SIGINT/SIGTERM stop it gracefully: requests in flight get a short grace, then everything
is sent; a second signal cancels what is still in flight at once (still sent).
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
import socket
import sys
from typing import Any

import gevent
import gevent.event
from locust.env import Environment

from harness import redaction
from harness.config import project_root
from harness.load.engine import LoadEngine
from harness.load.runner import fire_locust_event
from harness.load.spec import RunSpec
from harness.load.users import ClosedLoopUser, PacerUser, install_engine
from harness.record.shipping import ROWS_MESSAGE, RowShipper


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="harness worker", description="a locust load worker")
    ap.add_argument("--master-host", default="127.0.0.1")
    ap.add_argument("--master-port", type=int, default=5557)
    ap.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)  # deprecated, ignored
    ap.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s worker %(levelname)s %(name)s: %(message)s"
    )
    if args.run_dir:
        print(
            "harness worker: --run-dir is ignored: workers send their rows to the master, "
            "which writes them into its run directory",
            file=sys.stderr,
            flush=True,
        )

    # Both user classes are known; the master spawns only the one its load mode uses.
    env = Environment(user_classes=[PacerUser, ClosedLoopUser], events=locust.events)
    runner = env.create_worker_runner(args.master_host, args.master_port)
    index = max(0, runner.worker_index)
    ready = gevent.event.Event()
    holder: dict[str, LoadEngine] = {}

    def on_spec(environment: Environment, msg: Any, **kw: Any) -> None:
        """Phase 1: build the engine (clients, workload, warm-ups), then report ready."""
        try:
            spec = RunSpec.from_dict(msg.data["spec"])
            redaction.register_targets(spec.arms)  # this process sends rows and writes logs
            spec.project_root = str(project_root())  # relative data paths: this checkout's
            shipper = RowShipper(
                lambda message: runner.send_message(ROWS_MESSAGE, message),
                worker=index,
                flush_interval_s=spec.record.flush_interval_s,
                flush_rows=spec.record.flush_rows,
            )
            engine = LoadEngine(
                spec,
                worker_index=index,
                n_workers=spec.n_workers,
                on_record=lambda r: fire_locust_event(env, r),
                writer=shipper,
            )
        except Exception as exc:  # tell the master at once instead of leaving it waiting
            logging.getLogger(__name__).exception("worker %d could not start", index)
            runner.send_message("harness_failed", {"worker": index, "error": f"{exc}"})
            return
        install_engine(engine)
        engine.start_flusher()
        holder["engine"] = engine
        runner.send_message(
            "harness_ready", {"worker": index, "pid": os.getpid(), "host": socket.gethostname()}
        )

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
            engine.writer.flush()  # every row goes out before harness_done (same connection)
        except Exception as exc:
            engine.failure = (
                engine.failure or f"sending request records to the master failed: {exc}"
            )
        runner.send_message("harness_done", {**engine.stats(), "rows_seq": engine.writer.last_seq})

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


def _cancel_in_flight(engine: LoadEngine) -> None:
    for client in engine.clients.values():
        try:
            client.cancel()  # in-flight attempts end as `cancelled` rows
        except Exception:
            logging.getLogger(__name__).debug("cancel failed", exc_info=True)


def _watch_parent(parent: int, holder: dict[str, LoadEngine], interval_s: float = 0.25) -> None:
    """Stop sending and exit once the master that started this worker is gone.

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
            dropped = engine.writer.abandon()  # nobody records them: rows the master got stay
            if dropped:
                log.warning("%d request record(s) not sent: the master is gone", dropped)
            engine.close()
        except Exception:
            log.exception("closing after the master died failed")
            code = 1
    logging.shutdown()
    os._exit(code)  # no master to say goodbye to: locust's quit would wait for it


if __name__ == "__main__":
    sys.exit(main())
