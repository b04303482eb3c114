"""What each recorded attempt is billed: usage normalised, the billing policy applied.

One place normalises the providers' usage semantics (:func:`normalise_usage`):

- ``includes_cached`` (OpenAI-compatible usage, the default, Claude behind such an endpoint
  too): ``prompt_tokens`` counts every prompt token, cached ones included, so
  ``uncached = prompt_tokens - cached_tokens``;
- ``excludes_cached`` (Anthropic's native ``input_tokens`` passed through): the input count
  leaves cache reads out, so ``uncached = prompt_tokens`` and the cached tokens come on top.

The billing policy (:class:`~harness.cost.settings.BillingPolicy`) maps every attempt's
outcome to a mode (:func:`bill_modes`): an ``ok`` attempt, one that failed after its first
output token (cut short mid-stream, timed out or cancelled while streaming: billed as
received), or one that failed before any output, per error type. Modes: ``none`` bills
nothing, ``input`` the prompt, ``input_output`` the prompt and every output token recorded on
the row (for a cut-short stream: the tokens received).

Token cost of an attempt, USD (prices per 1M tokens; batch prices when ``pricing.batch``, the
cached-input price scaled by the batch discount). OpenAI-compatible usage does not say which
prompt tokens were written to a cache, so cache writes are billed at the input price (a
provider's cache-write premium is not applied):
``cost = (uncached x p_input + cached x p_cached_input + output x p_output) / 1e6``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from harness.config import ConfigError
from harness.cost.catalog import MILLION, ApiPrice
from harness.cost.settings import BILL_MODES, BillingPolicy

NONE, INPUT, INPUT_OUTPUT = 0, 1, 2
_MODE_CODE = {m: i for i, m in enumerate(BILL_MODES)}


def check_policy(policy: BillingPolicy, where: str) -> None:
    """Every mode is one of :data:`BILL_MODES`; raises ConfigError naming the key."""
    for key, mode in (("ok", policy.ok), ("mid_stream", policy.mid_stream)):
        if mode not in _MODE_CODE:
            raise ConfigError(f"{where}.{key}: {mode!r} is not one of {', '.join(BILL_MODES)}")
    for etype, mode in policy.before_output.items():
        if mode not in _MODE_CODE:
            raise ConfigError(
                f"{where}.before_output.{etype}: {mode!r} is not one of {', '.join(BILL_MODES)}"
            )


def policy_for(policies: dict[str, BillingPolicy], provider: str) -> BillingPolicy:
    """The provider's policy, else ``default``, else the built-in default."""
    return policies.get(provider) or policies.get("default") or BillingPolicy()


def normalise_usage(
    prompt: np.ndarray, cached: np.ndarray, semantics: str
) -> tuple[np.ndarray, np.ndarray]:
    """(uncached input tokens, cached input tokens) per row; nulls (NaN) count as 0 cached."""
    cached = np.nan_to_num(cached, nan=0.0)
    if semantics == "includes_cached":
        return np.maximum(prompt - cached, 0.0), np.minimum(cached, np.nan_to_num(prompt))
    if semantics == "excludes_cached":
        return prompt, cached
    raise ValueError(f"usage semantics {semantics!r}")


def bill_modes(
    ok: np.ndarray, error_type: list[str | None], got_token: np.ndarray, policy: BillingPolicy
) -> np.ndarray:
    """The billing mode code (NONE, INPUT, INPUT_OUTPUT) of every attempt."""
    before = policy.before_output
    default = _MODE_CODE[before.get("default", "none")]
    per_type = np.array(
        [_MODE_CODE[before[t]] if t in before else default for t in error_type], dtype=np.int8
    ).reshape(-1)
    return np.where(
        ok,
        _MODE_CODE[policy.ok],
        np.where(got_token, _MODE_CODE[policy.mid_stream], per_type),
    ).astype(np.int8)


@dataclass(frozen=True)
class BilledTokens:
    """Billed token counts per attempt (float arrays: exact integers below 2**53)."""

    uncached: np.ndarray
    cached: np.ndarray
    output: np.ndarray
    estimated_input: int  # attempts billed for input whose prompt count was unknown

    def usd(self, price: ApiPrice, *, batch: bool = False) -> np.ndarray:
        """Float USD per attempt (for distributions and bootstrap; totals use :meth:`total`)."""
        p_in, p_c, p_out = (float(x) for x in price.prices(batch))
        return (self.uncached * p_in + self.cached * p_c + self.output * p_out) / 1e6

    def total(self, price: ApiPrice, *, batch: bool = False, mask: np.ndarray | None = None
              ) -> Decimal:  # fmt: skip
        """Exact USD of the attempts in ``mask`` (all when None): integer token sums times
        Decimal prices."""
        sel = (lambda a: a) if mask is None else (lambda a: a[mask])
        unc, cac, out = (int(round(float(sel(a).sum()))) for a in
                         (self.uncached, self.cached, self.output))  # fmt: skip
        p_in, p_c, p_out = price.prices(batch)
        return (unc * p_in + cac * p_c + out * p_out) / MILLION


def billed_tokens(
    modes: np.ndarray,
    prompt: np.ndarray,
    cached: np.ndarray,
    completion: np.ndarray,
    semantics: str,
) -> BilledTokens:
    """Billed uncached/cached input and output tokens per attempt under ``modes``.

    An attempt billed for input whose prompt count is unknown (e.g. an error before any
    usage) is charged the mean known prompt count of the same rows; their number is kept.
    """
    prompt = prompt.astype(float, copy=True)
    needs_in = modes >= INPUT
    unknown = needs_in & ~np.isfinite(prompt)
    known = np.isfinite(prompt)
    fill = float(prompt[known].mean()) if known.any() else 0.0
    prompt[unknown] = round(fill)
    unc, cac = normalise_usage(prompt, cached, semantics)
    out = np.nan_to_num(completion.astype(float), nan=0.0)
    unc = np.where(needs_in, np.nan_to_num(unc), 0.0)
    cac = np.where(needs_in, np.nan_to_num(cac), 0.0)
    out = np.where(modes == INPUT_OUTPUT, out, 0.0)
    return BilledTokens(unc, cac, out, int(unknown.sum()))
