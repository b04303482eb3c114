"""Bad experiment input fails early with a message naming what is wrong, before any traffic."""

from __future__ import annotations

import os
import socket

import pytest

from tests.load.e2e import manifest, run_harness


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_misspelled_key_is_named(reports):
    res = run_harness(["experiment", f"record.reports_dir={reports}", "load.rat=3"], timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "load.rat: unknown key (did you mean load.rate?)" in res.stderr
    assert "+load.rat" not in res.stderr  # no suggestion to add the typo with `+`
    assert not list(reports.glob("*/*"))


def _assert_one_line_config_error(res, *needles: str) -> None:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert len(lines) == 1 and lines[0].startswith("config error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["+load.rat=5"], ["load.rat: unknown key", "load.rate"]),
        (["+analysis.slo.ttft=0.3"], ["analysis.slo.ttft: unknown key", "ttft_s"]),
        (["arms.cloud.max_connections=0"], ["arms.cloud.max_connections"]),
        (["analysis.confidence=2"], ["analysis.confidence"]),
        (["analysis.bootstrap_resamples=0"], ["analysis.bootstrap_resamples"]),
        (["load.max_requests=0"], ["load.max_requests: must be >= 1"]),
        (["load.steps=3"], ["load.steps: expected a list of [t_s, multiplier] pairs"]),
        (["~arms"], ["arms: removed (~arms)"]),
        (["run_id=../.."], ["run_id: '../..' is not a simple name"]),
        (
            ["arms.selfhosted.target=vllm", "arms.selfhosted.base_url=ftp://127.0.0.1:1/v1"],
            ["arms.selfhosted.base_url", "ftp://"],
        ),
    ],
)
def test_bad_config_is_one_line_exit_2_before_traffic(reports, overrides, needles):
    res = run_harness(["experiment", f"record.reports_dir={reports}", *overrides], timeout=60)
    _assert_one_line_config_error(res, *needles)
    assert not list(reports.glob("*/*"))  # nothing started, no run directory
    assert not (reports / "manifest.json").exists()  # run_id=../.. would write here


@pytest.mark.parametrize(
    ("setting", "key"),
    [("load.web_ui=true", "load.web_port"), ("load.workers=1", "load.master_port")],
    ids=["web-ui-port", "master-port"],
)
def test_busy_port_is_a_config_error(reports, setting, key):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = run_harness(
            ["experiment", f"record.reports_dir={reports}", setting, f"{key}={port}"],
            timeout=60,
        )
    _assert_one_line_config_error(res, key, f"127.0.0.1:{port}")
    assert not list(reports.glob("*/*"))


def test_reused_run_id_is_a_config_error(reports):
    (reports / "smoke" / "r1").mkdir(parents=True)
    res = run_harness(["experiment", f"record.reports_dir={reports}", "run_id=r1"], timeout=60)
    _assert_one_line_config_error(res, "run_id: 'r1' was used before")
    assert not list((reports / "smoke" / "r1").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_reports_dir_is_a_config_error(reports):
    reports.chmod(0o555)
    try:
        res = run_harness(["experiment", f"record.reports_dir={reports}"], timeout=60)
    finally:
        reports.chmod(0o755)
    _assert_one_line_config_error(res, "record.reports_dir", "not writable")


def test_reports_dir_under_a_file_is_a_config_error(reports):
    afile = reports / "afile"
    afile.write_text("")
    res = run_harness(["experiment", f"record.reports_dir={afile / 'sub'}"], timeout=60)
    _assert_one_line_config_error(res, "record.reports_dir", "not a directory")


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
