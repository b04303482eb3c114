"""The canary section of report.html and memo.md, and its plots. Registered on import.

Plots (from ``summary["daily"]``, ``["drift"]``, ``["daily_verdict"]``, ``["downtime"]``;
harness downtime shaded grey in each): p50/p99 TTFT and E2E per day per arm (log y), tickets
per day by type (stacked bars, one panel per arm), cumulative and projected monthly cost per
arm with engineering time, quality per day per category with the detected change points and
fingerprint changes marked, and the daily verdict (anytime-valid vs naive, one strip per
day). Day ``d`` is centred on ``x = d``; a time ``t`` (fractional days since the experiment
clock's origin) is drawn at ``x = t - 0.5``, so a change on day ``d`` is a line at ``d - 0.5``.

The memo ends with the decision and the checklist a team needs: monthly cost per path and
break-even, latency against the SLO, failures and tickets, drift (day, metric, size with CI,
attribution, fingerprint changes), the daily verdict, downtime, and the qualitative factors
declared in ``canary.factors`` beside the numbers. Text from the data or the config (arm
names, categories, fingerprints, factors) is escaped (:mod:`harness.report.html`,
:func:`harness.report.markdown.md_escape`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

import harness.judge.section  # noqa: F401  (the sections this one reads register first)
import harness.quality.report  # noqa: F401
from harness.analysis.data import RunData
from harness.canary.section import (
    FACTOR_LABELS,
    alarms,
    canary_section,
    monthly_costs,
)
from harness.report import fmt
from harness.report import html as h
from harness.report.markdown import md_escape, md_table
from harness.report.plots import PlotRef, PlotWriter, _log_axis
from harness.report.sections import Section, Summary, register_section

#: Colours of the verdict strip.
DECISION_COLORS = {"GO": "#2e7d32", "NO_GO": "#c62828", "INCONCLUSIVE": "#9e9e9e"}
#: Real-month instructions (the memo of a run on simulators).
LIVE_CONFIG = "month_canary_live"


def _n(x: Any) -> float:
    """A number for plotting: NaN for null/non-numbers."""
    ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else math.nan


def _arm_names(daily: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for e in daily:
        for a in e.get("arms") or {}:
            if a not in names:
                names.append(a)
    return names


def _shade_downtime(ax: Any, s: Summary) -> bool:
    """Grey spans for harness downtime; True when any was drawn."""
    drawn = False
    for e in (s.get("downtime") or {}).get("entries") or []:
        x0, x1 = e.get("x0_day"), e.get("x1_day")
        if isinstance(x0, int | float) and isinstance(x1, int | float) and x1 > x0:
            ax.axvspan(x0 - 0.5, x1 - 0.5, color="0.6", alpha=0.3, lw=0,
                       label=None if drawn else "harness downtime")  # fmt: skip
            drawn = True
    return drawn


def _series(daily: list[dict[str, Any]], arm: str, *path: str) -> tuple[np.ndarray, np.ndarray]:
    """(days, values) of one nested figure of one arm across the daily entries."""
    xs, ys = [], []
    for e in daily:
        v: Any = (e.get("arms") or {}).get(arm)
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        xs.append(e["day"])
        ys.append(_n(v))
    return np.asarray(xs, float), np.asarray(ys, float)


def _day_axis(ax: Any) -> None:
    ax.set_xlabel("Experiment-clock day")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))


def plot_latency(s: Summary, w: PlotWriter) -> PlotRef | None:
    """p50 (solid) and p99 (dashed) TTFT and E2E per day per arm, log y."""
    daily = s.get("daily") or []
    arms = _arm_names(daily)
    if not daily or not arms:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    drew = False
    for ax, metric, label in zip(axes, ("ttft_s", "e2e_s"), ("TTFT", "E2E"), strict=True):
        for i, arm in enumerate(arms):
            for q, ls in (("p50", "-"), ("p99", "--")):
                x, y = _series(daily, arm, metric, q)
                ok = np.isfinite(y) & (y > 0)
                if ok.any():
                    ax.plot(x[ok], y[ok], ls=ls, marker=".", color=f"C{i}", label=f"{arm} {q}")
                    drew = True
        _shade_downtime(ax, s)
        _log_axis(ax.yaxis, ax.set_yscale)
        lo, hi = ax.get_ylim()
        if hi < 10 * lo:  # less than a decade: label the minor ticks too
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:.2g}"))
            ax.tick_params(axis="y", which="minor", labelsize=7)
        _day_axis(ax)
        ax.set_ylabel(f"{label} per day (s, log scale)")
        ax.legend(fontsize=7)
    if not drew:
        plt.close(fig)
        return None
    return w.save(fig, "canary_latency", "Latency per day: p50 (solid) and p99 (dashed)")


def plot_tickets(s: Summary, w: PlotWriter) -> PlotRef | None:
    """Tickets (logical requests that failed after retries) per day by type, stacked."""
    daily = s.get("daily") or []
    arms = _arm_names(daily)
    if not daily or not arms:
        return None
    fig, axes = plt.subplots(1, len(arms), figsize=(5.5 * len(arms), 3.6), squeeze=False)
    types = sorted({t for e in daily for a in (e.get("arms") or {}).values()
                    for t, n in (a.get("tickets") or {}).items() if _n(n) > 0})  # fmt: skip
    for ax, arm in zip(axes.flat, arms, strict=True):
        x = np.asarray([e["day"] for e in daily], float)
        bottom = np.zeros(x.size)
        for j, t in enumerate(types):
            v = np.asarray([_n((((e.get("arms") or {}).get(arm) or {}).get("tickets") or {})
                               .get(t, 0)) for e in daily])  # fmt: skip
            v = np.nan_to_num(v)
            ax.bar(x, v, bottom=bottom, width=0.8, color=f"C{j}", label=t)
            bottom += v
        if not types:
            ax.bar(x, bottom, width=0.8, color="C0")
            ax.text(0.5, 0.5, "no tickets", transform=ax.transAxes, ha="center")
        _shade_downtime(ax, s)
        _day_axis(ax)
        ax.set_ylabel(f"{arm}: tickets per day (count)")
        if types:
            ax.legend(fontsize=7)
    return w.save(fig, "canary_tickets", "Tickets per day by type (failed after retries)")


def _engineering_month(s: Summary) -> float | None:
    sh = (((s.get("cost") or {}).get("inputs") or {}).get("selfhost")) or {}
    hours, rate = _n(sh.get("engineering_hours")), _n(sh.get("hourly_rate_usd"))
    return hours * rate if math.isfinite(hours) and math.isfinite(rate) else None


def cost_series(daily: list[dict[str, Any]], arm: str) -> dict[str, np.ndarray]:
    """What the cost plot draws for one arm: ``day``, ``cumulative`` = cumsum of the daily
    ``cost_usd`` (the self-hosted cost already includes its prorated engineering time) and
    ``engineering`` = cumsum of ``cost_detail.engineering_usd``, the part of ``cumulative``
    that is engineering time (all NaN when the arm has no such detail)."""
    x, y = _series(daily, arm, "cost_usd")
    _, e = _series(daily, arm, "cost_detail", "engineering_usd")
    eng = np.cumsum(np.nan_to_num(e)) if np.isfinite(e).any() else np.full(e.size, np.nan)
    return {"day": x, "cost": y, "cumulative": np.cumsum(np.nan_to_num(y)), "engineering": eng}


def plot_cost(s: Summary, w: PlotWriter) -> PlotRef | None:
    """Cumulative cost per arm (the sum of the recorded daily ``cost_usd``; for the
    self-hosted arm that cost includes its prorated engineering time, drawn dashed as the
    part of it that is engineering, not on top) and the running monthly projection per arm."""
    daily = s.get("daily") or []
    arms = _arm_names(daily)
    if not daily or not arms:
        return None
    c = s.get("canary") or {}
    control = c.get("control_arm")
    eng = _engineering_month(s)
    day_only = any((a or {}).get("cumulative_scope") == "day"
                   for e in daily for a in (e.get("arms") or {}).values())  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    drew = False
    for i, arm in enumerate(arms):
        cs = cost_series(daily, arm)
        x = cs["day"]
        if np.isfinite(cs["cost"]).any():
            axes[0].plot(x, cs["cumulative"], marker=".", color=f"C{i}", label=arm)
            drew = True
            if np.isfinite(cs["engineering"]).any() and cs["engineering"][-1] > 0:
                axes[0].plot(x, cs["engineering"], ls="--", color=f"C{i}",
                             label=f"{arm}: of which engineering time")  # fmt: skip
        x, y = _series(daily, arm, "projected_monthly_usd")
        if np.isfinite(y).any():
            axes[1].plot(x, y, marker=".", color=f"C{i}", label=f"{arm} (running projection)")
            drew = True
    api_usd, self_usd = monthly_costs(s, c.get("api_arm"), control)
    for arm, v in ((c.get("api_arm"), api_usd), (control, self_usd)):
        if v is not None and arm in arms:
            axes[1].axhline(v, color=f"C{arms.index(arm)}", ls=":", lw=1,
                            label=f"{arm}: cost section, whole run" + (
                                " (incl. engineering)" if arm == control else ""))  # fmt: skip
    if eng:
        axes[1].axhline(eng, color="k", ls="-.", lw=0.8, label="engineering time per month")
    if not drew:
        plt.close(fig)
        return None
    axes[0].set_ylabel("This day's cost (USD)" if day_only else "Cumulative cost (USD)")
    axes[1].set_ylabel("Projected monthly cost (USD)" + (", from this day" if day_only else ""))
    for ax in axes:
        _shade_downtime(ax, s)
        _day_axis(ax)
        ax.yaxis.set_major_formatter(FuncFormatter(_money_ticks))
        ax.legend(fontsize=7)
    return w.save(fig, "canary_cost", "Cost: cumulative and projected monthly, per arm")


def _quality_scorer(daily: list[dict[str, Any]], s: Summary) -> str | None:
    names = ((s.get("quality") or {}).get("info") or {}).get("scorers") or []
    seen = [k for e in daily for a in (e.get("arms") or {}).values()
            for k in (a.get("quality_by_category") or {})]  # fmt: skip
    for n in [*names, *seen]:
        if n in seen:
            return n
    return None


def plot_quality(s: Summary, w: PlotWriter) -> PlotRef | None:
    """Quality per day per category, one panel per arm; detected change points (quality
    series) and fingerprint changes marked."""
    daily = s.get("daily") or []
    arms = _arm_names(daily)
    scorer = _quality_scorer(daily, s)
    if not daily or not arms or scorer is None:
        return None
    cats = sorted({c for e in daily for a in (e.get("arms") or {}).values()
                   for c in ((a.get("quality_by_category") or {}).get(scorer) or {})})  # fmt: skip
    fig, axes = plt.subplots(1, len(arms), figsize=(5.5 * len(arms), 3.8), squeeze=False,
                             sharey=True)  # fmt: skip
    drift = s.get("drift") or {}
    for ax, arm in zip(axes.flat, arms, strict=True):
        for j, cat in enumerate(cats):
            x, y = _series(daily, arm, "quality_by_category", scorer, cat, "mean")
            if np.isfinite(y).any():
                ax.plot(x, y, marker=".", lw=1, color=f"C{j % 10}", label=cat)
        for a in alarms(s):
            if a.get("arm") == arm and "quality" in str(a.get("metric")) and isinstance(
                    a.get("change_day"), int | float):  # fmt: skip
                d = a["change_day"]
                ax.axvline(d - 0.5, color="k", lw=1.2)
                ax.annotate(f"change day {d:g} ({_size(a.get('size'))})", (d - 0.5, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(3, -12), textcoords="offset points", fontsize=7)  # fmt: skip
        for k, f in enumerate(drift.get("fingerprint_changes") or []):
            if f.get("arm") == arm and isinstance(f.get("day"), int | float):
                ax.axvline(f["day"] - 0.5, color="C3", ls=":", lw=1)
                ax.annotate(f"fingerprint {f.get('from')} -> {f.get('to')}",
                            (f["day"] - 0.5, 0.0), xycoords=("data", "axes fraction"),
                            xytext=(3, 4 + 10 * k), textcoords="offset points", fontsize=6,
                            color="C3")  # fmt: skip
        _shade_downtime(ax, s)
        _day_axis(ax)
        ax.set_ylabel(f"{arm}: {scorer} per day (mean)")
        if cats:
            ax.legend(fontsize=6)
    return w.save(fig, "canary_quality", f"Quality per day by category ({scorer}); black: "
                  "detected change, red dotted: fingerprint change")  # fmt: skip


def plot_verdict(s: Summary, w: PlotWriter) -> PlotRef | None:
    """The daily verdict: one strip per day, anytime-valid (top) vs naive daily test."""
    rows = s.get("daily_verdict") or []
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(11, 2.6))
    first = min(r["day"] for r in rows)
    for y, key, label in ((1, "decision", "anytime-valid"), (0, "naive_decision", "naive daily")):
        for r in rows:
            dec = r.get(key) or "INCONCLUSIVE"
            ax.barh(y, 1.0, left=r["day"] - 0.5, height=0.8,
                    color=DECISION_COLORS.get(dec, "#ffffff"), edgecolor="white")  # fmt: skip
        ax.text(first - 0.45, y, label, va="center", fontsize=8, color="white")
    _shade_downtime(ax, s)
    ax.set_yticks([])
    ax.set_ylim(-0.5, 2.3)
    _day_axis(ax)
    ax.set_ylabel("Verdict")
    ax.legend(handles=[Patch(color=c, label=k) for k, c in DECISION_COLORS.items()],
              fontsize=7, loc="upper center", ncol=3)  # fmt: skip
    return w.save(fig, "canary_verdict", "Daily verdict: anytime-valid vs naive daily test")


def _plots(data: RunData, s: Summary, w: PlotWriter) -> list[PlotRef | None]:
    if not s.get("canary"):
        return []
    return [plot_latency(s, w), plot_tickets(s, w), plot_cost(s, w), plot_quality(s, w),
            plot_verdict(s, w)]  # fmt: skip


# ---------------------------------------------------------------- rows (HTML and memo share them)

DAILY_HEAD = ["day", "arm", "requests", "TTFT p50", "TTFT p99", "E2E p50", "E2E p99",
              "tickets", "retry rate", "quality", "cost", "projected / month"]  # fmt: skip


def retry_share(a: dict[str, Any]) -> Any:
    """A day's retry rate: requests retried / requests (``retry_rate.share``, or a number)."""
    r = a.get("retry_rate")
    return r.get("share") if isinstance(r, dict) else r


