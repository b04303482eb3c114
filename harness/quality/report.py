"""The quality section in report.html and memo.md: per-arm scores, the paired comparison,
and the comparison by category. Registered on import. Names that come from the data (arms,
categories, notes) are escaped by the table helpers (:mod:`harness.report.html`,
:func:`harness.report.markdown.md_escape`)."""

from __future__ import annotations

import math
from typing import Any

from harness.quality.section import RESERVED_KEYS, quality_section
from harness.report import html as h
from harness.report.markdown import md_escape, md_table
from harness.report.plots import PlotRef
from harness.report.sections import Section, Summary, register_section


def _ok(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def value_text(kind: str, x: Any) -> str:
    """A rate as a percentage, a score to 3 digits, a length in tokens."""
    if not _ok(x):
        return "n/a"
    if kind == "binary":
        return f"{100 * x:.1f}%"
    if kind == "length":
        return f"{x:.3g} tok"
    return f"{x:.3f}"


def diff_text(kind: str, x: Any) -> str:
    """A signed difference: percentage points, score units or tokens."""
    if not _ok(x):
        return "n/a"
    if kind == "binary":
        return f"{100 * x:+.1f} pts"
    if kind == "length":
        return f"{x:+.3g} tok"
    return f"{x:+.3f}"


def _ci(kind: str, ci: Any, signed: bool = False) -> str:
    if not ci or not all(_ok(v) for v in ci):
        return "n/a"
    f = diff_text if signed else value_text
    return f"{f(kind, ci[0])} to {f(kind, ci[1])}"


def _p(x: Any) -> str:
    if not _ok(x):
        return "n/a"
    return f"{x:.1e}" if x < 1e-4 else f"{x:.4f}" if x < 0.01 else f"{x:.3f}"


def _arms(q: dict[str, Any]) -> list[str]:
    return [k for k in q if k not in RESERVED_KEYS]


def arm_rows(q: dict[str, Any]) -> list[list[Any]]:
    """One row per (scorer, arm): value, CI, items, unanswered."""
    rows = []
    for name in q["info"]["scorers"]:
        for arm in _arms(q):
            e = q[arm].get(name)
            if e is None:
                continue
            v = e.get("rate") if e["kind"] == "binary" else e.get("mean")
            rows.append([name, arm, value_text(e["kind"], v), _ci(e["kind"], e.get("ci")),
                         e["n"], e.get("unanswered") if e.get("unanswered") is not None
                         else "n/a"])  # fmt: skip
    return rows


COMPARISON_HEAD = ["scorer", "baseline", "candidate", "candidate - baseline", "CI", "test",
                   "p", "Holm p", "pairs", "unmatched (base/cand)"]  # fmt: skip


def comparison_row(name: str, e: dict[str, Any]) -> list[Any]:
    """One comparison line (shared by the HTML table and the memo)."""
    k = e["kind"]
    return [name, value_text(k, e.get("baseline_value")), value_text(k, e.get("candidate_value")),
            diff_text(k, e.get("estimate")), _ci(k, e.get("ci"), signed=True),
            e.get("test") or "n/a", _p(e.get("p")), _p(e.get("p_holm")), e["n_pairs"],
            f"{e['unmatched_baseline']}/{e['unmatched_candidate']}"]  # fmt: skip


def category_rows(comp: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, e in comp.items():
        k = e["kind"]
        for cat, c in e.get("by_category", {}).items():
            rows.append([cat, name, value_text(k, c.get("baseline_value")),
                         value_text(k, c.get("candidate_value")), diff_text(k, c.get("estimate")),
                         _ci(k, c.get("ci"), signed=True), _p(c.get("p_holm")), c["n_pairs"]])  # fmt: skip
    return rows


def _intro(q: dict[str, Any]) -> str:
    info = q["info"]
    parts = []
    for arm, c in (info.get("arms") or {}).items():
        if c:
            parts.append(f"{arm}: {c['answered']} of {c['requests']} eval requests answered "
                         f"({c['unanswered']} unanswered)")  # fmt: skip
    conf = info.get("confidence", 0.95)
    return (f"Scored per item (an item asked several times counts once); intervals at "
            f"{conf:.0%}. " + "; ".join(parts) + ".")  # fmt: skip


def llm_judge_text(j: dict[str, Any]) -> str:
    """One paragraph on the optional LLM judge (``quality.llm_judge``); plain text."""
    pref, ci, st = j.get("preference"), j.get("ci") or [None, None], j.get("sign_test") or {}
    said = (f"{pref:.3f} (CI {_ci('score', ci)}; sign test p {_p(st.get('p'))}: candidate "
            f"preferred on {st.get('candidate_preferred')}, baseline on "
            f"{st.get('baseline_preferred')}, ties {st.get('ties')})") if _ok(pref) else "n/a"  # fmt: skip
    cost = j.get("cost_usd")
    cost_t = f"${cost:.4g}" if _ok(cost) else f"cost n/a ({j.get('cost_basis')})"
    tok = j.get("tokens") or {}
    return (f"LLM judge {j.get('judge_model')} ({j.get('judge_target')}), pairwise, both "
            f"answer orders averaged: candidate {j.get('candidate')} preferred over baseline "
            f"{j.get('baseline')} at {said}, 0.5 = no preference; {j.get('n')} of "
            f"{j.get('items_asked')} items judged, {j.get('failures')} judge failure(s); "
            f"{j.get('calls')} calls, {tok.get('prompt')} prompt + {tok.get('completion')} "
            f"completion tokens, {cost_t}.")  # fmt: skip


def _html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    q = s.get("quality")
    if not q:
        return [h.p("No reference answers in this workload: nothing to score (an eval "
                    "workload such as workload=eval_canary has them).")]  # fmt: skip
    if q.get("error"):
        return [h.p(f"No quality scores: {q['error']}")]
    info = q["info"]
    parts: list[Any] = [h.p(_intro(q))]
    parts.append(h.table(["scorer", "arm", "value", "CI", "items", "unanswered"], arm_rows(q)))
    comp = q.get("comparison") or {}
    if comp:
        parts.append(h.p(f"Paired on sample_id: candidate {info['candidate']} minus baseline "
                         f"{info['baseline']} (arms from {info.get('arms_from', 'default')}); "
                         "Holm-adjusted across the scorers."))  # fmt: skip
        parts.append(h.table(COMPARISON_HEAD, [comparison_row(n, e) for n, e in comp.items()]))
        parts.append(h.p("By category (Holm within each category):"))
        parts.append(h.table(["category", "scorer", "baseline", "candidate",
                              "candidate - baseline", "CI", "Holm p", "pairs"],
                             category_rows(comp)))  # fmt: skip
    else:
        parts.append(h.p("No paired comparison: fewer than two arms were scored."))
    if q.get("llm_judge"):
        parts.append(h.p(llm_judge_text(q["llm_judge"])))
        if q["llm_judge"].get("failure_examples"):
            parts.append(h.ul(q["llm_judge"]["failure_examples"]))
    if info.get("notes"):
        parts.append(h.ul(info["notes"]))
    return parts


#: Scorers a memo sentence leads with, in order, when present.
_HEADLINE = ("exact_match", "numeric_match", "json_schema", "refusal", "format_valid",
             "output_tokens")  # fmt: skip


def _memo(s: Summary) -> list[str]:
    q = s.get("quality")
    if not q:
        return []
    lines = ["## Quality", ""]
    if q.get("error"):
        return [*lines, f"No quality scores: {md_escape(q['error'], 600)}"]
    info = q["info"]
    lines.append(md_escape(_intro(q), 800))
    comp = q.get("comparison") or {}
    if comp:
        said = []
        for name in _HEADLINE:
            e = comp.get(name)
            if not e or e.get("estimate") is None:
                continue
            k = e["kind"]
            said.append(f"{name} {value_text(k, e['baseline_value'])} → "
                        f"{value_text(k, e['candidate_value'])} ({diff_text(k, e['estimate'])}, "
                        f"CI {_ci(k, e.get('ci'), signed=True)}, Holm p {_p(e.get('p_holm'))})")  # fmt: skip
        lines += ["", f"{md_escape(info['baseline'])} (baseline) vs {md_escape(info['candidate'])}"
                  " (candidate), paired on sample_id: " + md_escape("; ".join(said), 1500) + "."]  # fmt: skip
        lines += ["", *md_table(COMPARISON_HEAD, [comparison_row(n, e) for n, e in comp.items()])]
    if q.get("llm_judge"):
        lines += ["", md_escape(llm_judge_text(q["llm_judge"]), 1200)]
    for n in info.get("notes", []):
        lines.append(f"- {md_escape(n, 600)}")
    return lines


register_section(
    Section("quality", "Quality", quality_section, html=_html, memo=_memo, memo_rank=12)
)
