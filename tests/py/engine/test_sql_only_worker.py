"""A worker that uses nothing but the five protocol functions and LISTEN."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]

HANDLERS = {
    "root": lambda inp: inp["run"]["n"] + 1,
    "left": lambda inp: inp["root"] * 2,
    "right": lambda inp: inp["root"] * 3,
    "join": lambda inp: {"sum": inp["left"] + inp["right"]},
}


def _sql_worker(dsn: str, flow: str, stop: threading.Event, wakeups: list[float]) -> None:
    worker_id = uuid.uuid4()
    with (
        psycopg.connect(dsn, autocommit=True) as listen,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        listen.execute("LISTEN pgflow_tasks")

        def read() -> list[tuple[Any, ...]]:
            return conn.execute(
                "SELECT msg_id FROM pgflow.read_with_poll(%s, 30, 10, max_poll_seconds => 0)",
                (flow,),
            ).fetchall()

        while not stop.is_set():
            msgs = read()
            if not msgs:
                # mark idle, look once more, then wait for a wake-up (1 s fallback)
                listen.execute("SELECT pgflow.worker_idle(%s)", ([flow],))
                msgs = read()
                if not msgs:
                    for note in listen.notifies(timeout=1.0, stop_after=1):
                        if note.payload == flow:
                            wakeups.append(time.monotonic())
                listen.execute("SELECT pgflow.worker_idle(%s, false)", ([flow],))
                if not msgs:
                    continue
            tasks = conn.execute(
                "SELECT run_id, step_slug, task_index, input FROM pgflow.start_tasks(%s, %s, %s)",
                (flow, [m[0] for m in msgs], worker_id),
            ).fetchall()
            for run_id, step, index, task_input in tasks:
                output = HANDLERS[step](task_input)
                conn.execute(
                    "SELECT pgflow.complete_task(%s, %s, %s, %s)",
                    (run_id, step, index, json.dumps(output)),
                )


def test_a_sql_only_worker_drives_a_diamond_to_completion(db: str, conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('diamond')")
    conn.execute("SELECT pgflow.add_step('diamond', 'root')")
    conn.execute("SELECT pgflow.add_step('diamond', 'left', ARRAY['root'])")
    conn.execute("SELECT pgflow.add_step('diamond', 'right', ARRAY['root'])")
    conn.execute("SELECT pgflow.add_step('diamond', 'join', ARRAY['left', 'right'])")

    stop = threading.Event()
    wakeups: list[float] = []
    thread = threading.Thread(target=_sql_worker, args=(db, "diamond", stop, wakeups))
    thread.start()
    try:
        with psycopg.connect(db, autocommit=True) as events:
            events.execute("LISTEN pgflow_events")
            events.execute("SELECT pgflow.listen_events()")
            time.sleep(0.3)  # let the worker reach its LISTEN wait
            run_id = str(
                conn.execute(
                    "SELECT run_id FROM pgflow.start_flow('diamond', '{\"n\": 4}')"
                ).fetchone()[0]  # type: ignore[index]
            )
            seen = []
            for note in events.notifies(timeout=20):
                payload = json.loads(note.payload)
                if payload.get("run_id") == run_id:
                    seen.append(payload["event"])
                if payload["event"] in ("run:completed", "run:failed"):
                    break
    finally:
        stop.set()
        thread.join(timeout=10)

    assert seen == ["run:started", "run:completed"]
    assert wakeups, "the worker was woken by NOTIFY pgflow_tasks"
    run = conn.execute(
        "SELECT status, output FROM pgflow.runs WHERE run_id = %s", (run_id,)
    ).fetchone()
    assert run == ("completed", {"join": {"sum": 25}})
