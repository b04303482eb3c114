"""Token-length distributions (``LengthDist``): validate and draw integer lengths.

Each distribution is parameterised by the mean and standard deviation of the lengths it
produces (before clipping), so switching ``dist`` keeps the same first two moments:

- ``fixed``: always ``round(mean)``;
- ``uniform``: uniform on ``[mean - sqrt(3) std, mean + sqrt(3) std]`` (variance ``std**2``);
- ``normal``: ``N(mean, std**2)``;
- ``lognormal``: ``exp(N(mu, sigma**2))`` with ``sigma**2 = ln(1 + std**2 / mean**2)`` and
  ``mu = ln(mean) - sigma**2 / 2``, so its mean is ``mean`` and its std is ``std``.

Draws are rounded to integers and clipped to ``[min, max]`` (clipping moves the mean when
the tails are wide; the clipped mean is what :func:`sample_lengths` returns).
"""

from __future__ import annotations

import math

import numpy as np

from harness.config import ConfigError, LengthDist

LENGTH_DISTS = ("fixed", "uniform", "normal", "lognormal")


def validate_length_dist(d: LengthDist, key: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` when ``d`` cannot produce lengths."""
    if d.dist not in LENGTH_DISTS:
        raise ConfigError(f"{key}.dist: {d.dist!r} is not one of {', '.join(LENGTH_DISTS)}")
    if not (math.isfinite(d.mean) and d.mean > 0):
        raise ConfigError(f"{key}.mean: expected a positive number, got {d.mean!r}")
    if not (math.isfinite(d.std) and d.std >= 0):
        raise ConfigError(f"{key}.std: expected a non-negative number, got {d.std!r}")
    if d.min < 1:
        raise ConfigError(f"{key}.min: expected an integer >= 1, got {d.min!r}")
    if d.max < d.min:
        raise ConfigError(f"{key}.max: {d.max!r} is below {key}.min={d.min!r}")


def sample_lengths(d: LengthDist, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` integer lengths from ``d`` (rounded, clipped to ``[d.min, d.max]``)."""
    if d.dist == "fixed" or d.std == 0:
        raw = np.full(n, float(d.mean))
    elif d.dist == "uniform":
        half = math.sqrt(3.0) * d.std
        raw = rng.uniform(d.mean - half, d.mean + half, size=n)
    elif d.dist == "normal":
        raw = rng.normal(d.mean, d.std, size=n)
    elif d.dist == "lognormal":
        sigma2 = math.log1p((d.std / d.mean) ** 2)
        raw = rng.lognormal(math.log(d.mean) - sigma2 / 2.0, math.sqrt(sigma2), size=n)
    else:  # validate_length_dist names the key; this guards direct callers
        raise ConfigError(f"dist: {d.dist!r} is not one of {', '.join(LENGTH_DISTS)}")
    return np.clip(np.rint(raw), d.min, d.max).astype(np.int64)
