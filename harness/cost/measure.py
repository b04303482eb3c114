"""What the run measured that the cost model needs: per-arm spend per call and tokens per call.

Every attempt of an arm is priced (:mod:`harness.cost.billing`); attempts are grouped into
logical requests (:mod:`harness.analysis.requests`). Requests the harness cancelled are left
out (an artefact of stopping the run, not traffic). Per arm:

- ``usd_per_call = sum(cost of every attempt) / requests`` (retries and failures included);
- ``usd_per_success = sum(cost of every attempt) / successful requests``;
- ``retry_share = cost of non-final attempts / total``; ``failed_share = cost of error
  attempts / total``;
- ``usd_final_mean`` / ``usd_retry_mean``: mean cost of a final / of a retried attempt (when
  nothing was retried, a retry is priced as the policy bills a 5xx before any output);
- tokens per call: mean prompt, cached and output tokens of the successful final attempts.

A router (hybrid) arm's attempts went to other arms' targets (``route``): each is priced with
the arm it went to (:func:`arm_spend` with ``route``), per call over all the router's requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from harness.analysis.data import RunData
from harness.analysis.requests import CANCELLED, OK, logical_requests
from harness.cost.billing import BilledTokens, bill_modes, billed_tokens
from harness.cost.catalog import ApiPrice
from harness.cost.settings import BillingPolicy

API_KINDS = ("openai", "sim_cloud")
SELFHOST_KINDS = ("vllm", "sim_vllm")


def role_of(kind: str | None) -> str | None:
    """``api`` for hosted-API targets, ``selfhost`` for vLLM (and their simulators)."""
    if kind in API_KINDS:
        return "api"
    if kind in SELFHOST_KINDS:
        return "selfhost"
    return None


@dataclass(frozen=True)
class ArmUsage:
    """Measured per-call figures of one arm (no prices)."""

    arm: str
    requests: int  # logical requests, harness-cancelled ones left out
    ok_requests: int
    cancelled_requests: int
    attempts: int
    retried_attempts: int  # attempts that were not their request's last
    retry_rate: float  # retried attempts per request
    input_per_call: float
    cached_per_call: float
    output_per_call: float


@dataclass(frozen=True)
class ArmSpend:
    """What an API arm's recorded attempts cost under a price and a billing policy."""

    usage: ArmUsage
    usd_total: Decimal
    usd_retries: Decimal
    usd_failed: Decimal
    usd_per_call: Decimal
    usd_per_success: Decimal | None
    usd_final_mean: Decimal
    usd_retry_mean: Decimal
    estimated_input: int
    per_request_usd: np.ndarray  # float, one per request (bootstrap)
    retry_mean_assumed: bool = False  # no retried attempt measured: usd_retry_mean assumed

    @property
    def retry_share(self) -> float | None:
        return float(self.usd_retries / self.usd_total) if self.usd_total > 0 else None

    @property
    def failed_share(self) -> float | None:
        return float(self.usd_failed / self.usd_total) if self.usd_total > 0 else None


def _selection(data: RunData, arm: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    lr = logical_requests(data)
    code = data.arms.index(arm)
    keep_req = (lr.arm == code) & (lr.outcome != CANCELLED)
    rows = keep_req[lr.of_row] & (data.arm == code)
    return lr, keep_req, rows, code


def arm_usage(data: RunData, arm: str) -> ArmUsage:
    lr, keep_req, rows, code = _selection(data, arm)
    c = data.cols
    n_req = int(keep_req.sum())
    ok_req = keep_req & (lr.outcome == OK)
    fin = lr.final[ok_req]

    def mean(col: str) -> float:
        v = c[col][fin]
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else 0.0

    attempts = int(rows.sum())
    cancelled = int(((lr.arm == code) & (lr.outcome == CANCELLED)).sum())
    return ArmUsage(
        arm=arm,
        requests=n_req,
        ok_requests=int(ok_req.sum()),
        cancelled_requests=cancelled,
        attempts=attempts,
        retried_attempts=attempts - n_req,
        retry_rate=(attempts - n_req) / n_req if n_req else 0.0,
        input_per_call=mean("prompt_tokens"),
        cached_per_call=mean("cached_tokens") if "cached_tokens" in c else 0.0,
        output_per_call=mean("completion_tokens"),
    )


def arm_spend(
    data: RunData,
    arm: str,
    price: ApiPrice,
    policy: BillingPolicy,
    *,
    batch: bool = False,
    route: str | None = None,
) -> ArmSpend:
    """Price every attempt of ``arm`` (see module docstring); with ``route``, only a router
    arm's attempts sent to that underlying arm (the others cost nothing here), still per call
    over all of ``arm``'s requests."""
    usage = arm_usage(data, arm)
    lr, keep_req, rows, _ = _selection(data, arm)
    if route is not None:
        rows = rows & data.label_rows("route", route)
    c = data.cols
    idx = np.flatnonzero(rows)
    names = [None, *data.error_types]  # error code -1 -> None
    etypes = [names[e + 1] for e in data.error[idx]]
    modes = bill_modes(data.ok[idx], etypes, np.isfinite(c["t_first_token"][idx]), policy)
    cached = c["cached_tokens"][idx] if "cached_tokens" in c else np.full(idx.size, np.nan)
    bt: BilledTokens = billed_tokens(
        modes, c["prompt_tokens"][idx], cached, c["completion_tokens"][idx], price.usage
    )
    final = np.zeros(data.n_rows, bool)
    final[lr.final] = True
    is_final = final[idx]
    is_err = ~data.ok[idx]
    total = bt.total(price, batch=batch)
    retries = bt.total(price, batch=batch, mask=~is_final)
    failed = bt.total(price, batch=batch, mask=is_err)
    finals = bt.total(price, batch=batch, mask=is_final)
    n_req, n_ok = usage.requests, usage.ok_requests
    if usage.retried_attempts:
        retry_mean = retries / usage.retried_attempts
    else:
        # nothing was retried: a retry is priced as the policy bills a 5xx before any output
        # (nothing, the prompt, or the prompt and a final attempt's output)
        before = policy.before_output
        mode = before.get("server_error", before.get("default", "none"))
        fin = is_final & data.ok[idx]
        n_fin = int(fin.sum())
        if mode == "none" or not n_fin:
            retry_mean = Decimal(0)
        elif mode == "input":
            in_only = BilledTokens(bt.uncached, bt.cached, np.zeros_like(bt.output), 0)
            retry_mean = in_only.total(price, batch=batch, mask=fin) / n_fin
        else:
            retry_mean = bt.total(price, batch=batch, mask=fin) / n_fin
    per_row = bt.usd(price, batch=batch)
    # one entry per kept request, in request order (a request with no priced attempt: 0)
    per_req = np.bincount(lr.of_row[idx], weights=per_row, minlength=lr.n)[keep_req]
    return ArmSpend(
        usage=usage,
        usd_total=total,
        usd_retries=retries,
        usd_failed=failed,
        usd_per_call=total / n_req if n_req else Decimal(0),
        usd_per_success=total / n_ok if n_ok else None,
        usd_final_mean=finals / n_req if n_req else Decimal(0),
        usd_retry_mean=retry_mean,
        estimated_input=bt.estimated_input,
        per_request_usd=per_req,
        retry_mean_assumed=not usage.retried_attempts,
    )
