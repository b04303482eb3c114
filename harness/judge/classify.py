"""Classify one metric: its change's intervals against its non-inferiority margin.

The margin turns into the region of changes that are *not worse* (in the change's scale):

- ``lower`` is better (a rise is bad): ``change <= hi``, with ``hi = 1 + margin`` for a ratio
  or ``+margin`` for a difference;
- ``higher`` is better (a drop is bad): ``change >= lo``, ``lo = 1 - margin`` or ``-margin``;
- ``either``: both bounds.

A relative margin on a difference scale (rates, mean scores) is ``margin x |baseline value|``.

Labels (closed set :data:`CLASSIFICATIONS`), from the intervals of
:class:`harness.judge.statistics.Change`:

- ``High`` / ``Low``: shown worse than the margin: the Bonferroni-level interval ``ci`` lies
  entirely above ``hi`` (High) or entirely below ``lo`` (Low); reason ``worse_than_margin``.
- ``Pass``: shown non-inferior: the non-inferiority interval ``ci_ni`` lies inside the region
  on every bad side.
- ``Undecided``: neither (the interval spans the margin): reason ``interval_spans_margin``; an
  interval that cannot be computed (e.g. both arms' p99 censored): ``not_estimable``.
- ``NoData``: ``no_data`` (nothing to compare), ``insufficient_n`` (fewer observations than
  ``judge.min_n``, or than ``judge.min_tail / (1 - q)`` for a quantile q), ``errors`` (the
  inputs could not be read).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.judge.settings import MetricSpec
from harness.judge.statistics import Change

CLASSIFICATIONS = ("Pass", "High", "Low", "Undecided", "NoData")
#: Reason codes of a metric (and, with the score's codes, of a verdict).
METRIC_REASONS = ("worse_than_margin", "interval_spans_margin", "not_estimable",
                  "insufficient_n", "no_data", "errors")  # fmt: skip


@dataclass(frozen=True)
class Region:
    """Changes that are not worse: ``lo <= change <= hi`` (either bound may be infinite)."""

    lo: float
    hi: float


def region(spec: MetricSpec, change: Change) -> Region:
    """The not-worse region of ``spec`` in the scale of ``change``."""
    if change.scale == "ratio":
        up, down = 1 + spec.margin, 1 - spec.margin
    else:
        ref = abs(change.reference) if spec.margin_type == "relative" else 1.0
        m = spec.margin * ref if math.isfinite(ref) else math.nan
        up, down = m, -m
    lo = down if spec.direction in ("higher", "either") else -math.inf
    hi = up if spec.direction in ("lower", "either") else math.inf
    return Region(lo, hi)


def classify(spec: MetricSpec, change: Change) -> tuple[str, str | None, Region]:
    """(classification, reason code or None, region) for one metric with data."""
    r = region(spec, change)
    lo_w, hi_w = change.ci
    lo_ni, hi_ni = change.ci_ni
    if any(math.isnan(v) for v in (lo_w, hi_w, r.lo, r.hi)):
        return "Undecided", "not_estimable", r
    if lo_w > r.hi:
        return "High", "worse_than_margin", r
    if hi_w < r.lo:
        return "Low", "worse_than_margin", r
    if math.isnan(lo_ni) or math.isnan(hi_ni):
        return "Undecided", "not_estimable", r
    if hi_ni <= r.hi and lo_ni >= r.lo:
        return "Pass", None, r
    return "Undecided", "interval_spans_margin", r
