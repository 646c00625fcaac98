"""prune_runs on a large history while workers keep processing new runs."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]

HISTORY = 10_000

# 10 000 runs of flow "hist" that finished 8 to 30 days ago (completed, failed
# or cancelled, round robin), each with its two step states and tasks, plus
# some retry history; written in bulk as the owner.
BULK = """
INSERT INTO pgflow.runs (run_id, flow_slug, status, input, output, remaining_steps,
                         started_at, completed_at, failed_at, cancelled_at)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'hist', s.status, '{}',
       CASE WHEN s.status = 'completed' THEN '{"b": 2}'::jsonb END,
       CASE WHEN s.status = 'completed' THEN 0 ELSE 1 END,
       t.started_at,
       CASE WHEN s.status = 'completed' THEN t.started_at + interval '1 minute' END,
       CASE WHEN s.status = 'failed' THEN t.started_at + interval '1 minute' END,
       CASE WHEN s.status = 'cancelled' THEN t.started_at + interval '1 minute' END
FROM generate_series(1, %(n)s) AS i,
     LATERAL (SELECT (ARRAY['completed', 'failed', 'cancelled'])[1 + i %% 3] AS status) AS s,
     LATERAL (SELECT now() - interval '8 days' - i * interval '3 minutes' AS started_at) AS t;

INSERT INTO pgflow.step_states (run_id, step_slug, flow_slug, status, remaining_deps,
                                initial_tasks, remaining_tasks, output)
SELECT r.run_id, st.step_slug, 'hist',
       CASE WHEN st.step_slug = 'a' OR r.status = 'completed' THEN 'completed'
            WHEN r.status = 'failed' THEN 'failed' ELSE 'cancelled' END,
       0, 1, CASE WHEN st.step_slug = 'a' OR r.status = 'completed' THEN 0 ELSE 1 END, '1'
FROM pgflow.runs AS r, (VALUES ('a'), ('b')) AS st(step_slug)
WHERE r.flow_slug = 'hist';

INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, status, attempts_count)
SELECT ss.run_id, ss.step_slug, 0, 'hist', ss.status, 1
FROM pgflow.step_states AS ss
WHERE ss.flow_slug = 'hist';

INSERT INTO pgflow.run_retries (run_id, retry_number, flow_slug, status, finished_at)
SELECT r.run_id, 1, 'hist', 'failed', r.started_at
FROM pgflow.runs AS r
WHERE r.flow_slug = 'hist' AND r.status = 'failed';

INSERT INTO pgflow.task_attempts (run_id, retry_number, step_slug, task_index, flow_slug,
                                  status, attempts_count, queued_at)
