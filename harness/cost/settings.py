"""Typed settings of the cost model: the ``pricing``, ``traffic`` and ``selfhost`` config nodes.

Defaults live here once (Hydra validates ``configs/pricing``, ``configs/traffic`` and
``configs/selfhost`` against these). Every setting is read by :mod:`harness.cost`; none is
declared and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: How an attempt is billed: nothing, its input tokens, or input plus the output it produced.
BILL_MODES = ("none", "input", "input_output")
#: Self-hosted purchase modes priced in a GPU catalog entry.
PURCHASE_MODES = ("on_demand", "spot", "reserved")


@dataclass
class BillingPolicy:
    """What a provider bills per attempt outcome (see :mod:`harness.cost.billing`).

    ``ok``: a successful attempt. ``mid_stream``: an attempt that failed after output
    began (cut short, timed out mid-stream): billed as received. Requests the harness itself
    cancelled (drain, Ctrl-C) are left out of the cost, as of every other figure.
    ``before_output``: per error type, an attempt that failed before any output token
    (``default`` for types not listed). Modes: none | input | input_output.
    """

    ok: str = "input_output"
    mid_stream: str = "input_output"
    before_output: dict[str, str] = field(
        default_factory=lambda: {
            "default": "none",
            "rate_limited": "none",
            "client_error": "none",
            "server_error": "none",
            "timeout": "none",
            "connection": "none",
        }
    )


@dataclass
class PricingConfig:
    """Hosted-API prices (a dated catalog) and how the provider bills outcomes."""

    catalog_file: str = "catalogs/api_prices.yaml"  # ours (YAML) or LiteLLM's JSON format
    extra_catalog_files: list[str] = field(default_factory=list)  # merged over, later wins
    models: dict[str, str] = field(default_factory=dict)  # arm -> catalog model (default: arm's)
    #: a simulated API arm (sim_cloud) whose model has no price is priced as this model
    sim_default_model: str = "gpt-4o-mini"
    max_age_days: int = 180  # warn when a catalog entry used is older than this
    batch: bool = False  # price API calls at the batch multiplier
    billing: dict[str, BillingPolicy] = field(
        default_factory=lambda: {"default": BillingPolicy()}
    )  # provider -> policy; "default" for providers not listed


@dataclass
class TrafficConfig:
    """The user's traffic: how many model calls a month, and how they spread over a day."""

    monthly_active_users: float = 100_000
    actions_per_user: float = 20.0  # user actions per user per month
    calls_per_action: float = 3.0  # model calls per action (RAG, safety, multi-turn...)
    calls_per_month: float | None = None  # set to override MAU x actions x calls
    retry_rate: float | None = None  # retried attempts per call; null: measured in the run
    #: relative load per hour of day (any length; mean is normalised to 1); empty: use
    #: peak_to_average as a cosine day curve
    profile: list[float] = field(default_factory=list)
    peak_to_average: float = 2.0  # daily peak / mean load (1..2 for the cosine curve)
    monthly_growth: float = 0.05  # compound growth per month (12-month projection)
    hybrid_shares: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.8])


@dataclass
class SelfHostConfig:
    """Where the self-hosted arm runs and what running it costs beside the GPUs."""

    gpu_catalog_file: str = "catalogs/gpu_prices.yaml"
    instance: str = "h100-80gb-x1"  # GPU catalog entry one replica runs on
    purchase: str = "on_demand"  # on_demand | spot | reserved
    #: requests/s one replica serves within the SLO; null: measured (goodput at the SLO, from
    #: the run or from ``sweep_dir``)
    capacity_rps: float | None = None
    sweep_dir: str | None = None  # a sweep report directory to take capacity from
    headroom: float = 0.3  # fraction of each replica's capacity kept free at the hour's load
    min_replicas: int = 2  # for availability, whatever the load
    engineering_hours: float = 40.0  # engineering + on-call hours per month
    hourly_rate_usd: float = 150.0  # loaded cost of one engineering hour
    storage_usd: float = 100.0  # per month: model weights, images, logs
    network_usd: float = 200.0  # per month: egress, load balancer
    monitoring_usd: float = 100.0  # per month
    other_fixed_usd: float = 0.0


def as_dict(obj: Any) -> dict[str, Any]:
    """A settings dataclass as plain data (for summary.json: the inputs behind the numbers)."""
    from dataclasses import asdict

    return asdict(obj)
