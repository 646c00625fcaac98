"""pg_dump / pg_restore keeps every flow, run, task and sequence position.

The dump (custom format) carries ``CREATE EXTENSION pgflow`` plus the rows of
every table registered with pg_extension_config_dump and the message_id
sequence position; restoring it into an empty database gives back identical
rows, new tasks get message ids above every old one, grants to worker roles
survive, and runs that were in flight (a task started by a worker, others
queued) finish through the ordinary protocol.  See docs/howto/backup-restore.md.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from pgflow.testing import Server, create_database, drop_database
from pgflow.testing.cluster import pg_bindir

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]
WORKER = "00000000-0000-0000-0000-0000000000aa"


def _tables(conn: Conn) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT relname FROM pg_class"
            " WHERE relnamespace = 'pgflow'::regnamespace AND relkind = 'r' ORDER BY relname"
        )
    ]


def _contents(conn: Conn) -> dict[str, list[str]]:
    """Every row of every pgflow table, as text, sorted."""
    return {
        t: [
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT x::text FROM pgflow.{} AS x ORDER BY 1").format(sql.Identifier(t))
            )
        ]
        for t in _tables(conn)
    }


def _claim(conn: Conn, flow: str, qty: int = 100) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT run_id, step_slug, task_index, input FROM pgflow.start_tasks(%s,"
        " ARRAY(SELECT msg_id FROM pgflow.read_with_poll(%s, 30, %s)), %s)"
        " ORDER BY run_id, step_slug, task_index",
        (flow, flow, qty, WORKER),
    ).fetchall()


def _output(step: str, task_input: Any) -> Any:
    if step == "a":
        return [1, 2, 3]
    if step == "m":
        return task_input * 2
    return {"sum": sum(task_input["m"])}


@pytest.fixture
def restored(pg_server: Server, db: str) -> Iterator[str]:
    name = f"pgflow_restored_{os.getpid()}"
    drop_database(pg_server, name)
    conninfo = create_database(pg_server, name, template="template0")
    try:
        yield conninfo
    finally:
        drop_database(pg_server, name)


@pytest.fixture
def worker_role(conn: Conn) -> Iterator[str]:
    name = f"pgflow_dump_worker_{os.getpid()}"
    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        # the restored database is dropped first (fixture order): only this one holds grants
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_a_dump_restores_every_row_and_running_runs_finish(
    pg_server: Server,
    db: str,
    conn: Conn,
    worker_role: str,
    restored: str,
    tmp_path: Path,
) -> None:
    conn.execute("SELECT pgflow.create_flow('dr', max_attempts => 1)")
    conn.execute("SELECT pgflow.add_step('dr', 'a')")
    conn.execute("SELECT pgflow.add_step('dr', 'm', ARRAY['a'], step_type => 'map')")
    conn.execute("SELECT pgflow.add_step('dr', 'z', ARRAY['m'])")
    conn.execute("SELECT pgflow.grant_worker(%s)", (worker_role,))
    conn.execute("SELECT pgflow.register_worker(%s, ARRAY['dr'])", (WORKER,))

    def start() -> str:
        row = conn.execute("SELECT run_id FROM pgflow.start_flow('dr', '{}')").fetchone()
        assert row is not None
        return str(row[0])

    done, failed = start(), start()
    while tasks := _claim(conn, "dr"):
        for run_id, step, index, task_input in tasks:
            if str(run_id) == failed:
                conn.execute("SELECT pgflow.fail_task(%s, %s, %s, 'boom')", (run_id, step, index))
                continue
            conn.execute(
                "SELECT pgflow.complete_task(%s, %s, %s, %s)",
                (run_id, step, index, Jsonb(_output(step, task_input))),
            )
    conn.execute("SELECT pgflow.retry_run(%s)", (failed,))  # history rows, then it fails again
    for run_id, step, index, _ in _claim(conn, "dr"):
        conn.execute("SELECT pgflow.fail_task(%s, %s, %s, 'boom again')", (run_id, step, index))
    in_flight = start()
    (held,) = _claim(conn, "dr")  # a of in_flight: started by a worker, not finished
    waiting = start()  # a of waiting: queued, nobody claimed it
    statuses = conn.execute(
        "SELECT run_id::text, status FROM pgflow.runs ORDER BY started_at"
    ).fetchall()
    assert statuses == [
        (done, "completed"),
        (failed, "failed"),
        (in_flight, "started"),
        (waiting, "started"),
    ]
    before = _contents(conn)
    assert before["run_retries"] and before["task_attempts"] and before["workers"]
    max_id = conn.execute("SELECT max(message_id) FROM pgflow.step_tasks").fetchone()

    bindir = pg_bindir()
    dump = tmp_path / "pgflow.dump"
    subprocess.run(
        [str(bindir / "pg_dump"), "--format=custom", f"--file={dump}", f"--dbname={db}"],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        [str(bindir / "pg_restore"), "--list", str(dump)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "EXTENSION - pgflow" in listing
    assert "TABLE DATA pgflow step_tasks" in listing
    subprocess.run(
        [str(bindir / "pg_restore"), "--exit-on-error", f"--dbname={restored}", str(dump)],
        check=True,
        capture_output=True,
    )

    with psycopg.connect(restored, autocommit=True) as new:
        assert _contents(new) == before
        assert new.execute("SELECT max(message_id) FROM pgflow.step_tasks").fetchone() == max_id
        assert (
            new.execute("SELECT extversion FROM pg_extension WHERE extname = 'pgflow'").fetchone()
            == conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'pgflow'"
            ).fetchone()
        )

        # a new run's task comes after every old one
        fresh = new.execute("SELECT run_id FROM pgflow.start_flow('dr', '{}')").fetchone()
        assert fresh is not None
        newest = new.execute(
            "SELECT min(message_id) FROM pgflow.step_tasks WHERE run_id = %s", (fresh[0],)
        ).fetchone()
        assert newest is not None and max_id is not None and newest[0] > max_id[0]

        # the worker holding in_flight's task reports after the restore; the
        # worker role's grants came back with the dump
        with psycopg.connect(
            psycopg.conninfo.make_conninfo(restored, user=worker_role), autocommit=True
        ) as worker:
            run_id, step, index, _ = held
            assert worker.execute(
                "SELECT pgflow.complete_task(%s, %s, %s, '[1, 2, 3]')", (run_id, step, index)
            ).fetchone() == (True,)
            while tasks := _claim(worker, "dr"):
                for run_id, step, index, task_input in tasks:
                    worker.execute(
                        "SELECT pgflow.complete_task(%s, %s, %s, %s)",
                        (
                            run_id,
                            step,
                            index,
                            Jsonb(_output(step, task_input)),
                        ),
                    )
        finished = new.execute(
            "SELECT run_id::text, status, output FROM pgflow.runs"
            " WHERE run_id IN (%s, %s) ORDER BY started_at",
            (in_flight, waiting),
        ).fetchall()
        assert finished == [
            (in_flight, "completed", {"z": {"sum": 12}}),
            (waiting, "completed", {"z": {"sum": 12}}),
        ]
        assert new.execute(
            "SELECT status, count(*) FROM pgflow.runs GROUP BY 1 ORDER BY 1"
        ).fetchall() == [("completed", 4), ("failed", 1)]
