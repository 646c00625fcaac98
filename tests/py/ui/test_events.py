"""Server-Sent Events: one LISTEN connection per process fans pgflow_events out to browsers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from pgflow.ui import app

from .conftest import Start, Work

pytestmark = pytest.mark.db
Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def served(client_dsn: str) -> Iterator[str]:
    """The dashboard served by uvicorn on a free loopback port (its base URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dashboard = app(client_dsn)
    server = uvicorn.Server(
        uvicorn.Config(dashboard, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def events_of(lines: Iterator[str], until: str, timeout: float = 20) -> list[dict[str, Any]]:
    """The events read from an SSE stream up to the one named ``until``."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    for line in lines:
        assert time.monotonic() < deadline, f"no {until} event in time; saw {seen}"
        if line.startswith("data: "):
            seen.append(json.loads(line[6:]))
            if seen[-1]["event"] == until:
                return seen
    raise AssertionError(f"stream ended before {until}; saw {seen}")


def listen_backends(conn: Conn, dsn: str) -> int:
    user = psycopg.conninfo.conninfo_to_dict(dsn)["user"]
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = %s"
        " AND query = 'SELECT pgflow.listen_events()'",
        (user,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_sse_delivers_a_runs_events_through_one_listen_connection(
    served: str, client_dsn: str, conn: Conn, pipe: str, start: Start, work: Work
) -> None:
    run_id = start()
    other = start()
    with ExitStack() as stack:
        client = stack.enter_context(httpx.Client(base_url=served, timeout=30))
        streams = [
            stack.enter_context(client.stream("GET", f"/events?run_id={run_id}")) for _ in range(3)
        ]
        for response in streams:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-content-type-options"] == "nosniff"
        lines = [response.iter_lines() for response in streams]
        for it in lines:
            assert next(it) == "retry: 2000"
        assert listen_backends(conn, client_dsn) == 1
        conn.execute("SELECT pgflow.cancel_run(%s)", (other,))  # another run's event: filtered out
        work()
        work()
        for it in lines:
            seen = events_of(it, "run:completed")
            assert {e["run_id"] for e in seen} == {str(run_id)}
            assert ("step:fetch:completed", "fetch") in {
                (e["event"], e.get("step_slug")) for e in seen
            }
        assert listen_backends(conn, client_dsn) == 1
