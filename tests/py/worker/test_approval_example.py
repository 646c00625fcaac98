"""The example approval flow (examples/flows/approval.yaml) with a real worker.

The approval is emitted from SQL (emit_event in the application's
transaction) and from the CLI (pgflow emit); a run nobody approves times out
through the worker's periodic expire_waits call and is cancelled instead.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from worker_helpers import PGFLOW, ROOT, Workers, apply_spec, run_status, start, wait_until

from pgflow.spec.loader import load

pytestmark = pytest.mark.db

SPEC = "examples/flows/approval.yaml"


@pytest.fixture
def workers(db: str) -> Iterator[Workers]:
    apply_spec(db, SPEC)
    pool = Workers()
    try:
        yield pool
    finally:
        pool.stop_all()


def waiting(db: str, run_id: str) -> Any:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT event_name, event_key FROM pgflow.waits WHERE run_id = %s", (run_id,)
        ).fetchone()
    return row


def finished(db: str, run_id: str) -> Any:
    status = run_status(db, run_id)
    return status if status[0] != "started" else None


def test_the_yaml_and_python_approval_flows_are_the_same() -> None:
    (yaml_flow,) = load(SPEC)
    (py_flow,) = load("examples/flows/approval.py")
    assert yaml_flow.spec == py_flow.spec


def test_approved_from_sql_ships_and_from_the_cli_too(db: str, workers: Workers) -> None:
    proc = workers.start(db, spec=SPEC)
    by_sql = start(db, "approval", '{"order_id": "A-1", "total_cents": 500}')
    by_cli = start(db, "approval", '{"order_id": "A-2", "total_cents": 700}')
    rejected = start(db, "approval", '{"order_id": "A-3"}')
    keys = {by_sql: "A-1", by_cli: "A-2", rejected: "A-3"}
    for run_id, key in keys.items():
        found = wait_until(lambda r=run_id: waiting(db, r), 30, "the approval wait")
        assert found == ("order_approval", key)

    # the application approves in its own transaction, with its own writes
    with psycopg.connect(db) as conn, conn.transaction():
        conn.execute("CREATE TEMP TABLE audit (note text)")
        conn.execute("INSERT INTO audit VALUES ('approved A-1')")
        (n,) = conn.execute(
            "SELECT pgflow.emit_event('order_approval', '\"A-1\"',"
            ' \'{"approved": true, "by": "ann"}\')'
        ).fetchone() or (0,)
        assert n == 1
    cli = subprocess.run(
        [PGFLOW, "emit", "order_approval", "--key", "A-2", "--dsn", db,
         "--payload", '{"approved": true, "by": "bob"}'],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "completed 1 waiting step" in cli.stdout
    subprocess.run(
        [PGFLOW, "emit", "order_approval", "--key", "A-3", "--dsn", db,
         "--payload", '{"approved": false, "by": "cy"}'],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip

    assert wait_until(lambda: finished(db, by_sql), 30, "run A-1")[:2] == (
        "completed",
        {"ship": {"shipped": "A-1", "approved_by": "ann"}},
    )
    assert wait_until(lambda: finished(db, by_cli), 30, "run A-2")[:2] == (
        "completed",
        {"ship": {"shipped": "A-2", "approved_by": "bob"}},
    )
    assert wait_until(lambda: finished(db, rejected), 30, "run A-3")[:2] == (
        "completed",
        {"cancel_order": {"cancelled": "A-3", "reason": "rejected by cy"}},
    )
    assert proc.poll() is None, workers.output(proc)


def test_not_approved_in_time_is_cancelled_by_the_workers_maintenance_call(
    db: str, workers: Workers
) -> None:
    run_id = start(db, "approval", '{"order_id": "A-9"}')
    proc = workers.start(db, spec=SPEC)
    wait_until(lambda: waiting(db, run_id), 30, "the approval wait")
    with psycopg.connect(db, autocommit=True) as conn:  # a day passes
        conn.execute(
            "UPDATE pgflow.waits SET deadline = now() - interval '1 s' WHERE run_id = %s",
            (run_id,),
        )
    status = wait_until(lambda: finished(db, run_id), 30, "the timeout")
    assert status[:2] == (
        "completed",
        {"cancel_order": {"cancelled": "A-9", "reason": "not approved in time"}},
    )
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT skip_reason, error_message FROM pgflow.step_states"
            " WHERE run_id = %s AND step_slug = 'approval'",
            (run_id,),
        ).fetchone()
    assert row == (
        "wait_timed_out",
        'timed out after 86400 s waiting for event "order_approval" with key "A-9"',
    )
    assert proc.poll() is None, workers.output(proc)
