"""What the plots draw: checked on the matplotlib Axes before the figure is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.report import plots
from harness.report.plots import PlotWriter


class CapturingWriter(PlotWriter):
    """A PlotWriter that keeps each figure's lines (label, x, y) and title before saving."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.lines: dict[str, list[list[tuple[str, np.ndarray, np.ndarray]]]] = {}
        self.legends: dict[str, list[list[str]]] = {}
        self.titles: dict[str, str] = {}

    def save(self, fig, name, title):
        axes = fig.get_axes()
        self.lines[name] = [
            [
                (
                    ln.get_label(),
                    np.asarray(ln.get_xdata(), float),
                    np.asarray(ln.get_ydata(), float),
                )
                for ln in ax.get_lines()
            ]
            for ax in axes
        ]
        self.legends[name] = [
            [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []
            for ax in axes
        ]
        self.titles[name] = title
        return super().save(fig, name, title)


def test_cdf_legend_shows_sample_size_not_subsample(tmp_path: Path):
    n = plots.CDF_MAX_POINTS + 5_000
    v = np.random.default_rng(1).lognormal(size=n)
    v[:3] = np.nan  # not finite: not counted
    w = CapturingWriter(tmp_path)
    plots.plot_cdfs({"cloud": {"ttft_s": v}}, ["ttft_s"], w, seed=3)
    ((label, x, _),) = w.lines["latency_cdf"][0]
    assert x.size == plots.CDF_MAX_POINTS  # the line draws the subsample...
    assert label == f"cloud (n={n - 3:,})"  # ...the legend gives the sample's size
    assert w.legends["latency_cdf"][0] == [f"cloud (n={n - 3:,})"]


def test_kv_cache_fraction_is_drawn_in_percent(tmp_path: Path):
    pts = [[0.0, 0.25], [1.0, 0.5], [2.0, 1.0]]  # vLLM's 0-1 fraction
    server = {
        "selfhosted": {
            "vllm:num_requests_running": {"over_time": {"bin_s": None, "points": [[0.0, 3.0]]}},
            "vllm:kv_cache_usage_perc": {"over_time": {"bin_s": None, "points": pts}},
        }
    }
    w = CapturingWriter(tmp_path)
    plots.plot_server(server, w)
    count_ax, kv_ax = w.lines["server"]
    assert count_ax[0][2].tolist() == [3.0]  # counts unscaled
    ((_, _, y),) = kv_ax
    assert y.tolist() == [25.0, 50.0, 100.0]


def _pt(t: float, n: int, p50: float, p99: float) -> dict:
    return {"t": t, "n": n, "p50": p50, "p99": p99}


def test_over_time_p99_only_in_bins_with_enough_samples(tmp_path: Path):
    lo, hi = plots.OVER_TIME_MIN_N_P50, plots.OVER_TIME_MIN_N_P99
    pts = [
        _pt(0.0, 4, 0.1, 0.9),  # too few for either: the "p99" of 4 samples is their max
        _pt(1.0, lo, 0.2, 0.8),  # p50 only
        _pt(2.0, hi - 1, 0.3, 0.7),  # p50 only
        _pt(3.0, hi, 0.4, 0.6),  # both
    ]
    t, p50, p99 = plots.over_time_lines(pts)
    assert t.tolist() == [0.0, 1.0, 2.0, 3.0]
    np.testing.assert_array_equal(p50, [np.nan, 0.2, 0.3, 0.4])
    np.testing.assert_array_equal(p99, [np.nan, np.nan, np.nan, 0.6])

    few = [_pt(0.0, 4, 0.1, 0.9), _pt(1.0, 8, 0.2, 0.5)]  # no bin can give a p99
    over_time = {"bin_s": 1.0, "arms": {"cloud": {"ttft_s": pts}, "selfhosted": {"ttft_s": few}}}
    w = CapturingWriter(tmp_path)
    plots.plot_latency_over_time(over_time, w)
    (ax,) = w.lines["latency_over_time"]
    drawn = {label: y for label, _, y in ax}
    assert set(drawn) == {"cloud p50", "cloud p99", "selfhosted p50"}
    np.testing.assert_array_equal(drawn["cloud p99"], [np.nan, np.nan, np.nan, 0.6])
    np.testing.assert_array_equal(drawn["selfhosted p50"], [np.nan, 0.2])
    title = w.titles["latency_over_time"]
    assert f"p99 in bins with n >= {hi}" in title and f"p50 in bins with n >= {lo}" in title


@pytest.mark.parametrize("n", [0, 1])
def test_over_time_all_bins_too_small_still_writes(tmp_path: Path, n: int):
    over_time = {"bin_s": 1.0, "arms": {"cloud": {"ttft_s": [_pt(0.0, n, 0.1, 0.1)]}}}
    ref = plots.plot_latency_over_time(over_time, CapturingWriter(tmp_path))
    assert ref is not None and ref.png.stat().st_size > 0
