"""The default month canary, compressed further: the provider's silent update is found.

``configs/experiment/month_canary.yaml`` on the simulators at 5x its clock rate (a day in 4
wall seconds, 30 days in two minutes), with daily reports off: the report must hold 30 daily
entries spanning 29 days, the cloud arm's quality drift must be detected and dated to day
15 +- 1 (the day ``configs/sim/month_cloud.yaml`` updates the model) as provider drift, beside
the fingerprint change, and the pinned self-hosted arm must raise no quality alarm.
"""

from __future__ import annotations

import json

import pytest

from tests.load.e2e import only_run_dir, run_harness

pytestmark = pytest.mark.slow


def test_month_canary_finds_the_mid_month_update(tmp_path):
    proc = run_harness(
        [
            "experiment",
            "experiment=month_canary",
            f"record.reports_dir={tmp_path}",
            "load.time_scale=21600",
            "load.duration_s=120",
            "load.rate=100",
            "canary.daily_reports=false",
            "progress_interval_s=30",
        ],
        timeout=420,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    s = json.loads((run_dir / "summary.json").read_text())
    days = [e["day"] for e in s["daily"]]
    assert len(days) == 30 and days[-1] - days[0] >= 29
    series = {(x["arm"], x["metric"]): x for x in s["drift"]["series"]}
    cloud = series[("cloud", "quality")]
    assert cloud["alarm"] and 14 <= cloud["change_day"] <= 16, cloud
    assert cloud["size"] < 0 and cloud["ci"][1] < 0
    assert not series[("selfhosted", "quality")]["alarm"]
    attribution = {a["metric"]: a for a in s["drift"]["attribution"]}
    assert attribution["quality"]["kind"] == "provider drift"
    changes = {(c["arm"], c["field"]): c["day"] for c in s["drift"]["fingerprint_changes"]}
    assert changes[("cloud", "system_fingerprint")] == 15
    assert ("selfhosted", "system_fingerprint") not in changes
    # day partitions compacted: one file per day per arm
    for arm in ("cloud", "selfhosted"):
        files = sorted(run_dir.glob(f"requests/day=*/arm={arm}/*.parquet"))
        assert len(files) == 30 and all("-compact-g" in f.name for f in files)
    memo = (run_dir / "memo.md").read_text()
    assert "demonstration" in memo.lower()
