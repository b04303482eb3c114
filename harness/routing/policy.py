"""The hybrid routing policy: one object, two drivers (the live router arm and the replay).

A driver asks :meth:`RouterPolicy.first` where a request goes, sends it, reports each leg
(the visit to one arm, its retries included: :func:`leg_attempt`) once to
:meth:`RouterPolicy.observe`, and asks :meth:`RouterPolicy.after` whether the leg's answer is
final or the request goes on to the other arm. The policy holds no wall
clock: time comes from the experiment clock (``RouteRequest.t_s``, ``Attempt.t_end_s``), so
the same sequence of calls gives the same state and the same decisions in both drivers.

Decisions, in order (``Decision.reason`` is one of :data:`REASONS`, validator names filled in):

1. **rules**: a request carrying a sensitive tag, or whose prompt matches a sensitive
   pattern, goes to the small arm (``sensitive``) and never leaves it: no failover,
   breaker, escalation or budget rule ever sends it to the large arm.
2. **first arm** (``first``): ``policy.first`` picks the small (small-first) or large arm.
   Small-first, the large arm is chosen instead while the breaker is open (``breaker_open``)
   or the small arm's queue is over ``queue_depth_max`` (``failover:queue``).
3. **after an attempt** on the first arm (one hop at most: an answer of the second arm is
   final): a TTFT budget exceeded (``failover:ttft_budget``), an error of ``on_errors``
   (``failover:<error_type>``), or, for the small arm's answer, the first failing validator
   (``escalate:<validator>``) sends the request to the other arm.
4. **budget**: a route to the large arm when the day's API spend has reached the cap becomes
   the small arm (``budget_exhausted``) or a rejection (``reject:budget``, arm None); an
   escalation or failover after the cap is dropped (the small arm's outcome is final).

Circuit breaker (small arm): over the small arm's attempts that ended within the last
``breaker_window_s`` seconds, it opens when there are at least ``breaker_min_requests`` and
the ``breaker_quantile`` of their TTFT is over ``breaker_ttft_s`` (tail TTFT, never mean
time per token), or their overload-failure share reaches ``breaker_error_rate``. An attempt
without a first token counts with TTFT ``>= e2e_s`` (its elapsed time, a lower bound). Open,
it stays open ``cooldown_s`` seconds, then closes with an empty window.

Convention shared by the drivers: the policy sees one :class:`Attempt` per *leg* (a visit of
the request to one arm, that arm's client retries included), built by :func:`leg_attempt`
from the leg's final outcome with ``ttft_s`` / ``e2e_s`` measured from the leg's start (the
arrival, for the first leg) and ``day`` the request's day. A leg with a TTFT deadline whose
first token came later (or never) and which lasted past it is reported abandoned at the
budget: ``status="error", error_type="timeout", ttft_s=None, e2e_s=<budget>``.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.routing.settings import PolicyConfig, check_policy, policy_warnings

#: Closed set of decision reasons (``<validator>`` / ``<error_type>`` filled in).
REASONS = (
    "sensitive",
    "first",
    "escalate:<validator>",
    "failover:<error_type>",
    "failover:ttft_budget",
    "failover:queue",
    "breaker_open",
    "budget_exhausted",
    "reject:budget",
)
#: Reasons for which the request's answer comes from a second attempt on the other arm.
HOP_PREFIXES = ("escalate:", "failover:")
_EPS = 1e-9


@dataclass(frozen=True)
class RouteRequest:
    """What the policy knows of a request before sending it."""

    sample_id: str | None
    prompt_text: str
    tags: frozenset[str] = frozenset()
    t_s: float = 0.0  # experiment-clock seconds since the run's start (arrival)
    day: int = 0  # experiment-clock day


@dataclass(frozen=True)
class Attempt:
    """The outcome of one attempt of a request on one arm (what the driver saw)."""

    arm: str
    status: str  # ok | error
    error_type: str | None = None
    ttft_s: float | None = None  # None: no first token
    e2e_s: float | None = None
    output_text: str | None = None
    finish_reason: str | None = None
    cost_usd: float | None = None  # API cost of the attempt (None: priced by ``price``, or 0)
    t_end_s: float = 0.0  # experiment-clock seconds when it ended
    #: experiment-clock day of the attempt's request (its arrival): the day its API cost is
    #: charged to (None: the day of the latest request routed)
    day: int | None = None


@dataclass(frozen=True)
class Decision:
    """Where a request goes (``arm`` None: rejected) and why (one of :data:`REASONS`)."""

    arm: str | None
    reason: str

    @property
    def hop(self) -> bool:
        """The decision sends the request on to a second arm (escalation or failover)."""
        return self.reason.startswith(HOP_PREFIXES)


@dataclass(frozen=True)
class Signals:
    """Live signals of the small arm at decision time (None: not known)."""

    queue_depth: float | None = None  # requests waiting (vllm:num_requests_waiting)


# ------------------------------------------------------------------ validators


def _text(attempt: Attempt) -> str:
    return (attempt.output_text or "").strip()


def _v_empty(attempt: Attempt, cfg: Any) -> bool:
    return bool(_text(attempt))


def _v_refusal(attempt: Attempt, cfg: Any) -> bool:
    from harness.quality.scorers import is_refusal

    return not is_refusal(_text(attempt))


def _v_json_schema(attempt: Attempt, cfg: Any) -> bool:
    from harness.quality.scorers import json_schema_valid

    return bool(json_schema_valid(_text(attempt), cfg.json_schema))


def _v_regex(attempt: Attempt, cfg: Any) -> bool:
    return re.search(cfg.regex, _text(attempt)) is not None


def _v_max_length(attempt: Attempt, cfg: Any) -> bool:
    return len(_text(attempt)) <= cfg.max_chars


def _v_min_length(attempt: Attempt, cfg: Any) -> bool:
    return len(_text(attempt)) >= cfg.min_chars


#: name -> passes(attempt, EscalationConfig). An answer passes a validator when:
#: ``empty``: its stripped text is not empty; ``refusal``: it does not open with a refusal
#: (harness.quality.scorers.is_refusal); ``json_schema``: a JSON value in it is valid against
#: ``escalation.json_schema``; ``regex``: ``escalation.regex`` is found in it;
#: ``max_length`` / ``min_length``: its stripped length is within ``max_chars`` / ``min_chars``.
VALIDATORS: dict[str, Callable[[Attempt, Any], bool]] = {
    "empty": _v_empty,
    "refusal": _v_refusal,
    "json_schema": _v_json_schema,
    "regex": _v_regex,
    "max_length": _v_max_length,
    "min_length": _v_min_length,
}


def failing_validator(attempt: Attempt, cfg: Any) -> str | None:
    """The first validator of ``cfg.validators`` (an EscalationConfig) the answer fails."""
    for name in cfg.validators:
        if not VALIDATORS[name](attempt, cfg):
            return name
    return None


def leg_attempt(
    arm: str,
    *,
    ok: bool,
    error_type: str | None,
    ttft_s: float | None,
    elapsed_s: float,
    start_s: float,
    time_scale: float,
    deadline_s: float | None = None,
    output_text: str | None = None,
    finish_reason: str | None = None,
    cost_usd: float = 0.0,
    day: int | None = None,
) -> Attempt:
    """The attempt the policy sees of one leg, in both drivers: the leg's final outcome, its
    ``ttft_s`` (None: no first token) and ``elapsed_s`` (wall seconds from the leg's start to
    the end of its final attempt, retries included), ``start_s`` the leg's start on the
    experiment clock (``t_end_s = start_s + elapsed_s x time_scale``), ``cost_usd`` the API
    cost of all its attempts. With a TTFT ``deadline_s`` (:meth:`RouterPolicy.ttft_deadline`)
    a leg whose first token came after it, or never, and that lasted past it is abandoned at
    the deadline (``timeout``, no first token, ``e2e_s`` = the deadline, no cost)."""
    if ttft_s is not None and not math.isfinite(ttft_s):
        ttft_s = None
    elapsed = float(elapsed_s) if math.isfinite(elapsed_s) else 0.0
    if deadline_s is not None and (ttft_s is None or ttft_s > deadline_s) and elapsed > deadline_s:
        return Attempt(arm=arm, status="error", error_type="timeout", ttft_s=None,
                       e2e_s=deadline_s, cost_usd=0.0,
                       t_end_s=start_s + deadline_s * time_scale, day=day)  # fmt: skip
    return Attempt(
        arm=arm, status="ok" if ok else "error", error_type=None if ok else error_type,
        ttft_s=ttft_s, e2e_s=elapsed, output_text=output_text, finish_reason=finish_reason,
        cost_usd=float(cost_usd), t_end_s=start_s + elapsed * time_scale, day=day,
    )  # fmt: skip


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` by linear interpolation between order statistics
    (numpy's default, type 7): ``x[floor(h)] + (h - floor(h)) * (x[floor(h)+1] - x[floor(h)])``
    with ``h = (n - 1) q``. Requires a non-empty list."""
    x = sorted(values)
    h = (len(x) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(x) - 1)
    return x[lo] + (h - lo) * (x[hi] - x[lo])


