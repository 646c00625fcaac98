"""Starting runs and following them from Python applications.

Every function takes a psycopg connection and calls the SQL API; none reads
tables.  ``wait_for_run`` needs an autocommit connection (it LISTENs)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg

from pgflow.errors import PgflowError

FINISHED = frozenset({"completed", "failed", "cancelled"})

Conn = psycopg.Connection[Any]


class RunTimeoutError(PgflowError):
    """A run did not finish within the time asked for."""


def start_flow(
    conn: Conn, flow_slug: str, input: Any, run_id: uuid.UUID | str | None = None
) -> dict[str, Any]:
    """Start a run (idempotent when ``run_id`` is given); returns the run as a dict."""
    row = conn.execute(
        "SELECT to_jsonb(r) FROM pgflow.start_flow(%s, %s::jsonb, %s) AS r",
        (flow_slug, json.dumps(input), run_id),
    ).fetchone()
    assert row is not None
    result: dict[str, Any] = row[0]
    return result


def get_run(conn: Conn, run_id: uuid.UUID | str) -> dict[str, Any] | None:
    """The run with its steps as one document (``pgflow.get_run``); None if unknown."""
    row = conn.execute("SELECT pgflow.get_run(%s)", (run_id,)).fetchone()
    return None if row is None else row[0]


def wait_for_run(conn: Conn, run_id: uuid.UUID | str, timeout: float) -> dict[str, Any]:
    """Block until the run is completed, failed or cancelled; returns ``get_run``.

    Waits on ``LISTEN pgflow_events`` with ``pgflow.listen_events()`` (no
    polling; events are only sent while a session subscribes): the run's status is read
    once after LISTEN, then again only when an event for this run arrives.
    Raises :class:`RunTimeoutError` after ``timeout`` seconds.
    """
    if not conn.autocommit:
        raise PgflowError("wait_for_run needs an autocommit connection (it uses LISTEN)")
    run_key = str(run_id)
    seen: list[str] = []

    def on_notify(note: psycopg.Notify) -> None:
        event = json.loads(note.payload)
        if event.get("run_id") == run_key and str(event.get("event", "")).startswith("run:"):
            seen.append(event["event"])

    conn.execute("LISTEN pgflow_events")
    conn.execute("SELECT pgflow.listen_events()")
    try:
        deadline = time.monotonic() + timeout
        run = get_run(conn, run_key)
        if run is None:
            raise PgflowError(f"run {run_key} does not exist")
        while run["status"] not in FINISHED:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RunTimeoutError(f"run {run_key} is still {run['status']} after {timeout:g} s")
            if not seen:
                # events that arrived during get_run wait in psycopg's backlog
                # and come out of notifies() first
                for note in conn.notifies(timeout=min(left, 1.0)):
                    on_notify(note)
                    if seen:
                        break
            if seen:
                seen.clear()
                run = get_run(conn, run_key) or run
        return run
    finally:
        conn.execute("SELECT pgflow.listen_events(false)")
        conn.execute("UNLISTEN pgflow_events")
