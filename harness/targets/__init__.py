"""Targets: streaming clients (lean sockets and the openai SDK), retries, preflight checks,
the managed ``vllm serve`` launcher and the ``/metrics`` scraper.

Entry point for the load stage::

    client = make_arm_client(arm, target, run_id=..., experiment=...)
    rows = client.execute(item, request_id=..., pair_id=..., t_scheduled_ns=..., on_row=...)
"""

from harness.targets.client import (
    AUTO_CLIENT,
    ArmClient,
    build_body,
    make_arm_client,
    resolve_api_key,
)
from harness.targets.errors import TargetError

__all__ = [
    "AUTO_CLIENT",
    "ArmClient",
    "TargetError",
    "build_body",
    "make_arm_client",
    "resolve_api_key",
]
