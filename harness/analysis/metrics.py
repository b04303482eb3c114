"""Metric definitions: one function per metric, its formula in the docstring.

Each docstring has one ``Formula:`` line; ``README.md`` ("Metrics") quotes the same lines, and
``tests/analysis/test_sections_docs.py`` checks that they agree. Per-request latencies are
computed by the load stage with these formulas and stored as columns (``ttft_s`` ...); the
functions here select the rows a statistic uses (latency: ``status == ok`` rows only) and
define the aggregates (ITL pooling, goodput, throughput, error and retry rates).

Times are seconds. ``data`` is a :class:`~harness.analysis.data.RunData`; ``mask`` selects
its rows (an arm, a slice).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.analysis.data import PooledSample, RunData
from harness.config import SLOConfig


def _ok_column(data: RunData, mask: np.ndarray, column: str) -> np.ndarray:
    v = data.cols[column][mask & data.ok]
    return v[np.isfinite(v)]


def ttft(data: RunData, mask: np.ndarray) -> np.ndarray:
    """Time to first token of successful requests.

    Formula: ``TTFT = t_first_token - t_sent``
    """
    return _ok_column(data, mask, "ttft_s")


def ttft_sched(data: RunData, mask: np.ndarray) -> np.ndarray:
    """Time to first token counted from the scheduled send time (shows coordinated omission).

    Formula: ``TTFT_sched = t_first_token - t_scheduled``
    """
    return _ok_column(data, mask, "ttft_sched_s")


def tpot(data: RunData, mask: np.ndarray) -> np.ndarray:
    """Time per output token after the first, of successful requests with >= 2 output tokens.

    Formula: ``TPOT = (t_last_token - t_first_token) / (completion_tokens - 1)``
    """
    return _ok_column(data, mask, "tpot_s")


def e2e(data: RunData, mask: np.ndarray) -> np.ndarray:
    """End-to-end latency of successful requests (to the last content token).

    Formula: ``E2E = t_end - t_sent``
    """
    return _ok_column(data, mask, "e2e_s")


def e2e_sched(data: RunData, mask: np.ndarray) -> np.ndarray:
    """End-to-end latency counted from the scheduled send time.

    Formula: ``E2E_sched = t_end - t_scheduled``
    """
    return _ok_column(data, mask, "e2e_sched_s")


def queue_delay(data: RunData, mask: np.ndarray) -> np.ndarray:
    """Client-side lag between the schedule and the actual send, of successful requests.

    Formula: ``queue_delay = t_sent - t_scheduled``
    """
    return _ok_column(data, mask, "queue_delay_s")


def itl(sample: PooledSample) -> PooledSample:
    """Inter-token latency: every gap between consecutive content chunks, pooled over requests.

    Formula: ``ITL = pooled gaps t_chunk[i] - t_chunk[i-1] over all successful requests``

    The pool is the flattened ``itl_s`` lists (trailing usage chunk excluded), so a long
    answer contributes more gaps than a short one. Built in a streaming pass by
    :func:`harness.analysis.data.load_run`; returned as is.
    """
    return sample


@dataclass(frozen=True)
class LatencyMetric:
    """A per-request latency metric (seconds): summary key (= column), label, values selector."""

    key: str
    label: str
    values: Callable[[RunData, np.ndarray], np.ndarray]


#: Per-request latency metrics, in report order. ITL (pooled) is added as ``itl_s``.
LATENCY_METRICS: tuple[LatencyMetric, ...] = (
    LatencyMetric("ttft_s", "TTFT", ttft),
    LatencyMetric("tpot_s", "TPOT", tpot),
    LatencyMetric("e2e_s", "E2E latency", e2e),
    LatencyMetric("queue_delay_s", "Client queue delay", queue_delay),
    LatencyMetric("ttft_sched_s", "TTFT from scheduled", ttft_sched),
    LatencyMetric("e2e_sched_s", "E2E from scheduled", e2e_sched),
)
ITL_KEY, ITL_LABEL = "itl_s", "ITL"
METRIC_LABELS = {m.key: m.label for m in LATENCY_METRICS} | {ITL_KEY: ITL_LABEL}


def duration(data: RunData) -> float:
    """Length of the analysed phase, shared by both arms.

    Formula: ``duration = max(t_end, t_sent) - min(t_scheduled, t_sent) over analysed rows``
    """
    return data.duration_s()


def meets_slo(
    ok: np.ndarray,
    ttft_s: np.ndarray,
    tpot_s: np.ndarray,
    e2e_s: np.ndarray,
    slo: SLOConfig,
) -> np.ndarray:
    """Whether each request meets every SLO bound.

    Formula: ``meets_slo = ok and TTFT <= slo.ttft_s and TPOT <= slo.tpot_s and E2E <= slo.e2e_s``

    A null bound is not checked; a request with no TPOT (one output token) passes the TPOT
    bound; an errored request never meets the SLO.
    """
    out = np.asarray(ok, dtype=bool).copy()
    for bound, values, allow_missing in (
        (slo.ttft_s, ttft_s, False),
        (slo.tpot_s, tpot_s, True),
        (slo.e2e_s, e2e_s, False),
    ):
        if bound is None:
            continue
        v = np.asarray(values, dtype=np.float64)
        passed = v <= float(bound)
        if allow_missing:
            passed |= np.isnan(v)
        out &= passed
    return out


def goodput_share(n_meeting: int, n_requests: int) -> float:
    """Share of requests (attempts) that meet the SLO.

    Formula: ``goodput_share = requests meeting all SLO bounds / all requests``
    """
    return n_meeting / n_requests if n_requests else math.nan


def goodput_rate(n_meeting: int, duration_s: float) -> float:
    """Requests per second that meet the SLO (vLLM's goodput).

    Formula: ``goodput_rate = requests meeting all SLO bounds / duration``
    """
    return n_meeting / duration_s if duration_s and math.isfinite(duration_s) else math.nan


def request_throughput(n_ok: int, duration_s: float) -> float:
    """Completed requests per second.

    Formula: ``request_throughput = successful requests / duration``
    """
    return n_ok / duration_s if duration_s and math.isfinite(duration_s) else math.nan


def output_token_throughput(completion_tokens_ok: float, duration_s: float) -> float:
    """Output tokens per second (successful requests' ``completion_tokens``).

    Formula: ``output_token_throughput = sum(completion_tokens of successful requests) / duration``
    """
    if not duration_s or not math.isfinite(duration_s):
        return math.nan
    return completion_tokens_ok / duration_s


def achieved_arrival_rate(t_sent: np.ndarray) -> float:
    """Delivered arrival rate of logical requests (first attempts), to compare with offered.

    Formula: ``achieved_rate = (first attempts - 1) / (last t_sent - first t_sent)``

    Send times, so a client that fell behind its schedule shows as a lower rate. Given
    ``t_scheduled`` instead, the same function gives the scheduled rate (``scheduled_rps``).
    """
    t = np.asarray(t_sent, dtype=np.float64)
    t = t[np.isfinite(t)]
    if t.size < 2:
        return math.nan
    span = float(t.max() - t.min())
    return (t.size - 1) / span if span > 0 else math.nan


def offered_rate(expected_arrivals: float, window_s: float) -> float:
    """Offered arrival rate per arm over the analysed window (load shapes and traces included).

    Formula: ``offered_rate = expected arrivals in the analysed window / window length``

    ``expected_arrivals`` is ``Lambda(end) - Lambda(start)`` of the arrival process, written by
    the runner (``manifest.offered``); with no shape and no trace it is ``rate * window``.
    """
    return expected_arrivals / window_s if window_s and math.isfinite(window_s) else math.nan


def errors_per_1000(n_errors: int, n_requests: int) -> float:
    """Failure tickets per 1,000 requests (attempts).

    Formula: ``errors_per_1000 = 1000 * error attempts / all attempts``
    """
    return 1000.0 * n_errors / n_requests if n_requests else math.nan


def retry_rate(n_retries: int, n_logical: int) -> float:
    """Retries per logical request.

    Formula: ``retry_rate = attempts with attempt > 0 / attempts with attempt == 0``
    """
    return n_retries / n_logical if n_logical else math.nan


#: Every metric definition, for the README check.
DEFINITIONS: tuple[Callable, ...] = (
    ttft,
    ttft_sched,
    tpot,
    itl,
    e2e,
    e2e_sched,
    queue_delay,
    duration,
    meets_slo,
    goodput_share,
    goodput_rate,
    request_throughput,
    output_token_throughput,
    achieved_arrival_rate,
    offered_rate,
    errors_per_1000,
    retry_rate,
)


def formula(fn: Callable) -> str:
    """The ``Formula:`` line of a metric function's docstring (without the backticks)."""
    for line in (fn.__doc__ or "").splitlines():
        line = line.strip()
        if line.startswith("Formula:"):
            return line.removeprefix("Formula:").strip().strip("`")
    raise ValueError(f"{fn.__name__}: docstring has no 'Formula:' line")
