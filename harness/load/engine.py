"""The per-process load engine: turns the arrival schedule into requests to every arm.

One engine lives in each load process (the local process, or each locust worker). It owns
the arm clients, the workload, the request writer (in a locust worker, the row shipper that
sends its rows to the master: :mod:`harness.record.shipping`) and the greenlets in flight.
Locust users (:mod:`harness.load.users`) call into it:

- open loop: one pacer per process walks the shared, seeded schedule and takes arrivals
  ``i % n_workers == worker_index``, so N workers deliver the configured total rate, not N
  times it. Each arrival is sent at its absolute target time (``t0 + offset``), never after a
  relative sleep, so delays do not accumulate; if the process falls behind, the lag is
  recorded as ``queue_delay_s`` (latency is also measured from ``t_scheduled``).
- closed loop: each user runs one loop per arm it drives (mirrored: every arm; independent:
  one arm); a loop sends, waits for the answer, and sends again, never waiting for another
  arm, so a slow arm does not throttle a fast one. Every arm's loops walk the same item-index
  sequence (this process's ``k``-th request to any arm is index ``k * n_workers +
  worker_index``), so the requests for index ``i`` carry the same item, ``sample_id`` and
  ``pair_id`` on every arm, whenever each arm gets to it.

Pairing ``mirrored`` sends each open-loop arrival to every arm at the same moment in a random
order (same ``pair_id`` and ``sample_id``); ``independent`` gives each arm its own schedule.

Caps: ``load.concurrency`` (open loop, per arm) and each arm's ``max_connections`` hold across
the whole run, so each process enforces its share (:func:`harness.load.spec.process_share`).

``arrivals`` (in :meth:`LoadEngine.stats`, the manifest's ``load_processes``) counts logical
arrivals this process began: an item index sent to one or more arms counts once for a
mirrored run (open or closed) and once per arm's stream for an independent one;
``requests_by_arm`` counts the logical requests (first attempts) begun per arm.

Clock and segments: offsets are measured from the experiment clock's origin (the first
segment's ``t0``; :class:`~harness.canary.clock.ExperimentClock`), and ``t_virtual = origin +
(t_scheduled - origin) * time_scale``. A resumed run (``spec.clock_origin_ns`` set) walks the
same seeded schedule and skips every arrival whose time ``origin + offset`` is before this
segment's ``t0``: the schedule continues from now, arrival indices (and so ``request_id`` and
``pair_id``) continue after the last one of the earlier segments and never repeat, and the
load still ends at ``origin + duration_s``.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import numpy as np

from harness.canary.clock import ExperimentClock
from harness.load.arrivals import Schedule, build_schedule, phase_of
from harness.load.spec import RunSpec, process_share
from harness.record.schema import RequestRecord
from harness.record.shipping import RowShipper
from harness.record.writer import RequestWriter, warm_up_parquet
from harness.targets import clock, make_arm_client
from harness.workloads import build_workload
from harness.workloads.base import WorkItem

log = logging.getLogger(__name__)

#: Called with every recorded attempt (locust stats, progress counters).
RecordListener = Callable[[RequestRecord], None]


def first_index_at(schedule: Schedule, start_s: float) -> int:
    """Index of the first arrival with ``offset >= start_s`` (the count of those before it)."""
    before = 0
    if start_s <= 0:
        return 0
    for block in schedule.blocks():
        cut = int(np.searchsorted(block, start_s, side="left"))
        before += cut
        if cut < len(block):
            break
    return before


def arrivals_from(
    schedule: Schedule, worker_index: int, n_workers: int, start_s: float
) -> Iterator[tuple[int, float]]:
    """:meth:`Schedule.for_worker` without the arrivals whose offset is before ``start_s``.

    Skipping is done block by block (``searchsorted``), so resuming late in a month-long
    schedule (millions of past arrivals) costs milliseconds; indices stay the schedule's own.
    """
    if not 0 <= worker_index < n_workers:
        raise ValueError(f"worker_index {worker_index} not in [0, {n_workers})")
    base = 0
    for block in schedule.blocks():
        lo = int(np.searchsorted(block, start_s, side="left")) if start_s > 0 else 0
        if lo < len(block):
            first = lo + (worker_index - (base + lo)) % n_workers
            idx = np.arange(base + first, base + len(block), n_workers)
            yield from zip(idx.tolist(), block[first::n_workers].tolist(), strict=True)
        base += len(block)


class LoadEngine:
    def __init__(
        self,
        spec: RunSpec,
        *,
        worker_index: int = 0,
        n_workers: int = 1,
        on_record: RecordListener | None = None,
        writer: RequestWriter | RowShipper | None = None,
        queue_depths: Any | None = None,
    ) -> None:
        self.spec = spec
        self.worker_index = worker_index
        self.n_workers = max(1, n_workers)
        self.on_record = on_record
        self.root = Path(spec.project_root)
        self.load = spec.load
        self.workload = build_workload(spec.workload, self.root)
        # a locust worker ships its rows to the master (`writer`: a RowShipper) and writes
        # nothing itself; the local process writes its own part files
        self.writer = writer
        if self.writer is None:
            self.writer = RequestWriter(
                Path(spec.run_dir),
                prefix=f"w{worker_index}",
                flush_interval_s=spec.record.flush_interval_s,
                flush_rows=spec.record.flush_rows,
                auto_flush=False,  # the flusher greenlet writes parts in a real OS thread
                partition_by_day=spec.partition_by_day,  # once set_t0 gives the day clock
            )
            warm_up_parquet()
        self._warm_up_tokenizers()
        self.arm_names = list(spec.arms)
        # router arms: the small arms' queue depths, fed by the runner's /metrics scrapers
        # (local run) or by this process's own (a locust worker gets no scraped rows)
        self._signal_scrapers: list[Any] = []
        self.queue_depths = queue_depths
        if queue_depths is None and any(t.kind == "router" for t in spec.arms.values()):
            from harness.routing.live import QueueDepths, signal_scrapers

            self.queue_depths = QueueDepths()
            self._signal_scrapers = signal_scrapers(spec.arms, spec.run_id, self.queue_depths)
        self.clients = {arm: self._make_client(arm, target) for arm, target in spec.arms.items()}
        for scraper in self._signal_scrapers:
            scraper.start()
        cap = self.load.concurrency if self.load.mode == "open" else None
        # open loop with a cap: at most `concurrency` requests in flight per arm across all
        # processes (this one holds its share); arrivals over the cap wait (and that wait is
        # recorded as queue_delay_s).
        if cap:
            cap = process_share(cap, self.n_workers, worker_index)
        self.arm_caps = {
            arm: gevent.lock.BoundedSemaphore(cap) if cap else None for arm in self.arm_names
        }
        self.inflight = gevent.pool.Group()
        self.stop_event = gevent.event.Event()
        self.started = gevent.event.Event()
        self.done = gevent.event.Event()
        self.t0_ns: int | None = None  # this segment's start
        self.origin_ns: int | None = None  # the experiment clock's origin (first segment's t0)
        self._resume_s = 0.0  # offsets before this are past (a resumed segment)
        self._perf_anchor = 0
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.arrivals = 0  # logical arrivals begun (see the module docstring)
        self.requests_by_arm: Counter[str] = Counter()  # first attempts begun, per arm
        self._closed_next: Counter[str] = Counter()  # closed loop: each arm's next k
        self._closed_seen = 0  # closed loop, mirrored: item indices begun by any arm
        self._closed_active = 0
        self._closed_users = 0
        self._paced = False
        self._flushing = True
        self.failure: str | None = None
        self._flusher: gevent.Greenlet | None = None

    def _make_client(self, arm: str, target: Any) -> Any:
        """The arm's client; a router arm's (:mod:`harness.routing.live`) sends through
        clients of its small and large arms' targets that record as the router arm."""

        def client(name: str, t: Any, output_text: str = self.spec.record.output_text) -> Any:
            return make_arm_client(
                name,
                # this process's share of the arm's connection slots (they hold run-wide)
                replace(
                    t,
                    max_connections=process_share(
                        t.max_connections, self.n_workers, self.worker_index
                    ),
                ),
                run_id=self.spec.run_id,
                experiment=self.spec.experiment,
                output_text=output_text,
                seed=self.spec.seed,
                worker=self.worker_index,
            )

        if target.kind != "router":
            return client(arm, target)
        from harness.routing.live import RouterClient

        return RouterClient.build(
            arm,
            target,
            self.spec.arms,
            lambda _leg, t: client(arm, t, "keep"),  # rows of the router arm; text validated
            experiment_clock=lambda: self.experiment_clock,
            queue_depths=self.queue_depths,
            pricing=self.spec.pricing,
            output_text=self.spec.record.output_text,
            n_processes=self.n_workers,
        )

    def _warm_up_tokenizers(self) -> None:
        """Load the fallback tokenizer now for real endpoints (which may send no usage).

        Loading takes ~0.3 s of CPU; done lazily mid-run it would stall every stream once.
        """
        from harness.targets.tokens import encoding_name_for, get_encoding

        for target in self.spec.arms.values():
            if target.kind in ("openai", "vllm"):
                get_encoding(encoding_name_for(target.model))

    # -- clock ---------------------------------------------------------------------------

    def set_t0(self, t0_ns: int) -> None:
        """Fix the common start time (UTC ns); every process computes targets from it.

        Arrival ``i`` is due at ``origin + offset_i``; ``origin`` is ``t0`` in a fresh run and
        the first segment's ``t0`` (``spec.clock_origin_ns``) in a resumed one.
        """
        self.t0_ns = int(t0_ns)
        origin = self.spec.clock_origin_ns
        self.origin_ns = int(origin) if origin is not None else self.t0_ns
        self._resume_s = max(0.0, (self.t0_ns - self.origin_ns) / 1e9)
        # the clients' clock: t_sent - t_scheduled compares readings of one clock
        self._perf_anchor = clock.perf_from_wall(self.origin_ns)
        set_day_clock = getattr(self.writer, "set_day_clock", None)
        if set_day_clock is not None:  # day partitions follow the experiment clock
            set_day_clock(self.experiment_clock)
        self.started.set()

    @property
    def experiment_clock(self) -> ExperimentClock:
        """The run's experiment clock (known once :meth:`set_t0` was called)."""
        assert self.origin_ns is not None, "set_t0 first"
        return ExperimentClock(self.origin_ns, self.load.time_scale, self.spec.day_s)

    def _sleep_until(self, offset_s: float) -> None:
        target = self._perf_anchor + int(offset_s * 1e9)
        while not self.stop_event.is_set():
            delay = (target - time.perf_counter_ns()) / 1e9
            if delay <= 0:
                return
            self.stop_event.wait(min(delay, 0.5))

    def _elapsed_s(self) -> float:
        return (time.perf_counter_ns() - self._perf_anchor) / 1e9

    def _virtual_ns(self, t_sched_ns: int) -> int:
        assert self.origin_ns is not None
        return self.origin_ns + int((t_sched_ns - self.origin_ns) * self.load.time_scale)

    # -- lifecycle -----------------------------------------------------------------------

    def start_flusher(self) -> None:
        def flush_loop() -> None:
            while self._flushing:
                gevent.sleep(min(0.25, self.spec.record.flush_interval_s / 4))
                self.flush_off_loop(only_if_due=True)

        self._flusher = gevent.spawn(flush_loop)

    def flush_off_loop(self, only_if_due: bool = False) -> None:
        """Write buffered rows in gevent's thread pool: fsync never stalls the sends."""
        if only_if_due and not self.writer.due():
            return
        if not self.writer.blocking_io:  # rows shipped to the master: quick sends, this loop
            try:
                self.writer.flush()
            except Exception:  # the unsent messages stay queued, in order, for the next flush
                log.exception("sending request records to the master failed; will retry")
            return
        batch = self.writer.take()
        if batch is None:
            return
        try:
            gevent.get_hub().threadpool.apply(self.writer.write_batch, batch)
        except Exception:  # keep the rows: put them back for the next flush
            log.exception("writing request records failed; will retry")
            self.writer.requeue(batch[0])

    def wait_started(self, timeout: float | None = None) -> bool:
        return self.started.wait(timeout)

    def stop(self) -> None:
        self.stop_event.set()

    def drain(self, timeout_s: float) -> int:
        """Wait for requests in flight, then cancel the rest (recorded as ``cancelled``)."""
        self.inflight.join(timeout=timeout_s)
        left = len(self.inflight)
        if left:
            log.warning("cancelling %d request(s) still in flight", left)
            for client in self.clients.values():
                client.cancel()  # in-flight attempts end as `cancelled` rows
            self.inflight.join(timeout=2.0)
            self.inflight.kill(block=True, timeout=5)  # last resort: the engine writes the row
        return left

    def close(self) -> None:
        if self._flusher is not None:  # let a write in progress finish: never kill it
            self._flushing = False
            self._flusher.join(timeout=30)
        self.writer.close()
        for scraper in self._signal_scrapers:
            scraper.stop(timeout_s=1.0)
        for c in self.clients.values():
            try:
                c.close()
            except Exception:
                log.debug("closing client failed", exc_info=True)

    # -- open loop -----------------------------------------------------------------------

    def run_open(self) -> None:
        """Walk the schedule(s) and dispatch this process's share of the arrivals.

        Runs once per process: locust may call a task again (after an error, or when it
        rebalances users), and replaying the schedule would duplicate requests.
        """
        if self._paced:
            return
        self._paced = True
        self.wait_started()
        try:
            if self.load.pairing == "independent":
                group = gevent.pool.Group()
                for k, arm in enumerate(self.arm_names):
                    group.spawn(self._pace, [arm], k + 1)
                group.join(raise_error=True)
            else:
                self._pace(self.arm_names, 0)
        except Exception as exc:
            log.exception("the arrival schedule failed; stopping this load process")
            self.failure = f"{type(exc).__name__}: {exc}"
            self.stop()
        self.drain(self.load.stop_timeout_s if not self.stop_event.is_set() else 2.0)
        self.done.set()

    def _pace(self, arms: list[str], stream: int) -> None:
        schedule = build_schedule(self.load, self.root, stream=stream)
        arrivals = arrivals_from(schedule, self.worker_index, self.n_workers, self._resume_s)
        for i, offset in arrivals:
            if self.stop_event.is_set():
                break
            self._sleep_until(offset)
            if self.stop_event.is_set():
                break
            t_sched = self.origin_ns + int(offset * 1e9)  # type: ignore[operator]
            self._dispatch(i, arms, t_sched, phase_of(offset, self.load), stream)

    def _dispatch(self, i: int, arms: list[str], t_sched_ns: int, phase: str, stream: int) -> None:
        item = self.workload.item(i)
        self.arrivals += 1
        self.requests_by_arm.update(arms)
        mirrored = len(arms) > 1 or stream == 0
        pair_id = f"p{i:09d}" if mirrored else None
        order = list(arms)
        if len(order) > 1:
            random.Random(self.spec.seed * 1_000_003 + i).shuffle(order)
        for arm in order:
            rid = f"{arm}-{i:09d}" if stream == 0 else f"{arm}-s{stream}-{i:09d}"
            self.inflight.spawn(self._send, arm, item, rid, pair_id, t_sched_ns, phase)

    # -- closed loop ---------------------------------------------------------------------

    def run_closed_user(self) -> None:
        """One closed-loop user: its loop(s) send, wait for the answer, repeat until the end."""
        self.wait_started()
        self._closed_active += 1
        user = self._closed_users  # this user's ordinal in this process
        self._closed_users += 1
        try:
            self._closed_loop(user)
        except Exception as exc:
            log.exception("a closed-loop user failed; stopping this load process")
            self.failure = f"{type(exc).__name__}: {exc}"
            self.stop()
        finally:
            self._closed_active -= 1
            if self._closed_active == 0:
                self.drain(self.load.stop_timeout_s if not self.stop_event.is_set() else 2.0)
                self.done.set()

    def _closed_loop(self, user: int) -> None:
        """Mirrored: one loop per arm, none waiting for another; independent: one arm's loop."""
        if self.load.pairing == "independent":
            # each user keeps to one arm, so arms get equal concurrency
            n = len(self.arm_names)
            self._closed_arm_loop(self.arm_names[(user * self.n_workers + self.worker_index) % n])
            return
        arms = list(self.arm_names)  # which arm's loop starts first: seeded, per user
        random.Random(self.spec.seed * 1_000_003 + user * self.n_workers + self.worker_index
                      ).shuffle(arms)  # fmt: skip
        loops = [gevent.spawn(self._closed_arm_loop, arm) for arm in arms]
        try:
            gevent.joinall(loops, raise_error=True)
        finally:
            gevent.killall(loops)  # a failed or killed user leaves no loop of its own sending

    def _closed_arm_loop(self, arm: str) -> None:
        """Send to ``arm``, wait for the answer, repeat; ends at ``duration_s`` or once this
        arm reached ``max_requests`` (counted per arm, across all processes).

        The arm's ``k``-th request in this process (over all its users) is item index
        ``k * n_workers + worker_index``, the same index on every arm, so a mirrored run pairs
        the arms' requests for each index (``pair_id``) whatever their speeds.
        """
        load = self.load
        mirrored = load.pairing != "independent"
        while not self.stop_event.is_set():
            k = self._closed_next[arm]
            self._closed_next[arm] += 1
            i = k * self.n_workers + self.worker_index
            if load.max_requests is not None and i >= load.max_requests:
                break
            elapsed = self._elapsed_s()
            if elapsed >= load.duration_s:
                break
            t_sched = clock.now_ns()
            item = self.workload.item(i)
            if not mirrored:
                self.arrivals += 1  # each arm is its own stream
            elif k >= self._closed_seen:  # the first arm to begin index i: one arrival
                self._closed_seen = k + 1
                self.arrivals += 1
            self.requests_by_arm[arm] += 1
            pair_id = f"p{i:09d}" if mirrored else None
            rid = f"{arm}-{i:09d}"
            self.inflight.spawn(
                self._send, arm, item, rid, pair_id, t_sched, phase_of(elapsed, load)
            ).join()

    # -- one logical request -------------------------------------------------------------

    def _send(
        self,
        arm: str,
        item: WorkItem,
        request_id: str,
        pair_id: str | None,
        t_sched_ns: int,
        phase: str,
    ) -> None:
        cap = self.arm_caps.get(arm)
        emitted: list[RequestRecord] = []

        def record(rec: RequestRecord) -> None:
            # each attempt is recorded as it ends, so a kill during a backoff loses nothing
            emitted.append(rec)
            self._record(arm, rec)

        try:
            if cap is not None:
                with cap:
                    self._execute(arm, item, request_id, pair_id, t_sched_ns, phase, record)
            else:
                self._execute(arm, item, request_id, pair_id, t_sched_ns, phase, record)
        except gevent.GreenletExit:
            # The client records an attempt killed in flight itself; one killed during a
            # retry backoff keeps its last row (``will_retry`` set) and gets no synthetic
            # retry row. Only a request killed before its first attempt began needs a row.
            if not emitted:
                rec = self._failure(arm, item, request_id, pair_id, t_sched_ns, phase,
                                    "cancelled", "the run stopped before the request was sent")  # fmt: skip
                self._record(arm, rec)
            raise
        except Exception as exc:  # a client bug must not lose the row or kill the run
            log.exception("request %s to arm %s failed inside the client", request_id, arm)
            rec = self._failure(arm, item, request_id, pair_id, t_sched_ns, phase, "bad_response",
                                f"client error: {exc!r}")  # fmt: skip
            rec.attempt = len(emitted)
            self._record(arm, rec)

    def _record(self, arm: str, rec: RequestRecord) -> None:
        self.writer.add_record(rec)
        self.counts[arm]["ok" if rec.status == "ok" else rec.error_type or "error"] += 1
        if self.on_record is not None:
            try:
                self.on_record(rec)
            except Exception:
                log.debug("record listener failed", exc_info=True)

    def _execute(
        self,
        arm: str,
        item: WorkItem,
        request_id: str,
        pair_id: str | None,
        t_sched: int,
        phase: str,
        on_row: Any,
    ) -> list[RequestRecord]:
        return self.clients[arm].execute(
            item,
            request_id=request_id,
            pair_id=pair_id,
            t_scheduled_ns=t_sched,
            phase=phase,
            t_virtual_ns=self._virtual_ns(t_sched),
            on_row=on_row,
            time_scale=self.load.time_scale,
        )

    def _failure(
        self,
        arm: str,
        item: WorkItem,
        request_id: str,
        pair_id: str | None,
        t_sched: int,
        phase: str,
        error_type: str,
        message: str,
    ) -> RequestRecord:
        return self.clients[arm].failure_record(
            item,
            request_id=request_id,
            error_type=error_type,
            message=message,
            pair_id=pair_id,
            t_scheduled_ns=t_sched,
            phase=phase,
            t_virtual_ns=self._virtual_ns(t_sched),
        )

    def stats(self) -> dict[str, Any]:
        return {
            "worker": self.worker_index,
            "arrivals": self.arrivals,
            "requests_by_arm": dict(self.requests_by_arm),
            "rows": self.writer.rows_written + self.writer.pending,
            "counts": {arm: dict(c) for arm, c in self.counts.items()},
            "failure": self.failure,
        }