def _n_text(n: Any) -> str:
    """Requests judged: a number, or one per arm."""
    if isinstance(n, dict):
        return ", ".join(f"{k} {fmt.num(v)}" for k, v in n.items()) or "n/a"
    return fmt.num(n)


def _quality_text(a: dict[str, Any]) -> str:
    q = a.get("quality") or {}
    return ", ".join(f"{k} {fmt.num(v)}" for k, v in q.items()) or "n/a"


def daily_rows(daily: Iterable[dict[str, Any]]) -> list[list[Any]]:
    """One row per (day, arm)."""
    rows = []
    for e in daily:
        for arm, a in (e.get("arms") or {}).items():
            t, e2e = a.get("ttft_s") or {}, a.get("e2e_s") or {}
            rows.append([e.get("day"), arm, fmt.num(a.get("requests")), fmt.seconds(t.get("p50")),
                         fmt.seconds(t.get("p99")), fmt.seconds(e2e.get("p50")),
                         fmt.seconds(e2e.get("p99")), fmt.num(sum((a.get("tickets") or {}).values())),
                         fmt.pct(retry_share(a)), _quality_text(a), usd(a.get("cost_usd")),
                         usd(a.get("projected_monthly_usd"))])  # fmt: skip
    return rows


def _size(x: Any) -> str:
    v = _n(x)
    return "n/a" if not math.isfinite(v) else f"{v:+.3g}"


