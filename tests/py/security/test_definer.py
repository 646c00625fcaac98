"""A worker role cannot escalate through pgflow's SECURITY DEFINER functions.

The worker protocol functions run as the extension owner.  A role granted
``grant_worker`` only tries: SQL-injection-looking arguments, reading what it
was not given, calling internals, and planting look-alikes (temp functions
and tables named like pgflow's or pg_catalog's, a hostile search_path)
before calling.  None of it reaches beyond the documented API.

Documented, not escalation (docs/design/guarantees.md, "Privileges"): grants
are per role, not per flow, so a worker may claim tasks of any flow and read
the input of any run whose id it knows (run_input), and a client may read
(get_run) or cancel any run whose id it knows.  Run ids are random uuids.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from pgflow.testing import Server

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]

INJECTIONS = [
    "x'; DROP TABLE pgflow.runs; --",
    "known' OR '1'='1",
    'known"; DROP TABLE pgflow.runs; --',
    "known$$; DROP TABLE pgflow.runs; $$",
    "known\\'; SELECT pg_sleep(10); --",
    "known/**/OR/**/1=1",
]


@pytest.fixture
def roles(pg_server: Server, conn: Conn) -> Iterator[dict[str, str]]:
    suffix = os.getpid()
    names = {
        "worker": f"pgflow_definer_worker_{suffix}",
        "client": f"pgflow_definer_client_{suffix}",
    }
    for name in names.values():
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    conn.execute("SELECT pgflow.grant_worker(%s)", (names["worker"],))
    conn.execute("SELECT pgflow.grant_client(%s)", (names["client"],))
    try:
        yield {kind: pg_server.conninfo(conn.info.dbname, user=n) for kind, n in names.items()}
    finally:
        conn.execute(
            sql.SQL("DROP OWNED BY {}, {}").format(
                sql.Identifier(names["worker"]), sql.Identifier(names["client"])
            )
        )
        for name in names.values():
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _define(conn: Conn) -> str:
    conn.execute("SELECT pgflow.create_flow('known')")
    conn.execute("SELECT pgflow.add_step('known', 'a')")
    conn.execute("SELECT pgflow.add_step('known', 'b', ARRAY['a'])")
    conn.execute("SELECT pgflow.create_flow('other')")
    conn.execute("SELECT pgflow.add_step('other', 'secret')")
    row = conn.execute("SELECT run_id FROM pgflow.start_flow('known', '{\"n\": 1}')").fetchone()
    assert row is not None
    return str(row[0])


def _snapshot(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT 'flows', count(*) FROM pgflow.flows UNION ALL"
        " SELECT 'steps', count(*) FROM pgflow.steps UNION ALL"
        " SELECT 'runs', count(*) FROM pgflow.runs UNION ALL"
        " SELECT 'tasks', count(*) FROM pgflow.step_tasks UNION ALL"
        " SELECT 'started', count(*) FROM pgflow.step_tasks WHERE status = 'started' UNION ALL"
        " SELECT 'workers', count(*) FROM pgflow.workers"
    ).fetchall()


def test_injection_looking_arguments_are_data(conn: Conn, roles: dict[str, str]) -> None:
    run_id = _define(conn)
    before = _snapshot(conn)
    with psycopg.connect(roles["worker"], autocommit=True) as worker:
        for text in INJECTIONS:
            for query in (
                "SELECT * FROM pgflow.read_with_poll(%s, 30, 10)",
                "SELECT * FROM pgflow.start_tasks(%s, ARRAY[1, 2, 3], gen_random_uuid())",
            ):
                with pytest.raises(errors.InvalidParameterValue, match="invalid flow slug"):
                    worker.execute(query, (text,))
            assert worker.execute("SELECT pgflow.flow_shape(%s)", (text,)).fetchone() == (None,)
            for call in ("complete_task(%s, %s, 0, '1')", "fail_task(%s, %s, 0, 'x')"):
                assert worker.execute(f"SELECT pgflow.{call}", (run_id, text)).fetchone() == (
                    False,
                )
            worker.execute("SELECT pgflow.worker_idle(ARRAY[%s])", (text,))
            worker.execute("SELECT pgflow.worker_idle(ARRAY[%s], false)", (text,))
            with pytest.raises(errors.InsufficientPrivilege):
                worker.execute("SELECT pgflow.grant_client(%s)", (text,))
    assert _snapshot(conn) == before
    assert conn.execute("SELECT to_regclass('pgflow.runs') IS NOT NULL").fetchone() == (True,)


def test_what_a_worker_can_and_cannot_read(conn: Conn, roles: dict[str, str]) -> None:
    run_id = _define(conn)
    other = conn.execute("SELECT run_id FROM pgflow.start_flow('other', '{\"pin\": 1234}')")
    other_id = str(other.fetchone()[0])  # type: ignore[index]
    with psycopg.connect(roles["worker"], autocommit=True) as worker:
        # documented: any run's input by id, any flow's shape, any flow's tasks
        assert worker.execute("SELECT pgflow.run_input(%s)", (other_id,)).fetchone() == (
            {"pin": 1234},
        )
        shape = worker.execute("SELECT pgflow.flow_shape('other')").fetchone()
        assert shape is not None and shape[0]["flow_slug"] == "other"
        claimed = worker.execute(
            "SELECT message FROM pgflow.read_with_poll('other', 30, 10)"
        ).fetchall()
        assert [m[0]["step_slug"] for m in claimed] == ["secret"]
        # not granted: enumerating runs, reading run documents, tables, internals
        for statement in (
            "SELECT pgflow.get_run(%s)",
            "SELECT * FROM pgflow.list_runs()",
            "SELECT * FROM pgflow.runs",
            "SELECT * FROM pgflow.step_states",
            "SELECT * FROM pgflow.run_stats",
            "SELECT pgflow._complete_run(%s)",
            "SELECT pgflow._fail_run(%s, 'a', 'x')",
            "SELECT pgflow._start_ready_steps(%s)",
            "SELECT pgflow.cancel_run(%s)",
            "SELECT pgflow.retry_run(%s)",
            "SELECT pgflow.start_flow('known', '{}')",
            "SELECT pgflow.prune_runs(interval '0')",
            "SELECT pgflow.delete_flow('known', true)",
            "SELECT pgflow.grant_worker(current_user)",
            "SET session_replication_role = replica",
            "CREATE TABLE pgflow.planted (x int)",
            "CREATE FUNCTION pgflow._check_slug(kind text, slug text, extra int)"
            " RETURNS void LANGUAGE sql AS ''",
            "ALTER FUNCTION pgflow.complete_task(uuid, text, integer, jsonb, integer)"
            " SET search_path = public",
        ):
            params = (run_id,) if "%s" in statement else ()
            with pytest.raises(errors.InsufficientPrivilege):
                worker.execute(statement, params)
    with psycopg.connect(roles["client"], autocommit=True) as client:
        # documented: a client reads any run it knows the id of
        doc = client.execute("SELECT pgflow.get_run(%s)", (other_id,)).fetchone()
        assert doc is not None and doc[0]["input"] == {"pin": 1234}
        with pytest.raises(errors.InsufficientPrivilege):
            client.execute("SELECT pgflow.run_input(%s)", (run_id,))


def test_planted_look_alikes_and_search_path_tricks_are_never_used(
    conn: Conn, roles: dict[str, str]
) -> None:
    run_id = _define(conn)
    with psycopg.connect(roles["worker"], autocommit=True) as worker:
        worker.execute("CREATE TEMP TABLE calls (fn text)")
        # temp tables named like pgflow's (pg_temp is searched first for relations)
        for table in ("runs", "step_tasks", "step_states", "steps", "flows", "deps"):
            worker.execute(
                sql.SQL("CREATE TEMP TABLE {} (run_id uuid, status text, flow_slug text)").format(
                    sql.Identifier(table)
                )
            )
        # temp functions named like internals and catalog functions
        for signature, returns, value in (
            ("_check_slug(kind text, slug text)", "void", "NULL"),
            (
                "_check_option(name text, value integer, minimum integer, nullable boolean)",
                "void",
                "NULL",
            ),
            ("_start_ready_steps(run_id uuid)", "void", "NULL"),
            ("_complete_step(run_id uuid, step_slug text, output jsonb)", "void", "NULL"),
            ("_wake_workers(flow_slug text)", "void", "NULL"),
            ("_emit(a text, b text, c uuid, d text, e text)", "void", "NULL"),
            ("now()", "timestamptz", "'2000-01-01'"),
            ("clock_timestamp()", "timestamptz", "'2000-01-01'"),
            ("gen_random_uuid()", "uuid", "'00000000-0000-0000-0000-000000000000'"),
            ("jsonb_build_object(a text, b jsonb)", "jsonb", "'{}'"),
            ("pg_notify(a text, b text)", "void", "NULL"),
        ):
            name = signature.split("(", maxsplit=1)[0]
            worker.execute(
                f"CREATE FUNCTION pg_temp.{signature} RETURNS {returns} LANGUAGE plpgsql"
                f" AS $$ BEGIN INSERT INTO pg_temp.calls VALUES ('{name}');"
                f" RETURN{'' if returns == 'void' else ' ' + value}; END $$"
            )
        worker.execute(
            "CREATE FUNCTION pg_temp.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql"
            " AS $$ BEGIN INSERT INTO pg_temp.calls VALUES ('='); RETURN true; END $$"
        )
        worker.execute(
            "CREATE OPERATOR pg_temp.= (LEFTARG = text, RIGHTARG = text,"
            " FUNCTION = pg_temp.text_eq)"
        )
        worker.execute("SET search_path = pg_temp, pgflow, public, pg_catalog")

        # the protocol still works and behaves as usual
        tasks = worker.execute(
            "SELECT run_id, step_slug, task_index, input FROM pgflow.start_tasks('known',"
            " ARRAY(SELECT msg_id FROM pgflow.read_with_poll('known', 30, 10)),"
            " '00000000-0000-0000-0000-00000000000a')"
        ).fetchall()
        assert [(str(t[0]), t[1], t[2], t[3]) for t in tasks] == [
            (run_id, "a", 0, {"run": {"n": 1}})
        ]
        assert worker.execute(
            "SELECT pgflow.complete_task(%s, 'a', 0, '\"A\"')", (run_id,)
        ).fetchone() == (True,)
        assert worker.execute(
            "SELECT pgflow.complete_task(%s, 'a', 0, '\"again\"')", (run_id,)
        ).fetchone() == (False,)
        with pytest.raises(errors.InvalidParameterValue):
            worker.execute("SELECT * FROM pgflow.read_with_poll('bad slug', 30, 1)")
        tasks = worker.execute(
            "SELECT step_slug, input FROM pgflow.start_tasks('known',"
            " ARRAY(SELECT msg_id FROM pgflow.read_with_poll('known', 30, 10)),"
            " '00000000-0000-0000-0000-00000000000a')"
        ).fetchall()
        assert tasks == [("b", {"run": {"n": 1}, "a": "A"})]
        assert worker.execute(
            "SELECT pgflow.complete_task(%s, 'b', 0, '\"B\"')", (run_id,)
        ).fetchone() == (True,)
        worker.execute("SELECT pgflow.worker_idle(ARRAY['known'])")
        worker.execute("SELECT pgflow.worker_idle(ARRAY['known'], false)")
        # the trap was armed: this session's own unqualified calls do reach it
        assert worker.execute("SELECT count(*) FROM pg_temp.runs").fetchone() == (0,)
        assert worker.execute("SELECT pg_temp.now()").fetchone() is not None
        calls = worker.execute("SELECT fn FROM pg_temp.calls").fetchall()
        assert calls == [("now",)]

    run = conn.execute(
        "SELECT status, output, (SELECT last_worker_id::text FROM pgflow.step_tasks"
        " WHERE step_slug = 'b') FROM pgflow.runs WHERE run_id = %s",
        (run_id,),
    ).fetchone()
    assert run == ("completed", {"b": "B"}, "00000000-0000-0000-0000-00000000000a")


def test_every_definer_function_pins_its_search_path(conn: Conn) -> None:
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text, p.prosecdef, p.proconfig"
        " FROM pg_proc AS p WHERE p.pronamespace = 'pgflow'::regnamespace ORDER BY 1"
    ).fetchall()
    assert any(definer for _, definer, _ in rows)
    loose = [
        name
        for name, _, config in rows
        if not config or "search_path=pg_catalog, pg_temp" not in config
    ]
    assert loose == []
    # PUBLIC can execute none of them
    public = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc AS p"
        " WHERE p.pronamespace = 'pgflow'::regnamespace"
        "   AND has_function_privilege('public', p.oid, 'EXECUTE')"
    ).fetchall()
    assert public == []
