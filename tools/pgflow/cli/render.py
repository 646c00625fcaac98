"""Plain-text views of runs for the CLI and the demo (no I/O)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

#: Shown instead of a value that is nested too deeply for Python's json module.
TOO_DEEP: Final = "(nested too deeply to show here: pgflow status --json prints it)"


def to_json(value: Any) -> str:
    """``json.dumps(value)``, or :data:`TOO_DEEP` for a value too deep to encode."""
    try:
        return json.dumps(value)
    except RecursionError:
        return TOO_DEEP


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Plain columns as wide as their widest cell, two spaces apart; ``right``: right-aligned."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def duration(start: str | None, end: str | None) -> str:
    """ "1.23 s" between two ISO timestamps; "" when either is missing."""
    if not start:
        return ""
    t0 = datetime.fromisoformat(start)
    t1 = datetime.fromisoformat(end) if end else None
    if t1 is None:
        return ""
    return f"{(t1 - t0).total_seconds():.2f} s"


def render_run(run: dict[str, Any]) -> str:
    """A run as a tree of its steps (status, attempts, duration, error).

    A completed run ends with its output; a run read without its output
    (``run_summary``: values too deep for Python) says where to find it.
    """
    end = run.get("completed_at") or run.get("failed_at") or run.get("cancelled_at")
    lines = [
        f"run {run['run_id']}  flow {run['flow_slug']}  {run['status']}"
        + (f"  {duration(run['started_at'], end)}" if end else "")
    ]
    if run.get("error_message"):
        lines.append(f"  error: {run['error_message']}")
    steps = run.get("steps", [])
    width = max((len(s["step_slug"]) for s in steps), default=4)
    for i, step in enumerate(steps):
        branch = "└─" if i == len(steps) - 1 else "├─"
        tasks = step.get("tasks", {})
        total = step.get("initial_tasks")
        detail = []
        if step["step_type"] == "map" and total is not None:
            detail.append(f"{tasks.get('completed', 0)}/{total} tasks")
        if step.get("attempts"):
            detail.append(f"{step['attempts']} attempt{'s' if step['attempts'] != 1 else ''}")
        done = step.get("completed_at") or step.get("failed_at") or step.get("skipped_at")
        took = duration(step.get("started_at"), done)
        if took:
            detail.append(took)
        if step.get("skip_reason"):
            detail.append(f"({step['skip_reason']})")
        waiting = step.get("waiting_for")
        if waiting:
            until = waiting.get("until")
            detail.append(
                f"waiting for {waiting['event']} key {to_json(waiting['key'])}"
                + (f" until {until}" if until else " (no deadline)")
            )
        lines.append(
            f"{branch} {step['step_slug']:<{width}}  {step['status']:<9}  {'  '.join(detail)}"
        )
        if step.get("error_message"):
            pad = "   " if i == len(steps) - 1 else "│  "
            lines.append(f"{pad}  error: {step['error_message']}")
    if run["status"] == "completed":
        lines.append(f"output: {to_json(run['output']) if 'output' in run else TOO_DEEP}")
    return "\n".join(lines)
