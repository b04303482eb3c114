"""Report stage: summary.json, plots (PNG/SVG), a self-contained report.html and memo.md.

Public API (the CLI and the experiment runner call these):

- :func:`build_report` -- one run directory, files written into it;
- :func:`compare_runs` -- two runs (before/after), arms matched by name;
- :func:`build_sweep_report` -- several runs of one load sweep.

Sections are listed in :data:`harness.report.sections.SECTIONS`; add one with
:func:`harness.report.sections.register_section`.
"""

from harness.report.build import (
    SUMMARY_SCHEMA_VERSION,
    build_report,
    build_sweep_report,
    compare_runs,
)

__all__ = ["SUMMARY_SCHEMA_VERSION", "build_report", "build_sweep_report", "compare_runs"]
