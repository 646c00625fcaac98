"""Fixtures of the dashboard tests: a role with grant_client only, a two-step flow, tasks."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

pytest.importorskip("starlette", reason="the ui extra is not installed")

from starlette.testclient import TestClient

from pgflow.ui import app

Conn = psycopg.Connection[tuple[Any, ...]]
TOKEN = "s3cret-token-for-tests"


@contextlib.contextmanager
def _role(db: str, conn: Conn, grant: str | None) -> Iterator[str]:
    role = f"pgflow_ui_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    if grant:
        conn.execute(f"SELECT pgflow.{grant}(%s)", (role,))
    try:
        yield psycopg.conninfo.make_conninfo(db, user=role)
    finally:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


@pytest.fixture
def client_dsn(db: str, conn: Conn) -> Iterator[str]:
    """conninfo of a fresh LOGIN role that has pgflow.grant_dashboard and nothing else."""
    with _role(db, conn, "grant_dashboard") as dsn:
        yield dsn


@pytest.fixture
def app_dsn(db: str, conn: Conn) -> Iterator[str]:
    """conninfo of a fresh LOGIN role with pgflow.grant_client only (an application's)."""
    with _role(db, conn, "grant_client") as dsn:
        yield dsn


@pytest.fixture
def bare_dsn(db: str, conn: Conn) -> Iterator[str]:
    """conninfo of a fresh LOGIN role with no pgflow grant."""
    with _role(db, conn, None) as dsn:
        yield dsn


@pytest.fixture
def pipe(conn: Conn) -> str:
    """Flow ``pipe``: ``fetch`` -> ``store``, one attempt, step events on."""
    conn.execute("SELECT pgflow.create_flow('pipe', max_attempts => 1, step_events => true)")
    conn.execute("SELECT pgflow.add_step('pipe', 'fetch')")
    conn.execute("SELECT pgflow.add_step('pipe', 'store', ARRAY['fetch'])")
    return "pipe"


Start = Callable[..., uuid.UUID]


@pytest.fixture
def start(conn: Conn) -> Start:
    def run(flow: str = "pipe", payload: str = '{"n": 1}') -> uuid.UUID:
        row = conn.execute("SELECT run_id FROM pgflow.start_flow(%s, %s)", (flow, payload))
        value = row.fetchone()
        assert value is not None
        return uuid.UUID(str(value[0]))

    return run


Work = Callable[..., None]


@pytest.fixture
def work(conn: Conn) -> Work:
    """``work(flow, output=..., error=...)``: claim one task and complete (or fail) it."""
    worker = uuid.uuid4()

    def step(flow: str = "pipe", output: str = '{"ok": true}', error: str | None = None) -> None:
        rows = conn.execute(
            "SELECT run_id, step_slug, task_index, attempt FROM pgflow.claim_tasks(%s, 1, %s)",
            (flow, worker),
        ).fetchall()
        assert rows, "no task to claim"
        run_id, step_slug, task_index, attempt = rows[0]
        if error is None:
            conn.execute(
                "SELECT pgflow.complete_task(%s, %s, %s, %s, %s)",
                (run_id, step_slug, task_index, output, attempt),
            )
        else:
            conn.execute(
                "SELECT pgflow.fail_task(%s, %s, %s, %s, %s)",
                (run_id, step_slug, task_index, error, attempt),
            )

    return step


@pytest.fixture
def ui(client_dsn: str) -> Iterator[TestClient]:
    """The dashboard without a token (read-only), as the grant_client role."""
    with TestClient(app(client_dsn), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def ui_token(client_dsn: str) -> Iterator[TestClient]:
    """The dashboard with a token, not signed in."""
    with TestClient(app(client_dsn, token=TOKEN), base_url="http://127.0.0.1") as client:
        yield client
