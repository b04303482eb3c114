"""Bad experiment input fails early with a message naming what is wrong, before any traffic."""

from __future__ import annotations

import socket

from tests.load.e2e import manifest, run_harness


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_misspelled_key_is_named(reports):
    res = run_harness(["experiment", f"record.reports_dir={reports}", "load.rat=3"], timeout=60)
    assert res.returncode != 0
    assert "rat" in (res.stderr + res.stdout)
    assert not list(reports.glob("*/*"))


def test_missing_api_key_env_fails_before_traffic(reports):
    res = run_harness(
        [
            "experiment",
            f"record.reports_dir={reports}",
            "arms.cloud.target=openai",
            "+arms.cloud.api_key_env=HARNESS_TEST_UNSET_KEY",
        ],
        timeout=60,
        env={"HARNESS_TEST_UNSET_KEY": ""},
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "HARNESS_TEST_UNSET_KEY" in res.stderr and "cloud" in res.stderr
    assert not list(reports.glob("*/*/requests/*.parquet"))


def test_preflight_names_arm_and_url(reports):
    port = _closed_port()
    url = f"http://127.0.0.1:{port}/v1"
    res = run_harness(
        [
            "experiment",
            f"record.reports_dir={reports}",
            "arms.selfhosted.target=vllm",
            f"+arms.selfhosted.base_url={url}",
            "analysis.report=false",
        ],
        timeout=90,
    )
    assert res.returncode != 0
    out = res.stderr + res.stdout
    assert "selfhosted" in out and f"127.0.0.1:{port}" in out
    runs = list(reports.glob("*/*/manifest.json"))
    assert len(runs) == 1 and manifest(runs[0].parent)["status"] == "failed"
    assert not list(reports.glob("*/*/requests/*.parquet"))


def test_warmup_longer_than_run_is_rejected(reports):
    res = run_harness(
        ["experiment", f"record.reports_dir={reports}", "load.duration_s=3", "load.warmup_s=5"],
        timeout=60,
    )
    assert res.returncode == 2
    assert "load.warmup_s" in res.stderr and "load.duration_s" in res.stderr


def test_missing_workload_file_is_a_config_error(reports):
    res = run_harness(
        [
            "experiment",
            f"record.reports_dir={reports}",
            "workload.kind=jsonl",
            "workload.path=workloads/nope.jsonl",
        ],
        timeout=60,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "nope.jsonl" in res.stderr and "Traceback" not in res.stderr
    assert not list(reports.glob("*/*"))  # nothing started, no run directory
