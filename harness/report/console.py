"""The one-screen summary printed at the end of a run, from its ``summary.json`` dict."""

from __future__ import annotations

import re
from typing import Any

from harness.report import fmt

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(text: Any) -> str:
    """Terminal-safe text: control characters (escape sequences included) become '?'."""
    return _CONTROL.sub("?", str(text))


def format_summary(summary: dict[str, Any]) -> str:
    """Per arm: requests, errors by type, retries, goodput, p50/p99 TTFT, TPOT and E2E."""
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
        f"{'TTFT p50/p99':>19}  {'TPOT p50/p99':>19}  {'E2E p50/p99':>19}  {'out tok/s':>9}"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for arm in summary.get("arms") or {}:
        lat = latency.get(arm) or {}
        err = errors.get(arm) or {}
        gp = goodput.get(arm) or {}
        tp = throughput.get(arm) or {}

        def pair(metric: str, lat: dict[str, Any] = lat) -> str:
            m = lat.get(metric) or {}
            return f"{fmt.seconds(m.get('p50'))} / {fmt.seconds(m.get('p99'))}"

        tps = tp.get("output_tps")
        lines.append(
            f"{plain(arm):<14}{err.get('requests', 0):>9}{err.get('errors', 0):>8}"
            f"{fmt.pct(err.get('retry_rate')):>7}{fmt.pct(gp.get('share')):>9}  "
            f"{pair('ttft_s'):>19}  {pair('tpot_s'):>19}  {pair('e2e_s'):>19}  "
            f"{'n/a' if tps is None else f'{tps:.0f}':>9}"
        )
        by_type = err.get("by_type") or {}
        if by_type:
            kinds = ", ".join(
                f"{plain(k)}: {v.get('count', v) if isinstance(v, dict) else v}"
                for k, v in by_type.items()
            )
            lines.append(f"{'':<14}errors by type: {kinds}")
    for caveat in (summary.get("caveats") or [])[:5]:
        lines.append(f"note: {plain(caveat)}")
    return "\n".join(lines)
