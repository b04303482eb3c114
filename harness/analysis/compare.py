"""Comparisons of two samples of every latency metric: p50/p99 differences and shift functions.

For each metric: ``diff(q) = Q_other(q) - Q_baseline(q)`` with a bootstrap CI at the median,
p99 and every decile (the shift function of Rousselet, Pernet & Wilcox 2017). A positive
difference means ``other`` is slower. Used arm-vs-arm within a run (baseline = the first
arm, :func:`compare_arms`) and run-vs-run for one arm (``harness.report.compare_runs``).

Which bootstrap:

- **Mirrored runs** (every logical request sent to every arm, rows sharing ``pair_id``): the
  headline metrics (:data:`HEADLINE_METRICS`, one value per logical request) are compared
  *per pair*. Logical requests are aligned on ``pair_id`` (unmatched ones counted, never
  dropped silently), put in arrival order, and resampled as pairs in circular blocks over
  time (:func:`harness.analysis.paired.paired_quantile_diff_arrays`, block length
  :func:`harness.analysis.paired.auto_block_len`): the pairing removes the load both arms
  shared, the blocks keep the autocorrelation of load that builds and drains.
- Otherwise (independent pairing, and the per-attempt metrics of any run): independent-sample
  bootstrap (seeded; :func:`harness.analysis.stats.bootstrap_quantile_diff_ci`). ITL resamples
  requests, not gaps (cluster bootstrap,
  :func:`harness.analysis.stats.cluster_quantile_diff_ci`): the gaps of one request are
  correlated.

**Multiplicity.** The headline makes one claim per headline metric, quantile (p50, p99) and
arm pair: a family of ``m = len(HEADLINE_METRICS) * 2 * (arms - 1)`` claims. Every interval of
the comparison is computed at ``1 - alpha / m`` (Bonferroni), and a claim ("X is faster") is
made only when that interval excludes 0, so the chance that *any* headline line claims a
difference that is not there is at most ``alpha`` (``family_size``,
``adjusted_confidence`` in the summary). Measured on A/A runs (tests/analysis/
test_aa_comparison.py): before, 27% (i.i.d.) and 60% (autocorrelated load) of A/A runs made a
claim; now at most 5%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from harness.analysis.data import RunData
from harness.analysis.latency import itl_clusters, sorted_values
from harness.analysis.metrics import ITL_KEY
from harness.analysis.paired import align_pairs, auto_block_len, paired_quantile_diff_arrays
from harness.analysis.requests import logical_requests
from harness.analysis.stats import (
    DECILES,
    BootstrapSettings,
    ClusteredSample,
    bootstrap_quantile_diff_ci,
    cluster_quantile_diff_ci,
    sorted_quantiles,
)

#: Headline quantiles of a comparison, with their keys.
HEADLINE = (("p50", 0.5), ("p99", 0.99))
#: Headline metrics: what the user lived through per logical request (retries and backoffs
#: included) and the per-token pace. ITL is per chunk, and hosted APIs batch several tokens
#: per chunk, so it is shown in the tables with tokens per chunk, not in the headline.
HEADLINE_METRICS = ("request_ttft_s", "tpot_s", "request_e2e_s")
#: Per-logical-request field (:class:`harness.analysis.requests.LogicalRequests`) of each
#: headline metric: the values a mirrored run pairs on ``pair_id``.
PAIRED_FIELDS = {"request_ttft_s": "ttft_s", "tpot_s": "tpot_s", "request_e2e_s": "e2e_s"}


@dataclass(frozen=True)
class PairedSample:
    """One metric of two arms, aligned on ``pair_id``: ``baseline[i]`` and ``other[i]`` are
    the same logical request, in arrival order; ``+inf`` = failed (censored). The unmatched
    counts are requests of one arm whose pair is missing (or not measurable) on the other."""

    baseline: np.ndarray
    other: np.ndarray
    unmatched_baseline: int = 0
    unmatched_other: int = 0


def family_size(n_arms: int) -> int:
    """Claims in the headline family: metrics x quantiles x arm pairs (>= 1)."""
    return max(1, len(HEADLINE_METRICS) * len(HEADLINE) * max(0, n_arms - 1))


def adjusted_settings(settings: BootstrapSettings, m: int) -> BootstrapSettings:
    """``settings`` at the Bonferroni level ``1 - (1 - confidence) / m`` for a family of m."""
    return replace(settings, confidence=1 - (1 - settings.confidence) / max(1, m))


def headline_claims(pair: dict[str, Any]) -> list[tuple[str, str]]:
    """The (metric, quantile) headline lines of one compared pair that claim a difference:
    an interval excluding 0, or one side's quantile censored while the other's is not."""
    out = []
    for key in HEADLINE_METRICS:
        e = pair["metrics"].get(key)
        for q, _ in HEADLINE:
            if e is not None and (e[q]["significant"] or e[q].get("slower")):
                out.append((key, q))
    return out


#: Stand-in for a censored value (+inf) inside the difference bootstrap; a bound that reaches
#: it is reported as unbounded (+-inf, null in JSON).
_CENSORED_STANDIN = 1e12


def _standin(v: np.ndarray) -> np.ndarray:
    return np.where(np.isposinf(v), _CENSORED_STANDIN, v) if v.size and v[-1] == np.inf else v


def _unbounded(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bounds that only a censored stand-in can produce become +-inf: a difference of two
    quantiles of finite values never exceeds the span of the finite values of both sides."""
    fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
    if not fa.size or not fb.size:
        return x
    span = max(fa.max(), fb.max()) - min(fa.min(), fb.min())
    x = np.where(x > span, np.inf, x)
    return np.where(x < -span, -np.inf, x)