def _ci(ci: Any) -> str:
    if not ci or len(ci) != 2 or not all(math.isfinite(_n(v)) for v in ci):
        return "n/a"
    return f"{_size(ci[0])} to {_size(ci[1])}"


DRIFT_HEAD = ["arm", "metric", "alarm day", "change day", "size", "CI", "days"]


def drift_rows(series: Iterable[dict[str, Any]]) -> list[list[Any]]:
    return [[r.get("arm"), r.get("metric"), _day(r.get("alarm_day")), _day(r.get("change_day")),
             _size(r.get("size")), _ci(r.get("ci")), fmt.num(r.get("n_days"))]
            for r in series]  # fmt: skip


ATTR_HEAD = ["metric", "API change", "control change", "difference", "CI", "kind"]


def attribution_rows(attr: Iterable[dict[str, Any]]) -> list[list[Any]]:
    return [[a.get("metric"), _size(a.get("api_change")), _size(a.get("control_change")),
             _size(a.get("difference")), _ci(a.get("ci")), a.get("kind")] for a in attr]  # fmt: skip


VERDICT_HEAD = ["day", "anytime-valid", "score", "naive daily test", "requests"]


def verdict_rows(rows: Iterable[dict[str, Any]]) -> list[list[Any]]:
    return [[r.get("day"), r.get("decision"), fmt.num(r.get("score")), r.get("naive_decision"),
             _n_text(r.get("n"))] for r in rows]  # fmt: skip


