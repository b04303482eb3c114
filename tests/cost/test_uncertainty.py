"""Calibration of the cost-per-call interval: coverage of the true mean over many seeds.

Costs per request are zero-inflated and skewed (429s bill nothing, a few long answers bill a
lot), the case where a naive interval under-covers. 400 seeds: the standard error of a
coverage near 0.95 is 1.1%, so the asserted band [0.92, 0.975] tells 95% from 90%.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.cost.uncertainty import mean_ci

MU, SIGMA, P_ZERO = math.log(2e-4), 0.9, 0.3
TRUE_MEAN = (1 - P_ZERO) * math.exp(MU + SIGMA**2 / 2)


def _draw(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.lognormal(MU, SIGMA, n)
    x[rng.random(n) < P_ZERO] = 0.0
    return x


@pytest.mark.parametrize("n", [150, 1000])
def test_bootstrap_interval_covers_the_true_mean(n):
    rng = np.random.default_rng(n)
    seeds = 400
    hits = lo_miss = 0
    for k in range(seeds):
        lo, hi = mean_ci(_draw(rng, n), 0.95, resamples=999, seed=k)
        hits += lo <= TRUE_MEAN <= hi
        lo_miss += TRUE_MEAN < lo
    cov = hits / seeds
    print(f"n={n}: coverage {cov:.3f}, misses below {lo_miss}")
    assert 0.92 <= cov <= 0.975
    assert lo_miss <= 0.045 * seeds  # neither tail much over its 2.5%


def test_normal_interval_above_the_bootstrap_limit_covers_too():
    rng = np.random.default_rng(3)
    hits = sum(lo <= TRUE_MEAN <= hi for lo, hi in
               (mean_ci(_draw(rng, 25_000), 0.95) for _ in range(400)))  # fmt: skip
    assert 0.92 <= hits / 400 <= 0.975


def test_degenerate_samples():
    assert all(math.isnan(v) for v in mean_ci(np.array([1.0])))
    assert mean_ci(np.zeros(10)) == (0.0, 0.0)
