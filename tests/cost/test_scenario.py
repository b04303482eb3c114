"""Scenario: the break-even practitioners report (about $20k-60k of API spend a month).

Stated inputs, the shipped catalogs' prices, staff time included. The test prints every
input and the resulting figures (``pytest -s``)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from harness.cost import model as cm
from harness.cost.catalog import load_api_catalog, load_gpu_catalog

ROOT = Path(__file__).resolve().parents[2]
API = load_api_catalog([ROOT / "catalogs" / "api_prices.yaml"])
GPU = load_gpu_catalog(ROOT / "catalogs" / "gpu_prices.yaml")

# A GPT-4o-class API call of a chat feature: 600 prompt tokens, 250 output tokens.
IN_TOK, OUT_TOK = 600, 250
API_MODEL = "gpt-4o"

SCENARIOS = {
    # model class: (instance, req/s per replica within the SLO, eng hours, $/h loaded, infra $)
    "13B on one L40S 48GB": ("l40s-48gb-x1", 3, 160, 125, 1000),
    "70B on 4 x H100 80GB": ("h100-80gb-x4", 5, 160, 150, 2000),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_break_even_lands_where_practitioners_report(name):
    inst_name, capacity, eng_h, rate, infra = SCENARIOS[name]
    inst = GPU[inst_name]
    price = API[API_MODEL]
    per_call = (IN_TOK * price.input + OUT_TOK * price.output) / 1_000_000
    s = cm.SelfHostInputs(
        capacity_rps=Decimal(capacity), headroom=Decimal("0.3"), min_replicas=2,
        usd_per_replica_hour=inst.usd_per_hour["on_demand"], gpus_per_replica=inst.gpus,
        fixed_usd=cm.fixed_costs(eng_h, rate, infra), output_tokens_per_call=Decimal(OUT_TOK),
    )  # fmt: skip
    profile = cm.day_profile([], 2.0)
    v = cm.break_even_calls(per_call, profile, s)
    assert v is not None
    spend = cm.api_month(v, per_call)
    month = cm.selfhost_month(v, profile, s)
    print(f"\n{name}: {inst.gpus} x {inst.gpu} at ${inst.usd_per_hour['on_demand']}/h on demand, "
          f"{capacity} req/s per replica at 30% headroom, min 2 replicas, {eng_h} h x ${rate} "
          f"staff + ${infra} infra; API {API_MODEL} at {IN_TOK} in / {OUT_TOK} out = "
          f"${per_call:.4f}/call")  # fmt: skip
    print(f"  break-even: {float(v) / 1e6:.1f}M calls/month, "
          f"{float(v) * (IN_TOK + OUT_TOK) / 1e9:.1f}B tokens, API spend ${float(spend):,.0f}/month;"
          f" self-hosted there ${float(month.total_usd):,.0f} ({max(month.replicas_by_hour)} "
          f"replicas at peak, utilisation {float(month.utilisation):.0%})")  # fmt: skip
    assert 20_000 <= spend <= 60_000
    assert month.total_usd <= spend * Decimal("1.000001")
