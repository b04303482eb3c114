"""The judge's own error rates, measured on synthetic runs pushed through the same stages.

:func:`synthetic_inputs` builds :class:`~harness.judge.samples.JudgeInputs` the way
:mod:`harness.judge.preprocess` builds them from a mirrored run, from a small generative model
of two arms answering the same ``n`` eval items, one logical request per item, under shared
load:

- **latency**: ``TTFT = base * exp(L_t + e)`` seconds, ``L_t`` an AR(1) load factor over
  arrival order shared by both arms (queues that build and drain), ``e`` each arm's own noise,
  plus a client stall shared by both arms on a few requests (the heavy right tail measured on
  these machines: p50 34 ms, p99 about 120 ms); E2E adds the decode time; TPOT exists for
  a share of requests (answers of more than one chunk);
- **failures**: each arm fails a request with probability ``fail_rate`` (latency ``+inf``);
- **quality**: an item's latent hardness ``z`` is shared; each arm draws its own ``e`` unless
  ``same_model`` (one model's copies: the same ``e``, so at equal accuracy they answer alike
  and a less accurate one misses a superset), and answers right when
  ``Phi(sqrt(rho) z + sqrt(1 - rho) e) < accuracy`` (the simulator's rule,
  :mod:`harness.sim.answers`); scorers ``exact_match`` (pass/fail), ``f1`` (graded) and
  ``output_tokens`` (length);
- **cost**: USD per request, lognormal, per arm.

A regression is ``accuracy`` 0.90 -> 0.80 and TTFT + ``ttft_shift_s`` (the shift that makes
p99 about 25% slower, as ``configs/experiment/regression_check.yaml`` injects).
:func:`decision_rates` runs the judge over many seeds (tests/judge/test_judge_calibration.py
asserts the rates; ``make calibrate`` prints them, with the end-to-end runs).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from harness.judge.judge import Verdict, judge
from harness.judge.samples import (
    ArmRef,
    BinarySample,
    CostSample,
    JudgeInputs,
    LatencySample,
    QualityScorer,
    ScoreSample,
)
from harness.judge.settings import JudgeConfig

#: Items (= logical requests per arm) of the shipped checks: the canary eval set, once each.
DEFAULT_N = 600


@dataclass(frozen=True)
class SyntheticRun:
    """One synthetic mirrored run's model (see the module docstring)."""

    n: int = DEFAULT_N
    accuracy_baseline: float = 0.90
    accuracy_candidate: float = 0.90
    same_model: bool = True
    rho: float = 0.5  # item correlation (the simulator's item_correlation)
    ttft_base_s: float = 0.030
    ttft_shift_s: float = 0.0  # added to the candidate's TTFT and E2E
    load_sd: float = 0.08  # sd of the AR(1) log-load factor
    load_phi: float = 0.9  # its autocorrelation from one arrival to the next
    own_sd: float = 0.04  # each arm's own log-noise
    stall_rate: float = 0.03  # requests delayed by a client stall shared by both arms
    stall_mean_s: float = 0.05
    fail_rate: float = 0.002
    tpot_share: float = 0.25  # requests whose answer has more than one chunk
    cost_usd: float = 2e-4  # median cost per request

    def regressed(self) -> SyntheticRun:
        """Accuracy 0.90 -> 0.80 and TTFT shifted so that p99 is about 25% slower."""
        from dataclasses import replace

        return replace(self, accuracy_candidate=self.accuracy_baseline - 0.10,
                       ttft_shift_s=0.25 * reference_p99(self))  # fmt: skip


def reference_p99(run: SyntheticRun, n: int = 200_000) -> float:
    """p99 of the baseline's TTFT under ``run`` (a large fixed-seed sample)."""
    rng = np.random.default_rng(12345)
    load = _ar1(rng, n, run.load_phi, run.load_sd)
    t = run.ttft_base_s * np.exp(load + run.own_sd * rng.standard_normal(n))
    t += (rng.random(n) < run.stall_rate) * rng.exponential(run.stall_mean_s, n)
    return float(np.quantile(t, 0.99))


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """A stationary AR(1) series with marginal sd ``sd`` (lfilter: vectorised)."""
    from scipy.signal import lfilter

    innov = rng.standard_normal(n) * sd * math.sqrt(1 - phi * phi)
    x = lfilter([1.0], [1.0, -phi], innov)
    return x + (sd * rng.standard_normal() - x[0]) * phi ** np.arange(n)  # stationary start


