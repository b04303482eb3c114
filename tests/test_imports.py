"""Hard dependencies are imported, never skipped: a missing module must fail a test loudly."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).parent


def test_no_importorskip_in_tests():
    """``pytest.importorskip`` turns a missing (hard) dependency into a silent skip."""
    needle = "importor" + "skip("  # split so this file does not match itself
    hits = [
        f"{p.relative_to(TESTS)}:{i}"
        for p in sorted(TESTS.rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if needle in line
    ]
    assert not hits, f"replace importorskip with a plain import: {hits}"


def test_simulator_process_imports():
    from harness.sim import process

    assert callable(process.SimProcess)
