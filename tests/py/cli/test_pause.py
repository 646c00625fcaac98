"""pgflow pause / resume and the client's pause()/resume() against a real database."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgflow import Client
from pgflow.cli import main

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]
WORKER = uuid.UUID(int=7)


def pgflow(db: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--dsn", db], prog_name="pgflow")


@pytest.fixture
def flow(db: str) -> str:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SELECT pgflow.create_flow('pausing')")
        conn.execute("SELECT pgflow.add_step('pausing', 'only')")
    return db


def claimed(conn: Conn) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pgflow.claim_tasks('pausing', 10, %s)", (WORKER,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_pause_stops_claims_and_resume_lets_them_go_on(flow: str, conn: Conn) -> None:
    result = pgflow(flow, "pause", "pausing")
    assert result.exit_code == 0, result.output
    assert result.stdout == "flow pausing paused\n"
    assert pgflow(flow, "pause", "pausing").stdout == "flow pausing was already paused\n"

    run_id = pgflow(flow, "start", "pausing", "--input", "{}").stdout.strip()
    assert claimed(conn) == 0, "a paused flow's task was claimed"
    status = pgflow(flow, "status", run_id)
    assert "flow paused: queued tasks wait for pgflow resume pausing" in status.stdout
    listing = pgflow(flow, "flows")
    assert "PAUSED" in listing.stdout.splitlines()[0]
    (line,) = [ln for ln in listing.stdout.splitlines() if ln.startswith("pausing")]
    assert line.rstrip().endswith("yes")
    rows = json.loads(pgflow(flow, "flows", "--json").stdout)
    assert [r["paused"] for r in rows if r["flow_slug"] == "pausing"] == [True]

    result = pgflow(flow, "resume", "pausing")
    assert result.exit_code == 0, result.output
    assert result.stdout == "flow pausing resumed\n"
    assert pgflow(flow, "resume", "pausing").stdout == "flow pausing was not paused\n"
    assert claimed(conn) == 1
    assert "flow paused" not in pgflow(flow, "status", run_id).stdout


def test_pausing_an_unknown_flow_is_one_error_line(flow: str) -> None:
    result = pgflow(flow, "pause", "nope")
    assert result.exit_code == 1
    assert 'flow "nope" does not exist' in result.stderr
    assert "Traceback" not in result.output


def test_a_role_without_the_grant_is_told_which_one(flow: str, conn: Conn, db: str) -> None:
    role = f"pause_app_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    conn.execute("SELECT pgflow.grant_client(%s)", (role,))
    dsn = psycopg.conninfo.make_conninfo(db, user=role)
    result = pgflow(dsn, "pause", "pausing")
    assert result.exit_code == 1
    assert f"GRANT EXECUTE ON FUNCTION pgflow.pause_flow(text) TO {role}" in result.stderr
    row = conn.execute("SELECT count(*) FROM pgflow.paused_flows").fetchone()
    assert row == (0,)


def test_the_client_pauses_and_resumes(flow: str, conn: Conn) -> None:
    with Client(flow) as client:
        assert client.pause("pausing") is True
        assert client.pause("pausing") is False
        client.start("pausing", {})
        assert claimed(conn) == 0
        assert client.resume("pausing") is True
        assert client.resume("pausing") is False
    assert claimed(conn) == 1
