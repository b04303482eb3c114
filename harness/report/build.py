"""Report writers: one run (:func:`build_report`), two runs (:func:`compare_runs`), a sweep.

Each writes ``summary.json`` (JSON-safe: NaN -> null), ``plots/`` (PNG + SVG), a
self-contained ``report.html`` and a one-page ``memo.md``. This is the I/O edge of the report
stage: the numbers come from ``harness.analysis`` and the sections in
:mod:`harness.report.sections`.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness.canary.report  # noqa: F401  (registers the canary section)
import harness.cost.report  # noqa: F401  (registers the cost section)
import harness.judge.section  # noqa: F401  (registers the verdict section, first)
import harness.quality.report  # noqa: F401  (registers the quality section)
from harness.analysis.compare import arm_clusters, arm_values, compare_samples
from harness.analysis.data import RunData, RunDataError, load_run
from harness.analysis.errors import errors_summary
from harness.analysis.goodput import goodput_summary
from harness.analysis.latency import latency_summary
from harness.analysis.metrics import ITL_KEY
from harness.analysis.sweep import DEFAULT_ATTAINMENT, load_value, sweep_curve, sweep_point
from harness.analysis.throughput import throughput_summary
from harness.config import AnalysisConfig
from harness.record.schema import SCHEMA_VERSION as RECORD_SCHEMA_VERSION
from harness.report import fmt
from harness.report import html as h
from harness.report.jsonio import json_safe, write_json
from harness.report.markdown import md_escape, md_table
from harness.report.plots import PlotRef, PlotWriter, plot_cdfs, plot_shift, plot_sweep
from harness.report.sections import (
    COMPARISON_HEAD,
    SECTIONS,
    Summary,
    comparison_rows,
    headline_sentences,
    offered_text,
    q_text,
)

#: Version of the summary.json layout (bump when a key changes meaning or moves).
SUMMARY_SCHEMA_VERSION = 1


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _header(data: RunData) -> Summary:
    arms = {}
    for arm in data.arms:
        info = data.arm_info.get(arm, {})
        arms[arm] = {k: info.get(k) for k in ("kind", "model", "base_url") if k in info}
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "record_schema_version": RECORD_SCHEMA_VERSION,
        "kind": "run",
        "run_id": data.run_id,
        "experiment": data.experiment,
        "generated_at": _now(),
        # a day's report (build_report(day=N)): the experiment-clock day it covers
        **({"day": data.days[0]} if data.days is not None and len(data.days) == 1 else {}),
        "arms": arms,
    }


def build_summary(data: RunData) -> Summary:
    """Compute every section of :data:`SECTIONS` (no plots written)."""
    summary = _header(data)
    for section in SECTIONS:
        summary[section.key] = section.compute(data, summary)
    return summary


def day_dir(run_dir: Path, day: int) -> Path:
    """Where one experiment-clock day's report goes: ``RUN_DIR/days/DDD/``."""
    return Path(run_dir) / "days" / f"{int(day):03d}"


def _load_day(run_dir: Path, analysis: AnalysisConfig | None, day: int) -> RunData:
    """One day's rows (:func:`load_run` ``days=[day]``); a run still writing (or compacting)
    may move a part file away between listing and reading: read again, up to 3 times."""
    import time

    from harness.record.reader import ReaderError

    if isinstance(day, bool) or not isinstance(day, int) or day < 0:
        raise RunDataError(f"--day {day!r}: days are numbered 0, 1, 2, ... on the experiment clock")
    for attempt in range(3):
        try:
            data = load_run(run_dir, analysis, days=[day])
            break
        except ReaderError:
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))
    if data.n_rows == 0:
        if data.clock is None:
            raise RunDataError(f"{run_dir}: day {day} has no rows (the run has no experiment "
                               "clock in its manifest: it never started)")  # fmt: skip
        raise RunDataError(f"{run_dir}: experiment-clock day {day} has no request rows"
                           f"{_days_text(run_dir, data)}")  # fmt: skip
    return data


def _days_text(run_dir: Path, data: RunData) -> str:
    """`` (rows cover days 0-29)`` for an error message (one light pass over two columns)."""
    from harness.analysis.data import _day_parts

    lo = hi = None
    phases = tuple(data.analysis.include_phases)
    for _, d in _day_parts(run_dir, ("arm",), phases, None, data.clock):
        d = d[d >= 0] if d is not None else d
        if d is not None and d.size:
            lo = int(d.min()) if lo is None else min(lo, int(d.min()))
            hi = int(d.max()) if hi is None else max(hi, int(d.max()))
    return " (the run has no rows yet)" if lo is None else f" (rows cover days {lo}-{hi})"