def compare_samples(
    baseline: dict[str, np.ndarray],
    other: dict[str, np.ndarray],
    settings: BootstrapSettings,
    clusters: dict[str, tuple[ClusteredSample, ClusteredSample]] | None = None,
    paired: dict[str, PairedSample] | None = None,
) -> dict[str, Any]:
    """``{"metrics": {metric: {p50|p99: {baseline, other, diff, ratio, ci, significant}}},
    "shift": {metric: [{q, baseline, other, diff, ci}]}}`` for the metrics in both dicts.

    Inputs are value arrays per metric (any order; NaN ignored). ``clusters``: for a metric
    whose values come in correlated clusters (ITL), the (baseline, other) samples of whole
    clusters; its CIs then come from the cluster bootstrap (point estimates still from the
    value arrays). ``paired``: for a metric measured on the same logical requests by both
    sides (a mirrored run), the aligned arrays; its quantiles and CI then come from them, by
    the paired circular-block bootstrap (entry keys ``n_pairs``, ``unmatched_baseline``,
    ``unmatched_other``, ``block_len``; ``ci_method`` ``paired-block`` or ``paired``).
    Every CI is at ``settings.confidence`` (pass :func:`adjusted_settings` for a family).

    Censored values (``+inf``: timeouts, requests never answered, see
    :mod:`harness.analysis.metrics`) take part: where a quantile of one side is censored the
    entry's ``censored`` names that side (``baseline``, ``other`` or ``both``), ``diff`` is
    not a number (null), and ``slower`` names the censored side when only one is censored
    *and* the interval excludes 0 towards it (a censored quantile is longer than anything
    observed, but one failed request too many can censor a p99 by chance: the claim needs
    the same evidence as any other); a CI bound reached through censored values is
    unbounded (null)."""
    qs = [q for _, q in HEADLINE] + list(DECILES)
    metrics: dict[str, Any] = {}
    shift: dict[str, Any] = {}
    for key in baseline:
        if key not in other:
            continue
        extra: dict[str, Any] = {}
        if paired and key in paired:
            ps = paired[key]
            a, b = np.sort(ps.baseline), np.sort(ps.other)
            qa, qb = sorted_quantiles(a, qs), sorted_quantiles(b, qs)
            bl = auto_block_len(ps.baseline, ps.other)
            diff, lo, hi, method = paired_quantile_diff_arrays(
                ps.baseline, ps.other, qs, settings.confidence, settings.resamples,
                settings.seed, block_len=bl,
            )  # fmt: skip
            extra = {"n_pairs": int(a.size), "unmatched_baseline": ps.unmatched_baseline,
                     "unmatched_other": ps.unmatched_other, "block_len": bl}  # fmt: skip
        else:
            a, b = _sorted(baseline[key]), _sorted(other[key])
            qa, qb = sorted_quantiles(a, qs), sorted_quantiles(b, qs)
            if clusters and key in clusters and a.size and b.size:
                ca, cb = clusters[key]
                diff = qb - qa
                lo, hi, method = cluster_quantile_diff_ci(ca, cb, qs, settings, centres=(qa, qb))
            else:
                diff, lo, hi, method = bootstrap_quantile_diff_ci(
                    _standin(a), _standin(b), qs, settings, presorted=True
                )
                lo, hi = _unbounded(lo, a, b), _unbounded(hi, a, b)
        entry: dict[str, Any] = {"n_baseline": int(a.size), "n_other": int(b.size)}
        entry["ci_method"] = method
        entry.update(extra)
        for i, (name, _) in enumerate(HEADLINE):
            entry[name] = _point(qa[i], qb[i], diff[i], lo[i], hi[i])
        metrics[key] = entry
        off = len(HEADLINE)
        shift[key] = [
            {"q": q, **_point(qa[off + i], qb[off + i], diff[off + i], lo[off + i], hi[off + i])}
            for i, q in enumerate(DECILES)
        ]
    return {"metrics": metrics, "shift": shift}


