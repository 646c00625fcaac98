"""client.emit_event (Client and AsyncClient), pgflow emit and pgflow status of a waiting step."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

import pgflow
from pgflow.cli import main
from pgflow.cli.events import parse_key
from pgflow.errors import PgflowError

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]


def cli(db: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--dsn", db], prog_name="pgflow")


@pytest.fixture
def approval(conn: Conn) -> str:
    """Flow ``approval``: a wait step ``ok`` (event approved, key run.order_id, 1 day)."""
    conn.execute("SELECT pgflow.create_flow('approval')")
    conn.execute(
        "SELECT pgflow.add_step('approval', 'ok', step_type => 'wait', wait_event => 'approved',"
        " wait_key => 'run.order_id', timeout => 86400, when_exhausted => 'skip')"
    )
    return "approval"


def step(conn: Conn, run_id: object) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, output FROM pgflow.step_states WHERE run_id = %s", (run_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_client_emit_event_completes_the_waiting_step(db: str, conn: Conn, approval: str) -> None:
    with pgflow.Client(db) as client:
        handle = client.start(approval, {"order_id": 42})
        assert client.emit_event("approved", 43, {"by": "x"}) == 0
        assert client.emit_event("approved", 42, {"by": "ann"}, event_id="e-1") == 1
        assert client.emit_event("approved", 42, {"by": "bob"}, event_id="e-1") == 0
        assert handle.result(timeout=5) == {"ok": {"by": "ann"}}
        with pytest.raises(PgflowError, match="an event key must be a JSON string"):
            client.emit_event("approved", [1], {})


def test_client_emit_event_joins_the_callers_transaction(conn: Conn, approval: str) -> None:
    (run_id,) = conn.execute(
        "SELECT run_id FROM pgflow.start_flow('approval', '{\"order_id\": \"A\"}')"
    ).fetchone() or (None,)
    conn.autocommit = False
    client = pgflow.Client(conn)
    assert client.emit_event("approved", "A", True) == 1
    conn.rollback()
    conn.autocommit = True
    assert step(conn, run_id) == ("started", None)


def test_async_client_emit_event(db: str, conn: Conn, approval: str) -> None:
    async def go() -> int:
        async with pgflow.AsyncClient(db) as client:
            await client.start(approval, {"order_id": 7})
            return await client.emit_event("approved", 7.0, "yes")

    assert asyncio.run(go()) == 1
    assert conn.execute("SELECT output FROM pgflow.step_states").fetchone() == ("yes",)


def test_pgflow_emit_and_status(db: str, conn: Conn, approval: str) -> None:
    (run_id,) = conn.execute(
        "SELECT run_id FROM pgflow.start_flow('approval', '{\"order_id\": \"order-9\"}')"
    ).fetchone() or (None,)
    shown = cli(db, "status", str(run_id))
    assert shown.exit_code == 0, shown.output
    assert 'waiting for approved key "order-9" until ' in shown.output

    missed = cli(db, "emit", "approved", "--key", "order-8")
    assert missed.exit_code == 0, missed.output
    assert "no step waited" in missed.output
    done = cli(db, "emit", "approved", "--key", "order-9", "--payload", '{"by": "cli"}', "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {"event": "approved", "key": "order-9", "completed": 1}
    assert step(conn, run_id) == ("completed", {"by": "cli"})

    bad = cli(db, "emit", "approved", "--key", "[1]")
    assert bad.exit_code == 2 and "an event key is a string, number or boolean" in bad.output
    bad = cli(db, "emit", "approved", "--key", "1", "--payload", "{nope")
    assert bad.exit_code == 2 and "not JSON" in bad.output
    assert "Traceback" not in bad.output


def test_parse_key_reads_json_scalars_and_else_strings() -> None:
    assert parse_key("42") == 42
    assert parse_key("4.5") == 4.5
    assert parse_key("true") is True
    assert parse_key('"42"') == "42"
    assert parse_key("order-42") == "order-42"
    with pytest.raises(ValueError, match="JSON dict"):
        parse_key('{"a": 1}')


def test_a_waiting_step_is_announced_on_pgflow_events(db: str, conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('noisy', step_events => true)")
    conn.execute(
        "SELECT pgflow.add_step('noisy', 'w', step_type => 'wait', wait_event => 'go',"
        " wait_key => 'run.id')"
    )
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN pgflow_events")
        listener.execute("SELECT pgflow.listen_events()")
        (run_id,) = conn.execute(
            "SELECT run_id FROM pgflow.start_flow('noisy', '{\"id\": 5}')"
        ).fetchone() or (None,)
        conn.execute("SELECT pgflow.emit_event('go', '5', '{}')")
        events = []
        for note in listener.notifies(timeout=5, stop_after=4):
            events.append(json.loads(note.payload)["event"])
    assert events == ["run:started", "step:w:waiting", "step:w:completed", "run:completed"], (
        run_id,
        events,
    )