def build_report(
    run_dir: Path, *, analysis: AnalysisConfig | None = None, day: int | None = None
) -> dict[str, Any]:
    """Analyse a run directory and write its report files into it; return the summary dict.

    ``analysis``: settings to use; default: ``config.analysis`` from the run's manifest,
    falling back to :class:`~harness.config.AnalysisConfig` defaults.

    ``day``: one experiment-clock day's report, from that day's rows only, written into
    ``RUN_DIR/days/DDD/`` (summary.json, report.html, memo.md, plots/); it reads the part
    files there are, so it works while the run is still writing. A negative day, or a day
    with no rows, raises :class:`~harness.analysis.data.RunDataError`.
    """
    run_dir = Path(run_dir)
    if day is None:
        data = load_run(run_dir, analysis)
        out_dir = run_dir
    else:
        data = _load_day(run_dir, analysis, day)
        out_dir = day_dir(run_dir, day)
        out_dir.mkdir(parents=True, exist_ok=True)
    summary = build_summary(data)
    writer = PlotWriter(out_dir / "plots")
    plots: dict[str, list[PlotRef]] = {}
    for section in SECTIONS:
        refs = section.plots(data, summary, writer) if section.plots else []
        plots[section.key] = [p for p in refs if p is not None]
    summary["plots"] = sorted(f"plots/{p.name}.{ext}" for ps in plots.values() for p in ps
                              for ext in ("png", "svg"))  # fmt: skip
    safe = json_safe(summary)
    write_json(out_dir / "summary.json", safe)
    (out_dir / "report.html").write_text(render_html(safe, plots), encoding="utf-8")
    (out_dir / "memo.md").write_text(render_memo(safe), encoding="utf-8")
    return safe


def render_html(summary: Summary, plots: dict[str, list[PlotRef]]) -> str:
    """``report.html`` from a (JSON-safe) summary and the plots of each section."""
    parts = []
    for section in SECTIONS:
        if section.html is None or section.key not in summary:
            continue
        body = section.html(summary, plots.get(section.key, []))
        parts.append((section.key, section.title, h.section(section.key, section.title, body)))
    header = [
        h.Safe('<p class="meta">'),
        f"Experiment {summary['experiment']}, run {summary['run_id']}, generated "
        f"{summary['generated_at']}. Numbers in seconds unless stated; see summary.json.",
        h.Safe("</p>"),
    ]
    day = f", day {summary['day']}" if summary.get("day") is not None else ""
    return h.page(
        f"LLM benchmark report: {summary['experiment']} / {summary['run_id']}{day}", header, parts
    )


