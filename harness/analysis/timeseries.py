"""Time bins for over-time views: a "nice" bin width and per-bin counts and quantiles.

Times are relative seconds (0 = start of the analysed window). Bin widths come from a fixed
ladder (1 s ... 1 day) so that a run gets at most about ``target_bins`` bins. The analysis
modules bin through :class:`TimeBins` (one helper for latency, errors and throughput); the
last bin usually covers only part of its width, and a rate over it must be divided by the
covered part (:meth:`TimeBins.covered`), not by the full width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_LADDER = (
    0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
    21600, 43200, 86400,
)  # fmt: skip


def bin_width(duration_s: float, target_bins: int = 60) -> float:
    """Smallest width on the ladder giving at most ``target_bins`` bins (1 s for no duration)."""
    if not math.isfinite(duration_s) or duration_s <= 0:
        return 1.0
    raw = duration_s / target_bins
    for w in _LADDER:
        if w >= raw:
            return float(w)
    return float(math.ceil(raw / 86400) * 86400)


def bin_index(t: np.ndarray, width: float) -> np.ndarray:
    """Bin number of each relative time (NaN -> -1)."""
    t = np.asarray(t, dtype=np.float64)
    out = np.full(t.shape, -1, dtype=np.int64)
    ok = np.isfinite(t)
    out[ok] = np.floor(np.maximum(t[ok], 0) / width).astype(np.int64)
    return out


def first_finite(primary: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """``primary`` where it is finite, else ``fallback`` (e.g. send time, else scheduled time)."""
    primary = np.asarray(primary, dtype=np.float64)
    return np.where(np.isfinite(primary), primary, fallback)


@dataclass(frozen=True)
class TimeBins:
    """Bins of ``width`` seconds over the analysed window ``[0, end]`` (relative seconds).

    A time at the very end of the window belongs to the last bin (not to an empty extra one).
    """

    width: float
    end: float  # window end in relative seconds; NaN when there is no window

    @classmethod
    def for_window(cls, window: tuple[float, float], target_bins: int = 60) -> TimeBins:
        """Bins for a ``(start, end)`` window (:meth:`RunData.window`; start is 0)."""
        lo, hi = window
        return cls(bin_width(hi - lo, target_bins), hi)

    @property
    def n_window(self) -> int | None:
        """Bins that cover the window (None when it is unknown)."""
        if not math.isfinite(self.end) or self.end <= 0:
            return None
        return max(1, math.ceil(self.end / self.width))

    def index(self, t: np.ndarray) -> np.ndarray:
        """Bin number of each relative time (NaN -> -1)."""
        out = bin_index(t, self.width)
        n = self.n_window
        return np.minimum(out, n - 1) if n is not None else out

    def start(self, b: int) -> float:
        """Start of bin ``b`` (relative seconds)."""
        return b * self.width

    def covered(self, n_bins: int) -> np.ndarray:
        """Seconds of the window inside each of bins 0..n_bins-1 (the full width when unknown).

        Formula: ``covered(b) = min(width, end - b * width)``
        """
        w = np.full(n_bins, self.width, dtype=np.float64)
        if math.isfinite(self.end) and self.end > 0:
            w = np.clip(self.end - np.arange(n_bins) * self.width, 0.0, self.width)
        return w


def n_bins(*indexes: np.ndarray) -> int:
    """Number of bins needed for bin indexes (``-1`` entries ignored)."""
    return max((int(b.max()) + 1 for b in indexes if b.size), default=0)


def counts(bins: np.ndarray, n_bins: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-bin count (or weighted sum) over bins 0..n_bins-1; bin -1 is dropped."""
    keep = bins >= 0
    w = None if weights is None else np.nan_to_num(np.asarray(weights, np.float64)[keep])
    return np.bincount(bins[keep], weights=w, minlength=n_bins)[:n_bins].astype(np.float64)


def binned_quantiles(
    bins: np.ndarray, values: np.ndarray, qs: tuple[float, ...]
) -> dict[int, tuple[int, list[float]]]:
    """Per-bin count and approximate quantiles (pyarrow t-digest; exact for small bins)."""
    keep = (bins >= 0) & np.isfinite(values)
    if not keep.any():
        return {}
    table = pa.table({"b": bins[keep], "v": values[keep]})
    agg = table.group_by("b").aggregate(
        [("v", "count"), ("v", "tdigest", pc.TDigestOptions(q=list(qs)))]
    )
    out = {}
    for b, n, q in zip(
        agg.column("b").to_pylist(),
        agg.column("v_count").to_pylist(),
        agg.column("v_tdigest").to_pylist(),
        strict=True,
    ):
        out[int(b)] = (int(n), [float(x) for x in q])
    return out
