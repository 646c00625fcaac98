"""Flows for the lease, fencing and retry-control tests (handlers driven by the run input)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pgflow import Flow
from pgflow.errors import Fail, RetryAfter

beat = Flow("wt_beat", timeout=600, heartbeat=2, max_attempts=3)


@beat.step()
def hold(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Append "pid attempt time" to the marker; sleep on attempts before until_attempt."""
    run = inp["run"]
    with Path(run["marker"]).open("a") as f:
        f.write(f"{os.getpid()} {ctx.attempt} {time.time()}\n")
    if ctx.attempt < run.get("until_attempt", 99):
        time.sleep(run["seconds"])
    return {"pid": os.getpid(), "attempt": ctx.attempt}


control = Flow("wt_control", max_attempts=4, base_delay=1)


@control.step()
def act(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """mode fail: pgflow.Fail; retry_after: RetryAfter(seconds) on the first attempt."""
    run = inp["run"]
    with Path(run["marker"]).open("a") as f:
        f.write(f"{ctx.attempt} {time.time()}\n")
    if run["mode"] == "fail":
        raise Fail("card declined")
    if run["mode"] == "retry_after" and ctx.attempt == 1:
        raise RetryAfter(run["seconds"], "rate limited")
    return {"attempt": ctx.attempt}
