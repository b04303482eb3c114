"""A/A calibration of the headline arm-vs-arm comparison (harness/analysis/compare.py).

Two arms with the *same* latency distribution, mirrored (every logical request on both arms),
n = 200 pairs: how many runs make at least one "X is faster/slower" claim among the headline
lines (3 metrics x p50/p99)? The comparison runs through the same code as a report
(:func:`compare_samples` with :func:`adjusted_settings` and the aligned pairs that
:func:`mirrored_pairs` builds from a run; the Parquet path is covered by the last test).
Synthetic latencies per pair ``t`` and arm ``k``::

    ttft = 0.3 s * exp(w_load * L_t + w_noise * u_kt)
    tpot = 0.02 s * exp(0.6 w_load * L_t + 0.5 w_noise * u'_kt)
    e2e  = ttft + tpot * (tokens_t - 1) + small noise     (tokens_t shared: same prompt)

``L_t``: load shared by both arms of a pair (the same arrival burst), AR(1) over time for
autocorrelated load; ``u``: each arm's own noise, AR(1) when each arm's queue builds and
drains on its own. Measured (share of runs with any claim; ``before``: the previous unpaired
bootstrap at the nominal 95%, 400 resamples, 100 seeds; ``now``: 1,000 resamples, 300 seeds):

    scenario                                       before   now
    i.i.d. (no shared load, w_noise 0.5)           0.16     0.030
    shared AR(1) load (0.3, phi 0.7) + noise 0.4   0.09     0.043
    shared AR(1) load + per-arm AR(1) noise (0.7)  0.53     0.047
    per-arm AR(1) noise only (0.5, phi 0.7)        0.65     0.050   (not run here)

The "before" figures of the issue (27% i.i.d., 60% autocorrelated) came from its own setup;
the pattern is the same. With 300 seeds the sd of a rate near 5% is 1.3%: the limit 0.07 is
1.6 sd above 5%, and a 10% procedure (sd 1.7%) passes it with probability about 4%.

Power: a 30% slowdown of the candidate's TTFT tail (every value above the population p95
x 1.3, so p99 +30%, median unchanged), n = 1,000 pairs, shared AR(1) load 0.4 + noise 0.3:
the p99 line claims it in 79% of 150 seeds (73% of 100 with no shared load, where pairing
cannot help: n = 1,000 holds 10 values above p99, and the family is corrected for 6 claims).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from harness.analysis.compare import (
    HEADLINE_METRICS,
    PairedSample,
    adjusted_settings,
    compare_arms,
    compare_samples,
    family_size,
    headline_claims,
)
from harness.analysis.data import load_run
from harness.analysis.stats import BootstrapSettings
from tests.analysis.conftest import make_records, write_run

SEEDS = 300
POWER_SEEDS = 150
RESAMPLES = 1000
FAMILY = adjusted_settings(BootstrapSettings(resamples=RESAMPLES), family_size(2))


def _ar1(rng: np.random.Generator, phi: float, shape: tuple[int, ...]) -> np.ndarray:
    """Unit-variance stationary AR(1) along the last axis (phi 0: i.i.d. normal)."""
    z = rng.normal(size=shape)
    if phi == 0:
        return z
    a = np.empty(shape)
    a[..., 0] = z[..., 0]
    c = math.sqrt(1 - phi * phi)
    for t in range(1, shape[-1]):
        a[..., t] = phi * a[..., t - 1] + c * z[..., t]
    return a


def _arms(
    seed: int, n: int, w_load: float, phi_load: float, w_noise: float, phi_noise: float
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    load = _ar1(rng, phi_load, (n,))
    tokens = rng.integers(20, 200, size=n)
    u = _ar1(rng, phi_noise, (2, 3, n))
    out = []
    for k in range(2):
        ttft = 0.3 * np.exp(w_load * load + w_noise * u[k, 0])
        tpot = 0.02 * np.exp(0.6 * w_load * load + 0.5 * w_noise * u[k, 1])
        e2e = ttft + tpot * (tokens - 1) + 0.01 * np.exp(0.3 * u[k, 2])
        out.append({"request_ttft_s": ttft, "tpot_s": tpot, "request_e2e_s": e2e})
    return out[0], out[1]


def _claims(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    paired = {k: PairedSample(a[k], b[k]) for k in a}
    return headline_claims(compare_samples(a, b, FAMILY, paired=paired))


def _aa_rate(cfg: tuple[float, float, float, float], label: str) -> float:
    t0 = time.perf_counter()
    hits = sum(bool(_claims(*_arms(s, 200, *cfg))) for s in range(SEEDS))
    rate = hits / SEEDS
    print(f"A/A {label}: {rate:.3f} of {SEEDS} runs claim a difference "
          f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    return rate


def test_family_is_the_headline_claims() -> None:
    assert family_size(2) == len(HEADLINE_METRICS) * 2 == 6
    assert family_size(3) == 12 and family_size(1) == 1
    assert FAMILY.confidence == pytest.approx(1 - 0.05 / 6)


def test_aa_iid_rarely_claims_a_difference() -> None:
    assert _aa_rate((0.0, 0.0, 0.5, 0.0), "i.i.d.") <= 0.07


def test_aa_autocorrelated_shared_load_rarely_claims_a_difference() -> None:
    """The realistic case: a shared AR(1) load factor (phi 0.7) plus each arm's own noise."""
    assert _aa_rate((0.3, 0.7, 0.4, 0.0), "shared AR(1) load") <= 0.07


