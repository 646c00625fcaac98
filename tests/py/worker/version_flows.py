"""Two versions of one flow, for the worker test that serves both at once."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pgflow import Flow

v1 = Flow("wt_versions")


@v1.step()
def work(inp: dict[str, Any]) -> dict[str, Any]:
    gate = inp["run"].get("gate")
    while gate and not Path(gate).exists():  # a v1 run in flight until the test opens the gate
        time.sleep(0.05)
    return {"version": 1, "pid": os.getpid()}


v2 = Flow("wt_versions", version=2)


@v2.step(slug="work")
def work_v2(inp: dict[str, Any]) -> dict[str, Any]:
    return {"version": 2}


@v2.step(depends_on=["work"])
def audit(inp: dict[str, Any]) -> dict[str, Any]:
    return {"saw": inp["work"]["version"]}
