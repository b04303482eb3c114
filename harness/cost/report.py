"""The cost section in report.html and memo.md, and its three plots (cost vs volume with the
break-even marked, sensitivity tornado, 12-month projection). Registered on import."""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter

from harness.analysis.data import RunData
from harness.cost.section import cost_section
from harness.report import html as h
from harness.report.markdown import md_escape, md_table
from harness.report.plots import PlotRef, PlotWriter
from harness.report.sections import SECTIONS, Section, Summary, register_section


def usd(x: Any) -> str:
    """``$41,200`` (>= $100), ``$12.35``, ``$0.000123``; n/a for null."""
    if not isinstance(x, int | float) or not math.isfinite(x):
        return "n/a"
    sign, x = ("-" if x < 0 else ""), abs(x)
    if x >= 100:
        return f"{sign}${x:,.0f}"
    if x >= 0.01:
        return f"{sign}${x:,.2f}"
    return f"{sign}${x:.3g}"


def big(x: Any) -> str:
    """41.2M, 3.1k, 870; n/a for null."""
    if not isinstance(x, int | float) or not math.isfinite(x):
        return "n/a"
    for div, suf in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.3g}"


# ---------------------------------------------------------------- plots

#: Short names for the sensitivity chart's axis (the summary keeps the full ones).
_SHORT = {"engineering hours": "eng. hours", "capacity per replica": "capacity",
          "traffic growth": "growth", "purchase mode": "purchase"}  # fmt: skip


def _money_ticks(v: float, _pos: Any = None) -> str:
    sign = "-" if v < 0 else ""
    return sign + "$" + big(abs(v)) if abs(v) >= 1000 else f"{sign}${abs(v):.3g}"


def _count_ticks(v: float, _pos: Any = None) -> str:
    return big(v)


def _plots(data: RunData, s: Summary, w: PlotWriter) -> list[PlotRef | None]:
    c = s.get("cost") or {}
    if not c.get("curve"):
        return []
    return [plot_volume(c, w), plot_tornado(c, w), plot_projection(c, w)]


def plot_volume(c: dict[str, Any], w: PlotWriter) -> PlotRef:
    curve = c["curve"]
    x = [p["monthly_calls"] for p in curve]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(x, [p["api_usd"] for p in curve], label="hosted API", color="C0")
    ax.plot(x, [p["selfhost_usd"] for p in curve], label="self-hosted", color="C1")
    for i, share in enumerate(curve[0]["hybrid_usd"]):
        ax.plot(x, [p["hybrid_usd"][share] for p in curve], ls="--", color=f"C{i + 2}",
                label=f"hybrid {float(share):.0%} self-hosted")  # fmt: skip
    be = c.get("break_even") or {}
    if be.get("monthly_calls"):
        ax.axvline(be["monthly_calls"], color="k", ls=":", lw=1)
        ax.annotate(f"break-even\n{usd(be['monthly_api_spend_usd'])}/month",
                    (be["monthly_calls"], be["monthly_api_spend_usd"]), fontsize=8,
                    xytext=(5, 5), textcoords="offset points")  # fmt: skip
    ax.axvline(c["traffic"]["monthly_calls"], color="grey", ls="-", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_count_ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(_money_ticks))
    ax.set_xlabel("Model calls per month (grey: your projected traffic)")
    ax.set_ylabel("USD per month")
    ax.legend(fontsize=8)
    return w.save(fig, "cost_vs_volume", "Monthly cost vs volume")