@pytest.mark.slow
def test_aa_per_arm_autocorrelation_rarely_claims_a_difference() -> None:
    """Each arm's own queue builds and drains (per-arm AR(1) noise): the unpaired bootstrap at
    the nominal level claimed a difference in about half of such runs."""
    assert _aa_rate((0.3, 0.7, 0.4, 0.7), "shared + per-arm AR(1)") <= 0.07
    before = sum(
        bool(headline_claims(compare_samples(*_arms(s, 200, 0.3, 0.7, 0.4, 0.7),
                                             BootstrapSettings(resamples=400))))
        for s in range(60)
    ) / 60  # fmt: skip
    print(f"before (unpaired, nominal 95%, 60 seeds): {before:.2f}")
    assert before >= 0.3


@pytest.mark.slow
def test_real_p99_slowdown_is_claimed() -> None:
    """30% p99 TTFT slowdown at n = 1,000 pairs: claimed on the p99 line in >= 75% of 150
    seeds (measured 0.793). Only the TTFT metric is computed: with Bonferroni each claim is
    decided on its own interval at the family level."""
    w_load, w_noise = 0.4, 0.3
    thr = 0.3 * math.exp(math.hypot(w_load, w_noise) * 1.6449)  # population p95
    hits = 0
    t0 = time.perf_counter()
    for s in range(POWER_SEEDS):
        a, b = _arms(s, 1000, w_load, 0.7, w_noise, 0.0)
        x, y = a["request_ttft_s"], b["request_ttft_s"]
        y = np.where(y > thr, 1.3 * y, y)
        one = {"request_ttft_s": x}, {"request_ttft_s": y}
        res = compare_samples(*one, FAMILY, paired={"request_ttft_s": PairedSample(x, y)})
        hits += ("request_ttft_s", "p99") in headline_claims(res)
    rate = hits / POWER_SEEDS
    print(f"power, 30% p99 slowdown, n=1000: {rate:.3f} ({time.perf_counter() - t0:.1f} s)")
    assert rate >= 0.75


def test_mirrored_run_is_compared_per_pair(tmp_path: Path) -> None:
    """Through Parquet: rows sharing pair_id are aligned; unmatched requests are counted; the
    family and its adjusted level are in the summary block."""
    recs = make_records("cloud", 120, seed=1) + make_records("selfhosted", 110, seed=2)
    run = write_run(tmp_path / "r", recs)
    cmp = compare_arms(load_run(run))
    assert cmp["family_size"] == 6
    assert cmp["adjusted_confidence"] == pytest.approx(1 - 0.05 / 6)
    pair = cmp["pairs"][0]
    assert pair["paired"] is True and pair["confidence"] == pytest.approx(1 - 0.05 / 6)
    e = pair["metrics"]["request_ttft_s"]
    assert e["ci_method"].startswith("paired")
    assert e["n_pairs"] == 110 and e["unmatched_baseline"] == 10 and e["unmatched_other"] == 0
    assert pair["metrics"]["ttft_s"]["ci_method"] == "scipy"  # per-attempt: unpaired
    # independent pairing (no pair_id): unpaired, same family correction
    for r in recs:
        r.pair_id = None
    run2 = write_run(tmp_path / "r2", recs)
    cmp2 = compare_arms(load_run(run2))
    assert cmp2["pairs"][0]["paired"] is False
    assert "n_pairs" not in cmp2["pairs"][0]["metrics"]["request_ttft_s"]
    assert cmp2["adjusted_confidence"] == pytest.approx(1 - 0.05 / 6)
