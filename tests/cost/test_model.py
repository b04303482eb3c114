"""The monthly model, hand-computed: replicas from capacity, load curve and headroom,
GPU-hours, fixed costs, break-even, hybrid split."""

from __future__ import annotations

from decimal import Decimal

import pytest

from harness.config import ConfigError
from harness.cost import model as cm


def _inputs(**kw) -> cm.SelfHostInputs:
    base = dict(capacity_rps=Decimal(4), headroom=Decimal("0.2"), min_replicas=2,
                usd_per_replica_hour=Decimal("2.5"), gpus_per_replica=2,
                fixed_usd=cm.fixed_costs(10, 100, 50), output_tokens_per_call=Decimal(100))  # fmt: skip
    base.update(kw)
    return cm.SelfHostInputs(**base)


FLAT = cm.day_profile([1.0] * 24, 2.0)


def test_day_profile_has_mean_one_and_the_asked_peak():
    p = cm.day_profile([], 2.0)
    assert len(p) == 24 and sum(p) / 24 == pytest.approx(1) and max(p) == pytest.approx(2)
    assert p.index(max(p)) == cm.PEAK_HOUR
    assert cm.day_profile([1, 3], 9) == (Decimal("0.5"), Decimal("1.5"))
    with pytest.raises(ConfigError, match="traffic.peak_to_average"):
        cm.day_profile([], 3.0)
    with pytest.raises(ConfigError, match="traffic.profile"):
        cm.day_profile([0, 0], 2.0)


def test_selfhost_month_flat_load():
    # 10 req/s all month; 4 req/s per replica at 20% headroom -> 3.2 -> ceil(3.125) = 4 replicas
    calls = cm.SECONDS_PER_MONTH * 10
    m = cm.selfhost_month(calls, FLAT, _inputs())
    assert m.replicas_by_hour == (4,) * 24
    assert m.replica_hours == 2920 and m.gpu_hours == 5840
    assert m.compute_usd == Decimal("7300.0") and m.fixed_usd == 1050
    assert m.total_usd == Decimal("8350.0")
    assert float(m.utilisation) == pytest.approx(26_280_000 / (2920 * 3600 * 4))  # 0.625
    assert float(m.usd_per_1m_output) == pytest.approx(7300 / 2628)


def test_replicas_follow_the_load_curve_and_the_minimum():
    s = _inputs(capacity_rps=Decimal(1), headroom=Decimal(0), min_replicas=0)
    m = cm.selfhost_month(cm.SECONDS_PER_MONTH * 2, cm.day_profile([1, 3], 2), s)
    assert m.replicas_by_hour == (1, 3)  # demand 1 and 3 req/s
    assert m.replica_hours == 730 / Decimal(2) * 4
    m = cm.selfhost_month(Decimal(0), FLAT, _inputs())
    assert m.replicas_by_hour == (2,) * 24 and m.utilisation == 0  # idle minimum still paid


def test_break_even_by_hand():
    # one replica of 1 req/s at $1/h, min 1, fixed $1,000: self = 1000 + 730 per 2.628M calls
    s = _inputs(capacity_rps=Decimal(1), headroom=Decimal(0), min_replicas=1,
                usd_per_replica_hour=Decimal(1), fixed_usd=Decimal(1000))  # fmt: skip
    a = Decimal("0.001")
    v = cm.break_even_calls(a, FLAT, s)
    assert float(v) == pytest.approx(1_730_000, rel=1e-3)  # API $1,730 = 1000 + 730
    assert cm.selfhost_month(v * Decimal("1.01"), FLAT, s).total_usd <= cm.api_month(
        v * Decimal("1.01"), a
    )
    assert cm.selfhost_month(v * Decimal("0.99"), FLAT, s).total_usd > cm.api_month(
        v * Decimal("0.99"), a
    )
    # marginal self-hosted cost 1 / 3600 per call is above an API call at 2e-4: never
    assert cm.break_even_calls(Decimal("0.0002"), FLAT, s) is None
    assert cm.marginal_selfhost_usd_per_call(s) == Decimal(1) / 3600


def test_break_even_is_past_a_later_replica_step():
    # the first crossing is not enough when a new replica makes self-hosting dearer again:
    # self = 100 + 730 * replicas (1 per 2.628M calls), API 0.0003 per call.
    s = _inputs(capacity_rps=Decimal(1), headroom=Decimal(0), min_replicas=1,
                usd_per_replica_hour=Decimal(1), fixed_usd=Decimal(100))  # fmt: skip
    a = Decimal("0.0003")
    v = cm.break_even_calls(a, FLAT, s)
    # n replicas serve up to n * 2.628M calls for 100 + 730 n; the API charges 788.4 n there.
    # Just past each step self = 100 + 730 (n + 1) vs API 788.4 n: cheaper once n > 14.2, so
    # from n = 15 steps on; inside step 15 (n = 15 replicas), the crossing 100 + 10950 = 0.0003 V
    assert float(v) == pytest.approx((100 + 730 * 15) / 0.0003, rel=1e-3)


def test_hybrid_split_and_fixed_costs():
    s = _inputs(capacity_rps=Decimal(1), headroom=Decimal(0), min_replicas=1,
                usd_per_replica_hour=Decimal(1), fixed_usd=Decimal(1000))  # fmt: skip
    # half of 2M calls on the API at $0.001 = 1000; the other 1M self-hosted: 1000 + 730
    assert cm.hybrid_month(Decimal(2_000_000), Decimal("0.5"), Decimal("0.001"), FLAT, s) == 2730
    assert cm.fixed_costs(40, 150, 100, 200, 100, 0) == Decimal(6400)
    # share 0 runs no deployment: the API alone, no fixed costs or idle minimum replicas
    assert cm.hybrid_month(Decimal(2_000_000), Decimal(0), Decimal("0.001"), FLAT, s) == 2000
    free = _inputs(usd_per_replica_hour=Decimal(0), fixed_usd=Decimal(0))
    assert cm.break_even_calls(Decimal("0.001"), FLAT, free) == 0


def test_break_even_against_brute_force_on_random_inputs():
    import random

    rng = random.Random(7)
    for _ in range(25):
        prof = cm.day_profile([rng.uniform(0.1, 3) for _ in range(rng.choice([1, 6, 24]))], 2)
        s = _inputs(capacity_rps=cm.D(round(rng.uniform(0.2, 20), 3)),
                    headroom=cm.D(round(rng.uniform(0, 0.6), 2)), min_replicas=rng.randint(0, 3),
                    usd_per_replica_hour=cm.D(round(rng.uniform(0.5, 30), 2)),
                    fixed_usd=cm.D(rng.randint(0, 30_000)))  # fmt: skip
        a = cm.marginal_selfhost_usd_per_call(s) * cm.D(round(rng.uniform(1.05, 5), 3))
        v = cm.break_even_calls(a, prof, s)
        assert v is not None

        def dearer(x: Decimal, prof=prof, s=s, a=a) -> bool:
            return cm.selfhost_month(x, prof, s).total_usd > cm.api_month(x, a)

        assert dearer(v * Decimal("0.999999"))
        for _ in range(300):  # never dearer above V* (up to 20x)
            x = v * cm.D(1 + rng.random() ** 3 * 19) + 1
            assert not dearer(x), (x, v)
