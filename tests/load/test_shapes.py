"""Load shapes: M is the integral of m, inverse inverts M, shaped processes follow r(t)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

from harness.config import ConfigError, LoadConfig
from harness.load.arrivals import build_schedule
from harness.load.shapes import (
    DiurnalShape,
    FlatShape,
    RampShape,
    StepsShape,
    WeeklyShape,
    build_shape,
)

ROOT = Path(__file__).resolve().parents[2]

SHAPES = {
    "flat": FlatShape(),
    "ramp_up": RampShape(0.0, 100.0),
    "ramp_down": RampShape(3.0, 100.0),
    "steps": StepsShape([0.0, 20.0, 50.0, 70.0], [0.5, 0.0, 2.0, 1.0]),
    "steps_late": StepsShape([30.0], [4.0]),
    "diurnal": DiurnalShape(86400.0, 0.3),
    "diurnal_zero": DiurnalShape(40.0, 0.0),
    "weekly": WeeklyShape(DiurnalShape(86400.0, 0.3), 86400.0, [1.0] * 5 + [0.4] * 2),
}


@pytest.mark.parametrize("name", SHAPES)
def test_cumulative_is_integral_of_multiplier(name):
    shape = SHAPES[name]
    t = np.linspace(0.0, {"diurnal": 2e5, "weekly": 1.3e6}.get(name, 200.0), 20001)
    m = shape.multiplier(t)
    trapezoid = np.concatenate([[0.0], np.cumsum((m[1:] + m[:-1]) / 2 * np.diff(t))])
    scale = max(1.0, float(shape.cumulative(t[-1])))
    assert np.max(np.abs(shape.cumulative(t) - trapezoid)) < 2e-3 * scale
    assert np.all(m >= 0)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(SHAPES)), st.floats(0.0, 1e6, allow_nan=False))
@example("diurnal", 6798.0)  # six Newton steps once left it 1.9e-4 short
def test_inverse_inverts_cumulative(name, u):
    shape = SHAPES[name]
    t = float(shape.inverse(np.array([u]))[0])
    assert t >= 0
    assert float(shape.cumulative(np.array([t]))[0]) == pytest.approx(u, rel=1e-9, abs=1e-6)


def test_inverse_skips_zero_rate_and_ends_on_final_zero():
    steps = SHAPES["steps"]  # zero rate on [20, 50)
    m20 = float(steps.cumulative(np.array(20.0)))
    assert float(steps.inverse(np.array(m20))) == 50.0
    final_zero = StepsShape([0.0, 10.0], [1.0, 0.0])
    assert final_zero.inverse(np.array([5.0, 10.0, 10.5])).tolist() == [5.0, 10.0, math.inf]


def windows(t: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.histogram(t, bins=edges)[0]


def expected_per_window(load: LoadConfig, edges: np.ndarray) -> np.ndarray:
    shape = build_shape(load, load.duration_s * load.time_scale)
    s = load.time_scale
    return load.rate * np.diff(shape.cumulative(edges * s)) / s


def chi2_p(observed: np.ndarray, expected: np.ndarray) -> float:
    return float(stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue)


def offsets(load: LoadConfig) -> np.ndarray:
    return np.fromiter(build_schedule(load, ROOT).offsets(), dtype=float)


def test_poisson_ramp_counts_follow_the_rate():
    load = LoadConfig(arrival="poisson", rate=100.0, duration_s=200.0, shape="ramp", ramp_from=0.1)
    t = offsets(load)
    edges = np.linspace(0, 200, 11)
    obs, exp = windows(t, edges), expected_per_window(load, edges)
    assert exp[0] < exp[-1] / 5  # it really ramps
    assert chi2_p(obs, exp) > 0.001
    assert abs(len(t) - exp.sum()) < 4 * math.sqrt(exp.sum())


def test_constant_ramp_is_deterministic_and_exact_per_window():
    load = LoadConfig(arrival="constant", rate=50.0, duration_s=100.0, shape="ramp", ramp_from=0.0)
    t = offsets(load)
    edges = np.linspace(0, 100, 11)
    assert np.all(np.abs(windows(t, edges) - expected_per_window(load, edges)) <= 1)
    assert len(t) == build_schedule(load, ROOT).expected_count() == 2500


def test_steps_counts_per_segment():
    load = LoadConfig(
        arrival="poisson",
        rate=40.0,
        duration_s=90.0,
        shape="steps",
        steps=[[0, 1.0], [30, 0.0], [45, 3.0]],
    )
    t = offsets(load)
    obs = windows(t, np.array([0, 30, 45, 90]))
    assert obs[1] == 0
    for got, want in ((obs[0], 1200), (obs[2], 5400)):
        assert abs(got - want) < 4 * math.sqrt(want)


def test_final_zero_step_ends_the_schedule():
    load = LoadConfig(
        arrival="gamma",
        burstiness=2.0,
        rate=20.0,
        duration_s=100.0,
        shape="steps",
        steps=[[0, 1.0], [10, 0.0]],
    )
    t = offsets(load)
    assert t[-1] < 10.0 and abs(len(t) - 200) < 40


def test_diurnal_follows_the_cosine_and_time_scale_compresses_it():
    # a 1-day period on the experiment clock, run 720x accelerated: 120 wall seconds per day
    load = LoadConfig(
        arrival="poisson",
        rate=200.0,
        duration_s=240.0,
        shape="diurnal",
        diurnal_period_s=86400.0,
        diurnal_min_frac=0.2,
        time_scale=720.0,
    )
    t = offsets(load)
    edges = np.linspace(0, 240, 25)
    obs, exp = windows(t, edges), expected_per_window(load, edges)
    assert chi2_p(obs, exp) > 0.001
    assert obs[:2].sum() < obs[5:7].sum() / 3  # trough at midnight, peak at noon
    assert abs(len(t) - 200 * 240 * 0.6) < 4 * math.sqrt(200 * 240 * 0.6)


def test_weekly_weekends_carry_their_share_of_the_weekday_rate():
    # two weeks at 8640x: a day in 10 wall seconds; weekend days at 0.4 of a weekday
    load = LoadConfig(
        arrival="poisson",
        rate=40.0,
        duration_s=140.0,
        shape="diurnal",
        diurnal_period_s=86400.0,
        diurnal_min_frac=0.3,
        weekend_frac=0.4,
        time_scale=8640.0,
    )
    t = offsets(load)
    per_day = np.bincount((t // 10.0).astype(int), minlength=14)[:14]
    weekday = per_day[[0, 1, 2, 3, 4, 7, 8, 9, 10, 11]].mean()
    weekend = per_day[[5, 6, 12, 13]].mean()
    assert weekday == pytest.approx(40 * 10 * 0.65, rel=0.08)  # mean diurnal multiplier 0.65
    assert weekend / weekday == pytest.approx(0.4, abs=0.06)
    edges = np.linspace(0, 140, 57)
    assert chi2_p(windows(t, edges), expected_per_window(load, edges)) > 0.001


@pytest.mark.parametrize("shape", ["ramp", "diurnal", "steps"])
def test_shaped_poisson_is_still_poisson(shape):
    # time-rescaling theorem: Lambda(t_i) - Lambda(t_{i-1}) are i.i.d. Exp(1)
    load = LoadConfig(
        arrival="poisson",
        rate=80.0,
        duration_s=120.0,
        shape=shape,
        ramp_from=0.2,
        diurnal_period_s=60.0,
        steps=[[0, 0.5], [40, 2.0], [80, 1.0]],
        seed=11,
    )
    t = offsets(load)
    lam = load.rate * build_shape(load, load.duration_s).cumulative(t)
    gaps = np.diff(np.concatenate([[0.0], lam]))
    assert stats.kstest(gaps, "expon").pvalue > 0.01


def test_shaped_gamma_keeps_its_burstiness_in_operational_time():
    load = LoadConfig(
        arrival="gamma",
        burstiness=0.25,
        rate=50.0,
        duration_s=400.0,
        shape="diurnal",
        diurnal_period_s=100.0,
    )
    t = offsets(load)
    gaps = np.diff(load.rate * build_shape(load, load.duration_s).cumulative(t))
    assert abs(gaps.std() / gaps.mean() - 2.0) < 0.15


@pytest.mark.parametrize(
    "kw, key",
    [
        (dict(shape="steps"), "load.steps"),
        (dict(shape="steps", steps=[[0, 1], [0, 2]]), r"load.steps\[1\]: times must increase"),
        (dict(shape="steps", steps=[[0, -1]]), r"load.steps\[0\]: multiplier"),
        (dict(shape="steps", steps=[[0, 1, 2]]), r"load.steps\[0\]: expected"),
        (dict(shape="steps", steps=[["a", 1]]), r"load.steps\[0\]: expected"),
        (dict(shape="ramp", ramp_from=-0.5), "load.ramp_from"),
        (dict(shape="ramp", duration_s=math.inf, max_requests=10), "ramp"),
        (dict(shape="diurnal", diurnal_period_s=0.0), "load.diurnal_period_s"),
        (dict(shape="diurnal", diurnal_min_frac=1.5), "load.diurnal_min_frac"),
        (dict(shape="diurnal", weekend_frac=0.0), "load.weekend_frac"),
        (dict(shape="diurnal", weekend_frac=0.5, diurnal_period_s=50000.0), "divide the week"),
    ],
)
def test_bad_shape_settings(kw, key):
    with pytest.raises(ConfigError, match=key):
        build_schedule(LoadConfig(**kw), ROOT)
