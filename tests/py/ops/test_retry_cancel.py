"""cancel_run and retry_run end to end, driven through the SQL worker protocol."""

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


def _define(conn: Conn) -> None:
    # fetch -> items (map over fetch's list) -> total; audit is a second root
    conn.execute("SELECT pgflow.create_flow('orders', max_attempts => 2, base_delay => 1)")
    conn.execute("SELECT pgflow.add_step('orders', 'fetch')")
    conn.execute("SELECT pgflow.add_step('orders', 'items', ARRAY['fetch'], step_type => 'map')")
    conn.execute("SELECT pgflow.add_step('orders', 'total', ARRAY['items'])")
    conn.execute("SELECT pgflow.add_step('orders', 'audit')")


def _claim(conn: Conn, flow: str) -> list[tuple[Any, ...]]:
    """read_with_poll then start_tasks: the two claim calls of a worker."""
    msgs = [
        row[0]
        for row in conn.execute(
            "SELECT msg_id FROM pgflow.read_with_poll(%s, 30, 100)", (flow,)
        ).fetchall()
    ]
    if not msgs:
        return []
    return conn.execute(
        "SELECT run_id, step_slug, task_index, input FROM pgflow.start_tasks(%s, %s, %s)",
        (flow, msgs, uuid.uuid4()),
    ).fetchall()