# ------------------------------------------------------------------ the policy


class RouterPolicy:
    """A stateful routing policy (see the module docstring for the rules)."""

    def __init__(
        self, cfg: PolicyConfig, *, price: Callable[[Attempt], float] | None = None
    ) -> None:
        check_policy(cfg)
        if cfg.small is None or cfg.large is None:
            from harness.config import ConfigError

            raise ConfigError(
                "policy.small / policy.large: the policy needs both arms named "
                f"(got small={cfg.small!r}, large={cfg.large!r})"
            )
        self.cfg = cfg
        self.small: str = cfg.small
        self.large: str = cfg.large
        self._price = price
        self._patterns = [re.compile(p) for p in cfg.rules.sensitive_patterns]
        self._tags = frozenset(cfg.rules.sensitive_tags)
        # breaker: (t_end_s, ttft or lower bound or None, overload failure) of small attempts
        self._window: deque[tuple[float, float | None, bool]] = deque()
        self._open_until: float | None = None
        self._trips: list[float] = []
        self._spent: dict[int, float] = {}
        self._day = 0
        self._counts: dict[str, int] = {}
        self._dropped_hops = 0

    # -------------------------------------------------------------- queries

    def is_sensitive(self, req: RouteRequest) -> bool:
        """The request carries a sensitive tag or its prompt matches a sensitive pattern."""
        if self._tags & req.tags:
            return True
        return any(p.search(req.prompt_text or "") for p in self._patterns)

    def breaker_open(self, t_s: float) -> bool:
        """The breaker is open at experiment-clock time ``t_s`` (it closes after cooldown)."""
        if self._open_until is not None and t_s >= self._open_until - _EPS:
            self._open_until = None
            self._window.clear()
        return self._open_until is not None

    def budget_exhausted(self, day: int) -> bool:
        """The day's API spend has reached ``budget.daily_api_usd``."""
        cap = self.cfg.budget.daily_api_usd
        return cap is not None and self._spent.get(day, 0.0) >= cap - _EPS

    def ttft_deadline(self, arm: str, req: RouteRequest | None = None) -> float | None:
        """Seconds after sending within which ``arm``'s first token is due (the live router
        abandons the attempt then): the TTFT budget, for the small arm only, and never for a
        sensitive ``req`` (it has nowhere else to go)."""
        f = self.cfg.failover
        if not f.enabled or arm != self.small or f.ttft_budget_s is None:
            return None
        if req is not None and self.is_sensitive(req):
            return None
        return f.ttft_budget_s

    # -------------------------------------------------------------- decisions

    def _to_large(self, req: RouteRequest, reason: str) -> Decision:
        if self.budget_exhausted(req.day):
            if self.cfg.budget.on_exhausted == "reject":
                return self._count(Decision(None, "reject:budget"))
            return self._count(Decision(self.small, "budget_exhausted"))
        return self._count(Decision(self.large, reason))

    def _count(self, d: Decision) -> Decision:
        self._counts[d.reason] = self._counts.get(d.reason, 0) + 1
        return d

    def first(self, req: RouteRequest, signals: Signals | None = None) -> Decision:
        """Where a new request goes first."""
        self._day = req.day
        if self.is_sensitive(req):
            return self._count(Decision(self.small, "sensitive"))
        if self.cfg.first == "large":
            return self._to_large(req, "first")
        f = self.cfg.failover
        if f.enabled:
            if self.breaker_open(req.t_s):
                return self._to_large(req, "breaker_open")
            q = None if signals is None else signals.queue_depth
            if f.queue_depth_max is not None and q is not None and q > f.queue_depth_max:
                return self._to_large(req, "failover:queue")
        return self._count(Decision(self.small, "first"))

    def _ttft_over(self, attempt: Attempt, budget: float) -> bool:
        if attempt.ttft_s is not None:
            return attempt.ttft_s > budget + _EPS
        return (
            attempt.status == "error"
            and attempt.e2e_s is not None
            and (attempt.e2e_s >= budget - _EPS)
        )

    def after(self, req: RouteRequest, attempt: Attempt) -> Decision | None:
        """None when ``attempt``'s outcome is the request's final answer; else the second arm
        (at most one hop, never to the large arm for a sensitive request)."""
        self._day = req.day
        if self.is_sensitive(req):
            return None
        first_arm = self.small if self.cfg.first == "small" else self.large
        if attempt.arm != first_arm:
            return None  # an answer of the second arm (or of a route around the first) is final
        reason = self._hop_reason(attempt)
        if reason is None:
            return None
        if attempt.arm == self.large:  # cloud-first failing over to self-hosted: no budget
            return self._count(Decision(self.small, reason))
        if self.budget_exhausted(req.day):
            self._dropped_hops += 1
            return None
        return self._count(Decision(self.large, reason))

    def _hop_reason(self, attempt: Attempt) -> str | None:
        f, e = self.cfg.failover, self.cfg.escalation
        if f.enabled:
            budget = self.ttft_deadline(attempt.arm)
            if budget is not None and self._ttft_over(attempt, budget):
                return "failover:ttft_budget"
            if attempt.status != "ok" and attempt.error_type in f.on_errors:
                return f"failover:{attempt.error_type}"
        answered = attempt.status == "ok" or attempt.error_type == "empty"
        if e.enabled and attempt.arm == self.small and answered:
            name = failing_validator(attempt, e)
            if name is not None:
                return f"escalate:{name}"
        return None

    # -------------------------------------------------------------- state

    def observe(self, attempt: Attempt) -> None:
        """Account for a finished attempt (one per leg, :func:`leg_attempt`): the small arm's
        breaker window, the large arm's API spend (charged to ``attempt.day``, its request's
        day; unset: the day of the latest request routed)."""
        if attempt.arm == self.large:
            cost = self._price(attempt) if self._price is not None else attempt.cost_usd
            day = attempt.day if attempt.day is not None else self._day
            self._spent[day] = self._spent.get(day, 0.0) + float(cost or 0.0)
            return
        if attempt.arm != self.small:
            return
        f = self.cfg.failover
        t = attempt.t_end_s
        if self.breaker_open(t):
            return  # an open breaker is judged again only after its cooldown
        budget = f.ttft_budget_s if f.enabled else None
        over = budget is not None and self._ttft_over(attempt, budget)
        ttft = attempt.ttft_s
        if ttft is None and attempt.status == "error" and attempt.e2e_s is not None:
            ttft = attempt.e2e_s if over or attempt.error_type == "timeout" else None
        failure = over or (attempt.status != "ok" and attempt.error_type in f.on_errors)
        self._window.append((t, ttft, failure))
        while self._window and self._window[0][0] <= t - f.breaker_window_s + _EPS:
            self._window.popleft()
        if f.enabled and self._trip():
            self._open_until = t + f.cooldown_s
            self._trips.append(t)
            self._window.clear()

    def _trip(self) -> bool:
        f = self.cfg.failover
        n = len(self._window)
        if n < f.breaker_min_requests:
            return False
        if f.breaker_error_rate is not None:
            fails = sum(1 for _, _, bad in self._window if bad)
            if fails / n >= f.breaker_error_rate - _EPS:
                return True
        if f.breaker_ttft_s is not None:
            ttfts = [x for _, x, _ in self._window if x is not None]
            if ttfts and quantile(ttfts, f.breaker_quantile) > f.breaker_ttft_s:
                return True
        return False

    def state(self) -> dict[str, Any]:
        """The policy's state for reports: breaker, spend per day, decision counts."""
        return {
            "breaker": "open" if self._open_until is not None else "closed",
            "breaker_open_until_s": self._open_until,
            "breaker_trips_s": list(self._trips),
            "window_requests": len(self._window),
            "budget_spent_usd": {str(d): v for d, v in sorted(self._spent.items())},
            "budget_exhausted_days": [d for d in sorted(self._spent) if self.budget_exhausted(d)],
            "decisions": dict(sorted(self._counts.items())),
            "dropped_hops": self._dropped_hops,
            "warnings": policy_warnings(self.cfg),
        }
