"""Report structure: adding a section is adding a function; metric formulas match the README."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from harness.analysis.metrics import DEFINITIONS, formula, meets_slo
from harness.config import SLOConfig
from harness.report import build_report
from harness.report.markdown import md_escape
from harness.report.sections import SECTIONS, Section, register_section

from .conftest import make_records, write_run

README = Path(__file__).resolve().parents[2] / "README.md"


def _analysis_section() -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- SECTION:analysis -->(.*)<!-- /SECTION:analysis -->", text, re.S)
    assert m, "README has no analysis section"
    return m.group(1)


@pytest.mark.parametrize("fn", DEFINITIONS, ids=lambda f: f.__name__)
def test_metric_formula_in_docstring_matches_readme(fn):
    assert f"`{formula(fn)}`" in _analysis_section()


def test_register_section_adds_json_html_and_memo(tmp_path: Path):
    def compute(data, summary):
        return {"arms": len(data.arms), "saw_latency": "latency" in summary}

    extra = Section(
        "extra",
        "Extra <estimate>",
        compute,
        html=lambda s, plots: [f"{s['extra']['arms']} arms <b>"],
        memo=lambda s: ["## Extra", "", f"- arms: {s['extra']['arms']}"],
        memo_rank=35,
    )
    register_section(extra)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_section(extra)
        assert [s.key for s in SECTIONS][-2:] == ["extra", "caveats"]
        run = write_run(tmp_path / "r", make_records("cloud", 8))
        s = build_report(run)
        assert s["extra"] == {"arms": 2, "saw_latency": True}
        html = (run / "report.html").read_text()
        assert (
            'id="extra"' in html and "Extra &lt;estimate&gt;" in html and "2 arms &lt;b&gt;" in html
        )
        memo = (run / "memo.md").read_text()
        assert "## Extra" in memo and "## Cost" in memo
    finally:
        SECTIONS.remove(extra)


def test_meets_slo_rules():
    ok = np.array([True, True, True, False, True])
    ttft = np.array([0.1, 0.6, 0.1, 0.1, 0.1])
    tpot = np.array([0.01, 0.01, np.nan, 0.01, 0.2])
    e2e = np.array([1.0, 1.0, 1.0, 1.0, 1.0])
    got = meets_slo(ok, ttft, tpot, e2e, SLOConfig(ttft_s=0.5, tpot_s=0.05, e2e_s=None))
    assert got.tolist() == [True, False, True, False, False]
    assert meets_slo(ok, ttft, tpot, e2e, SLOConfig(None, None, 0.5)).tolist() == [False] * 5


def test_md_escape():
    s = md_escape("<script>x</script> *bold* [l](u) | `c`\n# h")
    assert "<" not in s and "&lt;script&gt;" in s
    assert "\\*bold\\*" in s and "\\[l\\]" in s and "\\|" in s and "\\`c\\`" in s
    assert "\n" not in s
