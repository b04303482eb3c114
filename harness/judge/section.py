"""The report's ``verdict`` section: the judge's decision, reasons and per-metric statistics,
first in report.html and first in memo.md. Registered on import (harness/report/build.py).

The verdict compares the run's two arms, or, when ``harness judge RUN_DIR --baseline-run
OTHER`` wrote ``RUN_DIR/judge_baseline.json``, the candidate arm against OTHER (so a later
``harness report`` keeps that comparison). Untrusted text (arm and run names, messages) is
escaped by :mod:`harness.report.html` and :func:`harness.report.markdown.md_escape`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.analysis.data import RunData, RunDataError, load_run
from harness.config import ConfigError
from harness.judge.judge import judge
from harness.judge.preprocess import judge_inputs, settings_of
from harness.report import fmt
from harness.report import html as h
from harness.report.markdown import md_escape, md_table
from harness.report.plots import PlotRef
from harness.report.sections import Section, Summary, register_section

#: Written by ``harness judge --baseline-run``: ``{"baseline_run": "/abs/path"}``.
BASELINE_FILE = "judge_baseline.json"


def baseline_run_of(run_dir: Path) -> Path | None:
    """The baseline run recorded for ``run_dir`` by ``harness judge --baseline-run``."""
    path = Path(run_dir) / BASELINE_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("baseline_run"), str):
        raise RunDataError(f'{path}: expected {{"baseline_run": "PATH"}}')
    return Path(doc["baseline_run"])


def verdict_section(data: RunData, summary: Summary) -> dict[str, Any]:
    """Section compute: the verdict as a dict, or an INCONCLUSIVE one saying why there is
    none (``note`` for a run with one arm, ``error`` for inputs that cannot be read)."""
    try:
        cfg = settings_of(data)
        other = baseline_run_of(Path(data.run_dir))
        base = load_run(other) if other is not None else None
        present = [a for i, a in enumerate(data.arms) if (data.arm == i).any()]
        if base is None and len(present) < 2:
            return {"decision": "INCONCLUSIVE", "score": None, "reasons": ["no_data"],
                    "metrics": {}, "note": "The run has one arm: judge it against an earlier "
                    "run with `harness judge RUN_DIR --baseline-run OTHER_RUN`."}  # fmt: skip
        verdict = judge(judge_inputs(data, cfg, base), cfg)
    except (ConfigError, RunDataError, ValueError) as exc:
        return {"decision": "INCONCLUSIVE", "score": None, "reasons": ["errors"], "metrics": {},
                "error": str(exc)}  # fmt: skip
    return verdict.to_dict()


# ---------------------------------------------------------------- text

_REASON_TEXT = {
    "worse_than_margin": "{m} is shown worse than its margin",
    "interval_spans_margin": "{m}: the interval spans the margin (neither shown worse nor "
                             "shown within it)",
    "not_estimable": "{m}: no interval could be computed",
    "insufficient_n": "{m}: too few observations to judge",
    "no_data": "{m}: no data",
    "errors": "{m}: its inputs could not be read",
    "score_below_marginal": "the metrics shown worse alone put the score below the marginal "
                            "threshold",
    "score_below_pass": "the score is below the pass threshold",
}  # fmt: skip


def reason_text(code: str) -> str:
    """A reason code (``CODE`` or ``CODE:METRIC``) as a plain sentence."""
    base, _, metric = code.partition(":")
    tmpl = _REASON_TEXT.get(base)
    if tmpl is None:
        return code
    if "{m}" in tmpl and not metric:
        return {"no_data": "nothing to judge", "errors": "the inputs could not be read"}.get(
            base, tmpl.replace("{m}", "a metric")
        )
    return tmpl.format(m=metric)


def headline(v: dict[str, Any]) -> str:
    """``GO (score 100.0 / 100): ...`` in one line."""
    score = v.get("score")
    s = f" (score {score:.1f} / 100)" if isinstance(score, int | float) else ""
    b, c = v.get("baseline") or {}, v.get("candidate") or {}
    who = ""
    if b and c:
        runs = "" if b.get("run_id") == c.get("run_id") else f" of run {b.get('run_id')}"
        who = f": candidate {c.get('arm')} vs baseline {b.get('arm')}{runs}"
    return f"{v.get('decision')}{s}{who}"


def _is(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _value(m: dict[str, Any], x: Any) -> str:
    """A metric's own value (a quantile in seconds, a rate, a mean, USD)."""
    measure = m.get("measure")
    if not _is(x):
        return "n/a"
    if measure in ("request_ttft_s", "tpot_s", "request_e2e_s"):
        return fmt.seconds(x)
    if measure == "failure_rate" or (measure == "quality" and m.get("kind") == "binary"):
        return fmt.pct(x)
    if measure == "cost_per_task":
        return f"${x:.3g}"
    return fmt.num(x)


