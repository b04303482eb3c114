"""The live router arm (``kind: router``): one :class:`~harness.routing.policy.RouterPolicy`
evaluated per request inside each load process, over two other arms of the run.

A router arm is mirrored like any arm (same item, ``pair_id`` and ``sample_id`` as the plain
arms). For each request :class:`RouterClient`:

1. asks ``policy.first`` (signals: the small arm's latest scraped queue depth,
   ``vllm:num_requests_waiting``, :class:`QueueDepths`);
2. sends the item to the chosen arm's endpoint with that arm's settings (timeouts, retries,
   connection cap: a client of its own, cloned from the arm's target). On a first leg the
   policy gives a first-token deadline for
   (:meth:`~harness.routing.policy.RouterPolicy.ttft_deadline`: the small arm's TTFT budget,
   never for a sensitive request), a timeout is not retried: the attempt is abandoned at the
   budget (``error_type`` ``timeout``, no first token, the policy's convention) and the
   policy fails it over;
3. reports each *leg* (the visit to one arm, that arm's retries included) once to
   ``policy.observe``: its final outcome, TTFT and E2E from the leg's start, the API cost of
   all its attempts (priced by the cost model: :func:`attempt_pricer`), abandoned at the TTFT
   budget when its first token came later (:func:`~harness.routing.policy.leg_attempt`,
   exactly what the replay derives from a recorded logical request); then asks
   ``policy.after`` with that leg whether the answer stands or the request goes on to the
   other arm (escalation, failover; one hop at most). A cancelled leg is not observed.

Rows: each underlying attempt is a row of its own (billed separately) with ``arm`` = the
router arm, ``target_kind`` / ``model`` of the underlying target, ``route`` = the underlying
arm, ``route_reason`` = the decision's reason and ``escalated`` = True on every row of a later
leg, whatever sent it there (an escalation *or* a failover: ``route_reason`` tells which).
The first row of a later leg has ``attempt > 0`` but is no retry: a router arm's retry rate
counts retries within legs only (:func:`later_leg_rows`).
All legs share ``request_id`` and ``t_arrival`` (the routed request's arrival), and attempt
numbers continue across legs (0, 1, ...), so the logical request
(:mod:`harness.analysis.requests`) ends with the final leg: its latency, arrival -> end of the
final leg, includes the escalation. A failed leg followed by another has ``will_retry`` set
(like a retried attempt); an ok leg that is escalated keeps ``will_retry`` False (a later
attempt number follows it). A request the policy rejects (``reject:budget``) is one error row,
``error_type`` ``rejected``, ``route`` null, ``target_kind`` ``router``.

Per load process: with N locust workers each process runs its own policy (breaker window,
day's spend); the daily API budget is split evenly between them (``daily_api_usd / N``), so
the run as a whole stays within it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from harness.canary.clock import ExperimentClock
from harness.config import ConfigError, TargetConfig
from harness.record.schema import RequestRecord
from harness.routing.policy import (
    Attempt,
    Decision,
    RouteRequest,
    RouterPolicy,
    Signals,
    leg_attempt,
)
from harness.routing.settings import (
    QUEUE_DEPTH_MAX_AGE_S,
    QUEUE_METRIC,
    PolicyConfig,
    policy_from_config,
)
from harness.targets import clock
from harness.workloads.base import WorkItem

log = logging.getLogger(__name__)

#: A leg client: (underlying arm name, its target) -> an ArmClient recording as the router.
LegFactory = Callable[[str, TargetConfig], Any]


class QueueDepths:
    """The latest scraped queue depth per arm (thread-safe), fed with ``/metrics`` rows.

    A scrape's rows for one arm share one ``t``; the depth is the sum of
    :data:`QUEUE_METRIC` over its label sets (one per served model). A value older than
    ``max_age_s`` (the scraper stopped or fails; :data:`QUEUE_DEPTH_MAX_AGE_S`, the replay's
    rule too) is not a signal: :meth:`get` returns None.
    """

    def __init__(self, max_age_s: float = QUEUE_DEPTH_MAX_AGE_S) -> None:
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[float, float]] = {}  # arm -> (monotonic s, depth)

    def update(self, rows: list[dict[str, Any]]) -> None:
        depth: dict[str, float] = {}
        for r in rows:
            if r.get("name") == QUEUE_METRIC and r.get("value") == r.get("value"):
                depth[r["arm"]] = depth.get(r["arm"], 0.0) + float(r["value"])
        if depth:
            now = time.monotonic()
            with self._lock:
                for arm, v in depth.items():
                    self._latest[arm] = (now, v)

    def set(self, arm: str, depth: float) -> None:
        with self._lock:
            self._latest[arm] = (time.monotonic(), float(depth))

    def get(self, arm: str) -> float | None:
        with self._lock:
            got = self._latest.get(arm)
        if got is None or time.monotonic() - got[0] > self.max_age_s:
            return None
        return got[1]


def attempt_pricer(
    pricing: dict[str, Any] | None, arm: str, target: TargetConfig
) -> Callable[[RequestRecord], float]:
    """USD of one recorded attempt of ``arm`` under the run's pricing (catalog price and
    billing policy, :mod:`harness.cost.billing`: the cost model's own formula), so the budget
    the router spends is the one the report bills. Self-hosted targets cost 0 per attempt. An
    attempt billed for input without a prompt count (an error before usage) is charged 0
    input tokens here (the report charges the arm's mean)."""
    from harness.cost.measure import role_of

    if role_of(target.kind) != "api":
        return lambda rec: 0.0
    import numpy as np

    from harness.cost.billing import bill_modes, billed_tokens, policy_for
    from harness.cost.section import catalogs, price_for, settings_from

    s = settings_from({"pricing": dict(pricing or {})})
    api, _ = catalogs(s)
    price = price_for(api, s, arm, target.kind, s.pricing.models.get(arm, target.model))
    if price is None:
        raise ConfigError(
            f"pricing: no price for arms.{arm} model {target.model!r}: a router arm's budget "
            f"needs it (map it with pricing.models.{arm}=CATALOG_MODEL)"
        )
    billing = policy_for(s.pricing.billing, price.provider)
    batch = bool(s.pricing.batch)

    def nan(x: int | None) -> float:
        return float("nan") if x is None else float(x)

    def cost(rec: RequestRecord) -> float:
        modes = bill_modes(
            np.array([rec.status == "ok"]),
            [rec.error_type],
            np.array([rec.t_first_token is not None]),
            billing,
        )
        bt = billed_tokens(
            modes,
            np.array([nan(rec.prompt_tokens)]),
            np.array([nan(rec.cached_tokens)]),
            np.array([nan(rec.completion_tokens)]),
            price.usage,
        )
        return float(bt.usd(price, batch=batch)[0])

    return cost


def router_policy_config(arm: str, target: TargetConfig, n_processes: int = 1) -> PolicyConfig:
    """The typed policy of router arm ``arm`` (small/large filled in by
    :func:`harness.config.check_router_arms`), the daily budget split over the load
    processes."""
    cfg = policy_from_config(target.router, f"arms.{arm}.router")
    cap = cfg.budget.daily_api_usd
    if cap is not None and n_processes > 1:
        cfg = replace(cfg, budget=replace(cfg.budget, daily_api_usd=cap / n_processes))
    return cfg


def _budget_target(t: TargetConfig, ttft_budget_s: float) -> TargetConfig:
    """The small arm's target for a leg that may fail over: the first token is due within
    the TTFT budget, and a timeout is not retried (the policy fails it over)."""
    timeouts = replace(t.timeouts, first_token_s=min(t.timeouts.first_token_s, ttft_budget_s))
    retry = replace(t.retry, retry_on=[e for e in t.retry.retry_on if e != "timeout"])
    return replace(t, timeouts=timeouts, retry=retry)


class RouterClient:
    """The client of a router arm: the :class:`~harness.targets.client.ArmClient` interface
    (``execute``, ``failure_record``, ``cancel``, ``close``) over the legs' clients."""

    name = "router"

    def __init__(
        self,
        arm: str,
        policy: RouterPolicy,
        legs: dict[str, Any],
        *,
        experiment_clock: Callable[[], ExperimentClock],
        queue_depths: QueueDepths | None = None,
        pricer: Callable[[RequestRecord], float] | None = None,
        budget_leg: Any | None = None,
        output_text: str = "keep",
    ) -> None:
        self.arm = arm
        self.policy = policy
        self.legs = legs  # underlying arm -> client (recording as `arm`, output kept)
        self.budget_leg = budget_leg  # the small arm's client with the TTFT-budget deadline
        self._clock = experiment_clock
        self._queues = queue_depths
        self._price = pricer
        self._output_text = output_text
        self._lock = threading.Lock()  # the policy's state: one decision at a time

    @classmethod
    def build(
        cls,
        arm: str,
        target: TargetConfig,
        arms: dict[str, TargetConfig],
        make_leg: LegFactory,
        *,
        experiment_clock: Callable[[], ExperimentClock],
        queue_depths: QueueDepths | None = None,
        pricing: dict[str, Any] | None = None,
        output_text: str = "keep",
        n_processes: int = 1,
    ) -> RouterClient:
        """The router of arm ``arm`` over its ``small`` / ``large`` arms of ``arms``;
        ``make_leg(name, target)`` builds a leg's client (it must record as ``arm`` and keep
        the output text: validators read it, and this client applies ``output_text``)."""
        cfg = router_policy_config(arm, target, n_processes)
        names = [cfg.small, cfg.large]
        missing = [n for n in names if n not in arms or arms[n].kind == "router"]
        if missing:
            raise ConfigError(f"arms.{arm}.router: {missing} are not plain arms of the run")
        large = str(cfg.large)
        policy = RouterPolicy(cfg)
        legs = {n: make_leg(n, arms[n]) for n in names}
        deadline = policy.ttft_deadline(str(cfg.small))
        budget_leg = None
        if deadline is not None:
            budget_leg = make_leg(str(cfg.small), _budget_target(arms[str(cfg.small)], deadline))
        return cls(
            arm,
            policy,
            legs,
            experiment_clock=experiment_clock,
            queue_depths=queue_depths,
            pricer=attempt_pricer(pricing, large, arms[large]),
            budget_leg=budget_leg,
            output_text=output_text,
        )

    # -- the ArmClient interface ---------------------------------------------------------

    def execute(
        self,
        item: WorkItem,
        *,
        request_id: str,
        pair_id: str | None = None,
        t_scheduled_ns: int | None = None,
        phase: str = "main",
        t_virtual_ns: int | None = None,
        on_row: Callable[[RequestRecord], Any] | None = None,
        time_scale: float | None = None,
    ) -> list[RequestRecord]:
        """Route one request (see the module docstring); one row per underlying attempt, in
        order. Each row reaches ``on_row`` once it is final: at once for a retried attempt,
        after ``policy.after`` for a leg's last one (it may be marked ``will_retry``)."""
        t_arr = t_scheduled_ns if t_scheduled_ns is not None else clock.now_ns()
        tv0 = t_virtual_ns if t_virtual_ns is not None else t_arr
        ec = self._clock()
        scale = float(time_scale if time_scale is not None else ec.time_scale)
        req = RouteRequest(
            sample_id=item.sample_id,
            prompt_text=item.prompt_text(),
            tags=frozenset(item.tags),
            t_s=ec.elapsed_s(tv0),
            day=ec.day_of(tv0),
        )
        rows: list[RequestRecord] = []

        def emit(rec: RequestRecord) -> None:
            self._apply_output_mode(rec)
            rows.append(rec)
            if on_row is not None:
                on_row(rec)

        small = self.policy.small
        with self._lock:
            depth = self._queues.get(small) if self._queues is not None else None
            decision: Decision | None = self.policy.first(req, Signals(queue_depth=depth))
        if decision.arm is None:  # rejected (budget spent, on_exhausted=reject)
            emit(self._rejected(item, request_id, pair_id, t_arr, phase, tv0, decision.reason))
            return rows

        leg = 0
        next_attempt = 0
        t_leg = t_arr
        while decision is not None and decision.arm is not None:
            route, reason, escalated = decision.arm, decision.reason, leg > 0
            client = self.legs[route]
            # the policy says when the small arm's first token is due (never for a
            # sensitive request); a leg sent after a hop is final and waits it out
            deadline = self.policy.ttft_deadline(route, req) if leg == 0 else None
            budgeted = deadline is not None and self.budget_leg is not None
            client = self.budget_leg if budgeted else client
            held: list[RequestRecord] = []
            leg_rows: list[RequestRecord] = []
            offset = next_attempt
            tv_leg = tv0 + int(round((t_leg - t_arr) * scale))

            def on_leg_row(rec: RequestRecord, *, _route: str = route, _reason: str = reason,
                           _esc: bool = escalated, _offset: int = offset,
                           _budgeted: bool = budgeted, _rows: list[RequestRecord] = leg_rows,
                           _held: list[RequestRecord] = held) -> None:  # fmt: skip
                rec.attempt += _offset
                rec.t_arrival = t_arr
                rec.route, rec.route_reason, rec.escalated = _route, _reason, _esc
                if _budgeted and rec.error_type == "timeout" and rec.t_first_token is None:
                    rec.error_message = (
                        f"no first token within the router's TTFT budget "
                        f"({self.policy.ttft_deadline(small):g} s): abandoned to fail over"
                    )
                _rows.append(rec)
                if rec.will_retry:
                    emit(rec)  # another attempt of this leg follows
                else:
                    _held.append(rec)  # the leg's last: final once policy.after has spoken

            try:
                client.execute(
                    item,
                    request_id=request_id,
                    pair_id=pair_id,
                    t_scheduled_ns=t_leg,
                    phase=phase,
                    t_virtual_ns=tv_leg,
                    on_row=on_leg_row,
                    time_scale=scale,
                )
            except BaseException:
                for rec in held:  # killed: what ended is recorded as it was
                    emit(rec)
                raise
            if not held:  # cancelled during a backoff: its last row already went out
                break
            last = held[-1]
            next_attempt = last.attempt + 1
            decision = None
            if last.error_type != "cancelled":  # a cancelled leg is no outcome (as in replay)
                att = self._leg_attempt(route, leg_rows, t_leg, ec.elapsed_s(tv_leg), scale,
                                        deadline, req.day)  # fmt: skip
                with self._lock:
                    self.policy.observe(att)
                    decision = self.policy.after(req, att)
            if decision is not None and decision.arm is not None and last.status != "ok":
                last.will_retry = True  # the request goes on on the other arm
            for rec in held:
                emit(rec)
            leg += 1
            t_leg = clock.now_ns()
        return rows

    def failure_record(
        self,
        item: WorkItem,
        *,
        request_id: str,
        error_type: str,
        message: str,
        pair_id: str | None = None,
        t_scheduled_ns: int | None = None,
        phase: str = "main",
        t_virtual_ns: int | None = None,
    ) -> RequestRecord:
        """A row for a request that ended before any leg began (``route`` null)."""
        rec = self.legs[self.policy.small].failure_record(
            item,
            request_id=request_id,
            error_type=error_type,
            message=message,
            pair_id=pair_id,
            t_scheduled_ns=t_scheduled_ns,
            phase=phase,
            t_virtual_ns=t_virtual_ns,
        )
        rec.target_kind, rec.model, rec.escalated = "router", None, False
        self._apply_output_mode(rec)
        return rec

    def cancel(self) -> None:
        for c in self._clients():
            c.cancel()

    def close(self) -> None:
        for c in self._clients():
            try:
                c.close()
            except Exception:
                log.debug("closing a router leg client failed", exc_info=True)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return self.policy.state()

    # -- helpers -------------------------------------------------------------------------

    def _clients(self) -> list[Any]:
        return [*self.legs.values(), *([self.budget_leg] if self.budget_leg is not None else [])]

    def _rejected(self, item: WorkItem, request_id: str, pair_id: str | None, t_arr: int,
                  phase: str, tv0: int, reason: str) -> RequestRecord:  # fmt: skip
        rec = self.failure_record(
            item,
            request_id=request_id,
            error_type="rejected",
            message=f"router arm {self.arm!r} rejected the request ({reason})",
            pair_id=pair_id,
            t_scheduled_ns=t_arr,
            phase=phase,
            t_virtual_ns=tv0,
        )
        rec.route_reason, rec.will_retry = reason, False
        return rec

    def _leg_attempt(self, route: str, rows: list[RequestRecord], t_leg_ns: int,
                     start_s: float, scale: float, deadline: float | None, day: int
                     ) -> Attempt:  # fmt: skip
        """What the policy sees of one leg (:func:`~harness.routing.policy.leg_attempt`, as
        the replay derives it from a recorded logical request): the final attempt's outcome,
        TTFT and E2E from the leg's start ``t_leg_ns`` (retries within the leg included), the
        API cost of all its attempts."""
        last = rows[-1]
        t_end = last.t_end if last.t_end is not None else clock.now_ns()
        ttft = None if last.t_first_token is None else (last.t_first_token - t_leg_ns) / 1e9
        priced = self._price is not None and route == self.policy.large
        cost = sum(self._price(r) for r in rows) if priced else 0.0  # type: ignore[misc]
        return leg_attempt(
            route,
            ok=last.status == "ok",
            error_type=last.error_type,
            ttft_s=ttft,
            elapsed_s=max(0.0, (t_end - t_leg_ns) / 1e9),
            start_s=start_s,
            time_scale=scale,
            deadline_s=deadline,
            output_text=last.output_text,
            finish_reason=last.finish_reason,
            cost_usd=float(cost),
            day=day,
        )

    def _apply_output_mode(self, rec: RequestRecord) -> None:
        """``record.output_text`` for the router's rows (legs keep the text for validators)."""
        if self._output_text == "drop":
            rec.output_text = None
        elif self._output_text == "hash" and rec.output_text is not None:
            rec.output_text = hashlib.sha256(rec.output_text.encode("utf-8")).hexdigest()


def later_leg_rows(data: Any, code: int) -> np.ndarray:
    """Rows of arm ``code`` of a RunData (:mod:`harness.analysis.data`) that begin a later leg
    of their request (an escalation or failover to the other arm): an ``attempt > 0`` whose
    ``route`` differs from the previous attempt's. They are not retries; every other
    ``attempt > 0`` is. False everywhere for a plain arm (no ``route``)."""
    names, codes = data.labels.get("route", ([], None))
    out = np.zeros(data.n_rows, bool)
    rows = np.flatnonzero(data.arm == code)
    if codes is None or rows.size < 2:
        return out
    order = rows[np.lexsort((data.attempt[rows], data.request[rows]))]
    req, route = data.request[order], codes[order]
    same_req = req[1:] == req[:-1]
    hop = same_req & (route[1:] != route[:-1]) & (route[1:] >= 0) & (route[:-1] >= 0)
    out[order[1:][hop]] = True
    return out


def is_router(target: TargetConfig) -> bool:
    return target.kind == "router"


def signal_scrapers(
    arms: dict[str, TargetConfig], run_id: str, queue_depths: QueueDepths
) -> list[Any]:
    """Scrapers (not started) feeding ``queue_depths`` with each router's small arm's queue
    depth, for a load process that gets no rows from the run's own scrapers (a locust
    worker). Only the queue gauge is kept; nothing is written."""
    from harness.targets.metrics import MetricsScraper

    smalls = sorted({str((t.router or {}).get("small")) for t in arms.values() if is_router(t)})
    out = []
    for name in smalls:
        t = arms.get(name)
        if t is None or not t.base_url or t.kind == "openai" or t.scrape_metrics is False:
            continue
        out.append(
            MetricsScraper(
                name,
                t,
                run_id=run_id,
                interval_s=t.metrics_interval_s,
                on_rows=queue_depths.update,
                prefixes=(QUEUE_METRIC,),
            )
        )
    return out


__all__ = [
    "QUEUE_METRIC",
    "QueueDepths",
    "RouterClient",
    "attempt_pricer",
    "is_router",
    "later_leg_rows",
    "router_policy_config",
    "signal_scrapers",
]
