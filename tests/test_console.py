"""The end-of-run console summary shows each arm's figures from summary.json."""

from harness.report.console import format_summary


def test_format_summary_lists_arms_and_figures():
    summary = {
        "run_id": "r1",
        "experiment": "smoke",
        "run": {"status": "completed", "rows": 10},
        "arms": {"cloud": {}, "selfhosted": {}},
        "latency": {
            "cloud": {"ttft_s": {"p50": 0.2, "p99": 1.25}, "e2e_s": {"p50": 1.0, "p99": 2.0}}
        },
        "errors": {
            "cloud": {"requests": 6, "errors": 1, "retry_rate": 0.5, "by_type": {"rate_limited": 1}}
        },
        "goodput": {"cloud": {"share": 0.75}},
        "throughput": {"cloud": {"output_tps": 321.4}},
    }
    text = format_summary(summary)
    assert "completed, 10 rows" in text
    cloud = next(line for line in text.splitlines() if line.startswith("cloud"))
    assert "200 ms / 1.25 s" in cloud and "1 s / 2 s" in cloud
    assert "75.0%" in cloud and "50.0%" in cloud and "321" in cloud
    assert "rate_limited: 1" in text
    assert any(line.startswith("selfhosted") for line in text.splitlines())


def test_control_characters_are_neutralised():
    summary = {"run_id": "r", "arms": {"evil\x1b[2Jarm": {}}, "caveats": ["bell\x07"]}
    text = format_summary(summary)
    assert "\x1b" not in text and "\x07" not in text
    assert "evil?[2Jarm" in text
