"""The ``canary`` config node: month-long runs (day partitions, daily reports, drift detection,
daily verdicts) and the qualitative factors a team declares for its decision memo."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.canary.clock import DAY_S


@dataclass
class DriftConfig:
    """Drift detection on each arm's daily series (harness/canary/drift.py)."""

    # Online detector threshold: calibrated so that stationary series raise one false alarm
    # per this many days for the whole detector (every watched series of every arm together):
    # 600 days keeps the chance of any false alarm in a month at about 4% (1 - exp(-25/600)).
    false_alarm_days: float = 600.0
    # Days used to estimate each series' in-control level and spread before the detector arms.
    baseline_days: int = 5
    # Daily series watched (see drift.SERIES): latency quantiles, quality, errors, retries.
    metrics: list[str] = field(
        default_factory=lambda: ["ttft_p99", "e2e_p99", "quality", "error_rate", "retry_rate"]
    )
    confidence: float = 0.95  # CI of the size of a change and of the API-minus-control gap


@dataclass
class SequentialConfig:
    """The daily verdict: the canary judge applied every day without inflating false alarms."""

    enabled: bool = True
    alpha: float | None = None  # None: the judge's alpha


@dataclass
class FactorsConfig:
    """Qualitative factors shown beside the numbers in the memo (free text; null: not declared)."""

    data_sensitivity: str | None = None  # e.g. "high: prompts carry customer PII"
    compliance: str | None = None  # e.g. "GDPR; EU data residency"
    reproducible_weights: str | None = None  # e.g. "required for audits"
    ops_capacity: str | None = None  # e.g. "1 SRE, no GPU on-call"
    selfhost_license: str | None = None  # e.g. "Llama 3.1 Community License"


@dataclass
class CanaryConfig:
    """Month-long canary settings (off unless an experiment turns them on)."""

    enabled: bool = False  # day partitions + compaction, daily analysis and reports
    day_s: float = DAY_S  # length of an experiment-clock day (seconds)
    daily_reports: bool = True  # write RUN_DIR/days/NNN/ after each experiment-clock day
    # Share of the projected production volume the canary sends (documentation and memo; the
    # rate itself is load.rate)
    share: float | None = None
    drift: DriftConfig = field(default_factory=DriftConfig)
    sequential: SequentialConfig = field(default_factory=SequentialConfig)
    factors: FactorsConfig = field(default_factory=FactorsConfig)
