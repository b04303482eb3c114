"""Statistics helpers against hand-computed values and scipy/numpy directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from harness.analysis.stats import (
    BootstrapSettings,
    bootstrap_quantile_diff_ci,
    bootstrap_quantiles_ci,
    order_stat_bootstrap,
    poisson_rate_ci,
    quantiles,
    subsample,
    wilson_ci,
)

FAST = BootstrapSettings(confidence=0.95, resamples=300, seed=7, max_n=5000)


def test_quantiles_hand_computed():
    # linear interpolation (type 7): position (n-1)q on the sorted sample
    v = np.array([4.0, 1.0, 3.0, 2.0])
    assert quantiles(v, [0.5, 0.9, 0.0, 1.0]).tolist() == pytest.approx([2.5, 3.7, 1.0, 4.0])
    ten = np.arange(1, 11, dtype=float)  # 1..10: p99 -> 9 + 0.91*(10-9) = 9.91
    assert quantiles(ten, [0.99])[0] == pytest.approx(9.91)
    assert np.isnan(quantiles(np.array([]), [0.5])).all()


def test_bootstrap_matches_scipy_called_directly():
    rng = np.random.default_rng(3)
    x = rng.lognormal(size=400)
    qs = [0.5, 0.99]
    lo, hi, method = bootstrap_quantiles_ci(x, qs, FAST)
    ref = sps.bootstrap(
        (x,),
        lambda a, axis=-1: np.concatenate(
            [np.quantile(a, qs, axis=axis), np.mean(a, axis=axis)[None]]
        ),
        n_resamples=300,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(7),
    )
    assert method == "scipy"
    np.testing.assert_allclose(lo, ref.confidence_interval.low)
    np.testing.assert_allclose(hi, ref.confidence_interval.high)
    point = np.quantile(x, qs)
    assert (lo[:2] <= point).all() and (point <= hi[:2]).all()


def test_mean_ci_close_to_t_interval_on_normal_data():
    x = np.random.default_rng(0).normal(10, 2, size=2000)
    lo, hi, _ = bootstrap_quantiles_ci(x, [0.5], BootstrapSettings(resamples=1000, seed=1))
    t_lo, t_hi = sps.t.interval(0.95, x.size - 1, loc=x.mean(), scale=sps.sem(x))
    assert lo[-1] == pytest.approx(t_lo, abs=0.03)
    assert hi[-1] == pytest.approx(t_hi, abs=0.03)


def test_bootstrap_small_and_degenerate_samples():
    lo, hi, method = bootstrap_quantiles_ci(np.array([1.0, 2.0]), [0.5], FAST)
    assert method == "none" and np.isnan(lo).all() and np.isnan(hi).all()
    lo, hi, _ = bootstrap_quantiles_ci(np.full(50, 0.25), [0.5, 0.99], FAST)
    assert lo.tolist() == hi.tolist() == [0.25, 0.25, 0.25]


def test_order_statistic_bootstrap_matches_scipy_resampling():
    """Beyond max_n the order-statistic bootstrap is used; its CIs match scipy's resampling."""
    x = np.random.default_rng(1).lognormal(size=3000)
    qs = [0.5, 0.9, 0.99]
    big = BootstrapSettings(resamples=4000, seed=0, max_n=10_000)
    small = BootstrapSettings(resamples=4000, seed=0, max_n=100)
    lo_s, hi_s, m_s = bootstrap_quantiles_ci(x, qs, big)
    lo_o, hi_o, m_o = bootstrap_quantiles_ci(x, qs, small)
    assert (m_s, m_o) == ("scipy", "order-statistic")
    width = hi_s - lo_s
    np.testing.assert_allclose(lo_o, lo_s, atol=0.1 * width.max())
    np.testing.assert_allclose(hi_o, hi_s, atol=0.1 * width.max())
    for j in range(len(qs)):
        np.testing.assert_allclose([lo_o[j], hi_o[j]], [lo_s[j], hi_s[j]], atol=0.12 * width[j])
    # replicates have the resampled quantile's distribution: mean close to the point estimate
    reps = order_stat_bootstrap(np.sort(x), [0.5], 20000, np.random.default_rng(2))
    assert reps.mean() == pytest.approx(np.median(x), rel=0.01)
    s1, s2 = subsample(x, 100, 5), subsample(x, 100, 5)
    assert s1.size == 100 and np.array_equal(s1, s2) and np.isin(s1, x).all()