def render_memo(summary: Summary) -> str:
    """``memo.md``: the sections' memo lines in ``memo_rank`` order, under a run header."""
    run = summary["run"]
    arms = ", ".join(
        f"{md_escape(a)} ({md_escape(i.get('kind') or '?')}, {md_escape(i.get('model') or '?')})"
        for a, i in summary["arms"].items()
    )
    off = run["offered"]
    lines = [
        f"# Benchmark memo: {md_escape(summary['experiment'])} / {md_escape(summary['run_id'])}"
        + (f", day {summary['day']}" if summary.get("day") is not None else ""),
        "",
        f"Arms: {arms or 'none'}. Status {md_escape(run['status'] or 'unknown')}; "
        f"{fmt.num(run['rows'])} requests analysed over {fmt.seconds(run['analysed_duration_s'])} "
        f"(phases: {md_escape(', '.join(run['phases']))}); offered load "
        f"{md_escape(offered_text(off))}. Figures: {run['statistics']['confidence']:.0%} "
        "confidence intervals (order-statistic for quantiles, bootstrap for differences); "
        "details in report.html and summary.json.",
        "",
    ]
    for section in sorted((s for s in SECTIONS if s.memo), key=lambda s: s.memo_rank):
        if section.key not in summary:
            continue
        block = section.memo(summary)  # type: ignore[misc]
        if block:
            lines += [*block, ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------- two runs


def compare_runs(run_a: Path, run_b: Path, out_dir: Path | None = None) -> Path:
    """Compare two runs arm by arm (matched by name) and write the views into ``out_dir``.

    Default ``out_dir``: ``reports/compare/<runA>__vs__<runB>/`` where ``reports`` is the
    folder two levels above ``run_a`` (``reports/<experiment>/<run_id>``). Differences are
    run B minus run A. When no arm names match and each run has one arm, those are paired.
    """
    run_a, run_b = Path(run_a), Path(run_b)
    da, db = load_run(run_a), load_run(run_b)
    if out_dir is None:
        out_dir = run_a.resolve().parent.parent / "compare" / f"{da.run_id}__vs__{db.run_id}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    label_a, label_b = f"A {da.run_id}", f"B {db.run_id}"
    present_a = [a for i, a in enumerate(da.arms) if (da.arm == i).any()]
    present_b = [b for i, b in enumerate(db.arms) if (db.arm == i).any()]
    matched = [(a, a) for a in da.arms if a in db.arms and (a in present_a or a in present_b)]
    notes = []
    if not matched and len(present_a) == 1 and len(present_b) == 1:
        matched = [(present_a[0], present_b[0])]
        notes.append(
            f"No arm names match; compared A's {present_a[0]!r} with B's {present_b[0]!r}."
        )
    lat_a, lat_b = latency_summary(da), latency_summary(db)
    gp_a, gp_b = goodput_summary(da), goodput_summary(db)
    er_a, er_b = errors_summary(da), errors_summary(db)
    th_a, th_b = throughput_summary(da), throughput_summary(db)
    settings = da.bootstrap()
    pairs = []
    per_arm: dict[str, Any] = {}
    writer = PlotWriter(out_dir / "plots")
    plots: list[PlotRef] = []
    for arm_a, arm_b in matched:
        key = arm_a if arm_a == arm_b else f"{arm_a}|{arm_b}"
        va, vb = arm_values(da, arm_a), arm_values(db, arm_b)
        clusters = {ITL_KEY: (arm_clusters(da, arm_a), arm_clusters(db, arm_b))}
        res = compare_samples(va, vb, settings, clusters)
        pairs.append(
            {"arm": key, "baseline": f"{key} {label_a}", "other": f"{key} {label_b}", **res}
        )
        per_arm[key] = {
            "latency": {"a": lat_a[arm_a], "b": lat_b[arm_b]},
            "goodput": {"a": gp_a[arm_a], "b": gp_b[arm_b]},
            "errors": {"a": _no_series(er_a[arm_a]), "b": _no_series(er_b[arm_b])},
            "throughput": {"a": _no_series(th_a[arm_a]), "b": _no_series(th_b[arm_b])},
        }
        ref = plot_cdfs(
            {label_a: va, label_b: vb},
            ("ttft_s", "tpot_s", "itl_s", "e2e_s"),
            writer,
            name=f"cdf_{_slug(key)}",
            title=f"{key}: latency CDF, run A vs run B",
        )
        if ref is not None:
            plots.append(ref)
    shift = plot_shift(pairs, writer, name="shift_function")
    if shift is not None:
        plots.append(shift)
    summary = json_safe(
        {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "kind": "compare",
            "generated_at": _now(),
            "run_a": _run_ref(da),
            "run_b": _run_ref(db),
            "arms": {
                "matched": [list(p) for p in matched],
                "only_in_a": [a for a in present_a if a not in {x for x, _ in matched}],
                "only_in_b": [b for b in present_b if b not in {y for _, y in matched}],
            },  # fmt: skip
            "per_arm": per_arm,
            "comparison": {"baseline": "run_a", "pairs": pairs},
            "statistics": {
                "confidence": settings.confidence,
                "resamples": settings.resamples,
                "seed": settings.seed,
                "bootstrap_max_n": settings.max_n,
            },  # fmt: skip
            "notes": notes + da.notes + db.notes,
            "plots": sorted(f"plots/{p.name}.{e}" for p in plots for e in ("png", "svg")),
        }
    )
    write_json(out_dir / "summary.json", summary)
    (out_dir / "report.html").write_text(_compare_html(summary, plots), encoding="utf-8")
    (out_dir / "memo.md").write_text(_compare_memo(summary), encoding="utf-8")
    return out_dir


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)[:60]


def _no_series(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "over_time"}


def _run_ref(d: RunData) -> dict[str, Any]:
    return {
        "run_id": d.run_id,
        "experiment": d.experiment,
        "dir": str(d.run_dir),
        "status": d.manifest.get("status"),
        "arms": {a: d.arm_info.get(a, {}) for a in d.arms},
        "rows": d.n_rows,
    }


