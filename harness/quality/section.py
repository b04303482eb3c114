"""The ``quality`` section of summary.json: per-arm scores with intervals, and the paired
comparison of the candidate arm against the baseline.

**The unit is the item** (``sample_id``): an item scored several times on one arm (the
workload cycled through the eval set) counts once, with the mean of its values, so repeats
never pass for independent evidence. Per arm and scorer (``quality.<arm>.<scorer>``):

- binary scorers: ``rate`` (share of items passing) with a Wilson interval
  (:func:`harness.analysis.stats.wilson_ci`) over the items; when repeats disagree (item
  means strictly between 0 and 1) a t interval of the item means instead;
- scores and lengths: ``mean`` of the item values with a t interval
  (``mean +- t_{n-1} s / sqrt(n)``);
- ``n`` items, ``occurrences`` scored rows, ``unanswered`` logical requests whose final
  attempt failed (not scored), and the same figures ``by_category``.

**Comparison** (``quality.comparison.<scorer>``): baseline and candidate aligned on
``sample_id`` (:func:`harness.analysis.paired.align_pairs`; items scored on one arm only are
counted as ``unmatched_baseline`` / ``unmatched_candidate``, not dropped silently). The
estimate is always candidate - baseline:

- binary, one 0/1 value per item on both arms: the difference of pass rates with Newcombe's
  paired interval (method 10) and the exact McNemar test on the discordant pairs;
- otherwise (scores, lengths, repeated binary items): the mean paired difference with a
  paired bootstrap interval and the Wilcoxon signed-rank test (Pratt's zeros);
- ``p_holm``: Holm's step-down adjustment across the scorers compared (the family), and the
  same per category (``by_category``, adjusted within each category).

Which arm is which: ``judge.baseline`` / ``judge.candidate`` from the run's config when set,
else the first hosted-API arm (``openai``, ``sim_cloud``) is the baseline (else the first
arm) and the first self-hosted arm (``vllm``, ``sim_vllm``) that is not the baseline is the
candidate (else the next arm).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from harness.analysis.data import RunData
from harness.analysis.paired import (
    align_pairs,
    holm,
    mcnemar_exact,
    paired_bootstrap_mean_diff,
    paired_proportion_diff_ci,
    wilcoxon_signed_rank,
)
from harness.analysis.stats import wilson_ci
from harness.quality.score import ScoreError, Scores, scores_for
from harness.quality.scorers import SCORERS

#: Keys of the ``quality`` object that are not arm names.
RESERVED_KEYS = ("comparison", "info", "llm_judge")


def _f(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def t_interval(values: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """``mean +- t_{n-1, (1+c)/2} * s / sqrt(n)``; (None, None) below 2 values."""
    n = values.size
    if n < 2:
        return None, None
    m = float(values.mean())
    s = float(values.std(ddof=1))
    if s == 0:
        return m, m
    h = float(sps.t.ppf((1 + confidence) / 2, n - 1)) * s / math.sqrt(n)
    return m - h, m + h


def _is01(v: np.ndarray) -> bool:
    return bool(np.all((v == 0) | (v == 1)))


def arm_stats(kind: str, values: np.ndarray, confidence: float) -> dict[str, Any]:
    """Per-item values of one arm and scorer -> ``n``, ``rate`` or ``mean``, ``ci``."""
    n = int(values.size)
    out: dict[str, Any] = {"n": n}
    if n == 0:
        out.update({"ci": [None, None], "ci_method": None})
        out["rate" if kind == "binary" else "mean"] = None
        return out
    mean = float(values.mean())
    if kind == "binary" and _is01(values):
        k = int(values.sum())
        lo, hi = wilson_ci(k, n, confidence)
        out.update({"rate": mean, "passed": k, "ci": [_f(lo), _f(hi)], "ci_method": "wilson"})
    else:
        lo, hi = t_interval(values, confidence)
        key = "rate" if kind == "binary" else "mean"
        out.update({key: mean, "ci": [_f(lo), _f(hi)], "ci_method": "t"})
        if kind == "length":
            out["median"] = float(np.median(values))
    return out


def paired_comparison(
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    confidence: float,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Candidate ``y`` vs baseline ``x`` (aligned per item): estimate, CI, test, p."""
    n = int(x.size)
    out: dict[str, Any] = {"n_pairs": n, "baseline_value": _f(x.mean()) if n else None,
                           "candidate_value": _f(y.mean()) if n else None}  # fmt: skip
    if n == 0:
        out.update({"estimate": None, "ci": [None, None], "test": None, "p": None})
        return out
    if kind == "binary" and _is01(x) and _is01(y):
        xb, yb = x.astype(bool), y.astype(bool)
        n11, n10 = int((xb & yb).sum()), int((xb & ~yb).sum())
        n01, n00 = int((~xb & yb).sum()), int((~xb & ~yb).sum())
        est, lo, hi = paired_proportion_diff_ci(n11, n10, n01, n00, confidence)
        out.update({
            "estimate": _f(est), "ci": [_f(lo), _f(hi)], "ci_method": "newcombe_paired",
            "test": "mcnemar_exact", "p": _f(mcnemar_exact(n10, n01)),
            "discordant": {"baseline_only": n10, "candidate_only": n01},
        })  # fmt: skip
        return out
    est, lo, hi = paired_bootstrap_mean_diff(x, y, confidence, resamples, seed)
    out.update({
        "estimate": _f(est), "ci": [_f(lo), _f(hi)], "ci_method": "paired_bootstrap",
        "test": "wilcoxon_signed_rank", "p": _f(wilcoxon_signed_rank(x, y)),
    })  # fmt: skip
    return out


