"""A hostile search_path changes nothing inside pgflow.

Every pgflow function pins ``search_path = pg_catalog, pg_temp`` and
qualifies its relations, so a caller whose search_path puts a schema of
look-alikes in front of pg_catalog (``now()``, ``gen_random_uuid()``,
``jsonb_build_object()``, ``=`` on text, ...) gets exactly the behaviour of
a plain session, and none of the look-alikes ever runs.  The same scenario
(definition, a run driven through the protocol with a retry, a cancelled and
retried run, reads, prune, delete) runs once with the normal search_path and
once with ``evil, public, pg_catalog``; the transcripts must be identical and
``evil.calls`` empty.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]

# Look-alikes of what pgflow's functions call; each one logs itself (and
# returns something plausible but wrong, so a call would also show in results).
EVIL = r"""
CREATE SCHEMA evil;
CREATE TABLE evil.calls (fn text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE evil.runs (run_id uuid);
CREATE TABLE evil.step_tasks (run_id uuid);

CREATE FUNCTION evil.log(fn text) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO evil.calls (fn) VALUES (fn) $$;

CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('now'); RETURN '2000-01-01'; END $$;
CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('clock_timestamp'); RETURN '2000-01-01'; END $$;
CREATE FUNCTION evil.gen_random_uuid() RETURNS uuid LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('gen_random_uuid');
                RETURN '00000000-0000-0000-0000-000000000000'; END $$;
CREATE FUNCTION evil.jsonb_build_object(text, jsonb) RETURNS jsonb LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('jsonb_build_object(text, jsonb)'); RETURN '{"evil": 1}'; END $$;
CREATE FUNCTION evil.jsonb_build_object(text, uuid, text, text, text, integer) RETURNS jsonb
    LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('jsonb_build_object(6)'); RETURN '{"evil": 1}'; END $$;
CREATE FUNCTION evil.jsonb_typeof(jsonb) RETURNS text LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('jsonb_typeof'); RETURN 'array'; END $$;
CREATE FUNCTION evil.jsonb_array_length(jsonb) RETURNS integer LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('jsonb_array_length'); RETURN 0; END $$;
CREATE FUNCTION evil.cardinality(anyarray) RETURNS integer LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('cardinality'); RETURN 0; END $$;
CREATE FUNCTION evil.length(text) RETURNS integer LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('length'); RETURN 1; END $$;
CREATE FUNCTION evil.md5(text) RETURNS text LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('md5'); RETURN '00000000'; END $$;
CREATE FUNCTION evil.format(text, text) RETURNS text LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('format'); RETURN 'evil'; END $$;
CREATE FUNCTION evil.make_interval(secs double precision) RETURNS interval LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('make_interval'); RETURN '-100 years'; END $$;
CREATE FUNCTION evil.pg_notify(text, text) RETURNS void LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('pg_notify'); END $$;
CREATE FUNCTION evil.pg_try_advisory_lock(integer, integer) RETURNS boolean LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('pg_try_advisory_lock'); RETURN true; END $$;
CREATE FUNCTION evil.pg_advisory_lock_shared(integer, integer) RETURNS void LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('pg_advisory_lock_shared'); END $$;
CREATE FUNCTION evil.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('unnest(text[])'); RETURN NEXT 'evil'; END $$;
CREATE FUNCTION evil.generate_series(integer, integer) RETURNS SETOF integer LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('generate_series'); RETURN NEXT 42; END $$;

CREATE FUNCTION evil.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('= (text, text)'); RETURN true; END $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_eq);
CREATE FUNCTION evil.text_ne(text, text) RETURNS boolean LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('<> (text, text)'); RETURN false; END $$;
CREATE OPERATOR evil.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_ne);
CREATE FUNCTION evil.int_lt(integer, integer) RETURNS boolean LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('< (integer, integer)'); RETURN false; END $$;
CREATE OPERATOR evil.< (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evil.int_lt);
CREATE FUNCTION evil.jsonb_contains(jsonb, jsonb) RETURNS boolean LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('@> (jsonb, jsonb)'); RETURN false; END $$;
CREATE OPERATOR evil.@> (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = evil.jsonb_contains);
CREATE FUNCTION evil.jsonb_concat(jsonb, jsonb) RETURNS jsonb LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('|| (jsonb, jsonb)'); RETURN '{}'; END $$;
CREATE OPERATOR evil.|| (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = evil.jsonb_concat);
"""

HOSTILE_PATH = "evil, public, pg_catalog"


def _normal(value: Any, ids: dict[str, str]) -> Any:
    """Drop timestamps, name uuids by order of appearance."""
    if isinstance(value, str) and value[:4].isdigit() and value[4:5] == "-" and len(value) > 20:
        return "<2000-01-01: evil now()>" if value.startswith("2000-") else "<time>"
    if isinstance(value, dict):
        return {
            k: _normal(v, ids)
            for k, v in sorted(value.items())
            if not k.endswith("_at") and k != "flow_slug"
        }
    if isinstance(value, list | tuple):
        return [_normal(v, ids) for v in value]
    if isinstance(value, datetime):
        return "<2000-01-01: evil now()>" if value.year == 2000 else "<time>"
    if isinstance(value, uuid.UUID):
        value = str(value)
    if isinstance(value, str):
        try:
            uuid.UUID(value)
        except ValueError:
            return value
        return ids.setdefault(value, f"uuid{len(ids)}")
    return value


def _scenario(conn: Conn, flow: str) -> list[Any]:
    """Define a flow, drive two runs through the protocol; the transcript."""
    out: list[Any] = []
    ids: dict[str, str] = {}

    def q(query: str, *params: Any) -> list[tuple[Any, ...]]:
        rows = conn.execute(query, params).fetchall()
        out.append((query.split("(", maxsplit=1)[0], _normal(rows, ids)))
        return rows

    def work(fail_first_a: bool = False) -> list[tuple[Any, ...]]:
        tasks = q(
            "SELECT run_id, step_slug, task_index, input, attempt FROM pgflow.start_tasks(%s,"
            " ARRAY(SELECT msg_id FROM pgflow.read_with_poll(%s, 30, 50)), %s)"
            " ORDER BY step_slug, task_index, input::text",
            flow,
            flow,
            uuid.UUID(int=7),
        )
        for run_id, step, index, task_input, attempt in tasks:
            if step == "a" and fail_first_a and attempt == 1:
                q("SELECT pgflow.fail_task(%s, %s, %s, %s)", run_id, step, index, "boom")
                continue
            output: Any
            if step == "a":
                output = [1, 2, 3]
            elif step == "m":
                output = task_input * 10
            elif step == "c":
                output = {"seen": sorted(task_input)}
            else:
                output = task_input
            q("SELECT pgflow.complete_task(%s, %s, %s, %s)", run_id, step, index, Jsonb(output))
        return tasks

    q("SELECT * FROM pgflow.create_flow(%s, max_attempts => 3, base_delay => 1)", flow)
    q("SELECT * FROM pgflow.add_step(%s, 'a')", flow)
    q("SELECT * FROM pgflow.add_step(%s, 'm', ARRAY['a'], step_type => 'map')", flow)
    q(
        "SELECT * FROM pgflow.add_step(%s, 'c', ARRAY['a'], required_input_pattern => %s)",
        flow,
        Jsonb({"run": {"go": True}}),
    )
    q(
        "SELECT * FROM pgflow.add_step(%s, 'skipme', forbidden_input_pattern => %s)",
        flow,
        Jsonb({"run": {"go": True}}),
    )
    q("SELECT * FROM pgflow.add_step(%s, 'z', ARRAY['m', 'c'])", flow)
    q("SELECT pgflow.add_step(%s, 'a') IS NOT NULL", flow)  # idempotent re-run
    q("SELECT pgflow.flow_shape(%s)", flow)
    q("SELECT pgflow.worker_idle(ARRAY[%s])", flow)
    q("SELECT * FROM pgflow.register_worker(%s, ARRAY[%s])", uuid.UUID(int=7), flow)
    q("SELECT pgflow.worker_heartbeat(%s)", uuid.UUID(int=7))

    (run1,) = q("SELECT run_id FROM pgflow.start_flow(%s, %s)", flow, Jsonb({"go": True}))
    (run2,) = q("SELECT run_id FROM pgflow.start_flow(%s, %s)", flow, Jsonb({"go": False}))
    q(
        "SELECT run_id FROM pgflow.start_flow(%s, %s, %s)", flow, Jsonb({"go": True}), run1[0]
    )  # idempotent start
    work(fail_first_a=True)  # a fails once in both runs: retried after 1 s
    q("SELECT status FROM pgflow.cancel_run(%s)", run2[0])
    q("SELECT status FROM pgflow.retry_run(%s)", run2[0])
    conn.execute("SELECT pg_sleep(1.1)")
    for _ in range(10):
        if not work():
            break
    q("SELECT pgflow.complete_task(%s, 'a', 0, '1')", run1[0])  # late duplicate: false
    q("SELECT pgflow.get_run(%s)", run1[0])
    q("SELECT pgflow.get_run(%s)", run2[0])
    q("SELECT pgflow.run_input(%s)", run1[0])
    q("SELECT * FROM pgflow.list_runs(%s)", flow)
    q("SELECT pgflow.stop_worker(%s)", uuid.UUID(int=7))
    q("SELECT pgflow.worker_idle(ARRAY[%s], false)", flow)
    q("SELECT pgflow.prune_runs(interval '0')")
    q("SELECT pgflow.delete_flow(%s, force => true)", flow)
    return out


def test_a_hostile_search_path_changes_nothing(conn: Conn) -> None:
    conn.execute(EVIL)
    plain = _scenario(conn, "path_plain")
    conn.execute("TRUNCATE pgflow.workers")

    conn.execute(f"SET search_path = {HOSTILE_PATH}")
    # the trap works: unqualified calls from this session do reach the look-alikes
    assert conn.execute("SELECT now() = '2000-01-01'::timestamptz").fetchone() == (True,)
    assert conn.execute("SELECT 'a'::text = 'b'::text").fetchone() == (True,)
    assert conn.execute("SELECT count(*) FROM evil.calls").fetchone() == (2,)
    conn.execute("TRUNCATE evil.calls")

    hostile = _scenario(conn, "path_plain")
    conn.execute("RESET search_path")
    calls = conn.execute("SELECT fn, count(*) FROM evil.calls GROUP BY fn ORDER BY fn").fetchall()
    assert calls == []
    assert hostile == plain
    # and the scenario did what it should
    statuses = [entry for entry in plain if entry[0] == "SELECT pgflow.get_run"]
    assert [s[1][0][0]["status"] for s in statuses] == ["completed", "completed"]
