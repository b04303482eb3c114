"""Confidence interval of a mean cost per call, over logical requests.

BCa bootstrap (Efron 1987, via :func:`scipy.stats.bootstrap`) over requests, each request
carrying the cost of all of its attempts, so the measured retry rate's uncertainty is in the
interval too. Above :data:`BOOTSTRAP_MAX_N` requests the normal interval
``mean +- z s / sqrt(n)`` is used (the CLT is accurate there and a bootstrap would cost
seconds). Coverage is measured in ``tests/cost/test_uncertainty.py``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

BOOTSTRAP_MAX_N = 20_000


def mean_ci(
    x: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Two-sided ``confidence`` interval of ``mean(x)``; (nan, nan) below 2 values, the point
    when every value is equal."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 2:
        return math.nan, math.nan
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    if n > BOOTSTRAP_MAX_N:
        z = stats.norm.ppf(0.5 + confidence / 2)
        half = z * x.std(ddof=1) / math.sqrt(n)
        return float(x.mean() - half), float(x.mean() + half)
    res = stats.bootstrap(
        (x,), np.mean, confidence_level=confidence, n_resamples=resamples, method="BCa",
        vectorized=True, random_state=np.random.default_rng(seed),
    )  # fmt: skip
    lo, hi = res.confidence_interval
    return float(lo), float(hi)
