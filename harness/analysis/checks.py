"""Run checks: how a run was measured, where that changes how its numbers read.

Each check is a small function over :class:`~harness.analysis.data.RunData` (or plain
arrays) whose result goes to ``summary.json`` under ``checks`` (:func:`run_checks`); the
report's caveats (:func:`harness.report.sections.caveats`) phrase them. The checks:

- **server saturation** (:func:`saturation`): within an arm, TTFT trends up over the run
  while the client's own queue delay stays small, so the queue was inside the server;
- **shared endpoint** (:func:`shared_endpoints`): two arms with one ``base_url`` (scheme,
  host, port and path compared) competed for one server;
- **client** (:func:`clients_by_arm`): which client implementation each arm's rows used;
- **short forced-length output** (:func:`short_forced`): a request that forced its length
  (``ignore_eos`` + ``min_tokens = max_tokens``) and came back with fewer tokens;
- **token count sources** (:func:`count_sources`): prompt/completion counts that are local
  estimates (the server sent no usage) or the server's ``/tokenize`` count;
- **non-streaming arm** (:func:`non_streamed`): rows whose response came in one piece (TTFT
  equals E2E).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from scipy.optimize import isotonic_regression

from harness.analysis.data import RunData

# ---------------------------------------------------------------- saturation (trend test)

#: Fewest bins the trend test uses (with 5, Kendall's exact test can reach p = 1/120).
MIN_BINS = 5


@dataclass(frozen=True)
class SaturationSettings:
    """When :func:`saturation` says an arm's server saturated.

    The arm's successful requests are split, in send order, into at most ``bins`` groups of
    equal size; the median TTFT of each is a point of the trend. The server saturated when
    all of: Kendall's trend test of the medians against their order rejects "no upward trend"
    at ``alpha`` (one-sided, exact); the Theil-Sen line through the log medians grows at least
    ``min_growth``-fold from the first bin to the last; and the client's queue delay p99 is at
    most ``queue_p99_max_s`` (the client kept its schedule, so the queue was in the server).
    Each bin must hold ``min_per_bin`` independent requests and span ``fine_per_tau``
    autocorrelation times of ``fine_bins`` finer bins (see :func:`saturation`); when fewer
    than :data:`MIN_BINS` bins qualify, or there are fewer than ``5 * fine_per_tau *
    min_per_bin`` (100) requests, the arm is not tested.
    """

    bins: int = 10
    alpha: float = 0.05
    min_growth: float = 1.5
    queue_p99_max_s: float = 0.05
    min_per_bin: int = 5
    fine_bins: int = 40
    fine_per_tau: float = 4.0


@functools.lru_cache(maxsize=64)
def _inversions_cdf(n: int) -> np.ndarray:
    """``P(Q <= k)`` for ``k = 0 .. n(n-1)/2``, Q = inversions of a uniform random permutation
    of ``n`` items (the Mahonian distribution; Kendall's exact null, Kendall 1938)."""
    counts = np.ones(1)
    for m in range(2, n + 1):
        counts = np.convolve(counts, np.ones(m))  # the m-th item adds 0 .. m-1 inversions
    return np.cumsum(counts) / counts.sum()


def kendall_trend(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kendall's tau of ``y`` against its order (last axis) and the exact one-sided p-value of
    an upward trend, ``P(S >= s)`` under exchangeability; vectorised over leading axes.

    Formula: ``S = sum_{i<j} sign(y_j - y_i)``, ``tau = S / (n(n-1)/2)``; with ``Q`` the
    discordant pairs, ``p = P(Q <= (n(n-1)/2 - S) / 2)`` (ties count as neither, which
    makes the test conservative). Matches ``scipy.stats.kendalltau(range(n), y,
    alternative="greater", method="exact")`` without ties.
    """
    y = np.asarray(y, np.float64)
    n = y.shape[-1]
    i, j = np.triu_indices(n, k=1)
    s = np.sign(y[..., j] - y[..., i]).sum(axis=-1)
    pairs = n * (n - 1) / 2
    k = np.floor((pairs - s) / 2 + 1e-9).astype(np.int64)
    p = _inversions_cdf(n)[np.clip(k, 0, int(pairs))]
    return s / pairs, p


def theil_sen_slope(y: np.ndarray) -> np.ndarray:
    """Theil-Sen slope of ``y`` against ``0 .. n-1`` (last axis): the median of the pairwise
    slopes ``(y_j - y_i) / (j - i)``, ``i < j`` (Sen 1968); vectorised over leading axes."""
    y = np.asarray(y, np.float64)
    i, j = np.triu_indices(y.shape[-1], k=1)
    return np.median((y[..., j] - y[..., i]) / (j - i), axis=-1)


def autocorrelation_time(x: np.ndarray) -> float:
    """Integrated autocorrelation time ``tau = 1 + 2 sum_{k>=1} rho_k`` of the series ``x``,
    at least 1, so that ``x.size / tau`` is its effective sample size.

    Geyer's (1992) initial monotone sequence estimator: the sums of adjacent autocorrelations
    ``rho_2m + rho_2m+1`` are added while positive, made non-increasing; the autocorrelations
    come from an FFT (O(n log n)).
    """
    x = np.asarray(x, np.float64)
    n = x.size
    if n < 4 or np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())):  # constant: no noise
        return 1.0
    x = x - x.mean()
    f = np.fft.rfft(x, 2 * n)
    acov = np.fft.irfft(f * np.conj(f), 2 * n)[:n]
    if acov[0] <= 0:
        return 1.0
    rho = acov / acov[0]
    m = (n - 1) // 2
    pairs = rho[0 : 2 * m : 2] + rho[1 : 2 * m + 1 : 2]
    stop = np.flatnonzero(pairs <= 0)
    pairs = np.minimum.accumulate(pairs[: stop[0]] if stop.size else pairs)
    return float(max(1.0, -1.0 + 2.0 * pairs.sum()))


def _split(n: int, k: int) -> np.ndarray:
    """Sizes of ``k`` contiguous groups of ``n`` items, as ``np.array_split`` makes them."""
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    return sizes


def split_medians(v: np.ndarray, k: int) -> np.ndarray:
    """Medians of ``v`` cut into ``k`` contiguous groups of (nearly) equal size, vectorised."""
    v = np.asarray(v, np.float64)
    sizes = _split(v.size, k)
    group = np.repeat(np.arange(k), sizes)
    sv = v[np.lexsort((v, group))]
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return (sv[starts + (sizes - 1) // 2] + sv[starts + sizes // 2]) / 2


def saturation(
    t: np.ndarray,
    ttft: np.ndarray,
    queue_delay: np.ndarray,
    settings: SaturationSettings | None = None,
) -> dict[str, Any]:
    """Did the server saturate? ``t`` send times and ``ttft`` TTFTs of one arm's successful
    requests (seconds; non-finite pairs are dropped), ``queue_delay`` of all its attempts.

    Returns ``{tested, saturated, reason, n, bins, ttft_p50_first, ttft_p50_last, growth,
    kendall_tau, p_value, queue_delay_p99_s, autocorrelation_time, settings}`` (see
    :class:`SaturationSettings`). ``growth`` is the fitted first-to-last-bin ratio
    ``exp(slope * (bins - 1))`` of the Theil-Sen line through the log medians.

    Autocorrelation: the bins of an autocorrelated series are not independent, which would
    inflate the trend test's false alarms (a stationary series that drifts slowly looks like a
    trend). So, after removing the best non-decreasing fit (isotonic regression of the finer
    bins' log medians), the number of bins shrinks until each holds
    ``min_per_bin`` independent requests (the request series' autocorrelation time) and spans
    ``fine_per_tau`` autocorrelation times of the medians of ``fine_bins`` finer bins (slow
    variation that per-request noise hides). Variation as slow as the run itself cannot be
    told from a trend: the calibration (``tests/analysis/test_checks.py``) covers series
    whose correlation time is at most a tenth of the run.
    """
    cfg = settings or SaturationSettings()
    t = np.asarray(t, np.float64)
    ttft = np.asarray(ttft, np.float64)
    keep = np.isfinite(t) & np.isfinite(ttft)
    t, ttft = t[keep], ttft[keep]
    qd = np.asarray(queue_delay, np.float64)
    qd = qd[np.isfinite(qd)]
    q99 = float(np.quantile(qd, 0.99)) if qd.size else math.nan
    out: dict[str, Any] = {
        "tested": False,
        "saturated": False,
        "reason": None,
        "n": int(t.size),
        "bins": 0,
        "ttft_p50_first": None,
        "ttft_p50_last": None,
        "growth": None,
        "kendall_tau": None,
        "p_value": None,
        "queue_delay_p99_s": q99,
        "autocorrelation_time": None,
        "settings": asdict(cfg),
    }
    n = t.size
    n_min = math.ceil(MIN_BINS * cfg.fine_per_tau) * cfg.min_per_bin
    if n < n_min:
        out["reason"] = f"{n} successful requests: the trend test needs {n_min}"
        return out
    logv = np.log(np.maximum(ttft[np.argsort(t, kind="stable")], 1e-12))
    # autocorrelation around a fitted rising curve (isotonic: a queue that grows linearly in
    # time is not a line in log), of the requests and of the finer bins' medians
    n_fine = min(cfg.fine_bins, n // cfg.min_per_bin)
    fine = split_medians(logv, n_fine)
    line = isotonic_regression(fine).x  # any rising shape (a queue grows linearly, not in log)
    tau_req = autocorrelation_time(logv - np.repeat(line, _split(n, n_fine)))
    tau_fine = autocorrelation_time(fine - line)
    bins = min(
        cfg.bins,
        int(n / (cfg.min_per_bin * tau_req)),
        int(n_fine / (cfg.fine_per_tau * tau_fine)),
    )
    out.update(bins=bins, autocorrelation_time=tau_req)
    if bins < MIN_BINS:
        out["reason"] = (
            f"{n} successful requests, autocorrelated (autocorrelation time {tau_req:.3g} "
            f"requests, {tau_fine:.3g} fine bins): fewer than {MIN_BINS} independent bins"
        )
        return out
    med = split_medians(logv, bins)
    tau, p = kendall_trend(med)
    growth = float(np.exp(theil_sen_slope(med) * (bins - 1)))
    out.update(
        tested=True,
        ttft_p50_first=float(np.exp(med[0])),
        ttft_p50_last=float(np.exp(med[-1])),
        growth=growth,
        kendall_tau=float(tau),
        p_value=float(p),
    )
    out["saturated"] = bool(
        p <= cfg.alpha
        and growth >= cfg.min_growth
        and math.isfinite(q99)
        and q99 <= cfg.queue_p99_max_s
    )
    return out


def arm_saturation(
    data: RunData, arm: str, settings: SaturationSettings | None = None
) -> dict[str, Any]:
    """:func:`saturation` of one arm: its successful rows' send time and TTFT (rows the data
    checks rejected have none), the queue delay of all its attempts."""
    m = data.arm_mask(arm)
    c = data.cols
    ok = m & data.ok
    return saturation(c["t_sent"][ok], c["ttft_s"][ok], c["queue_delay_s"][m], settings)


# ---------------------------------------------------------------- endpoints and clients

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def endpoint_key(url: str | None) -> str | None:
    """``base_url`` normalised for comparison: lower-case scheme and host (loopback names as
    ``localhost``), the port (the scheme's default when absent), the path without a trailing
    ``/``; user info and query left out. None for a missing or unparsable URL."""
    if not url:
        return None
    try:
        u = urlsplit(str(url))
        port = u.port
    except ValueError:
        return None
    scheme = u.scheme.lower()
    host = (u.hostname or "").lower()
    if not scheme or not host:
        return None
    if host in _LOOPBACK:
        host = "localhost"
    if ":" in host:
        host = f"[{host}]"
    port = port or _DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{host}{f':{port}' if port else ''}{u.path.rstrip('/')}"


def shared_endpoints(arm_info: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups of two or more arms whose ``base_url`` (manifest ``arms.<arm>.base_url``) is the
    same endpoint (:func:`endpoint_key`): ``[{endpoint, arms}]``, in arm order."""
    groups: dict[str, list[str]] = {}
    for arm, info in arm_info.items():
        key = endpoint_key((info or {}).get("base_url"))
        if key is not None:
            groups.setdefault(key, []).append(arm)
    return [{"endpoint": k, "arms": v} for k, v in groups.items() if len(v) > 1]


def _label_counts(data: RunData, column: str, mask: np.ndarray) -> dict[str, int]:
    """Rows in ``mask`` per value of the categorical ``column`` (nulls left out)."""
    names, codes = data.labels.get(column, ([], None))
    if codes is None or not names:
        return {}
    counts = np.bincount(codes[mask & (codes >= 0)], minlength=len(names))
    return {name: int(c) for name, c in zip(names, counts, strict=True) if c}


def clients_by_arm(data: RunData) -> dict[str, list[str]]:
    """The client implementations (``client`` column: ``lean``/``sdk``) each arm's rows used;
    empty for an arm whose rows do not say (older files)."""
    return {a: sorted(_label_counts(data, "client", data.arm_mask(a))) for a in data.arms}


# ---------------------------------------------------------------- what was counted and how


def short_forced(data: RunData, arm: str) -> dict[str, Any]:
    """Forced-length requests that came back short, for one arm.

    ``forced``: successful rows that forced their length (``forced_length``: ``ignore_eos`` +
    ``min_tokens = max_tokens`` were sent). Of those, ``checked``: the ones whose
    ``completion_tokens`` came from the server's usage (a local count of the text can differ
    from the server's tokens, so it cannot tell); ``short``: checked rows with
    ``completion_tokens < requested_max_tokens``; ``share = short / checked``;
    ``example_request_id``: the first short row's request id.
    """
    m = data.arm_mask(arm) & data.ok & (data.flag("forced_length") == 1)
    checked = m & data.label_rows("tokens_source", "usage")
    c = data.cols
    with np.errstate(invalid="ignore"):
        short = checked & (c["completion_tokens"] < c["requested_max_tokens"])
    n_checked, n_short = int(checked.sum()), int(short.sum())
    rows = np.flatnonzero(short)
    return {
        "forced": int(m.sum()),
        "checked": n_checked,
        "short": n_short,
        "share": n_short / n_checked if n_checked else None,
        "example_request_id": data.request_ids_at(rows[:1])[0] if rows.size else None,
    }


def count_sources(data: RunData, arm: str) -> dict[str, dict[str, int]]:
    """Who counted the tokens of one arm's successful rows: ``prompt`` (rows per
    ``prompt_tokens_source``: ``usage``, ``tokenize``, ``tokenizer``) and ``completion`` (rows
    per ``tokens_source``: ``usage``, ``tokenizer``, ``chunks``). Failed attempts are left out:
    a stream cut short never got the usage that the server sends at its end."""
    m = data.arm_mask(arm) & data.ok
    return {
        "prompt": _label_counts(data, "prompt_tokens_source", m),
        "completion": _label_counts(data, "tokens_source", m),
    }


def non_streamed(data: RunData, arm: str) -> dict[str, int]:
    """``{ok, non_streamed}``: one arm's successful rows, and those whose response was not
    streamed (``streamed`` false: one body, so TTFT equals E2E)."""
    ok = data.arm_mask(arm) & data.ok
    return {"ok": int(ok.sum()), "non_streamed": int((ok & (data.flag("streamed") == 0)).sum())}


def run_checks(data: RunData, settings: SaturationSettings | None = None) -> dict[str, Any]:
    """``summary.json`` ``checks``: ``{shared_endpoints: [{endpoint, arms}], arms: {arm:
    {clients, saturation, short_forced, count_sources, streaming}}}``."""
    clients = clients_by_arm(data)
    return {
        "shared_endpoints": shared_endpoints(data.arm_info),
        "arms": {
            a: {
                "clients": clients[a],
                "saturation": arm_saturation(data, a, settings),
                "short_forced": short_forced(data, a),
                "count_sources": count_sources(data, a),
                "streaming": non_streamed(data, a),
            }
            for a in data.arms
        },
    }