def _sorted(v: np.ndarray) -> np.ndarray:
    """Sorted values without NaN; ``+inf`` (censored) kept at the end."""
    v = np.asarray(v, dtype=np.float64)
    keep = ~np.isnan(v) & (v != -np.inf)
    if not keep.all():
        v = v[keep]
    if v.size > 1 and not np.all(v[1:] >= v[:-1]):
        v = np.sort(v)
    return v


def _point(a: float, b: float, d: float, lo: float, hi: float) -> dict[str, Any]:
    cens_a, cens_b = a == math.inf, b == math.inf
    out: dict[str, Any] = {"baseline": float(a), "other": float(b)}
    if cens_a or cens_b:
        # one side censored: it is called slower only when the interval (computed with the
        # censored stand-in) excludes 0 in that direction, as for any other claim
        side = "both" if cens_a and cens_b else ("baseline" if cens_a else "other")
        shown = (side == "other" and lo > 0) or (side == "baseline" and hi < 0)
        ci = [float(lo), float(hi)] if side != "both" else [math.nan, math.nan]
        return out | {"diff": math.nan, "ratio": math.nan, "ci": ci, "significant": False,
                      "censored": side, "slower": side if shown else None}  # fmt: skip
    ratio = float(b / a) if a and math.isfinite(a) and math.isfinite(b) else math.nan
    significant = bool(not math.isnan(lo) and not math.isnan(hi) and (lo > 0 or hi < 0))
    slower = ("other" if lo > 0 else "baseline") if significant else None
    return out | {
        "diff": float(d),
        "ratio": ratio,
        "ci": [float(lo), float(hi)],
        "significant": significant,
        "censored": None,
        "slower": slower,
    }


def arm_values(data: RunData, arm: str) -> dict[str, np.ndarray]:
    """Every latency metric's sorted values for one arm (ITL: the pooled sample); cached."""
    return sorted_values(data, data.arms.index(arm), None)


def arm_clusters(data: RunData, arm: str) -> ClusteredSample:
    """The sample of whole requests (ITL gaps) of one arm, for cluster-bootstrap CIs."""
    return itl_clusters(data, data.arms.index(arm), None)


