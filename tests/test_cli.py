"""The command line: clear errors and exit code 2 for bad input, never a traceback."""

from __future__ import annotations

import json

from harness.cli import main


def test_help_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    assert "experiment" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_report_on_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_report_on_corrupt_parquet_names_the_file(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps({"run_id": "x", "experiment": "e"}))
    (tmp_path / "requests").mkdir()
    bad = tmp_path / "requests" / "w0-part-000001.parquet"
    bad.write_text("garbage")
    assert main(["report", str(tmp_path)]) == 2
    assert str(bad) in capsys.readouterr().err
