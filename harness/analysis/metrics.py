"""Metric definitions: one function per metric, its formula in the docstring.

Each docstring has one ``Formula:`` line; ``README.md`` ("Metrics") quotes the same lines, and
``tests/analysis/test_sections_docs.py`` checks that they agree. Per-request latencies are
computed by the load stage with these formulas and stored as columns (``ttft_s`` ...); the
functions here select the rows a statistic uses and define the aggregates (ITL pooling,
goodput, throughput, error and retry rates).

Which rows a latency distribution holds: successful attempts, plus censored values (``+inf``)
for attempts that timed out before the value was observed (an arm that times out its slowest
requests must not report a better tail); other failed attempts are counted in the failure
rates, and rows the harness cancelled are left out. Per logical request
(``request_ttft_s``/``request_e2e_s``, :mod:`harness.analysis.requests`) a request that finally
failed, of any error type, is censored: the user never got an answer.

Times are seconds. ``data`` is a :class:`~harness.analysis.data.RunData`; ``mask`` selects
its rows (an arm, a slice).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.analysis.data import PooledSample, RunData
from harness.analysis.requests import CANCELLED, logical_requests
from harness.config import SLOConfig


def _ok_column(data: RunData, mask: np.ndarray, column: str) -> np.ndarray:
    v = data.cols[column][mask & data.ok]
    return v[np.isfinite(v)]


def timed_out(data: RunData) -> np.ndarray:
    """Rows whose attempt ended in a ``timeout`` error."""
    return data.error_rows("timeout")


def _censored_column(data: RunData, mask: np.ndarray, column: str, after_first: bool) -> np.ndarray:
    """Ok rows' finite values, then ``+inf`` for every timed-out attempt whose value was not
    observed (``after_first``: a TTFT observed before the timeout is a real value)."""
    ok_v = _ok_column(data, mask, column)
    to = mask & timed_out(data)
    if not to.any():
        return ok_v
    v = data.cols[column][to] if after_first else np.full(int(to.sum()), np.nan)
    cens = np.where(np.isfinite(v) & (v >= 0), v, np.inf)
    return np.concatenate([ok_v, cens])


def ttft(data: RunData, mask: np.ndarray) -> np.ndarray:
    """Time to first token of each attempt: successful ones, and timed-out ones censored.

    Formula: ``TTFT = t_first_token - t_sent``

    First token = first chunk that carries content. An attempt that timed out before its
    first token counts as ``+inf`` (censored: longer than its timeout).
    """
    return _censored_column(data, mask, "ttft_s", after_first=True)


def ttft_sched(data: RunData, mask: np.ndarray) -> np.ndarray:
    """Time to first token counted from the scheduled send time (shows coordinated omission).

    Formula: ``TTFT_sched = t_first_token - t_scheduled``
    """
    return _censored_column(data, mask, "ttft_sched_s", after_first=True)


def _request_values(data: RunData, mask: np.ndarray, field: str) -> np.ndarray:
    lr = logical_requests(data)
    sel = mask[lr.first] & (lr.outcome != CANCELLED)
    v = getattr(lr, field)[sel]
    return v[~np.isnan(v)]


def request_ttft(data: RunData, mask: np.ndarray) -> np.ndarray:
    """Time to first token the user lived through: from the original arrival, retries and
    their backoffs included, to the first token of the final attempt.

    Formula: ``request_ttft = t_first_token(final attempt) - t_arrival``

    One value per logical request (harness-cancelled ones left out); a request that finally
    failed counts as ``+inf`` (censored: never answered).
    """
    return _request_values(data, mask, "ttft_s")


def request_e2e(data: RunData, mask: np.ndarray) -> np.ndarray:
    """End-to-end latency the user lived through, retries and backoffs included.

    Formula: ``request_e2e = t_end(final attempt) - t_arrival``

    One value per logical request; a request that finally failed counts as ``+inf``.
    """
    return _request_values(data, mask, "e2e_s")


def tpot(data: RunData, mask: np.ndarray) -> np.ndarray:
    """Time per output token after the first, of successful requests with >= 2 output tokens.

    Formula: ``TPOT = (t_last_token - t_first_token) / (completion_tokens - 1)``

    Null (left out) when all tokens came in one chunk: the time between tokens was not
    observed, and 0 would pass any TPOT bound.
    """
    return _ok_column(data, mask, "tpot_s")


def e2e(data: RunData, mask: np.ndarray) -> np.ndarray:
    """End-to-end latency of each attempt (to the last content chunk): successful ones, and
    timed-out ones censored (``+inf``).

    Formula: ``E2E = t_end - t_sent``
    """
    return _censored_column(data, mask, "e2e_s", after_first=False)


def e2e_sched(data: RunData, mask: np.ndarray) -> np.ndarray:
    """End-to-end latency counted from the scheduled send time.

    Formula: ``E2E_sched = t_end - t_scheduled``
    """
    return _censored_column(data, mask, "e2e_sched_s", after_first=False)


def queue_delay(data: RunData, mask: np.ndarray) -> np.ndarray:
    """Client-side lag between the schedule and the actual send, of every attempt sent
    (whatever its outcome; rows the harness cancelled left out).

    Formula: ``queue_delay = t_sent - t_scheduled``
    """
    v = data.cols["queue_delay_s"][mask & ~data.cancelled]
    return v[np.isfinite(v)]


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
    LatencyMetric("request_ttft_s", "Request TTFT", request_ttft),
    LatencyMetric("request_e2e_s", "Request E2E", request_e2e),
    LatencyMetric("ttft_s", "TTFT", ttft),
    LatencyMetric("tpot_s", "TPOT", tpot),
    LatencyMetric("e2e_s", "E2E latency", e2e),
    LatencyMetric("queue_delay_s", "Client queue delay", queue_delay),
    LatencyMetric("ttft_sched_s", "TTFT from scheduled", ttft_sched),
    LatencyMetric("e2e_sched_s", "E2E from scheduled", e2e_sched),
)
ITL_KEY, ITL_LABEL = "itl_s", "ITL"
METRIC_LABELS = {m.key: m.label for m in LATENCY_METRICS} | {ITL_KEY: ITL_LABEL}


def duration(data: RunData, arm: str) -> float:
    """Length of one arm's own window (another arm's stragglers never change it).

    Formula: ``duration = max(t_end, t_sent) - min(t_scheduled, t_sent) over the arm's rows``

    Rows the harness cancelled are left out (a drain must not stretch the window).
    """
    return data.duration_s(arm)


def meets_slo(
    ok: np.ndarray,
    ttft_s: np.ndarray,
    tpot_s: np.ndarray,
    e2e_s: np.ndarray,
    slo: SLOConfig,
) -> np.ndarray:
    """Whether each request meets every SLO bound.

    Formula: ``meets_slo = ok and TTFT <= slo.ttft_s and TPOT <= slo.tpot_s and E2E <= slo.e2e_s``

    A null bound is not checked; a request with no TPOT (one output token, or all tokens in
    one chunk) passes the TPOT bound; an errored or timed-out request never meets the SLO, and
    neither does a missing or censored (``+inf``) TTFT/E2E.
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
    """Share of requests that meet the SLO (logical requests for the headline, attempts for
    the per-attempt figure; harness-cancelled ones are not counted).

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
    """Failure tickets per 1,000 requests: logical requests whose final outcome failed (the
    headline), or error attempts per attempt; harness-cancelled ones count in neither.

    Formula: ``errors_per_1000 = 1000 * failed requests / requests``
    """
    return 1000.0 * n_errors / n_requests if n_requests else math.nan


def tokens_per_chunk(completion_tokens: float, chunks: float) -> float:
    """Output tokens per streamed content chunk of successful requests (hosted APIs often send
    several tokens per chunk, so their ITL is not comparable to a per-token gap).

    Formula: ``tokens_per_chunk = sum(completion_tokens) / sum(content chunks)``
    """
    return completion_tokens / chunks if chunks else math.nan


def retry_rate(n_retries: int, n_logical: int) -> float:
    """Retries per logical request.

    Formula: ``retry_rate = attempts with attempt > 0 / attempts with attempt == 0``
    """
    return n_retries / n_logical if n_logical else math.nan


#: Every metric definition, for the README check.
DEFINITIONS: tuple[Callable, ...] = (
    request_ttft,
    request_e2e,
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
    tokens_per_chunk,
    retry_rate,
)


def formula(fn: Callable) -> str:
    """The ``Formula:`` line of a metric function's docstring (without the backticks)."""
    for line in (fn.__doc__ or "").splitlines():
        line = line.strip()
        if line.startswith("Formula:"):
            return line.removeprefix("Formula:").strip().strip("`")
    raise ValueError(f"{fn.__name__}: docstring has no 'Formula:' line")