def synthetic_inputs(seed: int, run: SyntheticRun) -> JudgeInputs:
    """One synthetic mirrored run (both arms), ready for :func:`harness.judge.judge.judge`."""
    rng = np.random.default_rng([seed, 20261])
    n = run.n
    load = _ar1(rng, n, run.load_phi, run.load_sd)
    stall = (rng.random(n) < run.stall_rate) * rng.exponential(run.stall_mean_s, n)
    decode = 0.010 * rng.poisson(6, n)  # shared: the same item has the same answer length
    multi = rng.random(n) < run.tpot_share

    def arm(shift: float) -> dict[str, np.ndarray]:
        ttft = run.ttft_base_s * np.exp(load + run.own_sd * rng.standard_normal(n)) + stall + shift
        e2e = ttft + decode * np.exp(0.02 * rng.standard_normal(n))
        tpot = np.where(multi, 0.010 * np.exp(0.01 * load + 0.02 * rng.standard_normal(n)), np.nan)
        failed = rng.random(n) < run.fail_rate
        return {"ttft": np.where(failed, np.inf, ttft), "e2e": np.where(failed, np.inf, e2e),
                "tpot": np.where(failed, np.nan, tpot), "failed": failed.astype(float),
                "cost": run.cost_usd * np.exp(0.3 * rng.standard_normal(n))}  # fmt: skip

    base, cand = arm(0.0), arm(run.ttft_shift_s)
    z = rng.standard_normal(n)
    e_base = rng.standard_normal(n)
    e_cand = e_base if run.same_model else rng.standard_normal(n)
    s, c = math.sqrt(run.rho), math.sqrt(1 - run.rho)
    right_b = sps.norm.cdf(s * z + c * e_base) < run.accuracy_baseline
    right_c = sps.norm.cdf(s * z + c * e_cand) < run.accuracy_candidate
    partial = rng.beta(2, 5, n)
    length = rng.poisson(8, n).astype(float)
    quality = {
        "exact_match": QualityScorer("binary", "higher", BinarySample(
            right_b.astype(float), right_c.astype(float), paired=True)),
        "f1": QualityScorer("score", "higher", ScoreSample(
            np.where(right_b, 1.0, partial), np.where(right_c, 1.0, partial), paired=True)),
        "output_tokens": QualityScorer("length", "either", ScoreSample(length, length.copy(),
                                                                       paired=True)),
    }  # fmt: skip
    lat = {m: LatencySample(base[k], cand[k], paired=True, measure=m)
           for m, k in (("request_ttft_s", "ttft"), ("tpot_s", "tpot"),
                        ("request_e2e_s", "e2e"))}  # fmt: skip
    return JudgeInputs(
        baseline=ArmRef("synthetic", "baseline"),
        candidate=ArmRef("synthetic", "candidate"),
        latency=lat,
        failures=BinarySample(base["failed"], cand["failed"], paired=True),
        quality=quality,
        cost=CostSample(base["cost"], cand["cost"]),
    )


def decision_rates(seeds: Iterable[int], run: SyntheticRun, cfg: JudgeConfig | None = None
                   ) -> dict[str, float | int | dict[str, float]]:  # fmt: skip
    """Share of seeds ending GO / NO_GO / INCONCLUSIVE, and how often each metric was shown
    worse (``worse``), under ``run``. Each seed's judge uses its own bootstrap seed."""
    import gc
    from dataclasses import replace

    cfg = cfg or JudgeConfig()
    # statsmodels' Holm calls gc.collect() (harness.analysis.paired.holm): with the objects
    # alive now frozen out of the collector's view, each call costs microseconds, not 0.1 s.
    gc.freeze()
    counts: Counter[str] = Counter()
    worse: Counter[str] = Counter()
    n = 0
    for seed in seeds:
        v: Verdict = judge(synthetic_inputs(seed, run), replace(cfg, seed=seed))
        counts[v.decision] += 1
        for m in v.metrics:
            if m.classification in ("High", "Low"):
                worse[m.name] += 1
        n += 1
    gc.unfreeze()
    out: dict[str, float | int | dict[str, float]] = {d: counts[d] / n for d in
                                                      ("GO", "NO_GO", "INCONCLUSIVE")}  # fmt: skip
    out["seeds"] = n
    out["worse"] = {k: v / n for k, v in sorted(worse.items())}
    return out