def mirrored_pairs(data: RunData, base: str, arm: str) -> dict[str, PairedSample]:
    """The headline metrics of two arms aligned on ``pair_id``, in arrival order (empty when
    the run is not mirrored: no logical request of both arms shares a ``pair_id``).

    One value per logical request (:func:`harness.analysis.requests.logical_requests`:
    failed ones ``+inf``, censored). Requests the harness cancelled, and values that were not
    measurable (TPOT of a one-chunk or failed answer), leave their pair out; the unmatched
    counts say how many requests of each arm have no usable partner."""
    lr = logical_requests(data)
    if lr.n == 0 or data.pair.size == 0:
        return {}
    ia_all = np.flatnonzero(lr.arm == data.arms.index(base))
    ib_all = np.flatnonzero(lr.arm == data.arms.index(arm))
    pa, pb = data.pair[lr.first[ia_all]], data.pair[lr.first[ib_all]]
    ia_all, ib_all = ia_all[pa >= 0], ib_all[pb >= 0]
    if not ia_all.size or not ib_all.size:
        return {}
    dup_a, dup_b = _first_per_pair(data, lr.first, ia_all), _first_per_pair(data, lr.first, ib_all)
    ia_all, ib_all = ia_all[dup_a], ib_all[dup_b]
    extra_a, extra_b = int((~dup_a).sum()), int((~dup_b).sum())
    out: dict[str, PairedSample] = {}
    for key, field in PAIRED_FIELDS.items():
        v = getattr(lr, field)
        ia = ia_all[~np.isnan(v[ia_all])]
        ib = ib_all[~np.isnan(v[ib_all])]
        ja, jb, un_a, un_b = align_pairs(data.pair[lr.first[ia]], data.pair[lr.first[ib]])
        if not ja.size:
            return {}
        ra, rb = ia[ja], ib[jb]
        order = np.argsort(lr.t_arrival[ra], kind="stable")
        ra, rb = ra[order], rb[order]
        out[key] = PairedSample(v[ra], v[rb], un_a + extra_a, un_b + extra_b)
    return out


def _first_per_pair(data: RunData, first_rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mask over ``idx`` keeping the earliest logical request of each ``pair_id`` (a pair id
    seen twice on one arm cannot be paired unambiguously; the others count as unmatched)."""
    codes = data.pair[first_rows[idx]]
    order = np.lexsort((data.cols["t_scheduled"][first_rows[idx]], codes))
    keep = np.zeros(idx.size, bool)
    sc = codes[order]
    keep[order[np.r_[True, sc[1:] != sc[:-1]]]] = True
    return keep


def compare_arms(data: RunData) -> dict[str, Any]:
    """``{"baseline": arm, "family_size", "confidence", "adjusted_confidence",
    "pairs": [{"baseline", "other", "paired", "metrics", "shift"}]}``.

    The baseline is the first arm (manifest order); every other arm is compared with it.
    Every CI is at the Bonferroni-adjusted level of the headline family (see the module
    docstring). ``paired``: the headline metrics were compared per ``pair_id`` (mirrored
    run). Fewer than two arms gives ``{"baseline": arm or None, "pairs": []}`` (with the
    family fields).
    """
    settings = data.bootstrap()
    m = family_size(len(data.arms))
    adjusted = adjusted_settings(settings, m)
    head = {"family_size": m, "confidence": settings.confidence,
            "adjusted_confidence": adjusted.confidence}  # fmt: skip
    if not data.arms:
        return {"baseline": None, **head, "pairs": []}
    base = data.arms[0]
    base_vals = arm_values(data, base)
    base_clusters = arm_clusters(data, base)
    pairs = []
    for arm in data.arms[1:]:
        clusters = {ITL_KEY: (base_clusters, arm_clusters(data, arm))}
        paired = mirrored_pairs(data, base, arm)
        res = compare_samples(base_vals, arm_values(data, arm), adjusted, clusters, paired)
        pairs.append({"baseline": base, "other": arm, "paired": bool(paired),
                      "confidence": adjusted.confidence, **res})  # fmt: skip
    return {"baseline": base, **head, "pairs": pairs}
