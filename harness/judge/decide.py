"""Score the classified metrics and decide: GO, NO_GO or INCONCLUSIVE, with reason codes.

With ``w`` the metrics' weights, over the metrics *with data* (not NoData):

- ``score = 100 * sum(w of Pass) / sum(w)`` (Kayenta's score);
- ``score_ceiling = 100 * (1 - sum(w of High/Low) / sum(w))``: the score if every Undecided
  metric turned out Pass.

Decision, in order:

1. ``NO_GO`` when a critical metric is shown worse than its margin (reason
   ``worse_than_margin:NAME``), or when ``score_ceiling < marginal_score``
   (``score_below_marginal``): metrics *shown* worse alone pull the score below marginal.
   Kayenta fails on ``score < marginal``, which makes an underpowered run fail; here a metric
   that is merely undecided never leads to NO_GO, so the false-NO_GO rate stays at the rate
   of metrics falsely shown worse (at most ``alpha``, see :mod:`harness.judge.statistics`).
2. ``GO`` when every critical metric is Pass and ``score >= pass_score``.
3. ``INCONCLUSIVE`` otherwise, naming what stood in the way: a critical metric without data
   (``insufficient_n:NAME``, ``no_data:NAME``, ``errors:NAME``) or undecided
   (``interval_spans_margin:NAME``, ``not_estimable:NAME``), ``score_below_pass`` (with the
   undecided non-critical metrics that kept the score down); no metric
   with data at all is ``no_data``. Too little data is never GO.

Every verdict also lists the non-critical metrics shown worse (``worse_than_margin:NAME``).
Reasons are ``CODE`` or ``CODE:METRIC`` with CODE from :data:`REASONS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.judge.classify import METRIC_REASONS

DECISIONS = ("GO", "NO_GO", "INCONCLUSIVE")
REASONS = (*METRIC_REASONS, "score_below_marginal", "score_below_pass")


@dataclass(frozen=True)
class Judged:
    """What the decision needs of one metric."""

    name: str
    classification: str
    reason: str | None
    critical: bool
    weight: float


@dataclass(frozen=True)
class Decision:
    decision: str
    score: float | None
    score_ceiling: float | None
    reasons: list[str]


def scores(metrics: Sequence[Judged]) -> tuple[float | None, float | None]:
    """(score, score_ceiling) over the metrics with data; (None, None) when there are none."""
    with_data = [m for m in metrics if m.classification != "NoData" and m.weight > 0]
    total = sum(m.weight for m in with_data)
    if total <= 0:
        return None, None
    passed = sum(m.weight for m in with_data if m.classification == "Pass")
    worse = sum(m.weight for m in with_data if m.classification in ("High", "Low"))
    return 100.0 * passed / total, 100.0 * (1.0 - worse / total)


def decide(metrics: Sequence[Judged], pass_score: float, marginal_score: float) -> Decision:
    """The verdict from classified metrics (see module docstring)."""
    score, ceiling = scores(metrics)
    worse = [m for m in metrics if m.classification in ("High", "Low")]
    worse_reasons = [f"worse_than_margin:{m.name}" for m in worse]
    if score is None or ceiling is None:
        return Decision("INCONCLUSIVE", None, None, ["no_data"])
    if any(m.critical for m in worse) or ceiling < marginal_score:
        reasons = [f"worse_than_margin:{m.name}" for m in worse if m.critical]
        if ceiling < marginal_score:
            reasons.append("score_below_marginal")
        reasons += [r for r in worse_reasons if r not in reasons]
        return Decision("NO_GO", score, ceiling, reasons)
    blocking = [f"{m.reason}:{m.name}" for m in metrics
                if m.critical and m.weight > 0 and m.classification != "Pass"]  # fmt: skip
    if not blocking and score >= pass_score:
        return Decision("GO", score, ceiling, worse_reasons)
    reasons = list(blocking)
    if score < pass_score:  # and what kept the score down
        reasons.append("score_below_pass")
        reasons += [f"{m.reason}:{m.name}" for m in metrics
                    if not m.critical and m.classification == "Undecided"]  # fmt: skip
    return Decision("INCONCLUSIVE", score, ceiling, reasons + worse_reasons)
