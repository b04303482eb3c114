"""Plots (matplotlib, Agg backend), each written as PNG and SVG into a run's ``plots/`` folder.

Every plot function takes summary pieces (or arrays) and a :class:`PlotWriter`, and returns
the :class:`PlotRef` it wrote, or None when there is nothing to draw. :meth:`PlotWriter.save`
refuses a figure whose axes lack a label, so every axis says what it shows and in which unit.
SVG text is kept as text (``svg.fonttype: none``) so labels can be searched. Math text is
off (``text.parse_math: False``): labels carry names from the data (arms, runs), and a name
like ``$\\foo$`` must print as itself, not be parsed (and crash) as TeX.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

from harness.analysis.metrics import METRIC_LABELS  # noqa: E402
from harness.analysis.stats import subsample  # noqa: E402

plt.rcParams.update(
    {"svg.fonttype": "none", "figure.dpi": 100, "axes.grid": True, "text.parse_math": False}
)
#: Points per arm drawn in a CDF (a seeded uniform subsample beyond it).
CDF_MAX_POINTS = 20_000
#: Latency over time: a bin's p50 is drawn only when the bin holds at least this many samples.
OVER_TIME_MIN_N_P50 = 5
#: ... and its p99 only with at least this many: below ~100 samples the 0.99 quantile is the
#: bin's maximum (or an interpolation between its two largest values), not an estimate of p99.
OVER_TIME_MIN_N_P99 = 100


@dataclass(frozen=True)
class PlotRef:
    """One written plot: name (file stem), title, PNG and SVG paths, PNG bytes for embedding."""

    name: str
    title: str
    png: Path
    svg: Path
    png_bytes: bytes


class PlotWriter:
    """Writes figures into ``directory`` as ``NAME.png`` and ``NAME.svg``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, fig: plt.Figure, name: str, title: str) -> PlotRef:
        for ax in fig.get_axes():
            if ax.has_data() and (not ax.get_xlabel() or not ax.get_ylabel()):
                plt.close(fig)
                raise ValueError(f"plot {name!r}: an axis has no label (x or y)")
        fig.suptitle(title)
        # Fixed margins in inches: tight_layout costs an extra full render per figure.
        w, h = fig.get_size_inches()
        fig.subplots_adjust(
            left=0.8 / w, right=1 - 0.2 / w, bottom=0.8 / h, top=1 - 0.55 / h,
            wspace=0.8 * len(fig.get_axes()) / w, hspace=0.95 / (h / max(1, _rows(fig))),
        )  # fmt: skip
        png, svg = self.directory / f"{name}.png", self.directory / f"{name}.svg"
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        png.write_bytes(buf.getvalue())
        fig.savefig(svg, format="svg")
        plt.close(fig)
        return PlotRef(name, title, png, svg, buf.getvalue())


def _rows(fig: plt.Figure) -> int:
    specs = [ax.get_subplotspec() for ax in fig.get_axes() if ax.get_subplotspec() is not None]
    return max((sp.get_gridspec().nrows for sp in specs), default=1)


def _label(key: str) -> str:
    return f"{METRIC_LABELS.get(key, key)} (s)"


def plot_cdfs(
    values: dict[str, dict[str, np.ndarray]],
    metric_keys: Sequence[str],
    writer: PlotWriter,
    *,
    name: str = "latency_cdf",
    title: str = "Latency distribution (CDF)",
    seed: int = 0,
) -> PlotRef | None:
    """Empirical CDFs, one panel per metric, one line per series (``values[series][metric]``).

    A series with more than :data:`CDF_MAX_POINTS` values is drawn from a seeded uniform
    subsample; its legend gives the full sample size (finite values), not the drawn points.
    Censored values (``+inf``: timeouts, requests never answered) are not drawn but count in
    the share, so such a line ends at ``1 - censored share``; the legend says how many.
    """
    keys = [k for k in metric_keys if any(np.size(v.get(k, [])) for v in values.values())]
    if not keys:
        return None
    cols = 2 if len(keys) > 1 else 1
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        positive = True
        lo, hi = math.inf, 0.0
        for series, vals in values.items():
            v = np.asarray(vals.get(key, []), dtype=np.float64)
            n_cens = int(np.isposinf(v).sum())  # censored (timeouts, never answered)
            v = v[np.isfinite(v)]
            n = v.size  # the sample's size; the line below may draw a subsample of it
            v = np.sort(subsample(v, CDF_MAX_POINTS, seed))
            if n == 0:
                continue
            positive &= bool(v[0] > 0)
            lo, hi = min(lo, float(v[0])), max(hi, float(v[-1]))
            # censored values count in the denominator: the curve tops out below 1
            top = n / (n + n_cens)
            label = f"{series} (n={n:,}" + (f", {n_cens:,} censored)" if n_cens else ")")
            ax.step(v, np.arange(1, v.size + 1) / v.size * top, where="post", label=label)
        if positive and hi > 10 * lo:  # a log axis only where the data span a decade
            _log_axis(ax.xaxis, ax.set_xscale)
        ax.set_xlabel(_label(key))
        ax.set_ylabel("Cumulative share" if key != "itl_s" else "Cumulative share of gaps")
        ax.set_ylim(0, 1.01)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    return writer.save(fig, name, title)


