"""Plain-text views of runs for the CLI and the demo (no I/O)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

#: Child runs of one sub-flow step shown in a run's tree (the others are counted).
CHILDREN_SHOWN: Final = 5

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


def waiting_for_slot(gates: Sequence[dict[str, Any]]) -> str:
    """What a step's parked tasks wait for (``get_run``'s ``waiting_for_slot``):
    ``waiting for a concurrency slot (tenant = "A": 2/2)`` -- the key's last segment and
    the value the tasks share, then slots held of the limit; ``(3/3)`` without a key;
    a flow's limit says ``flow,`` first; several gates are separated by ``;``."""
    parts = []
    for gate in gates:
        key = gate.get("key")
        count = f"{gate.get('held')}/{gate.get('limit')}"
        text = f"{key.split('.')[-1]} = {to_json(gate.get('value'))}: {count}" if key else count
        parts.append(("flow, " if gate.get("limit_of") == "flow" else "") + text)
    return f"waiting for a concurrency slot ({'; '.join(parts)})"


def render_run(run: dict[str, Any]) -> str:
    """A run as a tree of its steps (status, attempts, duration, error).

    A completed run ends with its output; a run read without its output
    (``run_summary``: values too deep for Python) says where to find it.
    Under a sub-flow step come its child runs: the ones in
    ``run["child_runs"]`` (run id -> get_run document, as ``pgflow status``
    fetches them, depth-limited) as trees of their own, the others as one
    line; at most :data:`CHILDREN_SHOWN` per step, the rest counted by status.
    """
    end = run.get("completed_at") or run.get("failed_at") or run.get("cancelled_at")
    lines = [
        f"run {run['run_id']}  flow {run['flow_slug']}  {run['status']}"
        + (f"  {duration(run['started_at'], end)}" if end else "")
    ]
    if run.get("error_message"):
        lines.append(f"  error: {run['error_message']}")
    if run.get("paused") and run.get("status") == "started":
        lines.append(f"  flow paused: queued tasks wait for pgflow resume {run['flow_slug']}")
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
        slots = step.get("waiting_for_slot")
        if slots:
            detail.append(waiting_for_slot(slots))
        lines.append(
            f"{branch} {step['step_slug']:<{width}}  {step['status']:<9}  {'  '.join(detail)}"
        )
        pad = "   " if i == len(steps) - 1 else "│  "
        if step.get("error_message"):
            lines.append(f"{pad}  error: {step['error_message']}")
        if step.get("subflow"):
            lines.extend(f"{pad}  {line}" for line in _children(run, step["step_slug"]))
    if run["status"] == "completed":
        lines.append(f"output: {to_json(run['output']) if 'output' in run else TOO_DEEP}")
    return "\n".join(lines)


def _children(run: dict[str, Any], step_slug: str) -> list[str]:
    """The lines of the child runs of one sub-flow step of ``run``."""
    kids = [c for c in run.get("children", []) if c.get("step_slug") == step_slug]
    fetched: dict[str, Any] = run.get("child_runs", {})
    lines: list[str] = []
    for kid in kids[:CHILDREN_SHOWN]:
        doc = fetched.get(str(kid["run_id"]))
        if doc is not None:
            lines.extend(render_run(doc).splitlines())
        else:
            lines.append(
                f"run {kid['run_id']}  flow {kid['flow_slug']}  {kid['status']}"
                f"  (task {kid['task_index']}, attempt {kid['attempt']})"
            )
    rest = kids[CHILDREN_SHOWN:]
    if rest:
        counts: dict[str, int] = {}
        for kid in rest:
            counts[kid["status"]] = counts.get(kid["status"], 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        lines.append(f"… {len(rest)} more child runs ({summary})")
    return lines
