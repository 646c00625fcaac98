"""A flow for test_payloads.py: run by a real `pgflow worker` process."""

from __future__ import annotations

from typing import Any

from pgflow import Flow

payload = Flow("rp_payload", max_attempts=1, base_delay=1, timeout=5)


@payload.step()
def measure(inp: dict[str, Any]) -> int:
    return len(repr(inp["run"]))
