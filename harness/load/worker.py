"""A locust worker process: ``python -m harness.load.worker --master-port P --spec RUNTIME.json``.

It connects to the master on 127.0.0.1, learns its worker index, builds its own
:class:`LoadEngine` (own clients, own part files ``w<index>-part-*.parquet``), waits for the
master's common start time and runs its share of the schedule. SIGINT/SIGTERM stop it
gracefully: requests in flight get a short grace, then everything is flushed.
"""

# ruff: noqa: I001  (locust is imported first on purpose)
from __future__ import annotations

import locust  # noqa: F401  (monkey-patches for gevent before anything else)

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment

from harness.load.engine import LoadEngine
from harness.load.runner import fire_locust_event
from harness.load.spec import RunSpec
from harness.load.users import ClosedLoopUser, PacerUser, install_engine


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="harness-worker")
    ap.add_argument("--master-host", default="127.0.0.1")
    ap.add_argument("--master-port", type=int, required=True)
    ap.add_argument("--spec", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s worker %(levelname)s %(name)s: %(message)s"
    )

    spec = RunSpec.load(Path(args.spec))
    user_class = PacerUser if spec.load.mode == "open" else ClosedLoopUser
    env = Environment(user_classes=[user_class], events=locust.events)
    runner = env.create_worker_runner(args.master_host, args.master_port)
    index = max(0, runner.worker_index)
    engine = LoadEngine(
        spec,
        worker_index=index,
        n_workers=spec.n_workers,
        on_record=lambda r: fire_locust_event(env, r),
    )
    install_engine(engine)
    engine.start_flusher()

    def on_t0(environment: Environment, msg: Any, **kw: Any) -> None:
        engine.set_t0(int(msg.data["t0_ns"]))

    def on_stop(environment: Environment, msg: Any, **kw: Any) -> None:
        engine.stop()

    runner.register_message("harness_t0", on_t0)
    runner.register_message("harness_stop", on_stop)

    def report_done() -> None:
        engine.done.wait()
        engine.writer.flush()
        runner.send_message("harness_done", engine.stats())

    gevent.spawn(report_done)
    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, engine.stop)
    try:
        runner.greenlet.join()
    finally:
        engine.stop()
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
