"""The issue's A/A month, end to end through the report's own detector and judge: one
synthetic A/A month (two copies of one model, a 600-item eval set cycled, a weekly traffic
pattern, shared AR(1) load) feeds both the anytime-valid daily verdict
(:func:`harness.canary.sequential.month_verdicts`) and the drift detector
(:func:`harness.canary.drift.drift_section`, fed the daily figures of the same requests);
no drift alarm and no NO_GO on any day must hold in at least 95% of months."""

from __future__ import annotations

import numpy as np
import pytest

from harness.canary import sequential as sq
from harness.canary.drift import drift_section
from harness.canary.settings import DriftConfig
from harness.judge.settings import JudgeConfig

pytestmark = pytest.mark.slow

WEEK = ([300] * 5 + [150] * 2) * 4 + [300, 300]  # 30 days, weekends at half the traffic
ARMS = {"baseline": "cloud", "candidate": "selfhosted"}


def _p99(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.quantile(x, 0.99, method="inverted_cdf")) if x.size else None


def daily_entries_of(month: sq.Month) -> list[dict]:
    """The daily figures drift reads, computed from the month's own requests and scores."""
    req = month.requests
    q = month.quality["exact_match"].per_item
    out = []
    for d in month.days:
        arms = {}
        for side, arm in ARMS.items():
            vals = req.baseline if side == "baseline" else req.candidate
            days = req.day_b if side == "baseline" else req.day_c
            sel = days == d
            ttft, e2e, failed = (vals[k][sel] for k in ("request_ttft_s", "request_e2e_s",
                                                        "failed"))  # fmt: skip
            qd = (q.day_b if side == "baseline" else q.day_c) == d
            qv = (q.values_b if side == "baseline" else q.values_c)[qd]
            n = int(sel.sum())
            arms[arm] = {
                "requests": n,
                "ttft_s": {"p99_answered": _p99(ttft), "n_answered": int(np.isfinite(ttft).sum())},
                "e2e_s": {"p99_answered": _p99(e2e), "n_answered": int(np.isfinite(e2e).sum())},
                "error_rate": float(failed.mean()) if n else None,
                "retry_rate": {"share": 0.0},
                "quality": {"exact_match": float(qv.mean()) if qv.size else None},
                "quality_n": {"exact_match": int(qv.size)},
                "system_fingerprints": {"fp": n},
            }
        out.append({"day": d, "arms": arms})
    return out


def test_aa_month_raises_no_alarm_and_no_no_go_in_95_percent_of_seeds():
    seeds = 200
    alarm = no_go = either = 0
    for seed in range(seeds):
        month = sq.synthetic_month(seed, per_day=WEEK, items=600)
        verdicts = sq.month_verdicts(month, JudgeConfig(), naive=False)
        bad_verdict = sq.first_day(verdicts) is not None
        drift = drift_section(daily_entries_of(month), api_arm="cloud",
                              control_arm="selfhosted", cfg=DriftConfig())  # fmt: skip
        assert drift["series_watched"] == 10  # 2 arms x 5 default metrics, all with data
        bad_drift = any(s["alarm"] for s in drift["series"])
        alarm += bad_drift
        no_go += bad_verdict
        either += bad_drift or bad_verdict
    print(f"A/A months: drift alarm {alarm / seeds:.1%}, NO_GO {no_go / seeds:.1%}, "
          f"either {either / seeds:.1%} of {seeds}")  # fmt: skip
    assert either / seeds <= 0.07  # 200 seeds: sd 1.5 points at 5%, 2.1 at 10%
