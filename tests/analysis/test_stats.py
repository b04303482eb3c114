"""Statistics helpers against hand-computed values and scipy/numpy directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from harness.analysis.compare import compare_samples
from harness.analysis.stats import (
    BootstrapSettings,
    ClusteredSample,
    bootstrap_quantile_diff_ci,
    bootstrap_quantiles_ci,
    cluster_bootstrap,
    cluster_quantiles_ci,
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


def test_quantile_cis_match_quantile_test_and_mean_matches_bootstrap():
    """Quantiles: scipy.stats.quantile_test's order-statistic interval; mean: scipy's
    percentile bootstrap called directly (same seed, same resamples)."""
    rng = np.random.default_rng(3)
    x = rng.lognormal(size=400)
    qs = [0.5, 0.99]
    lo, hi, method = bootstrap_quantiles_ci(x, qs, FAST)
    assert method == "order-statistic"
    for j, q in enumerate(qs):
        ref_q = sps.quantile_test(x, q=1.0, p=q).confidence_interval(0.95)
        assert (lo[j], hi[j]) == (ref_q.low, ref_q.high)
    ref = sps.bootstrap(
        (x,), np.mean, n_resamples=300, method="percentile", vectorized=True,
        rng=np.random.default_rng(7),
    )  # fmt: skip
    assert lo[-1] == pytest.approx(ref.confidence_interval.low)
    assert hi[-1] == pytest.approx(ref.confidence_interval.high)
    point = np.quantile(x, qs)
    assert (lo[:2] <= point).all() and (point <= hi[:2]).all()


def test_mean_ci_close_to_t_interval_on_normal_data():
    x = np.random.default_rng(0).normal(10, 2, size=2000)
    lo, hi, _ = bootstrap_quantiles_ci(x, [0.5], BootstrapSettings(resamples=1000, seed=1))
    t_lo, t_hi = sps.t.interval(0.95, x.size - 1, loc=x.mean(), scale=sps.sem(x))
    assert lo[-1] == pytest.approx(t_lo, abs=0.03)
    assert hi[-1] == pytest.approx(t_hi, abs=0.03)
    # beyond max_n the mean's CI is the bootstrap's normal limit (sd with ddof=0)
    lo_n, hi_n, _ = bootstrap_quantiles_ci(x, [0.5], BootstrapSettings(max_n=100))
    half = 1.959964 * x.std() / math.sqrt(x.size)
    assert (lo_n[-1], hi_n[-1]) == (pytest.approx(x.mean() - half), pytest.approx(x.mean() + half))
    assert lo_n[-1] == pytest.approx(lo[-1], abs=0.03)
    assert hi_n[-1] == pytest.approx(hi[-1], abs=0.03)


def test_bootstrap_small_and_degenerate_samples():
    lo, hi, method = bootstrap_quantiles_ci(np.array([1.0, 2.0]), [0.5], FAST)
    assert method == "none" and np.isnan(lo).all() and np.isnan(hi).all()
    # constant sample: the order statistics are the constant; p99's upper bound needs
    # 0.99**n <= 2.5%, i.e. n >= 367, so at n=50 it is not estimable (NaN)
    lo, hi, method = bootstrap_quantiles_ci(np.full(50, 0.25), [0.5, 0.99], FAST)
    assert method == "order-statistic"
    assert lo.tolist() == [0.25, 0.25, 0.25]
    assert hi[0] == hi[2] == 0.25 and np.isnan(hi[1])


def test_order_statistic_bootstrap_matches_scipy_resampling():
    """The order-statistic bootstrap (used by the difference CIs beyond max_n) has the
    distribution of scipy's resampled quantiles: their percentile intervals agree."""
    x = np.random.default_rng(1).lognormal(size=3000)
    qs = [0.5, 0.9, 0.99]
    ref = sps.bootstrap(
        (x,), lambda a, axis=-1: np.quantile(a, qs, axis=axis), n_resamples=4000,
        method="percentile", vectorized=True, rng=np.random.default_rng(0),
    )  # fmt: skip
    lo_s, hi_s = ref.confidence_interval.low, ref.confidence_interval.high
    reps = order_stat_bootstrap(np.sort(x), qs, 4000, np.random.default_rng(0))
    lo_o, hi_o = np.quantile(reps, [0.025, 0.975], axis=-1)
    width = hi_s - lo_s
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
    v = np.array(values)
    lo, hi, _ = bootstrap_quantiles_ci(v, [0.5, 0.9], FAST)
    both = np.isfinite(lo) & np.isfinite(hi)  # else a bound is not estimable at this n
    assert (lo[both] <= hi[both] + 1e-12).all()
    # quantile bounds are sample values (order statistics)
    assert np.isin(lo[:2][np.isfinite(lo[:2])], v).all()
    assert np.isin(hi[:2][np.isfinite(hi[:2])], v).all()