def pick_arms(
    arms: list[str], kinds: dict[str, str | None], judge: dict[str, Any] | None = None
) -> tuple[str | None, str | None, str]:
    """``(baseline, candidate, source)``: the canary judge's choice
    (:func:`harness.judge.settings.pick_arms`: ``judge.baseline`` / ``judge.candidate`` when
    set, else the first hosted-API arm and the first self-hosted arm), so the quality
    comparison and the verdict always compare the same two arms; ``(first arm, None)`` when
    fewer than two arms can be told apart."""
    from harness.config import ConfigError
    from harness.judge.settings import JudgeConfig
    from harness.judge.settings import pick_arms as judge_pick

    judge = judge or {}
    base, cand = judge.get("baseline"), judge.get("candidate")
    source = "config" if base or cand else "default"
    try:
        b, c = judge_pick(JudgeConfig(baseline=base, candidate=cand),
                          {a: kinds.get(a) for a in arms})  # fmt: skip
    except ConfigError:
        return (arms[0] if arms else None), None, source
    return b, c, source


def _categories(scores: Scores, arm: str, scorer: str) -> dict[str, str]:
    """sample_id -> category for one arm's rows of one scorer."""
    import pyarrow.compute as pc

    t = scores.table
    sub = t.filter(pc.and_(pc.equal(t.column("arm"), arm), pc.equal(t.column("scorer"), scorer)))
    return dict(zip(sub.column("sample_id").to_pylist(), sub.column("category").to_pylist(),
                    strict=True))  # fmt: skip