def _h_text(x: Any) -> str:
    """The CUSUM threshold: one number, or one per noise model."""
    if isinstance(x, dict):
        return ", ".join(f"{k} {fmt.num(v)}" for k, v in x.items()) or "n/a"
    return fmt.num(x)


def _day(x: Any) -> str:
    return "-" if x is None else str(x)


def _hms(x: Any) -> str:
    v = _n(x)
    if not math.isfinite(v):
        return "n/a"
    if v >= 86400:
        return f"{v / 86400:.3g} days"
    if v >= 3600:
        return f"{v / 3600:.3g} h"
    return f"{v:.3g} s"


def _intro(c: dict[str, Any]) -> str:
    if c.get("view_day") is not None:
        span = (f"Experiment-clock day {c['view_day']} only (this day's rows; its cost figures, "
                "cumulative and running projection, are this day's own: the month so far is in "
                "the cumulative report)")  # fmt: skip
    else:
        span = (f"{c.get('days')} experiment-clock day(s) with rows, day {_day(c.get('first_day'))} "
                f"to day {_day(c.get('last_day'))}")  # fmt: skip
    scale = c.get("time_scale")
    clock = ""
    if isinstance(scale, int | float) and scale != 1 and c.get("day_s"):
        clock = f"; accelerated clock x{scale:g} (a day in {c['day_s'] / scale:.3g} wall seconds)"
    return (f"{span}{clock}. API arm {c.get('api_arm')} (judge baseline); control "
            f"{c.get('control_arm') or 'none'} (the pinned self-hosted candidate).")  # fmt: skip


