"""The monthly cost model: pure functions of measured per-call figures and the settings.

Formulas (a month is :data:`HOURS_PER_MONTH` = 730 hours = 365 x 24 / 12):

- calls per month ``V = MAU x actions per user x calls per action`` (or ``calls_per_month``);
- load curve: ``w_h`` per hour of day, mean 1 (``profile``, or a cosine day with peak
  ``peak_to_average``: ``w_h = 1 + (P - 1) cos(2 pi (h - 14) / 24)``);
- API: ``api(V) = V x c_call`` where ``c_call`` is the measured spend per logical request
  (every attempt priced under the billing policy, retries included), or with a
  ``retry_rate`` override ``r``: ``c_call = c_final + r x c_retry`` (mean cost of a final
  attempt, of a retried attempt);
- self-hosted: demand in hour ``h`` is ``d_h = V / (730 x 3600) x w_h`` requests/s; replicas
  ``n_h = max(min_replicas, ceil(d_h / (capacity x (1 - headroom))))``; replica-hours
  ``R = (730 / H) x sum_h n_h`` over the ``H`` hours of the curve;
  ``gpu_hours = R x gpus``; ``compute = R x price_per_hour(purchase)``;
  ``fixed = eng_hours x hourly_rate + storage + network + monitoring + other``;
  ``self(V) = compute + fixed``; ``utilisation = V / (R x 3600 x capacity)``;
  ``usd_per_1m_output = compute / (V x output_per_call / 1e6)``;
- hybrid, share ``s`` self-hosted: ``hybrid(V, s) = api(V (1 - s)) + self(V s)`` (fixed
  costs in full; ``s = 0`` is the API alone);
- break-even: the smallest volume ``V*`` above which ``self(V) <= api(V)`` at every volume
  (exact, over the replica steps: :func:`break_even_calls`); ``None`` when the self-hosted
  marginal cost per call ``m = price / (3600 x capacity x (1 - headroom))`` is not below
  ``c_call`` (self-hosting never pays off at this capacity); reported as
  ``break_even_spend = api(V*)`` and ``break_even_tokens = V* x tokens_per_call``;
- growth: month ``k`` (0 = this month) carries ``V_k = V x (1 + g)^k``.

Money is :class:`~decimal.Decimal` throughout (28 significant digits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, Decimal

from harness.config import ConfigError

HOURS_PER_MONTH = Decimal(730)
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
PEAK_HOUR = 14  # the cosine day peaks mid-afternoon


def D(x: float | int | Decimal | str) -> Decimal:
    """A Decimal from a config number (its shortest repr, so 0.1 stays 0.1)."""
    return x if isinstance(x, Decimal) else Decimal(str(x))


def day_profile(profile: list[float], peak_to_average: float) -> tuple[Decimal, ...]:
    """Hourly load weights with mean exactly 1 (see module docstring)."""
    if profile:
        if any(not (isinstance(w, int | float) and math.isfinite(w) and w >= 0) for w in profile):
            raise ConfigError(f"traffic.profile: weights must be numbers >= 0, got {profile}")
        if sum(profile) <= 0:
            raise ConfigError("traffic.profile: at least one weight must be > 0")
        ws = [D(w) for w in profile]
    else:
        p = float(peak_to_average)
        if not 1.0 <= p <= 2.0:
            raise ConfigError(
                f"traffic.peak_to_average: {p} is outside 1..2 for the cosine day; give "
                "traffic.profile (24 hourly weights) for a peakier day"
            )
        ws = [D(1 + (p - 1) * math.cos(2 * math.pi * (h - PEAK_HOUR) / 24)) for h in range(24)]
    mean = sum(ws) / len(ws)
    return tuple(w / mean for w in ws)


@dataclass(frozen=True)
class SelfHostInputs:
    capacity_rps: Decimal  # requests/s one replica serves within the SLO
    headroom: Decimal
    min_replicas: int
    usd_per_replica_hour: Decimal
    gpus_per_replica: int
    fixed_usd: Decimal  # per month
    output_tokens_per_call: Decimal


@dataclass(frozen=True)
class SelfHostMonth:
    calls: Decimal
    replicas_by_hour: tuple[int, ...]
    replica_hours: Decimal
    gpu_hours: Decimal
    compute_usd: Decimal
    fixed_usd: Decimal
    total_usd: Decimal
    utilisation: Decimal | None
    usd_per_1m_output: Decimal | None


def fixed_costs(eng_hours: float, hourly_rate: float, *others: float) -> Decimal:
    """``eng_hours x hourly_rate + sum(others)`` (USD per month)."""
    return D(eng_hours) * D(hourly_rate) + sum((D(x) for x in others), Decimal(0))


def replicas_for(demand_rps: Decimal, s: SelfHostInputs) -> int:
    """``max(min_replicas, ceil(demand / (capacity x (1 - headroom))))``."""
    per = s.capacity_rps * (1 - s.headroom)
    need = (demand_rps / per).to_integral_value(rounding=ROUND_CEILING) if demand_rps > 0 else 0
    return max(s.min_replicas, int(need))


def selfhost_month(
    calls: Decimal, profile: tuple[Decimal, ...], s: SelfHostInputs
) -> SelfHostMonth:
    mean_rps = calls / SECONDS_PER_MONTH
    reps = tuple(replicas_for(mean_rps * w, s) for w in profile)
    rh = HOURS_PER_MONTH / len(profile) * sum(reps)
    compute = rh * s.usd_per_replica_hour
    util = calls / (rh * 3600 * s.capacity_rps) if rh > 0 else None
    out_tokens = calls * s.output_tokens_per_call
    per_1m = compute / (out_tokens / 1_000_000) if out_tokens > 0 else None
    return SelfHostMonth(calls, reps, rh, rh * s.gpus_per_replica, compute, s.fixed_usd,
                         compute + s.fixed_usd, util, per_1m)  # fmt: skip


def api_month(calls: Decimal, usd_per_call: Decimal) -> Decimal:
    return calls * usd_per_call


def hybrid_month(
    calls: Decimal, share: Decimal, usd_per_call: Decimal, profile: tuple[Decimal, ...],
    s: SelfHostInputs,
) -> Decimal:  # fmt: skip
    """Share ``share`` of the calls self-hosted, the rest on the API; a share of 0 runs no
    self-hosted deployment at all (no fixed costs, no minimum replicas)."""
    if share <= 0:
        return api_month(calls, usd_per_call)
    return (
        api_month(calls * (1 - share), usd_per_call)
        + selfhost_month(calls * share, profile, s).total_usd
    )


def marginal_selfhost_usd_per_call(s: SelfHostInputs) -> Decimal:
    return s.usd_per_replica_hour / (3600 * s.capacity_rps * (1 - s.headroom))


def break_even_calls(usd_per_call: Decimal, profile: tuple[Decimal, ...], s: SelfHostInputs,
                     max_steps: int = 2_000_000) -> Decimal | None:  # fmt: skip
    """Smallest monthly call volume above which self-hosting is never dearer (module doc).

    Exact: the self-hosted cost only changes where some hour of the curve needs one more
    replica (hour ``h`` steps every ``capacity (1 - headroom) x 730 x 3600 / w_h`` calls);
    between two such points it is constant while the API's cost grows, so each interval is
    dearer on a prefix at most. Walking the points down from an upper bound ``V_hi`` (above it
    even one spare replica per hour is paid for by the API's price) the first interval that is
    dearer at its start holds the answer: ``V* = min(interval top, self / c_call)``.
    """
    m = marginal_selfhost_usd_per_call(s)
    if usd_per_call <= 0 or m >= usd_per_call:
        return None
    if s.fixed_usd == 0 and s.usd_per_replica_hour == 0:
        return Decimal(0)  # self-hosting costs nothing at any volume
    a = usd_per_call
    price = s.usd_per_replica_hour
    hours = HOURS_PER_MONTH / len(profile)
    top = (s.fixed_usd + HOURS_PER_MONTH * price * (s.min_replicas + 1)) / (a - m)
    per = s.capacity_rps * (1 - s.headroom) * SECONDS_PER_MONTH  # calls/month at weight 1
    step = [per / w if w > 0 else None for w in profile]  # calls between replica steps
    reps = [replicas_for(top / SECONDS_PER_MONTH * w, s) for w in profile]

    def lower(h: int) -> Decimal:  # where hour h's replica count last stepped up
        st = step[h]
        return (reps[h] - 1) * st if st is not None and reps[h] > s.min_replicas else Decimal(0)

    lows = [lower(h) for h in range(len(profile))]
    hi = top
    for _ in range(max_steps):
        cost = s.fixed_usd + hours * sum(reps) * price
        lo = max(lows)
        if cost > a * lo:  # dearer just above lo: this is the last dearer interval
            return min(hi, cost / a)
        for h, x in enumerate(lows):
            if x == lo:
                reps[h] -= 1
                lows[h] = lower(h)
        hi = lo
    return hi  # not reached for any sane input: an upper bound


def with_capacity(s: SelfHostInputs, factor: Decimal) -> SelfHostInputs:
    return replace(s, capacity_rps=s.capacity_rps * factor)
