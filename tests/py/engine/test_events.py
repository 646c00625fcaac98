"""What pgflow announces on pgflow_events and pgflow_tasks."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]


def _drain(listener: Conn) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in listener.notifies(timeout=0.3)]


def _events(listener: Conn) -> list[dict[str, Any]]:
    return [json.loads(p) for ch, p in _drain(listener) if ch == "pgflow_events"]


def _run_one_task(
    conn: Conn, flow: str, output: str | None = None, error: str | None = None
) -> None:
    task = conn.execute(
        "SELECT run_id, step_slug, task_index FROM pgflow.start_tasks(%s,"
        " ARRAY(SELECT msg_id FROM pgflow.read_with_poll(%s, 30, 1)), gen_random_uuid())",
        (flow, flow),
    ).fetchone()
    assert task is not None
    if error is None:
        conn.execute("SELECT pgflow.complete_task(%s, %s, %s, %s)", (*task, output or "1"))
    else:
        conn.execute("SELECT pgflow.fail_task(%s, %s, %s, %s)", (*task, error))


def test_run_events_carry_ids_and_status_never_outputs(db: str, conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('ev')")
    conn.execute("SELECT pgflow.add_step('ev', 'only')")
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN pgflow_events")
        listener.execute("SELECT pgflow.listen_events()")
        listener.execute("LISTEN pgflow_tasks")
        listener.execute("SELECT pgflow.worker_idle(ARRAY['ev'])")
        run_id = str(conn.execute("SELECT run_id FROM pgflow.start_flow('ev', '{}')").fetchone()[0])  # type: ignore[index]
        started = _drain(listener)
        assert ("pgflow_tasks", "ev") in started
        assert [json.loads(p) for ch, p in started if ch == "pgflow_events"] == [
            {"event": "run:started", "flow_slug": "ev", "run_id": run_id, "status": "started"}
        ]
        _run_one_task(conn, "ev", output='{"secret": "output"}')
        assert _events(listener) == [
            {"event": "run:completed", "flow_slug": "ev", "run_id": run_id, "status": "completed"}
        ]


def test_a_failed_run_is_announced(db: str, conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('bad', max_attempts => 1)")
    conn.execute("SELECT pgflow.add_step('bad', 'only')")
    with psycopg.connect(db, autocommit=True) as listener:
        run_id = str(
            conn.execute("SELECT run_id FROM pgflow.start_flow('bad', '{}')").fetchone()[0]
        )  # type: ignore[index]
        listener.execute("LISTEN pgflow_events")
        listener.execute("SELECT pgflow.listen_events()")
        _run_one_task(conn, "bad", error="boom")
        assert _events(listener) == [
            {"event": "run:failed", "flow_slug": "bad", "run_id": run_id, "status": "failed"}
        ]


def test_step_events_only_when_the_flow_opts_in(db: str, conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('quiet')")
    conn.execute("SELECT pgflow.add_step('quiet', 'a')")
    conn.execute("SELECT pgflow.create_flow('chatty', step_events => true)")
    conn.execute("SELECT pgflow.add_step('chatty', 'a')")
    conn.execute("SELECT pgflow.add_step('chatty', 'b', ARRAY['a'])")
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN pgflow_events")
        listener.execute("SELECT pgflow.listen_events()")
        conn.execute("SELECT pgflow.start_flow('quiet', '{}')")
        _run_one_task(conn, "quiet")
        assert [e["event"] for e in _events(listener)] == ["run:started", "run:completed"]

        run_id = str(
            conn.execute("SELECT run_id FROM pgflow.start_flow('chatty', '{}')").fetchone()[0]
        )  # type: ignore[index]
        _run_one_task(conn, "chatty")
        _run_one_task(conn, "chatty")
        events = _events(listener)
        assert [e["event"] for e in events] == [
            "run:started",
            "step:a:started",
            "step:a:completed",
            "step:b:started",
            "step:b:completed",
            "run:completed",
        ]
        assert events[1] == {
            "event": "step:a:started",
            "flow_slug": "chatty",
            "run_id": run_id,
            "step_slug": "a",
            "status": "started",
        }


def test_one_wake_up_per_flow_per_transaction(db: str, conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('fan')")
    conn.execute("SELECT pgflow.add_step('fan', 'a')")
    conn.execute("SELECT pgflow.add_step('fan', 'b')")
    conn.execute("SELECT pgflow.add_step('fan', 'c', step_type => 'map')")
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN pgflow_tasks")
        listener.execute("SELECT pgflow.worker_idle(ARRAY['fan'])")
        with conn.transaction():
            conn.execute("SELECT pgflow.start_flow('fan', '[1, 2, 3]')")
            conn.execute("SELECT pgflow.start_flow('fan', '[4, 5]')")
        assert _drain(listener) == [("pgflow_tasks", "fan")]


def test_delayed_work_does_not_wake_workers(db: str, conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('later')")
    conn.execute("SELECT pgflow.add_step('later', 'a', start_delay => 60)")
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN pgflow_tasks")
        listener.execute("SELECT pgflow.worker_idle(ARRAY['later'])")
        conn.execute("SELECT pgflow.start_flow('later', '{}')")
        assert _drain(listener) == []


def test_wake_ups_go_out_only_while_a_worker_is_idle(db: str, conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('busy')")
    conn.execute("SELECT pgflow.add_step('busy', 'a')")
    conn.execute("SELECT pgflow.create_flow('other')")
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN pgflow_tasks")
        conn.execute("SELECT pgflow.start_flow('busy', '{}')")
        assert _drain(listener) == [], "no worker idle: no NOTIFY"

        listener.execute("SELECT pgflow.worker_idle(ARRAY['other', 'busy', 'busy'])")
        listener.execute("SELECT pgflow.worker_idle(ARRAY['busy'])")  # marks do not stack
        conn.execute("SELECT pgflow.start_flow('busy', '{}')")
        assert _drain(listener) == [("pgflow_tasks", "busy")]

        listener.execute("SELECT pgflow.worker_idle(ARRAY['busy'], idle => false)")
        conn.execute("SELECT pgflow.start_flow('busy', '{}')")
        assert _drain(listener) == [], "busy again: no NOTIFY"
        held = listener.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
        assert held == (1,), "only the mark for 'other' is left"

    # a worker that dies leaves no mark behind
    conn.execute("SELECT pgflow.start_flow('busy', '{}')")
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN pgflow_tasks")
        conn.execute("SELECT pgflow.start_flow('busy', '{}')")
        assert _drain(listener) == []


def test_skipped_steps_are_announced_when_the_flow_opts_in(db: str, conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('sk', step_events => true)")
    conn.execute(
        "SELECT pgflow.add_step('sk', 'gate', when_unmet => 'skip-cascade',"
        ' required_input_pattern => \'{"run": {"go": true}}\')'
    )
    conn.execute("SELECT pgflow.add_step('sk', 'after', ARRAY['gate'])")
    conn.execute("SELECT pgflow.add_step('sk', 'other')")
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN pgflow_events")
        listener.execute("SELECT pgflow.listen_events()")
        run_id = str(conn.execute("SELECT run_id FROM pgflow.start_flow('sk', '{}')").fetchone()[0])  # type: ignore[index]
        events = _events(listener)
    names = [e["event"] for e in events]
    assert names[0] == "run:started"
    assert sorted(names[1:]) == ["step:after:skipped", "step:gate:skipped", "step:other:started"]
    gate = next(e for e in events if e.get("step_slug") == "gate")
    assert gate == {
        "event": "step:gate:skipped",
        "flow_slug": "sk",
        "run_id": run_id,
        "step_slug": "gate",
        "status": "skipped",
    }


def test_a_worker_on_one_connection_does_not_wake_itself_or_others(db: str, conn: Conn) -> None:
    # A worker that LISTENs, marks itself idle, claims and reports on one
    # connection: its reports send no wake-up unless another worker waits.
    conn.execute("SELECT pgflow.create_flow('solo')")
    conn.execute("SELECT pgflow.add_step('solo', 'a')")
    conn.execute("SELECT pgflow.add_step('solo', 'b', ARRAY['a'])")
    conn.execute("SELECT pgflow.add_step('solo', 'c', ARRAY['b'])")
    worker = "00000000-0000-4000-8000-00000000000a"

    def claim_and_complete(w: Conn) -> None:
        rows = w.execute(
            "SELECT run_id, step_slug, task_index, attempt FROM pgflow.claim_tasks('solo', 1, %s)",
            (worker,),
        ).fetchall()
        assert len(rows) == 1
        w.execute("SELECT pgflow.complete_task(%s, %s, %s, '1', %s)", rows[0])

    with (
        psycopg.connect(db, autocommit=True) as w,
        psycopg.connect(db, autocommit=True) as bystander,
        psycopg.connect(db, autocommit=True) as other,
    ):
        bystander.execute("LISTEN pgflow_tasks")  # listens, waits for nothing
        w.execute("LISTEN pgflow_tasks")
        w.execute("SELECT pgflow.worker_idle(ARRAY['solo'])")
        conn.execute("SELECT pgflow.start_flow('solo', '{}')")
        assert _drain(w) == [("pgflow_tasks", "solo")]  # another session's start wakes it
        claim_and_complete(w)  # queues b
        assert _drain(w) == []
        assert _drain(bystander) == [("pgflow_tasks", "solo")]  # only the start's
        other.execute("LISTEN pgflow_tasks")
        other.execute("SELECT pgflow.worker_idle(ARRAY['solo'])")
        claim_and_complete(w)  # queues c: another worker waits now
        assert _drain(other) == [("pgflow_tasks", "solo")]