def demonstration_text(c: dict[str, Any]) -> str:
    """The plain statement a run on simulators carries, with how to run the real month."""
    sims = ", ".join(c.get("simulator_arms") or [])
    return (f"This compressed month is a demonstration on simulators (arms {sims} are embedded "
            "simulators): it shows what the canary measures and catches, not how your "
            "providers behave. To run the real one, set the endpoints and "
            "keys through the config and the environment (arms.cloud.base_url, arms.cloud.model, "
            "arms.cloud.api_key_env naming the environment variable that holds the key, "
            f"arms.selfhosted.base_url), then `make experiment config={LIVE_CONFIG}`: it runs 30 "
            "days in real time, writes RUN_DIR/days/NNN/ after each day, and after a restart "
            f"`make experiment config={LIVE_CONFIG} ARGS=\"resume=latest\"` continues the same "
            "run (the gap is recorded as harness downtime).")  # fmt: skip


# ---------------------------------------------------------------- checklist


def _cost_lines(s: Summary, c: dict[str, Any]) -> list[str]:
    cost = s.get("cost") or {}
    if cost.get("error"):
        return [f"no cost figures: {cost['error']}"]
    out = []
    for arm, b in (cost.get("arms") or {}).items():
        extra = " including engineering time" if b.get("role") == "selfhost" else ""
        out.append(f"{arm} ({b.get('role') or '?'}): {usd(b.get('monthly_total_usd'))}/month"
                   f"{extra}")  # fmt: skip
    eng = _engineering_month(s)
    if eng:
        sh = (cost.get("inputs") or {}).get("selfhost") or {}
        out.append(f"engineering time: {fmt.num(sh.get('engineering_hours'))} h/month x "
                   f"{usd(sh.get('hourly_rate_usd'))} = {usd(eng)}/month")  # fmt: skip
    hyb = [x for x in cost.get("hybrid") or [] if math.isfinite(_n(x.get("monthly_total_usd")))]
    if hyb:
        best = min(hyb, key=lambda x: _n(x["monthly_total_usd"]))
        out.append(f"cheapest hybrid split: {_n(best['share_selfhosted']):.0%} self-hosted at "
                   f"{usd(best['monthly_total_usd'])}/month")  # fmt: skip
    be = cost.get("break_even") or {}
    if be.get("monthly_api_spend_usd") is not None:
        out.append(f"break-even at {usd(be['monthly_api_spend_usd'])}/month of API spend")
    elif be.get("never"):
        out.append("self-hosting never breaks even at this capacity")
    elif be:
        out.append(f"no break-even: {be.get('why_none', 'not computed')}")
    return out


