"""Typed inputs of the judge's statistics: what preprocessing hands over, below the I/O layer.

Each sample holds the baseline's and the candidate's observations of one quantity. A
*paired* sample has both arrays aligned, entry ``i`` on both sides being the same logical
request (mirrored runs, aligned on ``pair_id``, in arrival order) or the same eval item
(aligned on ``sample_id``); ``unmatched`` counts what one side had and the other did not
(reported, never silently dropped). NaN marks a value that does not exist (TPOT of a
one-chunk answer, an unscored item); ``+inf`` a censored latency (a failed request: longer
than anything observed). The synthetic runs of :mod:`harness.judge.calibration` build these
directly, so they go through the same statistics, classification and decision as real runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _n_valid(x: np.ndarray, y: np.ndarray, paired: bool) -> int:
    if paired:
        return int((~(np.isnan(x) | np.isnan(y))).sum())
    return int(min((~np.isnan(x)).sum(), (~np.isnan(y)).sum()))


@dataclass(frozen=True)
class _Pair:
    baseline: np.ndarray
    candidate: np.ndarray
    paired: bool
    unmatched: tuple[int, int] = (0, 0)  # (baseline only, candidate only)

    @property
    def n(self) -> int:
        """Observations that count: pairs with both values (paired), else the smaller arm."""
        return _n_valid(self.baseline, self.candidate, self.paired)

    @property
    def n_arms(self) -> tuple[int, int]:
        return int((~np.isnan(self.baseline)).sum()), int((~np.isnan(self.candidate)).sum())

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """The observations that count, ``(baseline, candidate)``: the pairs with both values
        (paired, still aligned), else each arm's non-missing values."""
        x, y = self.baseline, self.candidate
        if self.paired:
            keep = ~(np.isnan(x) | np.isnan(y))
            return x[keep], y[keep]
        return x[~np.isnan(x)], y[~np.isnan(y)]


@dataclass(frozen=True)
class LatencySample(_Pair):
    """Seconds per logical request; ``quantiles``: every quantile judged on this series (a
    statistic may compute them in one pass and keep them in ``cache``)."""

    measure: str = ""
    quantiles: tuple[float, ...] = ()
    cache: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class BinarySample(_Pair):
    """1.0 / 0.0 per request or item (failed; passed), NaN when missing."""


@dataclass(frozen=True)
class ScoreSample(_Pair):
    """A graded score or a length per item, NaN when missing."""


@dataclass(frozen=True)
class CostSample:
    """USD per logical request of each arm; an arm priced by a projection (self-hosted: the
    month's cost over the month's calls) has no per-request sample, only ``*_fixed``."""

    baseline: np.ndarray | None
    candidate: np.ndarray | None
    baseline_fixed: float | None = None
    candidate_fixed: float | None = None

    @property
    def n(self) -> int:
        sizes = [a.size for a in (self.baseline, self.candidate) if a is not None]
        return min(sizes) if sizes else 0

    @property
    def n_arms(self) -> tuple[int, int]:
        def one(a: np.ndarray | None) -> int:
            return int(a.size) if a is not None else 0

        return one(self.baseline), one(self.candidate)


Sample = LatencySample | BinarySample | ScoreSample | CostSample


@dataclass(frozen=True)
class ArmRef:
    """Which arm of which run a side of the comparison is."""

    run_id: str
    arm: str
    run_dir: str | None = None
    kind: str | None = None


@dataclass
class QualityScorer:
    """One scorer's sample and what it is: ``kind`` binary | score | length and which
    change is bad for it (``higher``: a drop is bad, ``lower``, ``either``)."""

    kind: str
    direction: str
    sample: BinarySample | ScoreSample


@dataclass
class JudgeInputs:
    """Everything the judge compares, typed; ``errors`` maps a measure whose inputs could not
    be read (e.g. ``cost_per_task``, ``quality``) to the message."""

    baseline: ArmRef
    candidate: ArmRef
    latency: dict[str, LatencySample] = field(default_factory=dict)
    failures: BinarySample | None = None
    quality: dict[str, QualityScorer] = field(default_factory=dict)
    cost: CostSample | None = None
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
