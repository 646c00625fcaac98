"""Least privilege: worker and client roles get exactly the API they need."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from pgflow.testing import Server

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def roles(pg_server: Server, db: str, conn: Conn) -> Iterator[dict[str, str]]:
    names = {"worker": "pgflow_test_worker", "client": "pgflow_test_client"}
    dbname = conn.info.dbname
    for name in names.values():
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    conn.execute("SELECT pgflow.grant_worker(%s)", (names["worker"],))
    conn.execute("SELECT pgflow.grant_client(%s)", (names["client"],))
    try:
        yield {kind: pg_server.conninfo(dbname, user=name) for kind, name in names.items()}
    finally:
        conn.execute("DROP OWNED BY pgflow_test_worker, pgflow_test_client")
        for name in names.values():
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_worker_and_client_roles_run_a_flow_through_the_api_only(
    conn: Conn, roles: dict[str, str]
) -> None:
    conn.execute("SELECT pgflow.create_flow('priv')")
    conn.execute("SELECT pgflow.add_step('priv', 'a')")
    conn.execute("SELECT pgflow.add_step('priv', 'b', ARRAY['a'])")
    with (
        psycopg.connect(roles["client"], autocommit=True) as client,
        psycopg.connect(roles["worker"], autocommit=True) as worker,
    ):
        run_id = client.execute(
            "SELECT run_id FROM pgflow.start_flow('priv', '{\"x\": 1}')"
        ).fetchone()[0]  # type: ignore[index]
        worker.execute("SELECT pgflow.worker_idle(ARRAY['priv'])")
        for _ in range(2):
            tasks = worker.execute(
                "SELECT run_id, step_slug, task_index FROM pgflow.start_tasks('priv',"
                " ARRAY(SELECT msg_id FROM pgflow.read_with_poll('priv', 30, 5)),"
                " gen_random_uuid())"
            ).fetchall()
            assert len(tasks) == 1
            assert worker.execute(
                "SELECT pgflow.complete_task(%s, %s, %s, %s)", (*tasks[0], json.dumps("ok"))
            ).fetchone() == (True,)
    status = conn.execute("SELECT status FROM pgflow.runs WHERE run_id = %s", (run_id,)).fetchone()
    assert status == ("completed",)


@pytest.mark.parametrize(
    "kind,statement",
    [
        ("worker", "SELECT * FROM pgflow.runs"),
        ("worker", "SELECT * FROM pgflow.step_tasks"),
        ("worker", "UPDATE pgflow.step_tasks SET status = 'completed'"),
        ("worker", "SELECT pgflow.start_flow('priv', '{}')"),
        ("worker", "SELECT pgflow.create_flow('evil')"),
        ("worker", "SELECT pgflow._fail_run(gen_random_uuid(), 'a', 'x')"),
        ("worker", "SELECT pgflow.grant_client('pgflow_test_worker')"),
        ("client", "SELECT * FROM pgflow.flows"),
        ("client", "SELECT * FROM pgflow.read_with_poll('priv', 30, 1)"),
        ("client", "SELECT pgflow.complete_task(gen_random_uuid(), 'a', 0, '1')"),
        ("client", "SELECT pgflow._complete_run(gen_random_uuid())"),
    ],
)
def test_roles_cannot_reach_anything_else(
    conn: Conn, roles: dict[str, str], kind: str, statement: str
) -> None:
    conn.execute("SELECT pgflow.create_flow('priv')")
    with (
        psycopg.connect(roles[kind], autocommit=True) as c,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        c.execute(statement)


def test_grant_to_an_unknown_role_is_a_clear_error(conn: Conn) -> None:
    with pytest.raises(errors.UndefinedObject, match='role "nobody_here" does not exist'):
        conn.execute("SELECT pgflow.grant_worker('nobody_here')")