def _log_axis(axis: Any, set_scale: Any) -> None:
    """Log scale with plain-number labels (``0.05``, not ``5x10^-2``) and no minor labels,
    which matplotlib otherwise writes in scientific notation until they overlap."""
    set_scale("log")
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def over_time_lines(points: Sequence[dict[str, Any]]) -> tuple[np.ndarray, ...]:
    """``(t, p50, p99)`` as drawn: a bin's p50 is NaN (a gap in the line) when it holds fewer
    than :data:`OVER_TIME_MIN_N_P50` samples, its p99 when it holds fewer than
    :data:`OVER_TIME_MIN_N_P99` (each point carries its bin's sample count ``n``)."""
    t = np.array([p["t"] for p in points], dtype=np.float64)
    n = np.array([p["n"] for p in points], dtype=np.float64)
    p50 = np.array([p["p50"] for p in points], dtype=np.float64)
    p99 = np.array([p["p99"] for p in points], dtype=np.float64)
    p50[n < OVER_TIME_MIN_N_P50] = np.nan
    p99[n < OVER_TIME_MIN_N_P99] = np.nan
    return t, p50, p99


def plot_latency_over_time(over_time: dict[str, Any], writer: PlotWriter) -> PlotRef | None:
    """p50 (solid) and p99 (dashed) per time bin, per arm, one panel per metric.

    Bins are the analysis' time bins (not widened here). Only estimable quantiles are drawn
    (:func:`over_time_lines`): p50 in bins with at least :data:`OVER_TIME_MIN_N_P50` samples,
    p99 in bins with at least :data:`OVER_TIME_MIN_N_P99`; other bins leave a gap, and an
    arm with no such bin has no p99 line. The title states the rule.
    """
    arms = over_time.get("arms") or {}
    present = {k for s in arms.values() for k, pts in s.items() if pts}
    keys = [k for k in METRIC_LABELS if k in present]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=True):
        for i, (arm, series) in enumerate(arms.items()):
            pts = series.get(key) or []
            if not pts:
                continue
            t, p50, p99 = over_time_lines(pts)
            color = f"C{i}"
            if np.isfinite(p50).any():
                ax.plot(t, p50, color=color, label=f"{arm} p50")
            if np.isfinite(p99).any():
                ax.plot(t, p99, color=color, ls="--", label=f"{arm} p99")
        ax.set_xlabel(f"Time since start (s; bins of {over_time.get('bin_s')} s)")
        ax.set_ylabel(_label(key))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    title = (
        f"Latency over time (p50 in bins with n >= {OVER_TIME_MIN_N_P50}, "
        f"p99 in bins with n >= {OVER_TIME_MIN_N_P99})"
    )
    return writer.save(fig, "latency_over_time", title)