def plot_tornado(c: dict[str, Any], w: PlotWriter) -> PlotRef:
    sens = c["sensitivity"]
    rows = sens["factors"][::-1]
    base = sens["base"]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.6))
    for i, r in enumerate(rows):
        ax.barh(i, r["low"] - base, left=base, color="C0", alpha=0.8)
        ax.barh(i, r["high"] - base, left=base, color="C1", alpha=0.8)
        ax.text(r["low"], i, f" {r['low_label']} ", va="center", fontsize=7,
                ha="right" if r["low"] < base else "left")  # fmt: skip
        ax.text(r["high"], i, f" {r['high_label']} ", va="center", fontsize=7,
                ha="right" if r["high"] < base else "left")  # fmt: skip
    ax.axvline(base, color="k", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels([_SHORT.get(r["factor"], r["factor"]) for r in rows], fontsize=7)
    ax.xaxis.set_major_formatter(FuncFormatter(_money_ticks))
    ax.set_xlabel("12-month saving of self-hosting vs the API (> 0: self-hosting cheaper)")
    ax.set_ylabel("Input moved (others fixed)")
    return w.save(fig, "cost_sensitivity", "What moves the answer")


def plot_projection(c: dict[str, Any], w: PlotWriter) -> PlotRef:
    rows = c["projection"]
    m = [r["month"] for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    ax.plot(m, [r["api_usd"] for r in rows], marker="o", label="hosted API", color="C0")
    ax.plot(m, [r["selfhost_usd"] for r in rows], marker="o", label="self-hosted", color="C1")
    for i, share in enumerate(rows[0]["hybrid_usd"]):
        ax.plot(m, [r["hybrid_usd"][share] for r in rows], ls="--", color=f"C{i + 2}",
                label=f"hybrid {float(share):.0%} self-hosted")  # fmt: skip
    g = c["inputs"]["traffic"]["monthly_growth"]
    ax.set_xlabel(f"Month (traffic grows {g:.0%} per month)")
    ax.yaxis.set_major_formatter(FuncFormatter(_money_ticks))
    ax.set_ylabel("USD per month")
    ax.legend(fontsize=8)
    return w.save(fig, "cost_projection", "12-month projection")


# ---------------------------------------------------------------- html / memo


def _arm_rows(c: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for arm, b in c.get("arms", {}).items():
        if b.get("role") == "api":
            detail = (f"{usd(b.get('usd_per_call'))} per call, {usd(b.get('usd_per_successful_task'))}"
                      f" per successful task; retries {_pct(b.get('retry_share'))} and failed "
                      f"attempts {_pct(b.get('failed_share'))} of spend; model "
                      f"{b.get('catalog_model')}")  # fmt: skip
        elif b.get("role") == "selfhost" and b.get("monthly_total_usd") is not None:
            detail = (f"{b['replicas_peak']} x {b['instance']} ({b['purchase']}) at peak, "
                      f"{big(b['gpu_hours'])} GPU-hours, utilisation {_pct(b['utilisation'])}, "
                      f"compute {usd(b['compute_usd'])} + fixed {usd(b['fixed_usd'])}, "
                      f"{usd(b['usd_per_1m_output_tokens'])} per 1M output tokens; capacity "
                      f"{b['capacity_rps']:.3g} req/s ({b['capacity_source']})")  # fmt: skip
        elif b.get("role") == "router":
            detail = _router_text(b)
        else:
            detail = "not costed"
        rows.append([arm, b.get("role") or "?", usd(b.get("monthly_total_usd")), detail])
    return rows


def _router_text(b: dict[str, Any]) -> str:
    """A router arm's month: its API attempts priced by the arm they went to, plus the
    self-hosted arm carrying the share of requests it served."""
    routes = b.get("routes") or {}
    api = [f"{md_escape(a)} for {_pct(r.get('request_share'))} of requests"
           for a, r in routes.items() if r.get("role") == "api"]  # fmt: skip
    lo, hi = b.get("usd_per_call_ci") or (None, None)
    ci = f" (CI {usd(lo)} to {usd(hi)})" if lo is not None and hi is not None else ""
    return (f"routes to {', '.join(api) or 'no API arm'}: {usd(b.get('usd_per_call'))} of API "
            f"per call{ci} = {usd(b.get('api_monthly_usd'))}/month; self-hosted for "
            f"{_pct(b.get('selfhost_share'))} of requests = "
            f"{usd(b.get('selfhost_monthly_usd'))}/month")  # fmt: skip


def _pct(x: Any) -> str:
    return "n/a" if not isinstance(x, int | float) or not math.isfinite(x) else f"{x:.1%}"


def _be_text(c: dict[str, Any]) -> str:
    be = c.get("break_even") or {}
    if be.get("monthly_api_spend_usd") is not None:
        lo, hi = be.get("monthly_api_spend_usd_ci") or (None, None)
        ci = f" (CI {usd(lo)} to {usd(hi)})" if lo is not None and hi is not None else ""
        return (f"Self-hosting breaks even at {usd(be['monthly_api_spend_usd'])}/month of API "
                f"spend{ci}: {big(be['monthly_calls'])} calls, {big(be['monthly_tokens'])} tokens "
                "per month.")  # fmt: skip
    if be.get("never"):
        return (f"Self-hosting never breaks even at this capacity: a self-hosted call costs "
                f"{usd(be.get('marginal_selfhost_usd_per_call'))} at the margin against "
                f"{usd(be.get('api_usd_per_call'))} on the API.")  # fmt: skip
    return f"No break-even: {be.get('why_none', 'not computed')}."


def _html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    c = s.get("cost") or {}
    if c.get("error"):
        return [h.p(f"No cost figures: {c['error']}")]
    t = c["traffic"]
    parts: list[Any] = [
        h.p(
            f"At {big(t['monthly_calls'])} model calls per month (peak {t['peak_to_average']:.2g}x "
            "the mean hour). Every recorded attempt is priced under the billing policy, so "
            "retries and failures cost what they would on an invoice."
        ),  # fmt: skip
        h.table(["arm", "path", "per month", "how"], _arm_rows(c), sortable=False),
        h.p(_be_text(c)),
    ]
    if c.get("hybrid"):
        parts.append(h.table(["share self-hosted", "per month"],
                             [[f"{x['share_selfhosted']:.0%}", usd(x["monthly_total_usd"])]
                              for x in c["hybrid"]], sortable=False))  # fmt: skip
    parts += [h.figure(p) for p in plots]
    entries = c["inputs"]["catalog_entries"]
    if entries:
        parts.append(h.p("Prices used (check their dates):"))
        parts.append(h.ul([f"{k}: as of {e['as_of']}, {e['source']}" for k, e in entries.items()]))
    if c.get("notes"):
        parts.append(h.ul(c["notes"]))
    return parts


def _memo(s: Summary) -> list[str]:
    c = s.get("cost") or {}
    if c.get("error"):
        return ["## Cost", "", f"No cost figures: {md_escape(c['error'])}"]
    t = c["traffic"]
    lines = ["## Cost", ""]
    api = [(a, b) for a, b in c["arms"].items() if b.get("role") == "api"
           and b.get("monthly_total_usd") is not None]  # fmt: skip
    slf = [(a, b) for a, b in c["arms"].items() if b.get("role") == "selfhost"
           and b.get("monthly_total_usd") is not None]  # fmt: skip
    words = []
    for a, b in api:
        words.append(f"at your projected {big(b['monthly_tokens'])} tokens/month "
                     f"({big(t['monthly_calls'])} calls) the API ({md_escape(a)}) costs "
                     f"{usd(b['monthly_total_usd'])}; retries are {_pct(b['retry_share'])} of "
                     "API spend")  # fmt: skip
    for a, b in slf:
        sh = c["inputs"]["selfhost"]
        words.append(f"self-hosting ({md_escape(a)}) on {b['replicas_peak']} x "
                     f"{md_escape(b['instance'])} {md_escape(b['purchase'])} costs "
                     f"{usd(b['monthly_total_usd'])} including {sh['engineering_hours']:g} "
                     "engineering hours")  # fmt: skip
    if words:
        text = "; ".join(words)
        lines.append(text[:1].upper() + text[1:] + ". " + md_escape(_be_text(c), 600))
    for a, b in c["arms"].items():
        if b.get("role") == "router":
            lines += ["", f"Router arm {md_escape(a)}: {usd(b.get('monthly_total_usd'))} per "
                          f"month, measured live: {_router_text(b)}."]  # fmt: skip
    if c.get("hybrid"):
        lines += ["", *md_table(["share self-hosted", "per month"],
                                [[f"{x['share_selfhosted']:.0%}", usd(x["monthly_total_usd"])]
                                 for x in c["hybrid"]])]  # fmt: skip
    if c.get("sensitivity"):
        top = c["sensitivity"]["factors"][:3]
        lines += ["", "Most sensitive to: " + ", ".join(
            f"{md_escape(f['factor'])} ({usd(f['low'])} to {usd(f['high'])} over 12 months)"
            for f in top) + "."]  # fmt: skip
    entries = c["inputs"]["catalog_entries"]
    if entries:
        lines += ["", "Prices: " + "; ".join(f"{md_escape(k)} as of {e['as_of']}"
                                             for k, e in entries.items()) + "."]  # fmt: skip
    for n in c.get("notes", []):
        lines.append(f"- {md_escape(n, 600)}")
    return lines


# before the canary section (it reads the cost), whichever module was imported first
register_section(
    Section("cost", "Cost", cost_section, plots=_plots, html=_html, memo=_memo, memo_rank=15),
    before="canary" if any(s.key == "canary" for s in SECTIONS) else "caveats",
)