SELECT rr.run_id, 1, 'b', 0, 'hist', 'failed', 3, rr.finished_at
FROM pgflow.run_retries AS rr;
"""


def _bulk_history(conn: Conn, n: int = HISTORY) -> None:
    with conn.transaction():
        for statement in filter(str.strip, BULK.split(";")):
            # only the first statement takes the parameter (psycopg runs one at a time)
            conn.execute(statement, {"n": n} if "%(n)s" in statement else None)


def _rows_of(conn: Conn, table: str, flow: str) -> int:
    query = sql.SQL("SELECT count(*) FROM pgflow.{} WHERE flow_slug = %s").format(
        sql.Identifier(table)
    )
    row = conn.execute(query, (flow,)).fetchone()
    assert row is not None
    return int(row[0])


def _worker(dsn: str, stop: threading.Event, report: dict[str, Any]) -> None:
    """Start runs of flow "live" and process them until stopped."""
    started: list[str] = []
    refused = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.is_set() or len(started) < 20:
            run = conn.execute("SELECT run_id FROM pgflow.start_flow('live', '{\"n\": 1}')")
            started.append(str(run.fetchone()[0]))  # type: ignore[index]
            for _ in range(2):  # a, then b
                tasks = conn.execute(
                    "SELECT run_id, step_slug, task_index FROM pgflow.start_tasks('live',"
                    " ARRAY(SELECT msg_id FROM pgflow.read_with_poll('live', 30, 10)),"
                    " gen_random_uuid())"
                ).fetchall()
                for run_id, step, index in tasks:
                    done = conn.execute(
                        "SELECT pgflow.complete_task(%s, %s, %s, %s)",
                        (run_id, step, index, json.dumps(step)),
                    ).fetchone()
                    refused += done != (True,)
    report["started"] = started
    report["refused"] = refused


def test_prune_deletes_a_large_history_while_new_runs_are_processed(conn: Conn, db: str) -> None:
    for flow in ("hist", "live", "stuck"):
        conn.execute("SELECT pgflow.create_flow(%s)", (flow,))
        conn.execute("SELECT pgflow.add_step(%s, 'a')", (flow,))
        conn.execute("SELECT pgflow.add_step(%s, 'b', ARRAY['a'])", (flow,))
    _bulk_history(conn)
    assert _rows_of(conn, "runs", "hist") == HISTORY
    assert _rows_of(conn, "step_tasks", "hist") == 2 * HISTORY

    # runs that are still running although they started long ago: never pruned
    stuck = [
        str(conn.execute("SELECT run_id FROM pgflow.start_flow('stuck', '{}')").fetchone()[0])  # type: ignore[index]
        for _ in range(5)
    ]
    conn.execute(
        "UPDATE pgflow.runs SET started_at = now() - interval '60 days' WHERE flow_slug = 'stuck'"
    )
    snapshot = """
        SELECT r.run_id, r.status, r.remaining_steps, r.started_at,
               (SELECT array_agg((ss.step_slug, ss.status, ss.remaining_tasks)::text
                                 ORDER BY ss.step_slug)
                FROM pgflow.step_states AS ss WHERE ss.run_id = r.run_id),
               (SELECT array_agg((t.step_slug, t.status, t.attempts_count, t.vt)::text
                                 ORDER BY t.step_slug)
                FROM pgflow.step_tasks AS t WHERE t.run_id = r.run_id)
        FROM pgflow.runs AS r WHERE r.flow_slug = 'stuck' ORDER BY r.run_id
    """
    stuck_before = conn.execute(snapshot).fetchall()
    assert len(stuck_before) == len(stuck)

    stop = threading.Event()
    report: dict[str, Any] = {}
    worker = threading.Thread(target=_worker, args=(db, stop, report))
    worker.start()
    batches: list[int] = []
    try:
        while True:
            row = conn.execute("SELECT pgflow.prune_runs(interval '7 days', 1000)").fetchone()
            assert row is not None
            batches.append(int(row[0]))
            if row[0] == 0:
                break
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not worker.is_alive()

    assert sum(batches) == HISTORY
    assert all(n <= 1000 for n in batches)
    for table in ("runs", "step_states", "step_tasks", "run_retries", "task_attempts"):
        assert _rows_of(conn, table, "hist") == 0, f"{table} keeps rows of pruned runs"

    assert conn.execute(snapshot).fetchall() == stuck_before, "a running run was touched"
    started = report["started"]
    assert report["refused"] == 0, "a completion of a live run was refused"
    statuses = conn.execute(
        "SELECT status, count(*) FROM pgflow.runs WHERE run_id = ANY(%s::uuid[]) GROUP BY 1",
        ([uuid.UUID(r) for r in started],),
    ).fetchall()
    assert statuses == [("completed", len(started))]

    # with the cutoff at 0 the live runs go too, and the stuck ones still stay
    row = conn.execute("SELECT pgflow.prune_runs(interval '0')").fetchone()
    assert row == (len(started),)
    assert conn.execute(snapshot).fetchall() == stuck_before


def test_the_candidate_search_reads_only_old_runs(conn: Conn) -> None:
    """No index on finish time: prune scans runs_flow_slug_started_at_idx by range."""
    conn.execute("SELECT pgflow.create_flow('hist')")
    conn.execute("SELECT pgflow.add_step('hist', 'a')")
    conn.execute("SELECT pgflow.add_step('hist', 'b', ARRAY['a'])")
    _bulk_history(conn)
    conn.execute("ANALYZE pgflow.runs")
    plan = conn.execute(
        "EXPLAIN (FORMAT JSON)"
        " SELECT r.run_id FROM pgflow.runs AS r"
        " WHERE r.flow_slug = 'hist' AND r.started_at < now() - interval '20 days'"
        "   AND r.status IN ('completed', 'failed', 'cancelled')"
        "   AND coalesce(r.completed_at, r.failed_at, r.cancelled_at) < now() - interval '20 days'"
        " ORDER BY r.started_at LIMIT 100 FOR UPDATE SKIP LOCKED"
    ).fetchone()[0]  # type: ignore[index]
    assert "runs_flow_slug_started_at_idx" in json.dumps(plan)