# ---------------------------------------------------------------- cluster bootstrap (ITL)


def _correlated_requests(rng: np.random.Generator, n_req: int, k: int = 20) -> ClusteredSample:
    """ITL-like data: a per-request speed factor, so the gaps of one request move together."""
    speed = rng.lognormal(0.0, 0.5, n_req)
    gaps = speed[:, None] * rng.uniform(0.9, 1.1, (n_req, k)) * 0.02
    return ClusteredSample(gaps.ravel(), np.full(n_req, k))


def test_cluster_bootstrap_matches_naive_resampling(monkeypatch):
    """Replicates equal pooling the resampled requests' gaps and taking numpy's quantiles,
    also when the replicates are computed in several batches."""
    import harness.analysis.stats as stats_mod

    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 9, 37)
    values = rng.gamma(2, 1, lengths.sum()).round(1)  # ties on purpose
    qs = [0.0, 0.1, 0.5, 0.9, 0.99, 1.0]
    monkeypatch.setattr(stats_mod, "_CLUSTER_BATCH_ELEMENTS", 7 * int(lengths.sum()))
    reps = cluster_bootstrap(values, lengths, qs, 50, np.random.default_rng(5))
    picks = np.random.default_rng(5).integers(0, 37, size=(50, 37))
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    requests = [values[bounds[i] : bounds[i + 1]] for i in range(37)]
    for r, p in enumerate(picks):
        pooled = np.concatenate([requests[i] for i in p])
        np.testing.assert_allclose(reps[:-1, r], np.quantile(pooled, qs))
        assert reps[-1, r] == pytest.approx(pooled.mean())


def test_itl_difference_of_same_distribution_rarely_significant():
    """Two arms from one distribution with correlated gaps within a request: the cluster
    bootstrap flags the p50/p99 difference in at most ~10% of seeds, where treating every
    gap as independent flags it most of the time."""
    st_fast = BootstrapSettings(resamples=200, seed=0)
    flagged = {"p50": 0, "p99": 0}
    flagged_independent = {"p50": 0, "p99": 0}
    seeds = 30
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        a, b = _correlated_requests(rng, 150), _correlated_requests(rng, 150)
        base, other = {"itl_s": a.values}, {"itl_s": b.values}
        res = compare_samples(base, other, st_fast, {"itl_s": (a, b)})
        ind = compare_samples(base, other, st_fast)
        assert res["metrics"]["itl_s"]["ci_method"] == "cluster"
        for q in flagged:
            flagged[q] += res["metrics"]["itl_s"][q]["significant"]
            flagged_independent[q] += ind["metrics"]["itl_s"][q]["significant"]
    assert flagged["p50"] <= 0.1 * seeds and flagged["p99"] <= 0.1 * seeds, flagged
    assert min(flagged_independent.values()) >= 0.33 * seeds, flagged_independent


def test_cluster_ci_of_a_request_sample_is_rescaled_to_the_full_count():
    """m-out-of-n: CIs from a uniform sample of 400 of 4,000 requests, rescaled by
    sqrt(m/n), are about as wide as the CIs from all 4,000 requests."""
    full = _correlated_requests(np.random.default_rng(3), 4000, k=10)
    qs = [0.5, 0.9]
    lo, hi, method = cluster_quantiles_ci(full, qs, BootstrapSettings(resamples=400))
    assert method == "cluster"
    keep = np.zeros(4000, bool)
    keep[np.random.default_rng(4).choice(4000, 400, replace=False)] = True
    part = ClusteredSample(full.values[np.repeat(keep, 10)], full.lengths[keep], n_total=4000)
    centre = np.append(np.quantile(full.values, qs), full.values.mean())
    lo_s, hi_s, method_s = cluster_quantiles_ci(
        part, qs, BootstrapSettings(resamples=400), centre=centre
    )
    assert method_s == "cluster-subsample"
    np.testing.assert_allclose(hi_s - lo_s, hi - lo, rtol=0.35)
    assert ((lo_s < centre) & (centre < hi_s)).all()
    # few requests: no CI
    lo, _, method = cluster_quantiles_ci(ClusteredSample(np.ones(40), np.full(4, 10)), qs, FAST)
    assert method == "none" and np.isnan(lo).all()