def plot_shift(
    comparisons: list[dict[str, Any]],
    writer: PlotWriter,
    metric_keys: Sequence[str] = ("ttft_s", "tpot_s", "e2e_s"),
    *,
    name: str = "shift_function",
) -> PlotRef | None:
    """Shift function: decile differences (other - baseline) with CI bars, one row per pair."""
    rows = [c for c in comparisons if any(c["shift"].get(k) for k in metric_keys)]
    if not rows:
        return None
    fig, axes = plt.subplots(
        len(rows),
        len(metric_keys),
        figsize=(4.6 * len(metric_keys), 3.4 * len(rows)),
        squeeze=False,
    )
    for r, comp in enumerate(rows):
        for ax, key in zip(axes[r], metric_keys, strict=True):
            pts = [p for p in comp["shift"].get(key, []) if _finite(p["diff"])]
            if not pts:
                ax.set_visible(False)
                continue
            q = np.array([p["q"] for p in pts])
            d = np.array([p["diff"] for p in pts])
            lo = np.array([p["ci"][0] if _finite(p["ci"][0]) else p["diff"] for p in pts])
            hi = np.array([p["ci"][1] if _finite(p["ci"][1]) else p["diff"] for p in pts])
            ax.errorbar(q, d, yerr=[d - lo, hi - d], fmt="o-", capsize=3)
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xlabel("Decile of the baseline distribution (q)")
            ax.set_ylabel(f"{METRIC_LABELS.get(key, key)} difference (s)")
            ax.set_title(f"{comp['other']} - {comp['baseline']}", fontsize=9)
    return writer.save(fig, name, "Shift function: quantile differences with CIs")


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def plot_throughput(throughput: dict[str, Any], writer: PlotWriter) -> PlotRef | None:
    """Completed requests/s (and arrivals/s, offered rate) and output tokens/s over time."""
    if not any(v["over_time"]["points"] for v in throughput.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    offered = None
    for i, (arm, th) in enumerate(throughput.items()):
        pts = th["over_time"]["points"]
        t = [p["t"] for p in pts]
        axes[0].plot(t, [p["requests_per_s"] for p in pts], color=f"C{i}", label=f"{arm} completed")
        axes[0].plot(
            t, [p["arrivals_per_s"] for p in pts], color=f"C{i}", ls=":", label=f"{arm} arrivals"
        )
        axes[1].plot(t, [p["output_tokens_per_s"] for p in pts], color=f"C{i}", label=arm)
        if _finite(th.get("offered_rps")):
            offered = th["offered_rps"]
    if offered is not None:
        axes[0].axhline(offered, color="k", ls="--", lw=0.8, label="offered (window mean)")
    bin_s = next(iter(throughput.values()))["over_time"]["bin_s"]
    for ax, ylabel in zip(
        axes, ("Requests per second (req/s)", "Output tokens per second (tok/s)"), strict=True
    ):
        ax.set_xlabel(f"Time since start (s; bins of {bin_s} s)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    return writer.save(fig, "throughput", "Throughput over time")


def plot_errors(errors: dict[str, Any], writer: PlotWriter) -> PlotRef | None:
    """Failed logical requests per 1,000 requests by final error type and arm (bars), and
    error attempts per 1,000 attempts over time (lines: retries included)."""
    if not any(e["requests"] for e in errors.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    types = sorted({t for e in errors.values() for t in e["by_type"]})
    arms = list(errors)
    width = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        vals = [errors[arm]["by_type"].get(t, {}).get("per_1000", 0.0) for t in types] or [0.0]
        x = np.arange(len(vals)) + i * width
        axes[0].bar(x, vals, width=width, label=arm, color=f"C{i}")
        pts = errors[arm]["over_time"]["points"]
        axes[1].plot([p["t"] for p in pts], [p["per_1000"] for p in pts], color=f"C{i}", label=arm)
    axes[0].set_xticks(np.arange(max(1, len(types))) + width * (len(arms) - 1) / 2)
    axes[0].set_xticklabels(types or ["(no errors)"], rotation=20, fontsize=8)
    axes[0].set_xlabel("Error type")
    axes[0].set_ylabel("Errors per 1,000 requests (after retries)")
    bin_s = errors[arms[0]]["over_time"]["bin_s"]
    axes[1].set_xlabel(f"Time since start (s; bins of {bin_s} s)")
    axes[1].set_ylabel("Error attempts per 1,000 attempts")
    for ax in axes:
        ax.legend(fontsize=8)
    return writer.save(fig, "errors", "Failure tickets")


def plot_server(server: dict[str, Any], writer: PlotWriter) -> PlotRef | None:
    """Server queue depth (running, waiting) and KV-cache use over time, per arm."""
    if not server:
        return None
    panels = (
        (
            ("vllm:num_requests_running", "vllm:num_requests_waiting"),
            "Requests in server (count)",
            1.0,
        ),
        (("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"), "KV-cache use (%)", 100.0),
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, (names, ylabel, scale) in zip(axes, panels, strict=True):
        drawn = False
        for i, (arm, metrics) in enumerate(server.items()):
            for j, n in enumerate(names):
                if n not in metrics:
                    continue
                pts = metrics[n]["over_time"]["points"]
                ax.plot([p[0] for p in pts], [p[1] * scale for p in pts], color=f"C{i}",
                        ls=("-", "--")[j % 2], label=f"{arm} {n.split(':')[-1]}")  # fmt: skip
                drawn = True
        if not drawn:
            ax.set_visible(False)
            continue
        ax.set_xlabel("Time since start (s)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    return writer.save(fig, "server", "Server-side metrics (scraped /metrics)")


def plot_sweep(curve: dict[str, Any], writer: PlotWriter) -> PlotRef | None:
    """Latency (p50 solid, p99 dashed) vs achieved throughput, and goodput share vs load."""
    if not any(c["points"] for c in curve.values()):
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for i, (arm, c) in enumerate(curve.items()):
        pts = [p for p in c["points"] if p.get("load") is not None]
        x = [p.get("request_rps") for p in pts]
        for ax, key in zip(axes[:2], ("ttft_s", "e2e_s"), strict=True):
            ax.plot(x, [p.get(f"{key}_p50") for p in pts], "o-", color=f"C{i}", label=f"{arm} p50")
            ax.plot(x, [p.get(f"{key}_p99") for p in pts], "s--", color=f"C{i}", label=f"{arm} p99")
        axes[2].plot([p["load"] for p in pts], [p.get("goodput_share") for p in pts], "o-",
                     color=f"C{i}", label=arm)  # fmt: skip
        if c.get("max_load_meeting_slo") is not None:
            axes[2].axvline(c["max_load_meeting_slo"], color=f"C{i}", ls=":", lw=1)
    for ax, key in zip(axes[:2], ("ttft_s", "e2e_s"), strict=True):
        ax.set_xlabel("Achieved throughput (req/s)")
        ax.set_ylabel(_label(key))
        _log_axis(ax.yaxis, ax.set_yscale)
        ax.legend(fontsize=8)
    axes[2].set_xlabel("Offered load (sweep value)")
    axes[2].set_ylabel("Goodput share (requests meeting SLO)")
    axes[2].set_ylim(0, 1.02)
    axes[2].legend(fontsize=8)
    return writer.save(fig, "sweep_latency_vs_load", "Latency vs load (sweep)")
