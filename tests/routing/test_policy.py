"""The routing policy: rules, escalation validators, failover, circuit breaker, budget; its
state depends only on the calls it gets (both drivers, live and replay, share it)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.config import ConfigError
from harness.routing.policy import Attempt, Decision, RouteRequest, RouterPolicy, Signals, quantile
from harness.routing.settings import policy_from_config


def policy(**raw) -> RouterPolicy:
    return RouterPolicy(policy_from_config({"small": "own", "large": "api", **raw}))


def req(t: float = 0.0, *, tags=(), prompt: str = "hello", day: int = 0) -> RouteRequest:
    return RouteRequest("s", prompt, frozenset(tags), t, day)


def ok(arm: str = "own", t: float = 1.0, *, ttft: float = 0.1, text: str = "42",
       cost: float = 0.0) -> Attempt:  # fmt: skip
    return Attempt(arm, "ok", None, ttft, ttft + 0.2, text, "stop", cost, t)


def err(arm: str = "own", t: float = 1.0, kind: str = "server_error") -> Attempt:
    return Attempt(arm, "error", kind, None, 0.1, None, None, 0.0, t)


# ---------------------------------------------------------------- rules


def test_sensitive_never_reaches_the_cloud_whatever_happens():
    rng = np.random.default_rng(7)
    p = policy(
        first="small",
        rules={"sensitive_patterns": [r"\b\d{3}-\d{2}-\d{4}\b"]},
        failover={"queue_depth_max": 1, "ttft_budget_s": 0.2, "breaker_min_requests": 3},
        budget={"daily_api_usd": 0.5, "on_exhausted": "reject"},
    )
    sent_sensitive = 0
    for k in range(3000):
        t = float(k)
        kind = rng.integers(4)
        r = (req(t, tags=("pii",)) if kind == 0 else req(t, prompt="ssn 123-45-6789")
             if kind == 1 else req(t, day=k // 500))  # fmt: skip
        sens = kind < 2
        d = p.first(r, Signals(queue_depth=float(rng.integers(0, 5))))
        if sens:
            sent_sensitive += 1
            assert d == Decision("own", "sensitive")
            assert p.ttft_deadline("own", r) is None
        if d.arm is None:
            continue
        outcome = rng.integers(4)
        a = (err(d.arm, t + 0.5) if outcome == 0 else ok(d.arm, t + 0.5, ttft=0.5)
             if outcome == 1 else ok(d.arm, t + 0.5, text="I cannot help with that.")
             if outcome == 2 else ok(d.arm, t + 0.5, text="", cost=0.2))  # fmt: skip
        p.observe(a)
        nxt = p.after(r, a)
        if sens:
            assert nxt is None
        elif nxt is not None:
            assert nxt.hop and nxt.arm == "api"
            p.observe(ok("api", t + 0.9, cost=0.2))
            assert p.after(r, ok("api", t + 0.9, text="")) is None  # one hop at most
    assert sent_sensitive > 1000
    s = p.state()
    assert s["breaker_trips_s"] and s["budget_exhausted_days"]  # every path was exercised


def test_sensitive_tags_and_patterns():
    p = policy(rules={"sensitive_tags": ["regulated"], "sensitive_patterns": [r"[\w.]+@\w+\.com"]})
    assert p.is_sensitive(req(tags=("regulated", "x")))
    assert not p.is_sensitive(req(tags=("pii",)))  # not a configured tag
    assert p.is_sensitive(req(prompt="mail bob.smith@example.com today"))
    assert p.first(req(tags=("regulated",))) == Decision("own", "sensitive")


# ---------------------------------------------------------------- escalation


@pytest.mark.parametrize(
    ("validators", "text", "reason"),
    [
        (["empty"], "   ", "escalate:empty"),
        (["empty"], "42", None),
        (["refusal"], "I can't help with that request.", "escalate:refusal"),
        (["refusal"], "The answer is 42; I can't say more.", None),
        (["json_schema"], 'here: {"a": 1}', None),
        (["json_schema"], '{"b": 1}', "escalate:json_schema"),
        (["regex"], "answer: 42", None),
        (["regex"], "answer: forty-two", "escalate:regex"),
        (["max_length"], "x" * 10, None),
        (["max_length"], "x" * 11, "escalate:max_length"),
        (["min_length"], "xx", "escalate:min_length"),
        (["min_length", "max_length"], "x" * 20, "escalate:max_length"),
        (["empty", "refusal"], "", "escalate:empty"),  # the first failing one names it
    ],
)
def test_validators(validators, text, reason):
    p = policy(escalation={"validators": validators, "regex": r"\d+", "min_chars": 3,
                           "max_chars": 10, "json_schema": {"type": "object",
                                                            "required": ["a"]}})  # fmt: skip
    d = p.after(req(), ok(text=text))
    assert (d.reason if d else None) == reason
    if d:
        assert d.arm == "api" and d.hop


def test_escalation_once_and_only_from_the_small_arm():
    p = policy()
    assert p.after(req(), ok("api", text="")) is None  # the large arm's answer is final
    assert p.after(req(), err(kind="empty")) == Decision("api", "escalate:empty")
    assert policy(escalation={"enabled": False}).after(req(), ok(text="")) is None


# ---------------------------------------------------------------- failover


def test_failover_on_errors_ttft_budget_and_queue():
    p = policy(failover={"ttft_budget_s": 0.8, "queue_depth_max": 10})
    assert p.after(req(), err(kind="server_error")) == Decision("api", "failover:server_error")
    assert p.after(req(), err(kind="client_error")) is None  # not in on_errors
    assert p.after(req(), ok(ttft=0.9)) == Decision("api", "failover:ttft_budget")
    assert p.after(req(), ok(ttft=0.8)) is None
    # the drivers' convention for an attempt abandoned at the budget
    gone = Attempt("own", "error", "timeout", None, 0.8, None, None, 0.0, 1.0)
    assert p.after(req(), gone) == Decision("api", "failover:ttft_budget")
    assert p.ttft_deadline("own", req()) == 0.8 and p.ttft_deadline("api", req()) is None
    assert p.first(req(), Signals(queue_depth=11)) == Decision("api", "failover:queue")
    assert p.first(req(), Signals(queue_depth=10)) == Decision("own", "first")
    assert p.first(req(), Signals()) == Decision("own", "first")
    off = policy(failover={"enabled": False, "queue_depth_max": 1})
    assert off.after(req(), err()) is None
    assert off.first(req(), Signals(queue_depth=5)) == Decision("own", "first")


def test_cloud_first_fails_over_to_self_hosted():
    p = policy(first="large")
    assert p.first(req()) == Decision("api", "first")
    assert p.after(req(), err("api", kind="rate_limited")) == Decision(
        "own", "failover:rate_limited"
    )
    assert p.after(req(), ok("api", text="")) is None  # no escalation from the large arm
    assert p.after(req(), err("own")) is None  # the second arm's outcome is final


# ---------------------------------------------------------------- circuit breaker


def breaker(**kw) -> RouterPolicy:
    f = {"breaker_ttft_s": 1.0, "breaker_quantile": 0.99, "breaker_min_requests": 100,
         "breaker_error_rate": None, "breaker_window_s": 60.0, "cooldown_s": 30.0, **kw}  # fmt: skip
    return policy(failover=f)


def test_breaker_opens_on_tail_ttft_not_on_the_mean():
    # 100 fast + 1 slow: p99 (type 7, h = 100 x 0.99 = 99) is the 100th value, 0.1 s: closed
    p = breaker()
    for k in range(100):
        p.observe(ok(t=k * 0.1, ttft=0.1))
    p.observe(ok(t=10.0, ttft=5.0))
    assert p.state()["breaker"] == "closed"
    # a second slow one: sorted[99] = 5.0 > 1.0 -> open, though the mean TTFT is 0.197 s
    p.observe(ok(t=10.1, ttft=5.0))
    assert quantile([0.1] * 99 + [5.0, 5.0], 0.99) == 5.0
    assert p.state()["breaker"] == "open" and p.state()["breaker_trips_s"] == [10.1]
    assert p.first(req(10.2)) == Decision("api", "breaker_open")
    assert p.first(req(40.0)) == Decision("api", "breaker_open")  # 10.1 + 30 not reached
    assert p.first(req(40.1)) == Decision("own", "first")  # cooldown over: closed
    assert p.state()["window_requests"] == 0  # and judged afresh


def test_breaker_window_forgets_old_attempts():
    p = breaker(breaker_min_requests=3)
    p.observe(ok(t=0.0, ttft=5.0))
    p.observe(ok(t=1.0, ttft=5.0))
    p.observe(ok(t=70.0, ttft=0.1))  # the two slow ones ended more than 60 s ago
    assert p.state()["breaker"] == "closed" and p.state()["window_requests"] == 1


def test_breaker_opens_on_error_rate():
    p = breaker(breaker_ttft_s=None, breaker_error_rate=0.5, breaker_min_requests=20)
    for k in range(19):
        p.observe(err(t=float(k)) if k % 2 else ok(t=float(k)))  # 9 errors of 19
    assert p.state()["breaker"] == "closed"
    p.observe(err(t=19.0))  # 10 of 20 = 0.5
    assert p.state()["breaker"] == "open"
    p.observe(err(t=19.5, kind="client_error"))  # not an overload error; ignored while open
    assert p.first(req(20.0)) == Decision("api", "breaker_open")


def test_breaker_counts_ttft_budget_misses_as_failures():
    p = breaker(breaker_ttft_s=None, breaker_error_rate=1.0, breaker_min_requests=2,
                ttft_budget_s=0.5)  # fmt: skip
    p.observe(ok(t=1.0, ttft=0.6))
    p.observe(Attempt("own", "error", "timeout", None, 0.5, None, None, 0.0, 2.0))
    assert p.state()["breaker"] == "open"


# ---------------------------------------------------------------- budget


def test_daily_budget():
    p = policy(failover={"queue_depth_max": 0}, budget={"daily_api_usd": 2.0})
    busy = Signals(queue_depth=3)
    for k in range(2):
        assert p.first(req(k), busy) == Decision("api", "failover:queue")
        p.observe(ok("api", k + 0.5, cost=1.0))
    assert p.first(req(3), busy) == Decision("own", "budget_exhausted")  # 2.0 spent today
    assert p.after(req(3), ok(text="")) is None  # the escalation is dropped: small answer stands
    assert p.state()["dropped_hops"] == 1
    assert p.first(req(4, day=1), busy) == Decision("api", "failover:queue")  # a new day
    assert p.state()["budget_spent_usd"] == {"0": 2.0}
    rj = policy(first="large", budget={"daily_api_usd": 1.0, "on_exhausted": "reject"},
                rules={"sensitive_tags": ["pii"]})  # fmt: skip
    assert rj.first(req()) == Decision("api", "first")
    rj.observe(ok("api", cost=1.5))
    assert rj.first(req(2)) == Decision(None, "reject:budget")
    assert rj.first(req(2, tags=("pii",))) == Decision("own", "sensitive")


def test_price_callable_overrides_recorded_cost():
    p = RouterPolicy(policy_from_config({"small": "own", "large": "api",
                                         "budget": {"daily_api_usd": 1.0}}),
                     price=lambda a: 0.25)  # fmt: skip
    for _ in range(3):
        p.observe(ok("api", cost=100.0))
    assert p.state()["budget_spent_usd"] == {"0": 0.75} and not p.budget_exhausted(0)
    p.observe(ok("own", cost=100.0))  # self-hosted attempts are not API spend
    assert p.state()["budget_spent_usd"] == {"0": 0.75}


# ---------------------------------------------------------------- determinism and config


def test_same_calls_same_state():
    rng = np.random.default_rng(3)
    calls = []
    for k in range(500):
        calls.append((req(float(k), day=k // 100), Signals(queue_depth=float(rng.integers(3))),
                      err(t=k + 0.4) if rng.random() < 0.4 else ok(t=k + 0.4,
                                                                   ttft=float(rng.random()))))  # fmt: skip
    runs = []
    for _ in range(2):
        p = breaker(breaker_min_requests=5, breaker_error_rate=0.5, queue_depth_max=1,
                    ttft_budget_s=0.9)  # fmt: skip
        out = []
        for r, sig, a in calls:
            d = p.first(r, sig)
            if d.arm == "own":
                p.observe(a)
                out.append((d, p.after(r, a)))
            else:
                out.append((d, None))
        runs.append((out, p.state()))
    assert runs[0] == runs[1]
    assert runs[0][1]["breaker_trips_s"]


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"bogus": 1}, "policy.bogus"),
        ({"failover": {"ttft_budget": 1}}, "policy.failover.ttft_budget"),
        ({"escalation": {"validators": ["judge"]}}, "policy.escalation.validators"),
        ({"escalation": {"validators": ["json_schema"]}}, "policy.escalation.json_schema"),
        ({"escalation": {"validators": ["regex"], "regex": "("}}, "policy.escalation.regex"),
        ({"rules": {"sensitive_patterns": ["[a-"]}}, "policy.rules.sensitive_patterns[0]"),
        ({"failover": {"on_errors": ["boom"]}}, "policy.failover.on_errors"),
        ({"failover": {"breaker_quantile": 1.0}}, "policy.failover.breaker_quantile"),
        ({"budget": {"on_exhausted": "panic"}}, "policy.budget.on_exhausted"),
        ({"first": "medium"}, "policy.first"),
        ({"small": "a", "large": "a"}, "policy.large"),
    ],
)
def test_config_errors_name_the_key(raw, key):
    with pytest.raises(ConfigError) as exc:
        policy_from_config(raw)
    assert str(exc.value).startswith(f"{key}:"), str(exc.value)


def test_policy_needs_both_arms():
    with pytest.raises(ConfigError, match="policy.small / policy.large"):
        RouterPolicy(policy_from_config({"small": "own"}))


def test_spend_is_charged_to_the_day_of_the_attempts_own_request():
    """A request of day 0 still in flight when one of day 1 is routed: its API cost is day 0's
    (``Attempt.day``), not the day of the latest request routed."""
    p = policy(first="large", budget={"daily_api_usd": 1.0})
    a, b = req(86399.0, day=0), req(86400.5, day=1)
    assert p.first(a).arm == "api" and p.first(b).arm == "api"
    p.observe(Attempt("api", "ok", None, 0.1, 2.0, "hi", "stop", 1.0, 86401.0, day=a.day))
    assert p.state()["budget_spent_usd"] == {"0": 1.0}
    assert p.budget_exhausted(0) and not p.budget_exhausted(1)
    assert p.first(req(86402.0, day=1)) == Decision("api", "first")


def test_ttft_budget_not_above_breaker_ttft_is_a_warning(caplog):
    """Legs over the TTFT budget record TTFT = budget, so a TTFT breaker at or above the budget
    can never fire: a log warning and a note in the policy's state (none otherwise)."""
    import logging

    with caplog.at_level(logging.WARNING, logger="harness.routing.settings"):
        p = policy(failover={"ttft_budget_s": 0.5, "breaker_ttft_s": 1.0})
    (w,) = p.state()["warnings"]
    assert "policy.failover.ttft_budget_s (0.5 s) is not above breaker_ttft_s (1 s)" in w
    assert "can never fire" in w and any(w in r.getMessage() for r in caplog.records)
    assert policy(failover={"ttft_budget_s": 2.0, "breaker_ttft_s": 1.0}).state()["warnings"] == []
    assert policy(failover={"ttft_budget_s": 0.5}).state()["warnings"] == []
