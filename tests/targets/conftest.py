"""Fixtures for the target tests: a scripted SSE server on 127.0.0.1 (see scripted_server.py)."""

from __future__ import annotations

import pytest

from tests.targets.scripted_server import Script, ScriptServer, make_target  # noqa: F401

_SERVER: ScriptServer | None = None


@pytest.fixture
def server() -> ScriptServer:
    """The shared scripted server, reset for each test."""
    global _SERVER
    if _SERVER is None:
        _SERVER = ScriptServer()
    _SERVER.reset()
    return _SERVER
