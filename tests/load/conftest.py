"""Fixtures for end-to-end experiment runs."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def reports(tmp_path) -> Path:
    d = tmp_path / "reports"
    d.mkdir()
    return d