def _compare_html(s: Summary, plots: list[PlotRef]) -> str:
    lines = headline_sentences(s["comparison"]["pairs"], s["statistics"]["confidence"])
    rows = []
    for arm, v in s["per_arm"].items():
        for side in ("a", "b"):
            lat, gp, er = v["latency"][side], v["goodput"][side], v["errors"][side]
            rt, re_ = lat["request_ttft_s"], lat["request_e2e_s"]
            rows.append([arm, s[f"run_{side}"]["run_id"], fmt.num(er["requests"]),
                         q_text(rt, "p50"), q_text(rt, "p99"), q_text(re_, "p50"),
                         q_text(re_, "p99"), fmt.pct(gp["share"]),
                         fmt.num(er["per_1000"])])  # fmt: skip
    head = ["arm", "run", "requests", "request TTFT p50", "request TTFT p99", "request E2E p50",
            "request E2E p99", "goodput", "failed per 1,000"]  # fmt: skip
    sections = [
        ("headline", "Headline", h.section("headline", "Headline (B minus A)",
                                           [h.ul(lines or ["No arms in common."])])),
        ("figures", "Per run", h.section("figures", "Per run", [h.table(head, rows)])),
        ("diffs", "Differences", h.section("diffs", "Differences", [
            h.table(COMPARISON_HEAD, comparison_rows(s["comparison"]["pairs"]))])),
        ("plots", "Plots", h.section("plots", "Plots", [h.figure(p) for p in plots])),
        ("notes", "Notes", h.section("notes", "Notes", [h.ul(s["notes"] or ["None."])])),
    ]  # fmt: skip
    header = [h.p(f"Run A: {s['run_a']['dir']}; run B: {s['run_b']['dir']}.")]
    title = f"Run comparison: {s['run_a']['run_id']} vs {s['run_b']['run_id']}"
    return h.page(title, header, sections)


def _compare_memo(s: Summary) -> str:
    conf = s["statistics"]["confidence"]
    a, b = s["run_a"], s["run_b"]
    out = [
        f"# Run comparison: {md_escape(a['run_id'])} (A) vs {md_escape(b['run_id'])} (B)",
        "",
        f"A: {md_escape(a['experiment'])}, {fmt.num(a['rows'])} requests; B: "
        f"{md_escape(b['experiment'])}, {fmt.num(b['rows'])} requests. Differences are B minus "
        f"A with {conf:.0%} bootstrap CIs.",
        "",
        "## Headline",
        "",
    ]
    out += [
        "- " + md_escape(line, 1000) for line in headline_sentences(s["comparison"]["pairs"], conf)
    ]
    if not s["comparison"]["pairs"]:
        out.append("- No arms in common: nothing compared.")
    rows = []
    for arm, v in s["per_arm"].items():
        for side in ("a", "b"):
            gp, er = v["goodput"][side], v["errors"][side]
            rows.append([arm, side.upper(), fmt.pct(gp["share"]), fmt.num(er["per_1000"])])
    if rows:
        out += ["", "## Goodput and failures", "",
                *md_table(["arm", "run", "goodput share", "errors per 1,000"], rows)]  # fmt: skip
    if s["notes"]:
        out += ["", "## Caveats", "", *[f"- {md_escape(n, 600)}" for n in s["notes"]]]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- sweeps


