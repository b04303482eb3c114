"""Billing: usage semantics, the policy per outcome, exact totals (hand-computed)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest

from harness.config import ConfigError
from harness.cost.billing import (
    INPUT,
    INPUT_OUTPUT,
    NONE,
    bill_modes,
    billed_tokens,
    check_policy,
    normalise_usage,
)
from harness.cost.catalog import ApiPrice
from harness.cost.settings import BillingPolicy

PRICE = ApiPrice("m", "openai", Decimal("0.15"), Decimal("0.075"), Decimal("0.15"), Decimal("0.60"),
                 Decimal("0.075"), Decimal("0.30"), dt.date(2025, 6, 1), "test", "includes_cached")  # fmt: skip


def test_usage_semantics():
    prompt, cached = np.array([1000.0, 500.0]), np.array([200.0, np.nan])
    unc, cac = normalise_usage(prompt, cached, "includes_cached")  # OpenAI
    assert unc.tolist() == [800, 500] and cac.tolist() == [200, 0]
    unc, cac = normalise_usage(prompt, cached, "excludes_cached")  # Anthropic
    assert unc.tolist() == [1000, 500] and cac.tolist() == [200, 0]
    # a cached count above the prompt count (inconsistent usage) never bills negative tokens
    unc, cac = normalise_usage(np.array([100.0]), np.array([150.0]), "includes_cached")
    assert unc.tolist() == [0] and cac.tolist() == [100]


def test_default_policy_per_outcome():
    ok = np.array([True, False, False, False, False])
    types = [None, "rate_limited", "truncated", "server_error", "timeout"]
    got = np.array([True, False, True, False, True])  # the truncated and the timeout streamed
    modes = bill_modes(ok, types, got, BillingPolicy())
    # ok: all; 429: nothing; cut short: as received; 5xx before a token: nothing;
    # timed out mid-stream: as received
    assert modes.tolist() == [INPUT_OUTPUT, NONE, INPUT_OUTPUT, NONE, INPUT_OUTPUT]
    pol = BillingPolicy(before_output={"default": "input", "rate_limited": "none"})
    modes = bill_modes(ok, types, got, pol)
    assert modes.tolist() == [INPUT_OUTPUT, NONE, INPUT_OUTPUT, INPUT, INPUT_OUTPUT]


def test_billed_tokens_and_exact_total():
    # ok (1000 prompt, 200 cached, 100 out); 429 (no usage); cut short after 20 tokens (400 in)
    modes = np.array([INPUT_OUTPUT, NONE, INPUT_OUTPUT], np.int8)
    bt = billed_tokens(modes, np.array([1000.0, np.nan, 400.0]), np.array([200.0, np.nan, np.nan]),
                       np.array([100.0, np.nan, 20.0]), "includes_cached")  # fmt: skip
    assert bt.uncached.tolist() == [800, 0, 400] and bt.output.tolist() == [100, 0, 20]
    # (800 + 400) * 0.15 + 200 * 0.075 + 120 * 0.60 = 180 + 15 + 72 = 267 per 1M
    assert bt.total(PRICE) == Decimal("0.000267")
    assert bt.usd(PRICE).tolist() == pytest.approx([195e-6, 0, 72e-6])
    # batch: cached input takes the same discount as input (0.075 -> 0.0375):
    # (1200 * 0.075 + 200 * 0.0375 + 120 * 0.30) / 1e6 = (90 + 7.5 + 36) / 1e6
    assert bt.total(PRICE, batch=True) == Decimal("0.0001335")
    assert bt.estimated_input == 0


def test_unknown_prompt_counts_are_filled_with_the_mean_and_counted():
    modes = np.array([INPUT_OUTPUT, INPUT, INPUT_OUTPUT], np.int8)
    bt = billed_tokens(modes, np.array([1000.0, np.nan, 500.0]), np.full(3, np.nan),
                       np.array([10.0, np.nan, 10.0]), "includes_cached")  # fmt: skip
    assert bt.uncached.tolist() == [1000, 750, 500] and bt.estimated_input == 1
    assert bt.output.tolist() == [10, 0, 10]


def test_bad_policy_modes_are_config_errors():
    with pytest.raises(ConfigError, match=r"pricing\.billing\.openai\.ok: 'all'"):
        check_policy(BillingPolicy(ok="all"), "pricing.billing.openai")
    with pytest.raises(ConfigError, match=r"before_output\.rate_limited"):
        check_policy(BillingPolicy(before_output={"rate_limited": "half"}), "p")
