"""Flows whose handlers do what their run input tells them (for worker tests)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from pgflow import Flow

dag = Flow("wt_dag", timeout=10)


@dag.step()
def root(inp: dict[str, Any]) -> list[int]:
    return list(range(int(inp["run"]["n"])))


@dag.map(depends_on=[root])
def square(item: int) -> int:
    return item * item


@dag.step(depends_on=[root])
def count(inp: dict[str, Any]) -> int:
    return len(inp["root"])


@dag.step(depends_on=[square, count])
def total(inp: dict[str, Any]) -> dict[str, int]:
    return {"sum": sum(inp["square"]), "count": inp["count"]}


behave = Flow("wt_behave", max_attempts=3, base_delay=1, timeout=3)


@behave.step()
def act(inp: dict[str, Any], ctx: Any) -> Any:
    """Behaviour from the run input: mode raise / sleep / return / nonjson / ctx / marker."""
    run = inp["run"]
    mode = run["mode"]
    if "marker" in run:
        Path(run["marker"]).write_text(f"{os.getpid()} {ctx.attempt}\n")
    if mode == "raise":
        raise ValueError(f"boom on attempt {ctx.attempt}")
    if mode == "sleep":
        if ctx.attempt < run.get("until_attempt", 99):
            time.sleep(run["seconds"])
        return {"slept_on_attempt": ctx.attempt}
    if mode == "return":
        return run["value"]
    if mode == "nonjson":
        return object()
    if mode == "ctx":
        return {
            "flow_slug": ctx.flow_slug,
            "run_id": ctx.run_id,
            "step_slug": ctx.step_slug,
            "task_index": ctx.task_index,
            "attempt": ctx.attempt,
            "flow_input": ctx.flow_input,
        }
    raise LookupError(f"unknown mode {mode!r}")


asynchronous = Flow("wt_async", timeout=5)


@asynchronous.map()
async def wait_and_double(item: int, ctx: Any) -> dict[str, Any]:
    await asyncio.sleep(0.05)
    return {"double": item * 2, "input": ctx.flow_input}