def daily_slo_days(daily: list[dict[str, Any]], arm: str, limit_s: float
                   ) -> tuple[list[int], int, list[int]]:  # fmt: skip
    """``(days above the SLO, days with requests, censored days)`` for one arm's daily TTFT
    p99: a day whose p99 is null although it had requests (censored: more than 1% of them
    failed) counts as above the SLO, never as met."""
    over, censored, days = [], [], 0
    for e in daily:
        t = (((e.get("arms") or {}).get(arm)) or {}).get("ttft_s") or {}
        if not t.get("n"):
            continue  # the arm had no (non-cancelled) request that day
        days += 1
        p99 = _n(t.get("p99"))
        if not math.isfinite(p99):
            censored.append(e.get("day"))
            over.append(e.get("day"))
        elif p99 > limit_s:
            over.append(e.get("day"))
    return over, days, censored


def _slo_lines(s: Summary, c: dict[str, Any]) -> list[str]:
    slo = c.get("slo") or {}
    out = []
    daily = s.get("daily") or []
    for arm, lat in (s.get("latency") or {}).items():
        rt, re_ = lat.get("request_ttft_s") or {}, lat.get("request_e2e_s") or {}
        g = (s.get("goodput") or {}).get(arm) or {}
        parts = [f"request TTFT p99 {fmt.seconds(rt.get('p99'))} (SLO {fmt.bound(slo.get('ttft_s'))})",
                 f"request E2E p99 {fmt.seconds(re_.get('p99'))} (SLO {fmt.bound(slo.get('e2e_s'))})",
                 f"goodput {fmt.pct(g.get('share'))} within the SLO"]  # fmt: skip
        lim = _n(slo.get("ttft_s"))
        if daily and math.isfinite(lim):
            over, days, censored = daily_slo_days(daily, arm, lim)
            text = f"daily TTFT p99 above the SLO on {len(over)} of {days} day(s)"
            if censored:
                text += (f" ({len(censored)} of them with p99 unknown, more than 1% of "
                         f"requests failed: day(s) {', '.join(map(str, censored))})")  # fmt: skip
            parts.append(text)
        out.append(f"{arm}: " + "; ".join(parts))
    return out


def _ticket_lines(s: Summary) -> list[str]:
    daily = s.get("daily") or []
    out = []
    for arm in _arm_names(daily):
        by: dict[str, float] = {}
        for e in daily:
            for t, n in ((((e.get("arms") or {}).get(arm) or {}).get("tickets")) or {}).items():
                by[t] = by.get(t, 0) + _n(n)
        rr = np.asarray([_n(retry_share(((e.get("arms") or {}).get(arm)) or {})) for e in daily])
        fin = rr[np.isfinite(rr)]
        trend = (f"; retry rate {fmt.pct(fin[0])} on the first day, {fmt.pct(fin[-1])} on the last"
                 if fin.size else "")  # fmt: skip
        err = ((s.get("errors") or {}).get(arm) or {}).get("per_1000")
        kinds = ", ".join(f"{t} {fmt.num(n)}" for t, n in sorted(by.items()) if n) or "none"
        out.append(f"{arm}: {fmt.num(sum(by.values()))} tickets ({kinds}); "
                   f"{fmt.num(err)} failed per 1,000 requests{trend}")  # fmt: skip
    return out