def test_order_statistic_diff_ci_matches_scipy():
    rng = np.random.default_rng(4)
    a, b = rng.lognormal(0, 0.5, 2500), rng.lognormal(0.1, 0.5, 2500)
    qs = [0.5, 0.99]
    _, lo_s, hi_s, m_s = bootstrap_quantile_diff_ci(
        a, b, qs, BootstrapSettings(resamples=3000, max_n=5000)
    )
    _, lo_o, hi_o, m_o = bootstrap_quantile_diff_ci(
        a, b, qs, BootstrapSettings(resamples=3000, max_n=100)
    )
    assert (m_s, m_o) == ("scipy", "order-statistic")
    for j in range(2):
        w = hi_s[j] - lo_s[j]
        np.testing.assert_allclose([lo_o[j], hi_o[j]], [lo_s[j], hi_s[j]], atol=0.12 * w)


def test_quantile_difference_ci():
    rng = np.random.default_rng(11)
    a = rng.normal(1.0, 0.1, size=800)
    b = rng.normal(1.5, 0.1, size=600)
    diff, lo, hi, method = bootstrap_quantile_diff_ci(a, b, [0.5, 0.99], FAST)
    assert method == "scipy"
    np.testing.assert_allclose(diff, np.quantile(b, [0.5, 0.99]) - np.quantile(a, [0.5, 0.99]))
    assert diff[0] == pytest.approx(0.5, abs=0.03)
    assert (lo > 0.4).all() and (lo <= diff).all() and (diff <= hi).all()
    # same distribution: the CI of the median difference covers 0
    _, lo0, hi0, _ = bootstrap_quantile_diff_ci(a[:400], a[400:], [0.5], FAST)
    assert lo0[0] < 0 < hi0[0]
    # reproducible (seeded) and matches scipy's two-sample bootstrap (inputs are sorted first)
    ref = sps.bootstrap(
        (np.sort(a), np.sort(b)),
        lambda x, y, axis=-1: (
            np.quantile(y, [0.5, 0.99], axis=axis) - np.quantile(x, [0.5, 0.99], axis=axis)
        ),
        n_resamples=300,
        method="percentile",
        vectorized=True,
        paired=False,
        rng=np.random.default_rng(7),
    )
    np.testing.assert_allclose(lo, ref.confidence_interval.low)
    np.testing.assert_allclose(hi, ref.confidence_interval.high)


def test_quantile_difference_with_empty_side():
    diff, lo, hi, method = bootstrap_quantile_diff_ci(np.array([]), np.ones(10), [0.5], FAST)
    assert method == "none" and np.isnan(diff).all() and np.isnan(lo).all()


def test_wilson_and_poisson_hand_computed():
    lo, hi = wilson_ci(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1.959964**2 / (10 + 1.959964**2), rel=1e-5)
    lo, hi = wilson_ci(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert all(math.isnan(x) for x in wilson_ci(0, 0))
    lo, hi = poisson_rate_ci(0, 10.0)
    assert lo == 0.0 and hi == pytest.approx(0.36889, rel=1e-4)  # -ln(0.025)/10


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=60),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_quantiles_monotone_and_bounded(values, q1, q2):
    v = np.array(values)
    lo_q, hi_q = sorted((q1, q2))
    a, b = quantiles(v, [lo_q, hi_q])
    assert v.min() <= a <= b <= v.max()


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(0.001, 10, allow_nan=False), min_size=5, max_size=40))
def test_ci_bounds_ordered(values):
    lo, hi, _ = bootstrap_quantiles_ci(np.array(values), [0.5, 0.9], FAST)
    assert (lo <= hi + 1e-12).all()
