"""Large, deep and malformed payloads through the SQL protocol.

What PostgreSQL allows and refuses here is the contract documented in
docs/design/guarantees.md ("Limits"):

* inputs and outputs are jsonb values: 1 MB and 50 MB round-trip exactly;
  one value (or one string in it) is capped at 255 MB (268 435 455 bytes),
  54000 beyond;
* nesting is limited by the server's stack (max_stack_depth), not by a fixed
  depth: 10 000 levels work with the default 2 MB; far deeper documents are
  refused with 54001 (statement_too_complex) by the cast, before any pgflow
  function runs, so nothing changes;
* text that is not JSON is refused with 22P02, \\u0000 with 22P05;
* NOTIFY payloads carry ids and status, never inputs or outputs, whatever
  their size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

from pgflow.compiler.migration import compile_flow
from pgflow.spec.loader import load

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]
RUN = "11111111-1111-1111-1111-111111111111"
ROOT = Path(__file__).resolve().parents[3]
PGFLOW = str(Path(sys.executable).with_name("pgflow"))


def _chain(conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('big')")
    conn.execute("SELECT pgflow.add_step('big', 'a')")
    conn.execute("SELECT pgflow.add_step('big', 'b', ARRAY['a'])")


def _start(conn: Conn, flow: str) -> list[tuple[Any, ...]]:
    """Claim and start every ready task of a flow; rows (step_slug, task_index, input text)."""
    return conn.execute(
        "SELECT step_slug, task_index, input::text FROM pgflow.start_tasks(%s,"
        " ARRAY(SELECT msg_id FROM pgflow.read_with_poll(%s, 60, 100)), gen_random_uuid())"
        " ORDER BY step_slug, task_index",
        (flow, flow),
    ).fetchall()


def _counts(conn: Conn) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM pgflow.runs), (SELECT count(*) FROM pgflow.step_states),"
        " (SELECT count(*) FROM pgflow.step_tasks),"
        " (SELECT count(*) FROM pgflow.step_tasks WHERE status = 'started')"
    ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize("megabytes", [1, 50])
def test_large_inputs_and_outputs_round_trip_exactly(conn: Conn, megabytes: int) -> None:
    _chain(conn)
    conn.execute("LISTEN pgflow_events")
    blob = {"text": "é\\\"'" + "x" * (megabytes * 1024 * 1024), "list": list(range(1000))}
    doc = json.dumps(blob)
    conn.execute("SELECT pgflow.start_flow('big', %s::jsonb, %s)", (doc, RUN))

    (task,) = conn.execute(
        "SELECT step_slug, input = jsonb_build_object('run', %s::jsonb)"
        " FROM pgflow.start_tasks('big', ARRAY(SELECT msg_id FROM pgflow.read_with_poll('big',"
        " 60, 10)), gen_random_uuid())",
        (doc,),
    ).fetchall()
    assert task == ("a", True)
    assert conn.execute(
        "SELECT pgflow.complete_task(%s, 'a', 0, %s::jsonb)", (RUN, doc)
    ).fetchone() == (True,)

    (task,) = conn.execute(
        "SELECT step_slug, input = jsonb_build_object('run', %s::jsonb, 'a', %s::jsonb)"
        " FROM pgflow.start_tasks('big', ARRAY(SELECT msg_id FROM pgflow.read_with_poll('big',"
        " 60, 10)), gen_random_uuid())",
        (doc, doc),
    ).fetchall()
    assert task == ("b", True)
    assert conn.execute(
        "SELECT pgflow.complete_task(%s, 'b', 0, %s::jsonb)", (RUN, doc)
    ).fetchone() == (True,)

    run = conn.execute(
        "SELECT status, output = jsonb_build_object('b', %s::jsonb),"
        " pgflow.get_run(run_id) -> 'input' = %s::jsonb"
        " FROM pgflow.runs WHERE run_id = %s",
        (doc, doc, RUN),
    ).fetchone()
    assert run == ("completed", True, True)
    # the client got the value back byte for byte, too
    fetched = conn.execute("SELECT output -> 'b' FROM pgflow.runs").fetchone()
    assert fetched is not None and fetched[0] == blob

    notes = list(conn.notifies(timeout=1, stop_after=2))
    assert [json.loads(n.payload)["event"] for n in notes] == ["run:started", "run:completed"]
    assert all(len(n.payload) < 200 and "xxx" not in n.payload for n in notes)


def test_ten_thousand_levels_of_nesting_go_through(conn: Conn) -> None:
    _chain(conn)
    deep = "[" * 10_000 + "]" * 10_000
    deep_object = '{"k": ' * 10_000 + "1" + "}" * 10_000
    conn.execute("SELECT pgflow.start_flow('big', %s::jsonb, %s)", (deep, RUN))
    [(step, _, text)] = _start(conn, "big")
    assert step == "a"
    assert text == '{"run": ' + deep + "}"
    conn.execute("SELECT pgflow.complete_task(%s, 'a', 0, %s::jsonb)", (RUN, deep_object))
    [(step, _, text)] = _start(conn, "big")
    assert step == "b"
    assert text.count("{") == 10_000 + 1 and text.count("[") == 10_000
    conn.execute("SELECT pgflow.complete_task(%s, 'b', 0, %s::jsonb)", (RUN, deep))
    row = conn.execute(
        "SELECT status, output = jsonb_build_object('b', %s::jsonb),"
        " length(pgflow.get_run(run_id)::text) > 40000 FROM pgflow.runs",
        (deep,),
    ).fetchone()
    assert row == ("completed", True, True)


def test_nesting_beyond_the_stack_limit_is_refused_with_54001(conn: Conn) -> None:
    _chain(conn)
    too_deep = "[" * 200_000 + "]" * 200_000
    with pytest.raises(errors.StatementTooComplex) as raised:
        conn.execute("SELECT pgflow.start_flow('big', %s::jsonb, %s)", (too_deep, RUN))
    assert raised.value.sqlstate == "54001"
    assert "stack depth limit exceeded" in str(raised.value)
    assert _counts(conn) == (0, 0, 0, 0)

    conn.execute("SELECT pgflow.start_flow('big', '{}', %s)", (RUN,))
    assert [r[0] for r in _start(conn, "big")] == ["a"]
    before = _counts(conn)
    with pytest.raises(errors.StatementTooComplex):
        conn.execute("SELECT pgflow.complete_task(%s, 'a', 0, %s::jsonb)", (RUN, too_deep))
    assert _counts(conn) == before  # the task is still started: a retry can succeed
    assert conn.execute("SELECT pgflow.complete_task(%s, 'a', 0, '1')", (RUN,)).fetchone() == (
        True,
    )


def test_the_nesting_limit_follows_max_stack_depth(conn: Conn) -> None:
    _chain(conn)
    deep = "[" * 10_000 + "]" * 10_000
    conn.execute("SET max_stack_depth = '200kB'")
    with pytest.raises(errors.StatementTooComplex):
        conn.execute("SELECT pgflow.start_flow('big', %s::jsonb)", (deep,))
    conn.execute("RESET max_stack_depth")
    conn.execute("SELECT pgflow.start_flow('big', %s::jsonb)", (deep,))


@pytest.mark.parametrize(
    "text,sqlstate",
    [
        ("not json", "22P02"),
        ("{'single': 'quotes'}", "22P02"),
        ("NaN", "22P02"),
        ("[1, 2,]", "22P02"),
        ("", "22P02"),
        ('"nul \\u0000 inside"', "22P05"),
    ],
)
def test_outputs_that_are_not_jsonb_are_refused_and_change_nothing(
    conn: Conn, text: str, sqlstate: str
) -> None:
    _chain(conn)
    conn.execute("SELECT pgflow.start_flow('big', '{}', %s)", (RUN,))
    _start(conn, "big")
    before = _counts(conn)
    # typed by the client, and left for the server to infer from the signature
    for query in (
        "SELECT pgflow.complete_task(%s, 'a', 0, %s::jsonb)",
        "SELECT pgflow.complete_task(%s, 'a', 0, %s)",
    ):
        with pytest.raises(psycopg.DataError) as raised:
            conn.execute(query, (RUN, text))
        assert raised.value.sqlstate == sqlstate
    assert _counts(conn) == before
    with pytest.raises(psycopg.DataError):
        conn.execute("SELECT pgflow.start_flow('big', %s)", (text,))
    assert _counts(conn) == before


def test_one_jsonb_value_is_capped_at_255_megabytes(conn: Conn) -> None:
    _chain(conn)
    with pytest.raises(errors.ProgramLimitExceeded) as raised:
        conn.execute("SELECT pgflow.start_flow('big', to_jsonb(repeat('x', 268435456)))")
    assert raised.value.sqlstate == "54000"
    assert _counts(conn) == (0, 0, 0, 0)


def test_map_outputs_that_add_up_past_the_cap_refuse_the_last_completion(conn: Conn) -> None:
    """Each task output fits, their array (the step output) does not: the last
    complete_task raises 54000 and changes nothing (the task stays started and
    is retried after its lease; see Limits in docs/design/guarantees.md)."""
    conn.execute("SELECT pgflow.create_flow('fan')")
    conn.execute("SELECT pgflow.add_step('fan', 'm', step_type => 'map')")
    conn.execute("SELECT pgflow.start_flow('fan', '[1, 2]', %s)", (RUN,))
    assert len(_start(conn, "fan")) == 2
    half = 140 * 1024 * 1024  # two of them exceed 268 435 455 bytes
    assert conn.execute(
        "SELECT pgflow.complete_task(%s, 'm', 0, to_jsonb(repeat('x', %s)))", (RUN, half)
    ).fetchone() == (True,)
    before = _counts(conn)
    with pytest.raises(errors.ProgramLimitExceeded):
        conn.execute(
            "SELECT pgflow.complete_task(%s, 'm', 1, to_jsonb(repeat('y', %s)))", (RUN, half)
        )
    assert _counts(conn) == before
    assert conn.execute("SELECT status FROM pgflow.step_tasks WHERE task_index = 1").fetchone() == (
        "started",
    )


def test_the_reference_worker_survives_a_deeply_nested_input(db: str, conn: Conn) -> None:
    cwd = Path.cwd()
    try:
        os.chdir(ROOT)
        flows = load("tests/py/reliability/payload_flows.py")
    finally:
        os.chdir(cwd)
    for flow in flows:
        conn.execute(compile_flow(flow.spec, generated_at=datetime(2026, 1, 1, tzinfo=UTC)))
    deep = "[" * 2000 + "]" * 2000
    conn.execute("SELECT pgflow.start_flow('rp_payload', %s::jsonb)", (deep,))
    healthy = conn.execute(
        "SELECT run_id FROM pgflow.start_flow('rp_payload', '{\"ok\": true}')"
    ).fetchone()
    assert healthy is not None
    command = [PGFLOW, "worker", "tests/py/reliability/payload_flows.py", "--dsn", db]
    proc = subprocess.Popen(
        [*command, "--poll-interval", "0.2"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            row = conn.execute(
                "SELECT status FROM pgflow.runs WHERE run_id = %s", (healthy[0],)
            ).fetchone()
            status = row[0] if row else None
            if status == "completed":
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"the worker exited with status {proc.returncode}"
        assert status == "completed"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