def _drift_lines(s: Summary, c: dict[str, Any]) -> list[str]:
    d = s.get("drift")
    if not d:
        return ["not computed" + (" (a day's report)" if c.get("view_day") is not None else "")]
    out = []
    for a in alarms(s):
        level = ""
        if math.isfinite(_n(a.get("before"))) and math.isfinite(_n(a.get("after"))):
            level = f", {fmt.num(a['before'])} -> {fmt.num(a['after'])}"
        out.append(f"{a.get('arm')} {a.get('metric')}: change on day {_day(a.get('change_day'))} "
                   f"(alarm on day {_day(a.get('alarm_day'))}), size {_size(a.get('size'))} "
                   f"(CI {_ci(a.get('ci'))}){level}")  # fmt: skip
    for a in d.get("attribution") or []:
        if a.get("kind") in (None, "none"):
            continue
        out.append(f"attribution {a.get('metric')}: {a.get('kind')}; API minus control "
                   f"{_size(a.get('difference'))} (CI {_ci(a.get('ci'))})")  # fmt: skip
    for f in d.get("fingerprint_changes") or []:
        out.append(f"{f.get('arm')} fingerprint changed on day {_day(f.get('day'))}: "
                   f"{f.get('from')} -> {f.get('to')}")  # fmt: skip
    if not alarms(s):
        out.insert(0, f"no drift alarm (threshold: one false alarm per "
                      f"{fmt.num(d.get('false_alarm_days'))} days across all watched series)")  # fmt: skip
    return out


def _verdict_lines(s: Summary) -> list[str]:
    rows = s.get("daily_verdict") or []
    if not rows:
        return ["not computed"]
    last = rows[-1]
    naive_no = [r["day"] for r in rows if r.get("naive_decision") == "NO_GO"]
    seq_no = [r["day"] for r in rows if r.get("decision") == "NO_GO"]
    return [f"anytime-valid on day {last.get('day')}: {last.get('decision')} (NO_GO on "
            f"{len(seq_no)} of {len(rows)} days); a naive daily test would have said NO_GO on "
            f"{len(naive_no)} day(s)" + (f" ({', '.join(map(str, naive_no[:10]))})"
                                         if naive_no else "")]  # fmt: skip


def _whatif_line(s: Summary) -> str | None:
    """What the what-if replay of routing policies found: ``summary["whatif"]``, or the
    replay's own ``RUN_DIR/whatif/summary.json`` (``canary.whatif``)."""
    w = s.get("whatif") or (s.get("canary") or {}).get("whatif")
    if not isinstance(w, dict):
        return None
    rec = w.get("recommendation") or w.get("best") or {}
    if isinstance(rec, dict) and rec.get("policy"):
        return (f"the what-if replay of routing policies (harness whatif) recommends policy "
                f"{rec['policy']} at {usd(rec.get('monthly_total_usd'))}/month (verdict on "
                f"its evaluation part: {rec.get('evaluation_verdict') or 'n/a'})")  # fmt: skip
    if isinstance(rec, dict) and rec:
        return ("in the what-if replay of routing policies (harness whatif) no policy passed "
                "the canary judge against the API arm")  # fmt: skip
    return "a what-if replay of routing policies is in the whatif section"


def checklist(s: Summary) -> list[tuple[str, list[str]]]:
    """(item, plain-text lines) in memo order; the renderers escape them."""
    c = s.get("canary") or {}
    dt = s.get("downtime") or {}
    factors = c.get("factors") or {}
    items = [
        ("Monthly cost per path and break-even", _cost_lines(s, c)),
        ("Latency against the SLO", _slo_lines(s, c)),
        ("Failures and tickets", _ticket_lines(s)),
        ("Drift detected", _drift_lines(s, c)),
        ("Daily verdict", _verdict_lines(s)),
        (
            "Harness downtime",
            [
                f"{len(dt.get('entries') or [])} gap(s), "
                f"{_hms(dt.get('total_wall_s'))} wall, "
                f"{_hms(dt.get('total_virtual_s'))} on the experiment clock "
                "(not an outage of either arm)"
            ],
        ),  # fmt: skip
        (
            "Qualitative factors (declared in canary.factors, not scored)",
            [
                f"{label}: {factors.get(k) if factors.get(k) not in (None, '') else 'not declared'}"
                for k, label in FACTOR_LABELS.items()
            ],
        ),  # fmt: skip
    ]
    return items


def decision_lines(s: Summary) -> list[str]:
    """The recommendation and its reasons, in plain text."""
    c = s.get("canary") or {}
    rec = c.get("recommendation") or {}
    out = [f"Recommendation: {rec.get('choice', 'n/a')}, because " + "; ".join(rec.get("why") or
           ["no reasons recorded"]) + "."]  # fmt: skip
    w = _whatif_line(s)
    if w:
        out.append(w[:1].upper() + w[1:] + ".")
    out.append("Weigh the declared qualitative factors below against these numbers: they are "
               "shown, not scored.")  # fmt: skip
    return out


