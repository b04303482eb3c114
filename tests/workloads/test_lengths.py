"""Length distributions: moments match the config, clipping holds, bad settings name the key."""

from __future__ import annotations

import numpy as np
import pytest

from harness.config import ConfigError, LengthDist
from harness.workloads.lengths import sample_lengths, validate_length_dist


@pytest.mark.parametrize("dist", ["uniform", "normal", "lognormal"])
def test_mean_and_std_match(dist):
    d = LengthDist(dist=dist, mean=500, std=100, min=1, max=100000)
    x = sample_lengths(d, 50000, np.random.default_rng(0))
    assert x.dtype.kind == "i"
    assert abs(x.mean() - 500) < 3
    assert abs(x.std() - 100) < 3


def test_fixed_and_clipping():
    assert set(sample_lengths(LengthDist(mean=37), 10, np.random.default_rng(0))) == {37}
    d = LengthDist(dist="normal", mean=100, std=500, min=10, max=150)
    x = sample_lengths(d, 5000, np.random.default_rng(0))
    assert x.min() == 10 and x.max() == 150


@pytest.mark.parametrize(
    "d, key",
    [
        (LengthDist(dist="zipf"), "dist"),
        (LengthDist(mean=0), "mean"),
        (LengthDist(std=-1), "std"),
        (LengthDist(min=0), "min"),
        (LengthDist(min=10, max=5), "max"),
    ],
)
def test_invalid_settings_name_the_key(d, key):
    with pytest.raises(ConfigError, match=rf"workload\.input_tokens\.{key}"):
        validate_length_dist(d, "workload.input_tokens")