def summarize(
    scores: Scores,
    arms: list[str],
    baseline: str | None,
    candidate: str | None,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``quality`` summary from a scores table (pure: see the module docstring)."""
    from harness.quality.score import item_values

    table = scores.table
    present = set(table.column("scorer").to_pylist()) if table.num_rows else set()
    scorer_names = [s for s in SCORERS if s in present]
    scored_arms = set(table.column("arm").to_pylist()) if table.num_rows else set()
    all_arms = [a for a in arms if a in scored_arms or a in scores.counts]
    all_arms += sorted((scored_arms | set(scores.counts)) - set(all_arms))
    out: dict[str, Any] = {}
    per_item: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    cats: dict[str, str] = {}
    for arm in all_arms:
        counts = scores.counts.get(arm)
        block: dict[str, Any] = {}
        for name in scorer_names:
            sc = SCORERS[name]
            ids, vals, info = item_values(table, arm, name)
            per_item[(arm, name)] = (ids, vals)
            c = _categories(scores, arm, name)
            cats.update(c)
            entry = {"kind": sc.kind, "better": sc.better, **arm_stats(sc.kind, vals, confidence),
                     **info, "unanswered": counts.unanswered if counts else None}  # fmt: skip
            by_cat = {}
            cat_of = np.asarray([c.get(i, "") for i in ids], dtype=object)
            for cat in sorted(set(cat_of.tolist())):
                by_cat[cat] = arm_stats(sc.kind, vals[cat_of == cat], confidence)
            entry["by_category"] = by_cat
            block[name] = entry
        if arm in RESERVED_KEYS:
            continue  # cannot sit beside comparison/info; the note below says so
        out[arm] = block
    info: dict[str, Any] = {
        "unit": "item (sample_id); an item scored several times counts once, with its mean",
        "confidence": confidence,
        "scorers": scorer_names,
        "arms": {
            a: (scores.counts[a].as_dict() if a in scores.counts else None) for a in all_arms
        },  # fmt: skip
        "baseline": baseline,
        "candidate": candidate,
        "notes": list(scores.notes),
        "scores_file": "scores/scores.parquet",
        "rows": scores.n_rows,
    }
    clash = [a for a in all_arms if a in RESERVED_KEYS]
    if clash:
        info["notes"].append(
            f"arm(s) {clash} share a name with a reserved key of the quality section: their "
            "per-arm figures are left out (rename the arm)"
        )
    out["info"] = info
    out["comparison"] = _comparison(per_item, cats, scorer_names, baseline, candidate,
                                    confidence, resamples, seed)  # fmt: skip
    return out


def _comparison(
    per_item: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    cats: dict[str, str],
    scorer_names: list[str],
    baseline: str | None,
    candidate: str | None,
    confidence: float,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    if baseline is None or candidate is None or baseline == candidate:
        return {}
    comp: dict[str, Any] = {}
    for name in scorer_names:
        sc = SCORERS[name]
        ids_x, vx = per_item.get((baseline, name), (np.empty(0, str), np.empty(0)))
        ids_y, vy = per_item.get((candidate, name), (np.empty(0, str), np.empty(0)))
        ia, ib, ua, ub = align_pairs(ids_x, ids_y)
        x, y = vx[ia], vy[ib]
        entry = {"kind": sc.kind, "better": sc.better, "baseline": baseline,
                 "candidate": candidate, "aligned_on": "sample_id",
                 **paired_comparison(sc.kind, x, y, confidence=confidence,
                                     resamples=resamples, seed=seed),
                 "unmatched_baseline": ua, "unmatched_candidate": ub}  # fmt: skip
        cat_of = np.asarray([cats.get(i, "") for i in ids_x[ia]], dtype=object)
        entry["by_category"] = {
            cat: paired_comparison(sc.kind, x[cat_of == cat], y[cat_of == cat],
                                   confidence=confidence, resamples=resamples, seed=seed)
            for cat in sorted(set(cat_of.tolist()))
        }  # fmt: skip
        comp[name] = entry
    _holm(list(comp.values()))
    cats_all = sorted({c for e in comp.values() for c in e["by_category"]})
    for cat in cats_all:
        _holm([e["by_category"][cat] for e in comp.values() if cat in e["by_category"]])
    return comp


def _holm(entries: list[dict[str, Any]]) -> None:
    ps = [e["p"] if e.get("p") is not None else math.nan for e in entries]
    for e, adj in zip(entries, holm(ps), strict=True):
        e["p_holm"] = _f(adj)


def quality_section(data: RunData, summary: dict[str, Any]) -> dict[str, Any] | None:
    """Report section ``quality``: None when the run has no reference answers; ``{"error":
    message}`` when it has but cannot be scored (output text not recorded)."""
    run_dir = Path(data.run_dir)
    try:
        scores = scores_for(data)  # a day's view: that day's rows only
    except ScoreError as exc:
        return {"error": str(exc)}
    if scores is None:
        return None
    kinds = {a: (data.arm_info.get(a) or {}).get("kind") for a in data.arms}
    judge = (data.manifest.get("config") or {}).get("judge")
    base, cand, source = pick_arms(
        list(data.arms), kinds, judge if isinstance(judge, dict) else None
    )
    b = data.bootstrap()
    out = summarize(scores, list(data.arms), base, cand, confidence=b.confidence,
                    resamples=b.resamples, seed=b.seed)  # fmt: skip
    out["info"]["arms_from"] = source
    from harness.quality.llm_judge import read_judge, summarize_judge

    jt = read_judge(run_dir)  # written by `harness score --llm-judge` (optional)
    if jt is not None:
        cat = ((data.manifest.get("config") or {}).get("pricing") or {}).get("catalog_file")
        out["llm_judge"] = summarize_judge(jt, confidence=b.confidence, resamples=b.resamples,
                                           seed=b.seed, catalog_file=cat)  # fmt: skip
    return out
