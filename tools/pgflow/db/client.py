"""Starting runs, following them and operating on them, from Python.

Every function takes a psycopg connection (or the :class:`~pgflow.db.queries.Queries`
bound to one) and calls the SQL API through the named statements of
``queries.sql``; none reads tables.  Errors come as the typed errors of
:mod:`pgflow.errors` (``RunNotFound``, ``FlowNotFound``, ...).  The same
functions serve applications, the CLI and the demo.

``wait_for_run`` needs an autocommit connection (it LISTENs).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import psycopg

from pgflow.db.queries import Queries
from pgflow.errors import PgflowError, RunNotFound, RunTimeoutError

__all__ = [
    "FINISHED",
    "CancelResult",
    "RunTimeoutError",
    "Stats",
    "cancel_run",
    "get_run",
    "list_runs",
    "prune_runs",
    "retry_run",
    "start_flow",
    "stats",
    "wait_for_run",
]

#: The statuses a run ends in.
FINISHED: Final = frozenset({"completed", "failed", "cancelled"})

#: A connection, or the queries bound to one.
Database = Queries | psycopg.Connection[Any]
RunId = uuid.UUID | str


def queries_of(db: Database) -> Queries:
    """The queries bound to ``db`` (a connection is wrapped, not closed later)."""
    return db if isinstance(db, Queries) else Queries(db)


def start_flow(
    db: Database, flow_slug: str, input: Any, run_id: RunId | None = None
) -> dict[str, Any]:
    """Start a run (idempotent when ``run_id`` is given); returns the run as a dict."""
    return queries_of(db).start_flow(flow_slug, input, run_id)


def get_run(db: Database, run_id: RunId) -> dict[str, Any] | None:
    """The run with its steps as one document (``pgflow.get_run``); None if unknown."""
    return queries_of(db).get_run(run_id)


def wait_for_run(db: Database, run_id: RunId, timeout: float) -> dict[str, Any]:
    """Block until the run is completed, failed or cancelled; returns ``get_run``.

    Waits on ``LISTEN pgflow_events`` with ``pgflow.listen_events()`` (no
    polling; events are only sent while a session subscribes): the run's status is read
    once after LISTEN, then again only when an event for this run arrives.
    Raises :class:`RunTimeoutError` after ``timeout`` seconds and
    :class:`~pgflow.errors.RunNotFound` for an unknown run.
    """
    queries = queries_of(db)
    if not queries.conn.autocommit:
        raise PgflowError("wait_for_run needs an autocommit connection (it uses LISTEN)")
    run_key = str(run_id)
    seen: list[str] = []

    def on_notify(payload: str) -> None:
        event = json.loads(payload)
        if event.get("run_id") == run_key and str(event.get("event", "")).startswith("run:"):
            seen.append(event["event"])

    queries.listen_events()
    queries.subscribe_events(True)
    try:
        deadline = time.monotonic() + timeout
        run = get_run(queries, run_key)
        if run is None:
            raise RunNotFound(f"run {run_key} does not exist", sqlstate="42704")
        while run["status"] not in FINISHED:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RunTimeoutError(f"run {run_key} is still {run['status']} after {timeout:g} s")
            if not seen:
                # events that arrived during get_run wait in psycopg's backlog
                # and come out of notifies() first
                for note in queries.notifies(timeout=min(left, 1.0), stop_after=1):
                    on_notify(note.payload)
            if seen:
                seen.clear()
                run = get_run(queries, run_key) or run
        return run
    finally:
        queries.subscribe_events(False)
        queries.unlisten_events()


def list_runs(
    db: Database, flow_slug: str | None = None, status: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The newest runs, newest first: ids, status and times (never inputs or outputs)."""
    return queries_of(db).list_runs(flow_slug, status, limit)


@dataclass(frozen=True)
class CancelResult:
    """What ``cancel_run`` did: the run afterwards, and whether it was already finished."""

    run: dict[str, Any]
    already_finished: bool


def cancel_run(db: Database, run_id: RunId) -> CancelResult:
    """Cancel a running run; a finished run is left as it is (not an error)."""
    run, notices = queries_of(db).cancel_run(run_id)
    return CancelResult(run, bool(notices))


def retry_run(db: Database, run_id: RunId) -> dict[str, Any]:
    """Queue a failed or cancelled run's failed and cancelled tasks again; the run row."""
    return queries_of(db).retry_run(run_id)


def prune_runs(db: Database, older_than: timedelta, batch_size: int = 1000) -> int:
    """Delete one batch of runs finished more than ``older_than`` ago; how many."""
    return queries_of(db).prune_runs(older_than, batch_size)


@dataclass(frozen=True)
class Stats:
    """The operator views at one moment: per flow, per step, and task counts."""

    runs: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    active_tasks: int
    stalled_tasks: int


def stats(db: Database, flow_slug: str | None = None) -> Stats:
    """Run and step statistics (``run_stats``, ``step_stats``) and task counts."""
    queries = queries_of(db)
    counts = queries.task_counts(flow_slug)
    return Stats(
        runs=queries.run_stats(flow_slug),
        steps=queries.step_stats(flow_slug),
        active_tasks=counts["active_tasks"],
        stalled_tasks=counts["stalled_tasks"],
    )
