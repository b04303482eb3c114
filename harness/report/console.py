"""The one-screen summary printed at the end of a run, from its ``summary.json`` dict."""

from __future__ import annotations

import re
from typing import Any

from harness.report import fmt

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(text: Any) -> str:
    """Terminal-safe text: control characters (escape sequences included) become '?'."""
    return _CONTROL.sub("?", str(text))


def _arm_ref(ref: Any, this_run: Any = None) -> str:
    """An arm of the verdict: its name, plus the run when it comes from another run."""
    if isinstance(ref, dict):
        arm = plain(ref.get("arm"))
        run = ref.get("run_id")
        return f"{arm} of run {plain(run)}" if run and run != this_run else arm
    return plain(ref)


def format_summary(summary: dict[str, Any]) -> str:
    """Per arm: logical requests, failed requests (after retries) by type, retries, goodput,
    p50/p99 of request TTFT and E2E (from the arrival, retries included) and TPOT."""
    lines = [f"run {plain(summary.get('run_id'))} ({plain(summary.get('experiment'))})"]
    run = summary.get("run") or {}
    if run:
        lines[0] += f": {plain(run.get('status', '?'))}, {run.get('rows', 0)} rows"
    latency = summary.get("latency") or {}
    errors = summary.get("errors") or {}
    goodput = summary.get("goodput") or {}
    throughput = summary.get("throughput") or {}
    header = (
        f"{'arm':<14}{'requests':>9}{'errors':>8}{'retry':>7}{'goodput':>9}  "
        f"{'req TTFT p50/p99':>19}  {'TPOT p50/p99':>19}  {'req E2E p50/p99':>19}  "
        f"{'out tok/s':>9}"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for arm in summary.get("arms") or {}:
        lat = latency.get(arm) or {}
        err = errors.get(arm) or {}
        gp = goodput.get(arm) or {}
        tp = throughput.get(arm) or {}

        def pair(metric: str, lat: dict[str, Any] = lat) -> str:
            m = lat.get(metric) or lat.get(metric.removeprefix("request_")) or {}
            cens = m.get("censored") or ()

            def one(q: str) -> str:
                return "censored" if q in cens else fmt.seconds(m.get(q))

            return f"{one('p50')} / {one('p99')}"

        tps = tp.get("output_tps")
        lines.append(
            f"{plain(arm):<14}{err.get('requests', 0):>9}{err.get('errors', 0):>8}"
            f"{fmt.pct(err.get('retry_rate')):>7}{fmt.pct(gp.get('share')):>9}  "
            f"{pair('request_ttft_s'):>19}  {pair('tpot_s'):>19}  {pair('request_e2e_s'):>19}  "
            f"{'n/a' if tps is None else f'{tps:.0f}':>9}"
        )
        by_type = err.get("by_type") or {}
        if by_type:
            kinds = ", ".join(
                f"{plain(k)}: {v.get('count', v) if isinstance(v, dict) else v}"
                for k, v in by_type.items()
            )
            lines.append(f"{'':<14}failed requests by type: {kinds}")
        cancelled = err.get("cancelled")
        if cancelled:
            lines.append(f"{'':<14}cancelled by the harness (not counted): {cancelled}")
    verdict = summary.get("verdict") or {}
    if verdict.get("decision"):
        reasons = ", ".join(plain(r) for r in (verdict.get("reasons") or [])[:4])
        score = verdict.get("score")
        lines.append(
            f"verdict: {plain(verdict['decision'])} "
            f"({_arm_ref(verdict.get('candidate'), summary.get('run_id'))} vs "
            f"{_arm_ref(verdict.get('baseline'), summary.get('run_id'))}"
            + (f", score {score:.0f}" if isinstance(score, int | float) else "")
            + (f"; {reasons}" if reasons else "")
            + ")"
        )
    cost = summary.get("cost") or {}
    costed = [(a, b) for a, b in (cost.get("arms") or {}).items()
              if b.get("monthly_total_usd") is not None]  # fmt: skip
    if costed:
        monthly = ", ".join(f"{plain(a)} ${b['monthly_total_usd']:,.0f}" for a, b in costed)
        be = cost.get("break_even") or {}
        spend = be.get("monthly_api_spend_usd")
        tail = (f"; break-even at ${spend:,.0f}/month of API spend" if spend is not None
                else "; self-hosting never breaks even at the measured capacity"
                if be.get("never") else "")  # fmt: skip
        calls = (cost.get("traffic") or {}).get("monthly_calls") or 0
        lines.append(f"cost per month at {calls:,.0f} calls: {monthly}{tail}")
    for caveat in (summary.get("caveats") or [])[:5]:
        lines.append(f"note: {plain(caveat)}")
    return "\n".join(lines)
