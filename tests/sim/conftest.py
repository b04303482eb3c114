"""Shared fixtures: simulator subprocesses (one per module where tests only read) and SDK
clients. Tests that change parameters start their own simulator or restore what they set."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest

from harness.sim.process import SimProcess

# Fixed latency: TTFT exactly 50 ms, ITL exactly 5 ms, no faults.
FIXED_LATENCY = {"ttft_ms": 50, "itl_ms": 5, "itl_jitter": 0}


@pytest.fixture(scope="session")
def sdk() -> Callable[..., openai.OpenAI]:
    """Factory: the official SDK pointed at a simulator, no retries."""

    def make(sim: SimProcess, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0, **kw)

    return make


@pytest.fixture(scope="module")
def vllm_sim() -> Iterator[SimProcess]:
    with SimProcess("vllm", params={"step_jitter": 0}) as sim:
        yield sim


@pytest.fixture(scope="module")
def cloud_sim() -> Iterator[SimProcess]:
    with SimProcess("cloud", params=FIXED_LATENCY) as sim:
        yield sim