def _drive(conn: Conn, flow: str, handle: Any, run_id: str, deadline: float = 20.0) -> str:
    """Claim and report tasks until the run is finished; returns its status."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for run, step, index, task_input in _claim(conn, flow):
            try:
                output = handle(step, index, task_input)
            except RuntimeError as exc:
                conn.execute(
                    "SELECT pgflow.fail_task(%s, %s, %s, %s)", (run, step, index, str(exc))
                )
            else:
                conn.execute(
                    "SELECT pgflow.complete_task(%s, %s, %s, %s)",
                    (run, step, index, json.dumps(output)),
                )
        status = conn.execute(
            "SELECT status FROM pgflow.runs WHERE run_id = %s", (run_id,)
        ).fetchone()[0]  # type: ignore[index]
        if status != "started":
            return str(status)
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish in {deadline} s")


def test_a_failed_run_is_retried_from_its_failed_tasks_and_completes(conn: Conn) -> None:
    _define(conn)
    calls: list[tuple[str, int]] = []
    broken = {2}  # the item at index 2 fails until it is repaired

    def handle(step: str, index: int, task_input: Any) -> Any:
        calls.append((step, index))
        if step == "fetch":
            return [10, 20, 30, 40]
        if step == "items":
            if index in broken:
                raise RuntimeError(f"item {index} is broken")
            return task_input * 2
        if step == "total":
            return sum(task_input["items"])
        return "audited"

    run_id = str(
        conn.execute("SELECT run_id FROM pgflow.start_flow('orders', '{\"order\": 7}')").fetchone()[
            0
        ]  # type: ignore[index]
    )
    assert _drive(conn, "orders", handle, run_id) == "failed"
    failed = conn.execute("SELECT pgflow.get_run(%s)", (run_id,)).fetchone()[0]  # type: ignore[index]
    steps = {s["step_slug"]: s for s in failed["steps"]}
    assert failed["error_message"] == 'step "items" failed: item 2 is broken'
    assert steps["fetch"]["status"] == "completed"
    assert steps["items"]["status"] == "failed"
    assert steps["items"]["tasks"]["failed"] == 1
    assert steps["items"]["attempts"] >= 5  # 3 tasks once at least, task 2 twice
    assert steps["total"]["status"] == "created"
    completed_items = {
        row[0]
        for row in conn.execute(
            "SELECT task_index FROM pgflow.step_tasks WHERE run_id = %s"
            " AND step_slug = 'items' AND status = 'completed'",
            (run_id,),
        )
    }
    assert 2 not in completed_items

    broken.clear()
    calls.clear()
    with psycopg.connect(conn.info.dsn, autocommit=True) as events:
        events.execute("LISTEN pgflow_events")
        events.execute("SELECT pgflow.listen_events()")
        conn.execute("SELECT pgflow.retry_run(%s)", (run_id,))
        seen = [json.loads(n.payload) for n in events.notifies(timeout=1, stop_after=1)]
    assert seen == [
        {"event": "run:retried", "flow_slug": "orders", "run_id": run_id, "status": "started"}
    ]

    assert _drive(conn, "orders", handle, run_id) == "completed"
    # fetch and audit completed before the failure: not run again; of the map
    # only the task that failed and those cancelled with the run ran again
    assert ("fetch", 0) not in calls
    assert ("audit", 0) not in calls
    rerun = {index for step, index in calls if step == "items"}
    assert 2 in rerun
    assert rerun.isdisjoint(completed_items), "completed map tasks ran again"
    assert rerun == {0, 1, 2, 3} - completed_items
    run = conn.execute(
        "SELECT status, output, remaining_steps FROM pgflow.runs WHERE run_id = %s", (run_id,)
    ).fetchone()
    assert run == ("completed", {"total": 200, "audit": "audited"}, 0)

    doc = conn.execute("SELECT pgflow.get_run(%s)", (run_id,)).fetchone()[0]  # type: ignore[index]
    assert doc["retries"] == 1
    items = next(s for s in doc["steps"] if s["step_slug"] == "items")
    assert items["output"] == [20, 40, 60, 80]
    history = conn.execute(
        "SELECT task_index, status, attempts_count, error_message FROM pgflow.task_attempts"
        " WHERE run_id = %s AND step_slug = 'items' AND status = 'failed'",
        (run_id,),
    ).fetchall()
    assert history == [(2, "failed", 2, "item 2 is broken")]


def test_no_task_of_a_completed_step_runs_again_after_retry(conn: Conn) -> None:
    """Completed map tasks keep their outputs: count handler calls per task."""
    _define(conn)
    calls: dict[tuple[str, int], int] = {}
    fail_once = {"items": {1, 3}}

    def handle(step: str, index: int, task_input: Any) -> Any:
        calls[(step, index)] = calls.get((step, index), 0) + 1
        if step == "fetch":
            return [1, 2, 3, 4, 5]
        if step == "items":
            if index in fail_once["items"]:
                raise RuntimeError("not yet")
            return task_input
        if step == "total":
            return sum(task_input["items"])
        return None

    run_id = str(
        conn.execute("SELECT run_id FROM pgflow.start_flow('orders', '{}')").fetchone()[0]  # type: ignore[index]
    )
    assert _drive(conn, "orders", handle, run_id) == "failed"
    completed = {
        row[0]
        for row in conn.execute(
            "SELECT task_index FROM pgflow.step_tasks WHERE run_id = %s"
            " AND step_slug = 'items' AND status = 'completed'",
            (run_id,),
        )
    }
    before = dict(calls)
    fail_once["items"] = set()
    conn.execute("SELECT pgflow.retry_run(%s)", (run_id,))
    assert _drive(conn, "orders", handle, run_id) == "completed"
    for index in completed:
        assert calls[("items", index)] == before[("items", index)], f"item {index} ran again"
    assert calls[("fetch", 0)] == 1
    total = conn.execute(
        "SELECT output -> 'total' FROM pgflow.runs WHERE run_id = %s", (run_id,)
    ).fetchone()[0]  # type: ignore[index]
    assert total == 15


def test_cancel_waits_for_a_completion_in_flight_and_then_wins(conn: Conn, db: str) -> None:
    """A completion holding its task when cancel_run comes in is kept; later ones are not."""
    conn.execute("SELECT pgflow.create_flow('c')")
    conn.execute("SELECT pgflow.add_step('c', 'a')")
    conn.execute("SELECT pgflow.add_step('c', 'b')")
    conn.execute("SELECT pgflow.add_step('c', 'z', ARRAY['a', 'b'])")
    run_id = str(
        conn.execute("SELECT run_id FROM pgflow.start_flow('c', '{}')").fetchone()[0]  # type: ignore[index]
    )
    tasks = _claim(conn, "c")
    assert sorted(t[1] for t in tasks) == ["a", "b"]

    result: dict[str, Any] = {}
    with psycopg.connect(db) as worker:  # a transaction, left open on purpose
        assert worker.execute(
            "SELECT pgflow.complete_task(%s, 'a', 0, '\"A\"')", (run_id,)
        ).fetchone() == (True,)

        def cancel() -> None:
            with psycopg.connect(db, autocommit=True) as client:
                result["run"] = client.execute(
                    "SELECT status FROM pgflow.cancel_run(%s)", (run_id,)
                ).fetchone()

        thread = threading.Thread(target=cancel)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive(), "cancel_run waits for the task being completed"
        worker.commit()
        thread.join(timeout=10)
    assert result["run"] == ("cancelled",)
    assert conn.execute(
        "SELECT pgflow.complete_task(%s, 'b', 0, '\"B\"')", (run_id,)
    ).fetchone() == (False,)
    states = dict(
        conn.execute(
            "SELECT step_slug, status FROM pgflow.step_states WHERE run_id = %s", (run_id,)
        ).fetchall()
    )
    assert states == {"a": "completed", "b": "cancelled", "z": "created"}
    assert _claim(conn, "c") == []


def test_cancel_announces_itself_and_says_when_there_is_nothing_to_do(conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('n')")
    conn.execute("SELECT pgflow.add_step('n', 'a')")
    run_id = str(
        conn.execute("SELECT run_id FROM pgflow.start_flow('n', '{}')").fetchone()[0]  # type: ignore[index]
    )
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(str(diag.message_primary)))
    with psycopg.connect(conn.info.dsn, autocommit=True) as events:
        events.execute("LISTEN pgflow_events")
        events.execute("SELECT pgflow.listen_events()")
        conn.execute("SELECT pgflow.cancel_run(%s)", (run_id,))
        seen = [json.loads(n.payload) for n in events.notifies(timeout=1, stop_after=1)]
    assert seen == [
        {"event": "run:cancelled", "flow_slug": "n", "run_id": run_id, "status": "cancelled"}
    ]
    assert notices == []
    row = conn.execute("SELECT status FROM pgflow.cancel_run(%s)", (run_id,)).fetchone()
    assert row == ("cancelled",)
    assert notices == [f"run {run_id} is already cancelled; nothing to cancel"]
