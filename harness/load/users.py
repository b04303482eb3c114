"""Locust user classes: thin shells that run the process's :class:`LoadEngine`.

Locust spawns the users (locally, or across worker processes in distributed mode) and
collects their statistics for its console and web UI; the engine decides what is sent when.
``PacerUser``: one per process, walks the open-loop schedule. ``ClosedLoopUser``: one per
concurrent closed-loop client (``load.concurrency`` of them across all processes); with
mirrored pairing each runs one loop per arm, so every arm sees ``concurrency`` clients.
"""

from __future__ import annotations

import gevent
from locust import User, constant, task
from locust.exception import StopUser

from harness.load.engine import LoadEngine

_ENGINE: LoadEngine | None = None


def install_engine(engine: LoadEngine | None) -> None:
    global _ENGINE
    _ENGINE = engine


def current_engine() -> LoadEngine:
    if _ENGINE is None:
        raise RuntimeError("no load engine installed in this process")
    return _ENGINE


class PacerUser(User):
    """Walks this process's share of the open-loop arrival schedule, then idles."""

    wait_time = constant(0)

    @task
    def pace(self) -> None:
        engine = current_engine()
        engine.run_open()
        # Stay alive (idle) until the runner stops us, so locust does not respawn the user.
        while not engine.stop_event.is_set():
            gevent.sleep(0.5)
        raise StopUser()


class ClosedLoopUser(User):
    """One closed-loop client: per arm it drives, send, wait for the answer, send again."""

    wait_time = constant(0)

    @task
    def loop(self) -> None:
        engine = current_engine()
        engine.run_closed_user()
        while not engine.stop_event.is_set():
            gevent.sleep(0.5)
        raise StopUser()
