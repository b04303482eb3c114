"""Report sections: each one computes a top-level ``summary.json`` key and renders it.

A :class:`Section` bundles ``compute`` (RunData + summary so far -> JSON-able value),
``plots``, ``html`` and ``memo`` functions. :data:`SECTIONS` is the ordered list
:func:`harness.report.build_report` walks; a later stage (cost, quality, canary verdict,
daily) adds its section by appending a :class:`Section` (see :func:`register_section`), not
by editing the builder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from harness.analysis.checks import run_checks
from harness.analysis.compare import HEADLINE_METRICS, compare_arms
from harness.analysis.data import RunData
from harness.analysis.errors import errors_summary
from harness.analysis.goodput import goodput_summary
from harness.analysis.latency import latency_by_slice, latency_over_time, latency_summary
from harness.analysis.metrics import METRIC_LABELS
from harness.analysis.server import server_summary
from harness.analysis.stats import BOOTSTRAP_MAX_N
from harness.analysis.throughput import throughput_summary
from harness.report import fmt
from harness.report import html as h
from harness.report.markdown import md_escape, md_table
from harness.report.plots import (
    PlotRef,
    PlotWriter,
    plot_cdfs,
    plot_errors,
    plot_latency_over_time,
    plot_server,
    plot_shift,
    plot_throughput,
)

Summary = dict[str, Any]


@dataclass(frozen=True)
class Section:
    """One part of the report. Only ``key``, ``title`` and ``compute`` are required."""

    key: str
    title: str
    compute: Callable[[RunData, Summary], Any]
    plots: Callable[[RunData, Summary, PlotWriter], list[PlotRef | None]] | None = None
    html: Callable[[Summary, list[PlotRef]], list[Any]] | None = None
    memo: Callable[[Summary], list[str]] | None = None
    memo_rank: int = 50  # memo order (lower first); HTML follows SECTIONS order


# ---------------------------------------------------------------- helpers shared by sections

#: Headline comparisons (HEADLINE_METRICS, imported from harness.analysis.compare, which
#: sizes the multiplicity family from it): per logical request and the per-token pace.
TABLE_METRICS = (
    "request_ttft_s",
    "request_e2e_s",
    "ttft_s",
    "tpot_s",
    "itl_s",
    "e2e_s",
    "queue_delay_s",
    "ttft_sched_s",
    "e2e_sched_s",
)


def _ci(stats: dict[str, Any], key: str) -> str:
    """One CI as text. A bound that is not estimable at this sample size (order-statistic
    CI of a tail quantile from too few values: NaN, null in JSON; the key is listed in
    ``ci_not_estimable``) reads ``not estimable``; no CI at all (too few values) ``n/a``."""
    ci = (stats.get("ci") or {}).get(key)
    if not ci or stats.get("ci_method") in (None, "none"):
        return fmt.ci_seconds(ci)
    listed = key in (stats.get("ci_not_estimable") or ())
    censored = key in (stats.get("ci_censored") or ())
    nan = any(isinstance(v, float) and math.isnan(v) for v in ci)
    if not (listed or nan or censored):
        return fmt.ci_seconds(ci)

    def one(v: Any, i: int) -> str:
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            return fmt.seconds(v)
        if isinstance(v, float) and v == math.inf:  # an order statistic among censored values
            return "censored"
        return "censored" if censored and i == 1 and not listed else "not estimable"

    lo, hi = (one(v, i) for i, v in enumerate(ci))
    return "not estimable" if lo == hi == "not estimable" else f"{lo} to {hi}"


def q_text(stats: dict[str, Any], key: str) -> str:
    """One quantile for a table: its value, or ``censored`` when it falls among censored
    values (timeouts, requests never answered)."""
    if key in (stats.get("censored") or ()):
        return "censored"
    return fmt.seconds(stats.get(key))


def censored_text(stats: dict[str, Any]) -> str:
    """Share of censored values of one metric (``0`` when none)."""
    n = stats.get("censored_n") or 0
    return f"{fmt.num(n)} ({fmt.pct(stats.get('censored_share'))})" if n else "0"


def comparison_sentence(pair: dict[str, Any], metric: str, q: str, confidence: float) -> str:
    """One plain-text headline line: which side is faster at quantile ``q``, by how much, CI.

    The CI's level is the pair's own (``pair["confidence"]``: the multiplicity-adjusted
    level of the headline family) when present, else ``confidence``."""
    confidence = float(pair.get("confidence") or confidence)
    e = pair["metrics"].get(metric)
    label = f"{METRIC_LABELS.get(metric, metric)} {q}"
    base, other = str(pair["baseline"]), str(pair["other"])
    if e is None:
        return f"{label}: not compared."
    if e["n_baseline"] == 0 or e["n_other"] == 0:
        empty = base if e["n_baseline"] == 0 else other
        return f"{label}: not comparable, {empty} has no successful requests with this metric."
    x = e[q]
    d, ci = x["diff"], x["ci"]
    level = f"{_pct_level(confidence)} CI"
    if x.get("censored"):
        side = x["censored"]
        if side == "both":
            return f"{label}: censored in both arms (timeouts or failures reach this quantile)."
        slow = base if side == "baseline" else other
        fast = other if side == "baseline" else base
        known = x["other"] if side == "baseline" else x["baseline"]
        if not x.get("slower"):  # censored, but not shown to be slower at this level
            return (f"{label}: no clear difference: {slow}'s {q} is censored (timeouts or "
                    f"failed requests reach it), {fast} {fmt.seconds(known)}, but the "
                    f"{_pct_level(confidence)} CI of the difference "
                    f"({_diff_ci_text(x['ci'])}) includes zero.")  # fmt: skip
        return (f"{label}: {slow} is slower: its {q} is censored (timeouts or failed requests "
                f"reach it), {fast} {fmt.seconds(known)}.")  # fmt: skip
    values = f"{other} {fmt.seconds(x['other'])} vs {base} {fmt.seconds(x['baseline'])}"
    ci_txt = f"{level} of the difference {_diff_ci_text(ci)}"
    if not x["significant"] and not all(isinstance(v, float) and math.isfinite(v) for v in ci):
        return f"{label}: {values} (difference {fmt.seconds(d, True)}; too few requests for a CI)."
    if not x["significant"]:
        return f"{label}: no clear difference, {values} ({ci_txt} includes zero)."
    faster, slower = (other, base) if d < 0 else (base, other)
    ratio = x["ratio"]
    times = ""
    if isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0:
        r = 1 / ratio if d < 0 else ratio
        times = f", {r:.2f}x"
    return f"{label}: {faster} is faster than {slower} by {fmt.seconds(abs(d))}{times} ({values}; {ci_txt})."


def _pct_level(confidence: float) -> str:
    """``95%``, ``99.2%``: a confidence level with the digits it needs (at most one decimal)."""
    x = round(100 * confidence, 1)
    return f"{x:g}%"


def family_sentence(comparison: dict[str, Any]) -> str:
    """How the headline family is corrected for multiplicity (empty for older summaries)."""
    m, adj = comparison.get("family_size"), comparison.get("adjusted_confidence")
    conf = comparison.get("confidence")
    if not m or adj is None or conf is None:
        return ""
    paired = [p for p in comparison.get("pairs") or () if p.get("paired")]
    how = (
        "Mirrored run: the headline metrics are compared per logical request (aligned on "
        "pair_id) with a paired bootstrap in circular blocks over arrival time. "
        if paired
        else "Independent pairing: each arm is resampled on its own (unpaired bootstrap). "
    )
    return (
        f"{how}Every interval is at {_pct_level(adj)} (Bonferroni over the {m} headline "
        f"claims), so the chance that any headline line claims a difference that is not "
        f"there is at most {_pct_level(1 - conf)}."
    )


def headline_sentences(pairs: list[dict[str, Any]], confidence: float) -> list[str]:
    """:func:`comparison_sentence` for every pair, headline metric and p50/p99, in order."""
    return [
        comparison_sentence(p, k, q, confidence)
        for p in pairs
        for k in HEADLINE_METRICS
        for q in ("p50", "p99")
    ]


# ---------------------------------------------------------------- run


def offered_text(off: dict[str, Any]) -> str:
    """Plain text of the offered load: mode, base rate and, when not flat, shape/arrival."""
    txt = f"{off.get('mode') or '?'} at {fmt.num(off.get('rate'))} req/s per arm"
    extra = []
    if off.get("shape") not in (None, "none"):
        extra.append(f"shape {off['shape']}")
    if off.get("arrival") == "trace":
        extra.append("trace replay")
    return txt + (f" ({', '.join(extra)}; see Throughput for the offered mean)" if extra else "")


def _run_compute(data: RunData, summary: Summary) -> dict[str, Any]:
    m = data.manifest
    lo, hi = data.window()
    a = data.analysis
    return {
        "status": m.get("status"),
        "started_at": m.get("started_at"),
        "ended_at": m.get("ended_at"),
        "manifest_duration_s": m.get("duration_s"),
        "analysed_window_s": [lo, hi],
        "analysed_duration_s": data.duration_s(),
        "arm_windows_s": {a: list(data.arm_window(a)) for a in data.arms},
        "t0_utc_ns": data.t0_ns,
        "rows": data.n_rows,
        "phases": list(a.include_phases),
        "offered": data.offered(),
        "sweep": m.get("sweep"),
        "slo": asdict(a.slo),
        "statistics": {
            "confidence": a.confidence,
            "bootstrap_resamples": a.bootstrap_resamples,
            "bootstrap_max_n": BOOTSTRAP_MAX_N,
            "quantile_ci_method": "distribution-free order-statistic (binomial) interval, "
            "equal-tailed; a bound that cannot exist at the sample size is not estimable",
            "bootstrap_method": "mean and differences: percentile; scipy.stats.bootstrap up to "
            "bootstrap_max_n values, order-statistic bootstrap beyond (same distribution)",
            "seed": a.seed,
            "itl_bootstrap": "cluster bootstrap over requests (gaps of one request are "
            "correlated); past a cap, a uniform sample of requests rescaled by sqrt(m/n)",
            "quantile_method": "linear (numpy default, Hyndman-Fan type 7)",
        },
        "slices": list(data.slices),
    }


def _run_html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    run = s["run"]
    rows = []
    checked = (s.get("checks") or {}).get("arms") or {}
    for arm, info in s["arms"].items():
        th = s["throughput"].get(arm, {})
        er = s["errors"].get(arm, {})
        rows.append(
            [
                arm,
                info.get("kind", ""),
                info.get("model", ""),
                ", ".join(checked.get(arm, {}).get("clients") or []) or "unknown",
                fmt.num(er.get("requests", 0)),
                fmt.num(th.get("requests_ok", 0)),
                fmt.num(er.get("errors", 0)),
            ]
        )
    slo = run["slo"]
    off = run["offered"]
    return [
        h.table(["arm", "kind", "model", "client", "requests", "ok", "errors"], rows),
        h.p(
            f"Status {run['status'] or 'unknown'}; phases analysed: {', '.join(run['phases'])}; "
            f"analysed duration {fmt.seconds(run['analysed_duration_s'])}; offered load "
            f"{offered_text(off)} (concurrency {fmt.num(off.get('concurrency'))})."
        ),
        h.p(
            f"SLO: TTFT {fmt.bound(slo['ttft_s'])}, TPOT {fmt.bound(slo['tpot_s'])}, "
            f"E2E {fmt.bound(slo['e2e_s'])}. Statistics: {run['statistics']['confidence']:.0%} "
            "CIs; a quantile's CI is the distribution-free order-statistic (binomial) "
            "interval ('not estimable' where the sample is too small for a bound to exist); "
            f"means and differences use the percentile bootstrap "
            f"({run['statistics']['bootstrap_resamples']} resamples, seed "
            f"{run['statistics']['seed']}). ITL CIs resample requests, not gaps (cluster "
            "bootstrap)."
        ),
    ]


# ---------------------------------------------------------------- latency


def _latency_plots(data: RunData, s: Summary, w: PlotWriter) -> list[PlotRef | None]:
    from harness.analysis.compare import arm_values

    values = {arm: arm_values(data, arm) for arm in data.arms}
    seed = int(data.analysis.seed)
    return [
        plot_cdfs(
            values,
            ("request_ttft_s", "request_e2e_s", "ttft_s", "tpot_s", "itl_s", "e2e_s"),
            w,
            seed=seed,
        ),
        plot_cdfs(
            values,
            ("ttft_sched_s", "e2e_sched_s", "queue_delay_s"),
            w,
            name="latency_cdf_scheduled",
            title="From-scheduled latency and client queue delay (CDF)",
            seed=seed,
        ),
    ]


def _latency_rows(lat: dict[str, Any], metrics=TABLE_METRICS) -> list[list[Any]]:
    rows = []
    for arm, per in lat.items():
        for key in metrics:
            st = per.get(key)
            if st is None:
                continue
            rows.append(
                [
                    arm,
                    METRIC_LABELS.get(key, key),
                    fmt.num(st["n"]),
                    censored_text(st),
                    fmt.seconds(st["mean"]),
                    q_text(st, "p50"),
                    q_text(st, "p90"),
                    q_text(st, "p95"),
                    q_text(st, "p99"),
                    q_text(st, "p99_9"),
                    _ci(st, "p50"),
                    _ci(st, "p99"),
                ]
            )
    return rows


_LAT_HEAD = ["arm", "metric", "n", "censored", "mean", "p50", "p90", "p95", "p99", "p99.9",
             "p50 CI", "p99 CI"]  # fmt: skip


def _latency_html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    parts: list[Any] = [
        h.p(
            "Request TTFT/E2E: per logical request, from its original arrival to the first "
            "token / end of its final attempt, retries and backoffs included; a request that "
            "finally failed is censored (never answered). Per-attempt TTFT/E2E: successful "
            "attempts, with timed-out ones censored (longer than the timeout); other failed "
            "attempts are in Failures. A quantile that falls among censored values reads "
            "'censored'; the mean is over uncensored values. ITL pools every inter-chunk gap "
            "(a chunk may carry several tokens: see tokens per chunk in Throughput; compare "
            "arms on TPOT); 'from scheduled' variants count from the time the schedule wanted "
            "the request sent, so client-side queueing (coordinated omission) shows."
        ),
        h.table(_LAT_HEAD, _latency_rows(s["latency"])),
    ]
    parts += [h.figure(p) for p in plots]
    return parts


def _latency_memo(s: Summary) -> list[str]:
    rows = []
    for arm, per in s["latency"].items():
        for key in ("request_ttft_s", "request_e2e_s", "ttft_s", "tpot_s", "e2e_s"):
            st = per[key]
            rows.append(
                [
                    arm,
                    METRIC_LABELS[key],
                    fmt.num(st["n"]),
                    censored_text(st),
                    f"{q_text(st, 'p50')} ({_ci(st, 'p50')})",
                    f"{q_text(st, 'p99')} ({_ci(st, 'p99')})",
                ]
            )
    return [
        "## Latency per arm",
        "",
        "Request figures include retries and backoffs (from the original arrival); failed "
        "requests and timeouts are censored, never dropped.",
        "",
        *md_table(["arm", "metric", "n", "censored", "p50 (CI)", "p99 (CI)"], rows),
    ]


def _by_slice_html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    by = s["latency_by_slice"]
    if not by:
        return [h.p("One workload slice only: see Latency.")]
    rows = []
    for arm, slices in by.items():
        for name, per in slices.items():
            for key in ("request_ttft_s", "request_e2e_s", "ttft_s", "tpot_s", "e2e_s"):
                st = per[key]
                rows.append(
                    [
                        arm,
                        name,
                        METRIC_LABELS[key],
                        fmt.num(st["n"]),
                        q_text(st, "p50"),
                        _ci(st, "p50"),
                        q_text(st, "p99"),
                        _ci(st, "p99"),
                    ]  # fmt: skip
                )
    head = ["arm", "slice", "metric", "n", "p50", "p50 CI", "p99", "p99 CI"]
    return [h.table(head, rows)]


def _over_time_plots(data: RunData, s: Summary, w: PlotWriter) -> list[PlotRef | None]:
    return [plot_latency_over_time(s["latency_over_time"], w)]


def _over_time_html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    if not plots:
        return [h.p("No successful requests to plot.")]
    return [h.figure(p) for p in plots]


# ---------------------------------------------------------------- comparison


def _comparison_plots(data: RunData, s: Summary, w: PlotWriter) -> list[PlotRef | None]:
    return [plot_shift(s["comparison"]["pairs"], w)]


def comparison_rows(pairs: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for pair in pairs:
        for key, e in pair["metrics"].items():
            for q in ("p50", "p99"):
                x = e[q]
                cens = x.get("censored")

                def side(name: str, x: dict[str, Any] = x, cens: Any = cens) -> str:
                    return "censored" if cens in (name, "both") else fmt.seconds(x[name])

                if cens:
                    verdict = f"{x['slower']} slower (censored)" if x.get("slower") else "no"
                else:
                    verdict = "yes" if x["significant"] else "no"
                rows.append(
                    [
                        f"{pair['other']} vs {pair['baseline']}",
                        METRIC_LABELS.get(key, key),
                        q,
                        side("baseline"),
                        side("other"),
                        "censored" if cens else fmt.seconds(x["diff"], signed=True),
                        "censored" if cens else _diff_ci_text(x["ci"]),
                        fmt.num(x["ratio"]),
                        verdict,
                    ]
                )
    return rows


def _diff_ci_text(ci: list[Any]) -> str:
    """A difference CI; an unbounded side (reached through censored values) says so."""

    def one(v: Any) -> str:
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            return fmt.seconds(v, signed=True)
        if isinstance(v, float) and math.isinf(v):
            return "unbounded"
        return "n/a"

    lo, hi = (one(v) for v in ci)
    return "n/a" if lo == hi == "n/a" else f"{lo} to {hi}"


COMPARISON_HEAD = [
    "pair",
    "metric",
    "q",
    "baseline",
    "other",
    "diff",
    "diff CI",
    "ratio",
    "CI excludes 0",
]


def _comparison_html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    pairs = s["comparison"]["pairs"]
    if not pairs:
        return [h.p("Only one arm: nothing to compare.")]
    lines = headline_sentences(pairs, s["run"]["statistics"]["confidence"])
    return [
        h.p(
            "Difference = other minus baseline (negative: other is faster), with bootstrap "
            "CIs of the quantile difference: paired (per pair_id, blocks over time) for the "
            "headline metrics of a mirrored run, independent-sample otherwise (ITL: requests "
            "are resampled, not gaps, since the gaps of one request are correlated). The "
            "shift function plots the same difference at every decile. "
            + family_sentence(s["comparison"])
        ),
        h.ul(lines),
        h.table(COMPARISON_HEAD, comparison_rows(pairs)),
        *[h.figure(p) for p in plots],
    ]


def _comparison_memo(s: Summary) -> list[str]:
    pairs = s["comparison"]["pairs"]
    if not pairs:
        return ["## Headline", "", "Only one arm was measured: no side-by-side comparison."]
    lines = headline_sentences(pairs, s["run"]["statistics"]["confidence"])
    family = family_sentence(s["comparison"])
    tail = ["", md_escape(family, limit=1000)] if family else []
    return ["## Headline", "", *["- " + md_escape(line, limit=1000) for line in lines], *tail]


# ---------------------------------------------------------------- goodput


def _goodput_row(arm: str, name: str, b: dict[str, Any]) -> list[Any]:
    pa = b["per_attempt"]
    return [
        arm,
        name,
        fmt.num(b["requests"]),
        fmt.num(b["meeting_slo"]),
        fmt.pct(b["share"]),
        f"{fmt.pct(b['share_ci'][0])} to {fmt.pct(b['share_ci'][1])}",
        fmt.num(b["rate_rps"]),
        fmt.num(b["cancelled"]),
        f"{fmt.pct(pa['share'])} of {fmt.num(pa['attempts'])}",
        fmt.pct(pa["share_from_scheduled"]),
    ]


def _goodput_html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    rows = []
    for arm, g in s["goodput"].items():
        rows.append(_goodput_row(arm, "(all)", g))
        for name, b in (g.get("by_slice") or {}).items():
            rows.append(_goodput_row(arm, name, b))
    head = ["arm", "slice", "requests", "meeting SLO", "share", "share CI", "goodput (req/s)",
            "cancelled by harness", "per attempt", "per attempt from scheduled"]  # fmt: skip
    return [
        h.p(
            "Per logical request (the headline): a request meets the SLO when its final attempt "
            "succeeded and its TTFT and E2E from the original arrival (retries and backoffs "
            "included) and its TPOT are within every configured bound; failed and timed-out "
            "requests are misses. Requests the harness cancelled (drain, Ctrl-C) are counted "
            "apart and left out. Per attempt: every attempt sent, from its own send time."
        ),
        h.table(head, rows),
    ]


def _slo_text(slo: dict[str, Any]) -> str:
    parts = [f"{n} ≤ {fmt.seconds(slo[k])}" for k, n in
             (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E")) if slo.get(k) is not None]  # fmt: skip
    return ", ".join(parts) or "no bounds set"


def _goodput_memo(s: Summary) -> list[str]:
    out = ["## Goodput", "", f"SLO: {md_escape(_slo_text(s['run']['slo']))}.", ""]
    for arm, g in s["goodput"].items():
        out.append(
            f"- {md_escape(arm)}: {fmt.pct(g['share'])} of {fmt.num(g['requests'])} requests met "
            f"the SLO, retries included (CI {fmt.pct(g['share_ci'][0])} to "
            f"{fmt.pct(g['share_ci'][1])}), {fmt.num(g['rate_rps'])} req/s of goodput; per "
            f"attempt {fmt.pct(g['per_attempt']['share'])} of "
            f"{fmt.num(g['per_attempt']['attempts'])}."
        )
    return out


# ---------------------------------------------------------------- errors


def _errors_plots(data: RunData, s: Summary, w: PlotWriter) -> list[PlotRef | None]:
    return [plot_errors(s["errors"], w)]


def _error_rows(arm: str, e: dict[str, Any]) -> list[list[Any]]:
    ci = e["per_1000_ci"]
    rows = [[arm, "(all)", fmt.num(e["errors"]), fmt.num(e["per_1000"]),
             f"{fmt.num(ci[0])} to {fmt.num(ci[1])}"]]  # fmt: skip
    for t, v in sorted(e["by_type"].items(), key=lambda kv: -kv[1]["count"]):
        rows.append([arm, t, fmt.num(v["count"]), fmt.num(v["per_1000"]), ""])
    return rows


def _errors_html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    rows, att_rows = [], []
    for arm, e in s["errors"].items():
        rows += _error_rows(arm, e)
        att_rows += _error_rows(arm, e["per_attempt"])
    retry = [
        [
            arm,
            fmt.num(e["logical_requests"]),
            fmt.num(e["retries"]),
            fmt.num(e["retry_rate"]),
            fmt.num(e["cancelled"]),
            fmt.num(e["per_attempt"]["cancelled"]),
        ]  # fmt: skip
        for arm, e in s["errors"].items()
    ]
    head = ["arm", "error type", "count", "per 1,000", "CI per 1,000"]
    return [
        h.p(
            "Per logical request (the headline): a request whose final outcome after retries "
            "failed is a ticket, by its final error type; rates per 1,000 requests."
        ),
        h.table(head, rows),
        h.p(
            "Per attempt: every failed attempt, retried or not (what retries cost and what a "
            "provider may bill); rates per 1,000 attempts. Rows the harness cancelled (drain, "
            "Ctrl-C) are not failures of the target and are in neither table."
        ),
        h.table(head, att_rows),
        h.table(
            [
                "arm",
                "logical requests",
                "retries",
                "retry rate",
                "requests cancelled by harness",
                "attempts cancelled by harness",
            ],
            retry,
        ),  # fmt: skip
        *[h.figure(p) for p in plots],
    ]


def _errors_memo(s: Summary) -> list[str]:
    out = ["## Failures", ""]
    for arm, e in s["errors"].items():
        top = sorted(e["by_type"].items(), key=lambda kv: -kv[1]["count"])[:3]
        kinds = ", ".join(f"{md_escape(t)} {v['count']}" for t, v in top) or "none"
        pa = e["per_attempt"]
        out.append(
            f"- {md_escape(arm)}: {fmt.num(e['errors'])} failed of {fmt.num(e['requests'])} "
            f"requests after retries = {fmt.num(e['per_1000'])} per 1,000 (CI "
            f"{fmt.num(e['per_1000_ci'][0])} to {fmt.num(e['per_1000_ci'][1])}); by type: "
            f"{kinds}; per attempt {fmt.num(pa['per_1000'])} per 1,000 of "
            f"{fmt.num(pa['attempts'])}; retry rate {fmt.num(e['retry_rate'])}; "
            f"{fmt.num(e['cancelled'])} cancelled by the harness (not counted)."
        )
    return out


# ---------------------------------------------------------------- throughput


def _throughput_plots(data: RunData, s: Summary, w: PlotWriter) -> list[PlotRef | None]:
    return [plot_throughput(s["throughput"], w)]


def _throughput_html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    rows = [
        [
            arm,
            fmt.num(t["requests_ok"]),
            fmt.num(t["request_rps"]),
            fmt.num(t["output_tps"]),
            fmt.num(t["tokens_per_chunk"]),
            fmt.num(t["duration_s"]),
            fmt.num(t["offered_rps"]),
            fmt.num(t["scheduled_rps"]),
            fmt.num(t["achieved_arrival_rps"]),
            fmt.pct(t["achieved_vs_offered"]),
        ]  # fmt: skip
        for arm, t in s["throughput"].items()
    ]
    head = ["arm", "completed", "req/s", "output tok/s", "tokens per chunk", "window (s)",
            "offered req/s", "scheduled req/s",
            "sent req/s", "sent / offered"]  # fmt: skip
    return [
        h.p(
            "Rates are over each arm's own window (its first scheduled or sent time to its "
            "last end), so one arm's stragglers never change another arm's figures. "
            "Offered: expected arrivals per second over the analysed window (load shape "
            "included). Scheduled and sent: first attempts per second by scheduled and by "
            "actual send time; sent below scheduled means the client fell behind."
        ),
        h.table(head, rows),
        *[h.figure(p) for p in plots],
    ]


def _throughput_memo(s: Summary) -> list[str]:
    out = ["## Throughput", ""]
    for arm, t in s["throughput"].items():
        out.append(
            f"- {md_escape(arm)}: {fmt.num(t['request_rps'])} req/s completed, "
            f"{fmt.num(t['output_tps'])} output tok/s ({fmt.num(t['tokens_per_chunk'])} "
            f"tokens per chunk); arrivals sent "
            f"{fmt.num(t['achieved_arrival_rps'])}/s vs offered {fmt.num(t['offered_rps'])}/s."
        )
    return out


# ---------------------------------------------------------------- server


def _server_plots(data: RunData, s: Summary, w: PlotWriter) -> list[PlotRef | None]:
    return [plot_server(s["server"], w)]


def _server_html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    if not s["server"]:
        return [h.p("No server metrics were scraped for this run.")]
    rows = [
        [
            arm,
            name,
            fmt.num(v["samples"]),
            fmt.num(v["mean"]),
            fmt.num(v["p50"]),
            fmt.num(v["p95"]),
            fmt.num(v["max"]),
        ]  # fmt: skip
        for arm, per in s["server"].items()
        for name, v in per.items()
    ]
    return [
        h.table(["arm", "metric", "samples", "mean", "p50", "p95", "max"], rows),
        *[h.figure(p) for p in plots],
    ]


# ---------------------------------------------------------------- samples and caveats


def _samples_html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    parts: list[Any] = [h.p("Untrusted model output and error text, shown escaped.")]
    for arm, smp in s["samples"].items():
        parts.append(h.Safe(f"<h3>{h.esc(arm)}</h3>"))
        for o in smp["outputs"]:
            parts += [h.p(f"request {o['request_id']}"), h.pre(o["text"])]
        if smp["errors"]:
            rows = [[e["request_id"], e["error_type"], e["message"]] for e in smp["errors"]]
            parts.append(h.table(["request", "error type", "message"], rows, sortable=False))
        if not smp["outputs"] and not smp["errors"]:
            parts.append(h.p("No samples."))
    return parts


def _samples_memo(s: Summary) -> list[str]:
    lines = []
    for arm, smp in s["samples"].items():
        for e in smp["errors"][:2]:
            lines.append(
                f"- {md_escape(arm)} {md_escape(e['error_type'])}: {md_escape(e['message'], 160)}"
            )
    return ["## Sample error messages", "", *lines] if lines else []


def _degraded_caveats(m: dict[str, Any]) -> list[str]:
    """A run that lost a load worker mid-run (manifest ``lost_workers``) or some of its rows."""
    out = []
    for lost in m.get("lost_workers") or []:
        host = f" on {lost['host']}" if lost.get("host") else ""
        last = lost.get("last_rows_at")
        rows = "none of its rows reached the master"
        if last:
            rows = f"its last rows reached the master at {last}"
        out.append(
            f"Load worker {lost.get('worker')}{host} was lost mid-run at {lost.get('lost_at')} "
            f"({lost.get('reason')}); {rows} ({lost.get('rows_received', 0)} rows kept). Its "
            "share of the schedule after that was never sent: the offered load was lower than "
            "configured from then on."
        )
    for worker, n in (m.get("missing_row_messages") or {}).items():
        out.append(f"{n} row message(s) from load worker {worker} never reached the master: "
                   "the requests they recorded are missing from every figure.")  # fmt: skip
    return out


#: How a completion count without usage was made (``tokens_source``), for the caveats.
_LOCAL_COUNTS = {"tokenizer": "by an OpenAI tokenizer's count of the text", "chunks": "as one "
                 "token per streamed chunk"}  # fmt: skip


def _check_caveats(s: Summary) -> list[str]:
    """The run checks (``summary.checks``, :mod:`harness.analysis.checks`) in words."""
    checks = s.get("checks") or {}
    arms: dict[str, dict[str, Any]] = checks.get("arms") or {}
    out = []
    for g in checks.get("shared_endpoints") or []:
        names = " and ".join(repr(a) for a in g["arms"])
        out.append(f"Arms {names} share one endpoint ({g['endpoint']}): they competed for the "
                   "same server, so each arm's latency and throughput include the others' "
                   "load.")  # fmt: skip
    used = {a: c["clients"] for a, c in arms.items() if c.get("clients")}
    if len(used) > 1 and len({tuple(v) for v in used.values()}) > 1:
        per = "; ".join(f"{a}: {', '.join(v)}" for a, v in used.items())
        out.append(f"The arms used different clients ({per}): the official SDK costs several "
                   "ms per request and far more CPU per chunk than the lean client (README, "
                   "Targets and clients), so part of a latency difference between them is the "
                   "client's.")  # fmt: skip
    for arm, c in arms.items():
        sat = c["saturation"]
        if sat["saturated"]:
            out.append(
                f"Arm {arm!r}: the server saturated during the run: median TTFT rose from "
                f"{fmt.seconds(sat['ttft_p50_first'])} over the first 1/{sat['bins']} of its "
                f"requests to {fmt.seconds(sat['ttft_p50_last'])} over the last (fitted "
                f"{sat['growth']:.1f}x; Kendall trend test p = {sat['p_value']:.2g}) while the "
                f"client's queue delay stayed flat (p99 {fmt.seconds(sat['queue_delay_p99_s'])}): "
                "requests queued inside the server, so its latency figures describe an "
                "overloaded server and grow with the run's length; lower the load to measure "
                "it below saturation."
            )
        st = c["streaming"]
        if st["non_streamed"]:
            if st["non_streamed"] == st["ok"]:
                out.append(f"Arm {arm!r} did not stream (each response came in one piece): its "
                           "TTFT equals its E2E, and TPOT and ITL were not measured; compare "
                           "it on E2E.")  # fmt: skip
            else:
                out.append(f"Arm {arm!r}: {st['non_streamed']} of {st['ok']} successful "
                           "responses were not streamed: their TTFT equals their E2E.")  # fmt: skip
        sf = c["short_forced"]
        if sf["short"]:
            out.append(
                f"Arm {arm!r}: {sf['short']} of {sf['checked']} forced-length requests "
                f"({fmt.pct(sf['share'])}) came back with fewer tokens than the max_tokens they "
                f"forced (e.g. request {sf['example_request_id']}): the server did not honour "
                "ignore_eos/min_tokens or stopped early, so its throughput, TPOT and cost "
                "cover shorter outputs than were asked for."
            )
        src = c["count_sources"]
        prompt, comp = src["prompt"], src["completion"]
        n_prompt, n_comp = sum(prompt.values()), sum(comp.values())
        local, server = prompt.get("tokenizer", 0), prompt.get("tokenize", 0)
        not_usage = n_comp - comp.get("usage", 0)
        parts = []
        prompt_parts = []
        if local:
            prompt_parts.append(
                f"the prompt token counts of {fmt.pct(local / n_prompt)} of its successful "
                "requests are local estimates (an OpenAI tokenizer without the server's chat "
                "template, which usually counts fewer tokens than the server)"
            )
        if server:
            whose = "those of" if local else "the prompt token counts of"
            prompt_parts.append(
                f"{whose} {fmt.pct(server / n_prompt)} come from the server's /tokenize "
                "endpoint (its own tokenizer and chat template)"
            )
        if prompt_parts:
            parts.append(" and ".join(prompt_parts))
        if not_usage:
            how = ", ".join(
                f"{v} {_LOCAL_COUNTS.get(k, k)}" for k, v in comp.items() if k != "usage"
            )
            parts.append(
                f"the completion tokens of {fmt.pct(not_usage / n_comp)} were counted locally "
                f"({how})"
            )
        if parts:
            out.append(f"Arm {arm!r}: the server sent no usage: " + "; ".join(parts) + ".")
    return out


def caveats(data: RunData, s: Summary) -> list[str]:
    """Plain-text warnings a reader of the numbers must know (small samples, lagging load...)."""
    out = list(data.notes)
    status = s["run"]["status"]
    if status not in (None, "completed"):
        out.append(
            f"The run's status is {status!r}, not completed: figures cover what was recorded."
        )
    out += _degraded_caveats(data.manifest)
    if data.n_rows == 0:
        out.append("No requests were recorded in the analysed phases: every figure is empty.")
    for arm in data.arms:
        ttft = s["latency"][arm]["ttft_s"]
        n_ok = s["throughput"][arm]["requests_ok"]
        n_all = s["errors"][arm]["per_attempt"]["attempts"]
        if n_all and n_ok == 0:
            out.append(f"Arm {arm!r} had no successful requests ({n_all} attempts, all failed): "
                       "its latency figures are empty.")  # fmt: skip
        elif n_all == 0:
            out.append(f"Arm {arm!r} has no requests in the analysed phases.")
        elif ttft.get("ci_not_estimable"):
            which = " and ".join(k.replace("_", ".") for k in ttft["ci_not_estimable"])
            out.append(f"Arm {arm!r} has {n_ok} successful requests: too few for a confidence "
                       f"bound of {which} to exist at this confidence level (not estimable); "
                       "read those percentiles as rough.")  # fmt: skip
        th = s["throughput"][arm]
        ratio = th["achieved_vs_offered"]
        if th["offered_note"] and th["offered_note"] not in out:
            out.append(th["offered_note"])
        if (isinstance(ratio, float) and math.isfinite(ratio) and ratio < 0.9
                and th["achieved_below_offered"]):  # fmt: skip
            out.append(f"Arm {arm!r} sent {ratio:.0%} of the offered arrival rate: the load "
                       "generator did not deliver its schedule.")  # fmt: skip
        for key in ("request_e2e_s", "e2e_s"):
            st = s["latency"][arm][key]
            if st.get("censored_n"):
                what = "requests never answered (failed after retries)" if key.startswith(
                    "request") else "attempts timed out"  # fmt: skip
                out.append(
                    f"Arm {arm!r}: {fmt.pct(st['censored_share'])} of {METRIC_LABELS[key]} "
                    f"values are censored ({what}); they count in every percentile's rank, "
                    f"and {', '.join(st['censored']) or 'no reported percentile'} "
                    f"{'fall' if len(st['censored']) != 1 else 'falls'} among them."
                )
        if s["errors"][arm].get("cancelled"):
            out.append(
                f"Arm {arm!r}: {s['errors'][arm]['cancelled']} request(s) were cancelled by the "
                "harness (drain or interrupt); they are left out of every rate and distribution."
            )
        qd = s["latency"][arm]["queue_delay_s"]["p99"]
        if isinstance(qd, float) and math.isfinite(qd) and qd > 0.05:
            out.append(f"Arm {arm!r}: client queue delay p99 is {fmt.seconds(qd)}; requests left "
                       "late, so read the from-scheduled latencies.")  # fmt: skip
    tpc = {a: s["throughput"][a]["tokens_per_chunk"] for a in data.arms}
    known = {a: v for a, v in tpc.items() if isinstance(v, float) and math.isfinite(v)}
    if (
        len(known) > 1
        and max(known.values()) > 1.5
        and max(known.values()) > 1.5 * min(known.values())
    ):
        per = ", ".join(f"{a} {v:.2g}" for a, v in known.items())
        out.append(f"ITL is per streamed chunk, and the arms send different numbers of tokens "
                   f"per chunk ({per}): compare them on TPOT (per token), not ITL.")  # fmt: skip
    if len(data.slices) > 1:
        out.append(f"The workload has {len(data.slices)} slices; per-slice figures are in "
                   "latency_by_slice and goodput.ARM.by_slice.")  # fmt: skip
    out += _check_caveats(s)
    return out


def _caveats_html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    return [h.ul(s["caveats"])] if s["caveats"] else [h.p("None.")]


def _caveats_memo(s: Summary) -> list[str]:
    if not s["caveats"]:
        return []
    return ["## Caveats", "", *[f"- {md_escape(c, limit=600)}" for c in s["caveats"]]]


# ---------------------------------------------------------------- the list

SECTIONS: list[Section] = [
    Section("run", "Run", _run_compute, html=_run_html),
    Section(
        "latency",
        "Latency",
        lambda d, s: latency_summary(d),
        plots=_latency_plots,
        html=_latency_html,
        memo=_latency_memo,
        memo_rank=30,
    ),
    Section(
        "comparison",
        "Arm vs arm",
        lambda d, s: compare_arms(d),
        plots=_comparison_plots,
        html=_comparison_html,
        memo=_comparison_memo,
        memo_rank=10,
    ),
    Section(
        "latency_by_slice",
        "Latency by workload slice",
        lambda d, s: latency_by_slice(d),
        html=_by_slice_html,
    ),  # fmt: skip
    Section(
        "latency_over_time",
        "Latency over time",
        lambda d, s: latency_over_time(d),
        plots=_over_time_plots,
        html=_over_time_html,
    ),
    Section(
        "goodput",
        "Goodput",
        lambda d, s: goodput_summary(d),
        html=_goodput_html,
        memo=_goodput_memo,
        memo_rank=20,
    ),  # fmt: skip
    Section(
        "errors",
        "Failures and retries",
        lambda d, s: errors_summary(d),
        plots=_errors_plots,
        html=_errors_html,
        memo=_errors_memo,
        memo_rank=25,
    ),  # fmt: skip
    Section(
        "throughput",
        "Throughput",
        lambda d, s: throughput_summary(d),
        plots=_throughput_plots,
        html=_throughput_html,
        memo=_throughput_memo,
        memo_rank=40,
    ),  # fmt: skip
    Section(
        "server",
        "Server-side metrics",
        lambda d, s: server_summary(d),
        plots=_server_plots,
        html=_server_html,
    ),  # fmt: skip
    Section(
        "samples",
        "Sample outputs and errors",
        lambda d, s: d.samples,
        html=_samples_html,
        memo=_samples_memo,
        memo_rank=80,
    ),  # fmt: skip
    Section("checks", "Run checks", lambda d, s: run_checks(d)),  # phrased by the caveats
    Section("caveats", "Caveats", caveats, html=_caveats_html, memo=_caveats_memo, memo_rank=90),
]


def register_section(section: Section, *, before: str | None = "caveats") -> None:
    """Add a section (e.g. ``cost``, ``verdict``) to :data:`SECTIONS`, before ``before``
    (default: before the caveats, which stay last); an unknown ``before`` appends."""
    if any(s.key == section.key for s in SECTIONS):
        raise ValueError(f"a report section with key {section.key!r} is already registered")
    keys = [s.key for s in SECTIONS]
    SECTIONS.insert(keys.index(before) if before in keys else len(SECTIONS), section)