def _change(m: dict[str, Any], x: Any) -> str:
    """A change: ``x1.023`` for a ratio, ``+1.2 pts`` for a rate, ``+0.012`` otherwise."""
    if isinstance(x, float) and math.isinf(x):
        return "unbounded" if x > 0 else "-unbounded"
    if not _is(x):
        return "n/a"
    if m.get("scale") == "ratio":
        return f"x{x:.3f}"
    if m.get("measure") == "failure_rate" or m.get("kind") == "binary":
        return f"{100 * x:+.1f} pts"
    if m.get("measure") == "cost_per_task":
        return f"{'+' if x >= 0 else '-'}${abs(x):.3g}"
    return f"{x:+.3g}"


def _interval(m: dict[str, Any], ci: Any) -> str:
    if not ci or len(ci) != 2:
        return "n/a"
    return f"{_change(m, ci[0])} to {_change(m, ci[1])}"


def _margin(m: dict[str, Any]) -> str:
    margin = m.get("margin")
    if not _is(margin):
        return "n/a"
    d = {"lower": "rise", "higher": "drop", "either": "change"}.get(m.get("direction"), "change")
    if m.get("margin_type") == "relative":
        return f"{d} up to {100 * margin:g}%"
    if m.get("measure") == "failure_rate" or m.get("kind") == "binary":
        return f"{d} up to {100 * margin:g} pts"
    return f"{d} up to {margin:g}"


def _p(x: Any) -> str:
    return "n/a" if not _is(x) else (f"{x:.2g}" if x >= 0.001 else "<0.001")


METRIC_HEAD = ["metric", "classification", "critical", "weight", "n", "baseline", "candidate",
               "change", "CI (worse)", "CI (pass)", "margin", "test", "p", "p (Holm)"]  # fmt: skip


def metric_row(name: str, m: dict[str, Any]) -> list[str]:
    """One row of the metrics table (HTML and memo share it)."""
    cls = m.get("classification", "")
    if m.get("reason") and cls != "Pass":
        cls = f"{cls} ({m['reason']})"
    n = m.get("n")
    return [name, cls, "yes" if m.get("critical") else "", fmt.num(m.get("weight")),
            "-" if n is None else fmt.num(n), _value(m, m.get("baseline_value")),
            _value(m, m.get("candidate_value")), _change(m, m.get("estimate")),
            _interval(m, m.get("ci")), _interval(m, m.get("ci_ni")), _margin(m),
            str(m.get("test") or ""), _p(m.get("p")), _p(m.get("p_holm"))]  # fmt: skip


def rules_text(v: dict[str, Any]) -> str:
    lv, st = v.get("levels") or {}, v.get("settings") or {}
    if not lv:
        return ""
    return (f"Change = candidate vs baseline (x: ratio, pts: percentage points). A metric is "
            f"shown worse when its CI (worse) at {fmt.pct(lv.get('ci_level'), 2)} (Bonferroni "
            f"over the {lv.get('metrics_judged')} metrics judged) lies beyond its margin, and "
            f"passes when its CI (pass) at {fmt.pct(lv.get('ci_ni_level'), 0)} lies within it "
            f"(one-sided {fmt.pct(st.get('alpha'), 0)} each). GO: every critical metric passes "
            f"and the score reaches {st.get('pass_score')}; NO_GO: a critical metric is shown "
            f"worse, or the metrics shown worse put the score below {st.get('marginal_score')}"
            "; otherwise INCONCLUSIVE.")  # fmt: skip


def _html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    v = s.get("verdict") or {}
    parts: list[Any] = [h.Safe("<p><strong>"), h.esc(headline(v)), h.Safe("</strong></p>")]
    reasons = [f"{reason_text(r)} ({r})" for r in v.get("reasons") or []]
    parts.append(h.ul(reasons or ["No reasons against it."]))
    for key in ("note", "error"):
        if v.get(key):
            parts.append(h.p(v[key]))
    for line in v.get("smallest_detectable_change") or []:
        parts.append(h.p(line))
    metrics = v.get("metrics") or {}
    if metrics:
        parts.append(h.table(METRIC_HEAD, [metric_row(k, m) for k, m in metrics.items()]))
        parts.append(h.p(rules_text(v)))
    if v.get("notes"):
        parts.append(h.ul(v["notes"]))
    return parts


def _memo(s: Summary) -> list[str]:
    v = s.get("verdict") or {}
    out = [f"## Verdict: {md_escape(headline(v))}", ""]
    reasons = v.get("reasons") or []
    out += [f"- {md_escape(reason_text(r), 400)} (`{md_escape(r)}`)" for r in reasons]
    if not reasons:
        out.append("- No reasons against it.")
    for key in ("note", "error"):
        if v.get(key):
            out.append(f"- {md_escape(v[key], 600)}")
    mde = v.get("smallest_detectable_change") or []
    if mde:
        out += ["", md_escape(mde[0], 600)]
    metrics = v.get("metrics") or {}
    shown = {k: m for k, m in metrics.items() if m.get("critical") or m.get("classification")
             in ("High", "Low")}  # fmt: skip
    if shown:
        out += ["", "Critical metrics and metrics shown worse (all of them: report.html):", "",
                *md_table(METRIC_HEAD[:11], [metric_row(k, m)[:11] for k, m in shown.items()])]  # fmt: skip
    return out


register_section(
    Section("verdict", "Verdict", verdict_section, html=_html, memo=_memo, memo_rank=0),
    before="run",
)