# ---------------------------------------------------------------- html / memo


def _html(s: Summary, plots: list[PlotRef]) -> list[Any]:
    c = s.get("canary")
    if not c:
        return [h.p("Not a month-long canary (canary.enabled is off and the rows cover one "
                    "experiment-clock day).")]  # fmt: skip
    parts: list[Any] = [h.p(_intro(c))]
    if c.get("demonstration"):
        parts.append(h.Safe('<p class="warn">'))
        parts += [h.esc(demonstration_text(c)), h.Safe("</p>")]
    parts += [h.Safe("<p><strong>"), h.esc(decision_lines(s)[0]), h.Safe("</strong></p>")]
    parts.append(h.ul(decision_lines(s)[1:]))
    parts.append(h.Safe("<h3>Checklist</h3>"))
    for item, lines in checklist(s):
        parts += [h.p(item), h.ul(lines)]
    parts += [h.figure(p) for p in plots]
    daily = s.get("daily") or []
    if daily:
        parts += [h.Safe("<h3>Daily figures</h3>"), h.table(DAILY_HEAD, daily_rows(daily))]
    d = s.get("drift") or {}
    if d.get("series"):
        parts += [h.Safe("<h3>Drift detection</h3>"),
                  h.p(f"CUSUM threshold h = {_h_text(d.get('h'))}, k = {fmt.num(d.get('k'))}: "
                      f"one false alarm per {fmt.num(d.get('false_alarm_days'))} days across all watched series."),
                  h.table(DRIFT_HEAD, drift_rows(d["series"]))]  # fmt: skip
    if d.get("attribution"):
        parts.append(h.table(ATTR_HEAD, attribution_rows(d["attribution"])))
    if d.get("fingerprint_changes"):
        parts.append(h.table(["arm", "day", "from", "to"],
                             [[f.get("arm"), f.get("day"), f.get("from"), f.get("to")]
                              for f in d["fingerprint_changes"]]))  # fmt: skip
    if s.get("daily_verdict"):
        parts += [h.Safe("<h3>Daily verdict</h3>"),
                  h.table(VERDICT_HEAD, verdict_rows(s["daily_verdict"]))]  # fmt: skip
    dt = (s.get("downtime") or {}).get("entries") or []
    if dt:
        parts.append(h.table(["from", "to", "wall", "experiment clock", "from day", "to day"],
                             [[e.get("from"), e.get("to"), _hms(e.get("wall_s")),
                               _hms(e.get("virtual_s")), e.get("from_day"), e.get("to_day")]
                              for e in dt]))  # fmt: skip
    if c.get("notes"):
        parts.append(h.ul(c["notes"]))
    return parts


def _memo(s: Summary) -> list[str]:
    c = s.get("canary")
    if not c:
        return []
    out = ["## Canary: decision and checklist", "", md_escape(_intro(c), 600)]
    if c.get("demonstration"):
        out += ["", f"**{md_escape(demonstration_text(c), 1500)}**"]
    if c.get("notes"):
        out += ["", *[f"- {md_escape(n, 600)}" for n in c["notes"]]]
    daily = s.get("daily") or []
    if daily and c.get("view_day") is not None:
        out += ["", *md_table(DAILY_HEAD, daily_rows(daily))]
    lines = decision_lines(s)
    out += ["", "### Decision", "", f"**{md_escape(lines[0], 1000)}**", "",
            *[md_escape(x, 600) for x in lines[1:]], "", "### Checklist", ""]  # fmt: skip
    for item, rows in checklist(s):
        out.append(f"- **{md_escape(item)}**")
        out += [f"  - {md_escape(r, 600)}" for r in rows]
    return out


def _compute(data: RunData, s: Summary) -> dict[str, Any] | None:
    return canary_section(data, s)


def usd(x: Any) -> str:
    from harness.cost.report import usd as cost_usd  # not at import: cost.report imports us

    return cost_usd(x)


def _money_ticks(x: float, pos: int) -> str:
    from harness.cost.report import _money_ticks as ticks

    return ticks(x, pos)


register_section(
    Section(
        "canary", "Month-long canary", _compute, plots=_plots, html=_html, memo=_memo, memo_rank=99
    )  # fmt: skip
)
