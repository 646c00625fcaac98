"""A flow with a per-tenant concurrency limit, for the fairness test (test_tenants.py)."""

from __future__ import annotations

import time
from typing import Any

from pgflow import Concurrency, Flow

tenants = Flow("wt_tenants", max_attempts=3)


@tenants.step(concurrency=Concurrency(2, key="run.tenant"))
def work(inp: dict[str, Any]) -> dict[str, Any]:
    """Hold the slot a little, so that several tasks of a tenant would overlap without a limit."""
    time.sleep(0.02)
    return {"tenant": inp["run"]["tenant"], "n": inp["run"]["n"]}
