"""Logical requests: the attempts of one request (retries included) folded into what the user
lived through, its final outcome and its latency from the original arrival.

A logical request is every row of one arm with one ``request_id``. Its *final attempt* is
the one with the highest ``attempt`` number. Its outcome is:

- ``ok``: the final attempt succeeded (whatever failed before it);
- ``cancelled``: the harness stopped it (the final attempt is a ``cancelled`` row, made at
  drain or on SIGINT, or the client had decided to retry it, ``will_retry``, when the run
  stopped during the backoff). Not a failure of the target: counted apart, left out of
  failure rates, goodput and latency distributions;
- ``failed``: anything else (retries exhausted, or an error that is not retried); its
  ``error_type`` is the final attempt's.

Latencies (seconds) per logical request, counted from ``t_arrival`` (the first attempt's
scheduled time, shared by every attempt), so retries and their backoffs are in them:

- ``request_ttft_s = t_first_token(final attempt) - t_arrival``
- ``request_e2e_s = t_end(final attempt) - t_arrival``

A failed request never delivered an answer: in the latency distributions it is a censored
value (``+inf``, "longer than anything observed"), so an arm cannot improve its tail by
failing its slowest requests (see :func:`harness.analysis.latency.describe`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.analysis.data import RunData

#: Outcome codes of :attr:`LogicalRequests.outcome`.
OK, FAILED, CANCELLED = 0, 1, 2
OUTCOMES = ("ok", "failed", "cancelled")


@dataclass(frozen=True)
class LogicalRequests:
    """One entry per logical request (aligned arrays); ``final``/``first`` index rows of the
    :class:`~harness.analysis.data.RunData` the requests were built from."""

    arm: np.ndarray  # int16 arm code
    slice: np.ndarray  # int16 slice code (of the first attempt)
    final: np.ndarray  # row index of the final attempt
    first: np.ndarray  # row index of the first attempt (lowest attempt number)
    attempts: np.ndarray  # int32 attempts recorded
    outcome: np.ndarray  # int8: OK, FAILED, CANCELLED
    error: np.ndarray  # int16 error code of the final attempt (-1 when ok)
    t_arrival: np.ndarray  # relative seconds
    ttft_s: np.ndarray  # request_ttft_s; +inf for failed, NaN for cancelled
    e2e_s: np.ndarray  # request_e2e_s; +inf for failed, NaN for cancelled
    tpot_s: np.ndarray  # TPOT of the final attempt (NaN when not measurable or not ok)
    of_row: np.ndarray  # int64 per row of the data: the index of its logical request

    @property
    def n(self) -> int:
        return int(self.arm.size)


def logical_requests(data: RunData) -> LogicalRequests:
    """Fold ``data``'s attempts into logical requests (cached on ``data``)."""
    key = ("logical_requests",)
    if key in data.cache:
        return data.cache[key]  # type: ignore[return-value]
    n = data.n_rows
    if n == 0:
        e = np.empty(0)
        res = LogicalRequests(*(e.astype(t) for t in (np.int16, np.int16, np.int64, np.int64,
                                                      np.int32, np.int8, np.int16)),
                              e, e, e, e, e.astype(np.int64))  # fmt: skip
        data.cache[key] = res  # type: ignore[assignment]
        return res
    c = data.cols
    # one int64 sort key: arm (15 bits) | request code (32 bits) | attempt (16 bits)
    sort_key = data.arm.astype(np.int64) << 48
    sort_key |= data.request.astype(np.int64) << 16
    sort_key |= np.clip(data.attempt, 0, 0xFFFF).astype(np.int64)
    order = np.argsort(sort_key)
    del sort_key
    arm_s, req_s = data.arm[order], data.request[order]
    is_start = np.r_[True, (arm_s[1:] != arm_s[:-1]) | (req_s[1:] != req_s[:-1])]
    starts = np.flatnonzero(is_start)
    of_row = np.empty(n, np.int64)
    of_row[order] = np.cumsum(is_start) - 1
    del is_start
    ends = np.r_[starts[1:], n] - 1
    first, final = order[starts], order[ends]
    attempts = (ends - starts + 1).astype(np.int32)

    ok = data.ok[final]
    cancelled = data.cancelled[final] | (~ok & (data.will_retry[final] == 1))
    outcome = np.where(ok, OK, np.where(cancelled, CANCELLED, FAILED)).astype(np.int8)
    t_arr = c["t_arrival"][final]
    t_arr = np.where(np.isfinite(t_arr), t_arr, c["t_scheduled"][first])
    with np.errstate(invalid="ignore"):
        ttft = c["t_first_token"][final] - t_arr
        e2e = c["t_end"][final] - t_arr
    # a row the data checks rejected (NaN latencies) stays NaN: it is left out, not censored
    rejected = ok & ~(np.isfinite(c["ttft_s"][final]) & np.isfinite(c["e2e_s"][final]))
    ttft = np.where(rejected | (ttft < 0), np.nan, ttft)
    e2e = np.where(rejected | (e2e < 0), np.nan, e2e)
    failed = outcome == FAILED
    ttft = np.where(failed, np.inf, np.where(outcome == CANCELLED, np.nan, ttft))
    e2e = np.where(failed, np.inf, np.where(outcome == CANCELLED, np.nan, e2e))
    tpot = np.where(ok, c["tpot_s"][final], np.nan)
    res = LogicalRequests(
        arm=data.arm[first],
        slice=data.slice[first],
        final=final,
        first=first,
        attempts=attempts,
        outcome=outcome,
        error=np.where(ok, -1, data.error[final]).astype(np.int16),
        t_arrival=t_arr,
        ttft_s=ttft,
        e2e_s=e2e,
        tpot_s=tpot,
        of_row=of_row,
    )
    data.cache[key] = res  # type: ignore[assignment]
    return res