def build_sweep_report(
    run_dirs: list[Path], out_dir: Path, *, attainment: float = DEFAULT_ATTAINMENT
) -> dict[str, Any]:
    """Latency-vs-load curve and the highest load meeting the SLO, per arm, over a sweep's runs.

    Each run's load is its manifest ``sweep.value`` (else ``offered.rate`` /
    ``config.load.rate``). A load meets the SLO when the goodput share is >= ``attainment``
    in every run at that load. Each run is judged against its own SLO (``runs[].slo``);
    ``slo`` is the common one, or null with ``slos_differ`` true when the runs disagree.
    Writes summary.json, plots/, report.html and memo.md into ``out_dir``; returns the summary.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points, runs, sweep_meta = [], [], {}
    for rd in run_dirs:
        data = load_run(Path(rd))
        part = {
            "latency": latency_summary(data, ci=False),
            "goodput": goodput_summary(data),
            "throughput": throughput_summary(data),
            "errors": errors_summary(data),
        }
        points.append(sweep_point(data, part))
        slo = asdict(data.analysis.slo)
        runs.append(
            {"run_id": data.run_id, "dir": str(rd), "load": load_value(data.manifest), "slo": slo}
        )
        sweep_meta = sweep_meta or (data.manifest.get("sweep") or {})
    curve = sweep_curve(points, attainment)
    slos = [r["slo"] for r in runs]
    differ = any(x != slos[0] for x in slos)
    summary = json_safe(
        {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "kind": "sweep",
            "generated_at": _now(),
            "sweep_id": sweep_meta.get("id"),
            "param": sweep_meta.get("param"),
            "attainment": attainment,
            "slo": None if differ or not slos else slos[0],
            "slos_differ": differ,
            "runs": sorted(runs, key=lambda r: (r["load"] is None, r["load"] or 0)),
            "arms": curve,
        }
    )
    writer = PlotWriter(out_dir / "plots")
    ref = plot_sweep(summary["arms"], writer)
    plots = [ref] if ref else []
    summary["plots"] = sorted(f"plots/{p.name}.{e}" for p in plots for e in ("png", "svg"))
    write_json(out_dir / "summary.json", summary)
    (out_dir / "report.html").write_text(_sweep_html(summary, plots), encoding="utf-8")
    (out_dir / "memo.md").write_text(_sweep_memo(summary), encoding="utf-8")
    return summary


_SWEEP_HEAD = ["arm", "load", "req/s", "TTFT p50", "TTFT p99", "E2E p50", "E2E p99",
               "goodput share", "errors per 1,000", "meets SLO"]  # fmt: skip


def _sweep_rows(s: Summary) -> list[list[Any]]:
    return [
        [
            arm,
            fmt.num(p["load"]),
            fmt.num(p["request_rps"]),
            fmt.seconds(p["ttft_s_p50"]),
            fmt.seconds(p["ttft_s_p99"]),
            fmt.seconds(p["e2e_s_p50"]),
            fmt.seconds(p["e2e_s_p99"]),
            fmt.pct(p["goodput_share"]),
            fmt.num(p["errors_per_1000"]),
            "yes" if p["meets_slo"] else "no",
        ]  # fmt: skip
        for arm, c in s["arms"].items()
        for p in c["points"]
    ]


def _max_load_lines(s: Summary) -> list[str]:
    out = []
    for arm, c in s["arms"].items():
        best = c["max_load_meeting_slo"]
        txt = fmt.num(best) if best is not None else "none of the tested loads"
        out.append(f"{arm}: highest load meeting the SLO: {txt}")
    return out


def _slo_bounds(slo: dict[str, Any]) -> str:
    return (
        f"TTFT {fmt.bound(slo.get('ttft_s'))}, TPOT {fmt.bound(slo.get('tpot_s'))}, "
        f"E2E {fmt.bound(slo.get('e2e_s'))}"
    )


def _sweep_slo_lines(s: Summary) -> list[str]:
    """The SLO of the sweep, or one line per run when the runs used different SLOs."""
    if not s.get("slos_differ"):
        return [f"SLO: {_slo_bounds(s['slo'] or {})}."]
    return ["The runs used different SLOs; each run is judged against its own:"] + [
        f"{r['run_id']} (load {fmt.num(r['load'])}): {_slo_bounds(r['slo'] or {})}"
        for r in s["runs"]
    ]


def _sweep_html(s: Summary, plots: list[PlotRef]) -> str:
    slo_lines = _sweep_slo_lines(s)
    intro = (
        f"A load meets the SLO when at least {s['attainment']:.0%} of requests meet every bound "
        "in every run at that load; the maximum is the highest load with every lower load "
        f"also meeting it. {slo_lines[0]}"
    )
    sections = [
        ("max", "Capacity", h.section("max", "Capacity at the SLO", [
            h.p(intro), *([h.ul(slo_lines[1:])] if len(slo_lines) > 1 else []),
            h.ul(_max_load_lines(s))])),
        ("points", "Points", h.section("points", "Sweep points", [h.table(_SWEEP_HEAD, _sweep_rows(s))])),
        ("plots", "Plots", h.section("plots", "Plots", [h.figure(p) for p in plots])),
    ]  # fmt: skip
    title = f"Load sweep {s.get('sweep_id') or ''} ({s.get('param') or 'load'})"
    return h.page(title, [h.p(f"{len(s['runs'])} runs.")], sections)


def _sweep_memo(s: Summary) -> str:
    out = [
        f"# Load sweep {md_escape(s.get('sweep_id') or '')} ({md_escape(s.get('param') or 'load')})",
        "",
        f"{len(s['runs'])} runs; a load meets the SLO when >= {s['attainment']:.0%} of requests "
        "meet every bound in every run at that load.",
        "",
        md_escape(_sweep_slo_lines(s)[0]),
        *[f"- {md_escape(line)}" for line in _sweep_slo_lines(s)[1:]],
        "",
        *[f"- {md_escape(line)}" for line in _max_load_lines(s)],
        "",
        *md_table(_SWEEP_HEAD, _sweep_rows(s)),
    ]
    return "\n".join(out) + "\n"
