"""Helpers of the client tests: a stand-in worker that speaks SQL, run lookups."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg

Conn = psycopg.Connection[tuple[Any, ...]]


def work_once(
    db: str, flow: str, *, output: Any = None, error: str | None = None, within: float = 10
) -> list[str]:
    """Claim the flow's ready tasks (waiting up to ``within`` s) and complete or fail them.

    Acts as a worker would, through the batch protocol; returns the run ids it served.
    """
    deadline = time.monotonic() + within
    with psycopg.connect(db, autocommit=True) as conn:
        while True:
            tasks = conn.execute(
                "SELECT run_id, step_slug, task_index FROM pgflow.claim_tasks(%s, 10, %s)",
                (flow, uuid.uuid4()),
            ).fetchall()
            if tasks or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for run_id, step, index in tasks:
            if error is None:
                conn.execute(
                    "SELECT pgflow.complete_tasks(%s, %s, %s, %s::jsonb[])",
                    ([run_id], [step], [index], [json.dumps(output)]),
                )
            else:
                conn.execute(
                    "SELECT pgflow.fail_task(%s, %s, %s, %s)", (run_id, step, index, error)
                )
    return [str(t[0]) for t in tasks]


def run_exists(conn: Conn, run_id: object) -> bool:
    row = conn.execute("SELECT pgflow.get_run(%s) IS NOT NULL", (str(run_id),)).fetchone()
    assert row is not None
    return bool(row[0])
