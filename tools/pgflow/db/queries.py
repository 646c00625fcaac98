"""The one boundary to the database: the named statements of ``queries.sql``.

:data:`QUERIES` holds every statement the package sends at run time, read
from ``queries.sql`` next to this module.  :class:`Queries` binds them to one
psycopg connection, one method per statement, and turns every psycopg error
into the typed errors of :mod:`pgflow.errors` (:func:`translated`), so the
layers above -- the client API, the worker, the CLI -- neither write SQL nor
catch psycopg classes.

A :class:`Queries` runs each statement on its connection as it is: in
autocommit mode each is its own transaction; on a connection inside an
application's transaction it joins that transaction.  :class:`AsyncQueries`
is the same for a psycopg ``AsyncConnection`` (the statements an application
needs: runs, operations, events), with the same texts and the same errors.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, Final, Literal, NamedTuple

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pgflow.errors import (
    DatabaseError,
    FlowNotFound,
    JsonTooDeep,
    NotFound,
    RunNotFound,
    database_error,
)

Conn = psycopg.Connection[Any]
AsyncConn = psycopg.AsyncConnection[Any]
RunId = uuid.UUID | str

_ENTRY: Final = re.compile(r"^-- name: (?P<name>[a-z_]+)\n", re.M)


@dataclass(frozen=True)
class Query:
    """One named statement: its text and the comment above it."""

    name: str
    doc: str
    text: str

    @property
    def composed(self) -> bool:
        """Whether the text has ``{identifier}`` slots (filled with psycopg.sql)."""
        return "{" in self.text


def parse_queries(text: str) -> dict[str, Query]:
    """The entries of a queries file (see the file's header); duplicates are an error."""
    queries: dict[str, Query] = {}
    matches = list(_ENTRY.finditer(text))
    for here, following in zip(matches, [*matches[1:], None], strict=True):
        body = text[here.end() : following.start() if following else len(text)]
        doc_lines: list[str] = []
        statement: list[str] = []
        for line in body.splitlines():
            if not statement and line.startswith("--"):
                doc_lines.append(line[2:].strip())
            elif line.startswith("-- ----"):
                break
            elif line.strip() or statement:
                statement.append(line)
        stmt = "\n".join(statement).strip()
        stmt = stmt.removesuffix(";").rstrip()
        name = here["name"]
        if name in queries:
            raise ValueError(f"queries.sql: {name!r} is defined twice")
        if not stmt or ";" in stmt:
            raise ValueError(f"queries.sql: {name!r} must hold exactly one statement")
        queries[name] = Query(name, " ".join(doc_lines), stmt)
    return queries


QUERIES: Final[Mapping[str, Query]] = parse_queries(
    resources.files("pgflow.db").joinpath("queries.sql").read_text(encoding="utf-8")
)


# --------------------------------------------------------------------------- errors


def as_pgflow_error(exc: psycopg.Error, not_found: type[NotFound] = NotFound) -> DatabaseError:
    """The typed error of :mod:`pgflow.errors` for a psycopg error."""
    diag = getattr(exc, "diag", None)
    first = str(exc).split("\n")[0] if str(exc) else type(exc).__name__
    return database_error(
        exc.sqlstate,
        first,
        hint=getattr(diag, "message_hint", None) if diag is not None else None,
        detail=getattr(diag, "message_detail", None) if diag is not None else None,
        not_found=not_found,
    )


@contextmanager
def translated(not_found: type[NotFound] = NotFound) -> Iterator[None]:
    """Raise psycopg errors in the block as typed pgflow errors (the original chained)."""
    try:
        yield
    except psycopg.Error as exc:
        raise as_pgflow_error(exc, not_found) from exc


@contextmanager
def decoded(name: str) -> Iterator[None]:
    """Raise :class:`~pgflow.errors.JsonTooDeep` for a result Python's json cannot decode."""
    try:
        yield
    except RecursionError:
        raise JsonTooDeep(
            f"the result of {name} is nested too deeply for Python's json module"
            f" (at most about {sys.getrecursionlimit()} levels)"
        ) from None


def json_text(value: Any, what: str = "the input") -> str:
    """``value`` as JSON text for a ``jsonb`` parameter (typed error when too deep)."""
    try:
        return json.dumps(value)
    except RecursionError:
        raise JsonTooDeep(
            f"{what} is nested too deeply for Python's json module"
            f" (at most about {sys.getrecursionlimit()} levels)"
        ) from None


def _start_flows_params(
    flow_slug: str,
    inputs: Sequence[Any],
    run_ids: Sequence[RunId | None] | None,
    version: int | None,
    trace_context: str | None,
    priority: int,
) -> dict[str, Any]:
    return {
        "flow_slug": flow_slug,
        "inputs": [json_text(v, f"input {i}") for i, v in enumerate(inputs)],
        "run_ids": None if run_ids is None else [None if r is None else str(r) for r in run_ids],
        "version": version,
        "trace_context": trace_context,
        "priority": priority,
    }


@dataclass(frozen=True)
class RunsPage:
    """Which page ``list_runs`` reads, beside its flow / status / limit filters.

    ``cursor`` is a row ``list_runs`` returned (its ``started_at`` and
    ``run_id`` are what count); ``direction`` ``"older"`` gives the runs after
    it (the next page), ``"newer"`` the ones before it (the previous page),
    both newest first.  ``started_after`` / ``started_before`` bound
    ``started_at`` (``>=`` / ``<``); ``top_level`` leaves sub-flow children out.
    """

    cursor: Mapping[str, Any] | None = None
    direction: Literal["older", "newer"] = "older"
    started_after: datetime | None = None
    started_before: datetime | None = None
    top_level: bool = False


def _plain_json(value: Any) -> Any:
    """A cursor value as JSON holds it: datetimes in ISO 8601, UUIDs as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _list_runs_params(
    flow_slug: str | None, status: str | None, max_rows: int, page: RunsPage
) -> dict[str, Any]:
    cursor = page.cursor
    return {
        "flow_slug": flow_slug,
        "status": status,
        "max_rows": max_rows,
        "cursor": None
        if cursor is None
        else json_text(
            {k: _plain_json(cursor.get(k)) for k in ("started_at", "run_id")}, "the cursor"
        ),
        "direction": page.direction,
        "started_after": page.started_after,
        "started_before": page.started_before,
        "top_level": page.top_level,
    }


def statement(name: str, identifiers: Mapping[str, str] | None = None) -> sql.Composed | str:
    """The text of a named statement, its ``{identifier}`` slots filled."""
    text = QUERIES[name].text
    if identifiers is None:
        return text
    return sql.SQL(text).format(**{k: sql.Identifier(v) for k, v in identifiers.items()})


def connect(conninfo: str, *, autocommit: bool = True, prepare: bool = True) -> Queries:
    """Open a connection (``""``: the libpq environment) and bind the queries to it.

    ``prepare=False`` turns psycopg's prepared statements off, as PgBouncer in
    transaction mode needs.
    """
    with translated():
        if prepare:
            conn: Conn = psycopg.connect(conninfo, autocommit=autocommit)
        else:
            conn = psycopg.connect(conninfo, autocommit=autocommit, prepare_threshold=None)
    return Queries(conn, owned=True)


# --------------------------------------------------------------------------- results


class ClaimedTask(NamedTuple):
    """A task a claim started: what its handler needs and the attempt it runs."""

    run_id: uuid.UUID
    step_slug: str
    task_index: int
    input: str  # JSON text, parsed per task by the worker
    attempt: int


class Notification(NamedTuple):
    """A NOTIFY that arrived: its channel and payload."""

    channel: str
    payload: str


# --------------------------------------------------------------------------- queries


class Queries:
    """The named statements bound to one connection; errors come typed.

    ``owned``: the connection was opened for this object and :meth:`close`
    closes it (an application's connection is left alone).
    """

    def __init__(self, conn: Conn, *, owned: bool = False) -> None:
        self.conn = conn
        self.owned = owned

    # ------------------------------------------------------------ plumbing

    @property
    def closed(self) -> bool:
        return bool(self.conn.closed)

    def close(self) -> None:
        """Close the connection if this object opened it (never raises: it is gone anyway)."""
        if self.owned:
            with suppress(psycopg.Error):
                self.conn.close()

    def _rows(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        not_found: type[NotFound] = NotFound,
        identifiers: Mapping[str, str] | None = None,
    ) -> list[tuple[Any, ...]]:
        with translated(not_found), decoded(name):
            cur = self.conn.execute(statement(name, identifiers), params)
            return cur.fetchall() if cur.description else []

    def _value(self, name: str, params: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        rows = self._rows(name, params, **kw)
        return rows[0][0] if rows else None

    def _dicts(self, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        with translated(), decoded(name), self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(QUERIES[name].text, params)
            return cur.fetchall()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A transaction (a savepoint inside one already open)."""
        with translated(), self.conn.transaction():
            yield

    def execute_script_statement(self, statement: str) -> None:
        """One statement of an install or upgrade script, as it is."""
        with translated():
            self.conn.execute(statement.encode())

    # ------------------------------------------------------------ worker protocol

    def claim_tasks(self, flow_slug: str, qty: int, worker_id: uuid.UUID) -> list[ClaimedTask]:
        rows = self._rows(
            "claim_tasks", {"flow_slug": flow_slug, "qty": qty, "worker_id": worker_id}
        )
        return [ClaimedTask(*row) for row in rows]

    def trace_contexts(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Run id (text) -> the W3C traceparent the run was started with (runs with one only)."""
        return dict(self._rows("trace_contexts", {"run_ids": list(run_ids)}))

    def complete_tasks(
        self,
        run_ids: Sequence[RunId],
        step_slugs: Sequence[str],
        task_indexes: Sequence[int],
        outputs: Sequence[str],
        attempts: Sequence[int | None] | None = None,
    ) -> int:
        """Complete tasks (outputs as JSON text) of the attempts named; how many changed."""
        params = {
            "run_ids": list(run_ids),
            "step_slugs": list(step_slugs),
            "task_indexes": list(task_indexes),
            "outputs": list(outputs),
            "attempts": None if attempts is None else list(attempts),
        }
        return int(self._value("complete_tasks", params) or 0)

    def fail_task(
        self,
        run_id: RunId,
        step_slug: str,
        task_index: int,
        error: str,
        attempt: int | None = None,
        *,
        retry: bool = True,
        retry_delay: float | None = None,
    ) -> bool:
        params = {
            "run_id": run_id,
            "step_slug": step_slug,
            "task_index": task_index,
            "error_message": error,
            "attempt": attempt,
            "retry": retry,
            "retry_delay": retry_delay,
        }
        return bool(self._value("fail_task", params))

    def fail_tasks(
        self,
        run_ids: Sequence[RunId],
        step_slugs: Sequence[str],
        task_indexes: Sequence[int],
        errors: Sequence[str],
        attempts: Sequence[int | None],
        retries: Sequence[bool],
        retry_delays: Sequence[float | None],
    ) -> int:
        """Record failed attempts of many tasks; how many counted."""
        params = {
            "run_ids": list(run_ids),
            "step_slugs": list(step_slugs),
            "task_indexes": list(task_indexes),
            "error_messages": list(errors),
            "attempts": list(attempts),
            "retries": list(retries),
            "retry_delays": list(retry_delays),
        }
        return int(self._value("fail_tasks", params) or 0)

    def extend_leases(
        self,
        run_ids: Sequence[RunId],
        step_slugs: Sequence[str],
        task_indexes: Sequence[int],
        attempts: Sequence[int],
    ) -> set[tuple[str, str, int]]:
        """Renew leases; the (run_id, step_slug, task_index) whose lease the caller holds."""
        params = {
            "run_ids": list(run_ids),
            "step_slugs": list(step_slugs),
            "task_indexes": list(task_indexes),
            "attempts": list(attempts),
        }
        return {(str(r[0]), str(r[1]), int(r[2])) for r in self._rows("extend_leases", params)}

    def register_worker(
        self, worker_id: uuid.UUID, flows: Sequence[str], hostname: str, pid: int
    ) -> None:
        params = {"worker_id": worker_id, "flows": list(flows), "hostname": hostname, "pid": pid}
        self._rows("register_worker", params)

    def worker_heartbeat(self, worker_id: uuid.UUID) -> bool:
        return bool(self._value("worker_heartbeat", {"worker_id": worker_id}))

    def stop_worker(self, worker_id: uuid.UUID) -> None:
        self._rows("stop_worker", {"worker_id": worker_id})

    def worker_idle(self, flows: Sequence[str], idle: bool) -> None:
        self._rows("worker_idle", {"flows": list(flows), "idle": idle})

    def flow_shape(self, flow_slug: str) -> dict[str, Any] | None:
        shape: dict[str, Any] | None = self._value("flow_shape", {"flow_slug": flow_slug})
        return shape

    def list_flows(self) -> list[dict[str, Any]]:
        """Every flow definition (``pgflow.list_flows``)."""
        return [row[0] for row in self._rows("list_flows")]

    def set_current_version(self, flow_name: str, version: int | None) -> int:
        params = {"flow_name": flow_name, "version": version}
        return int(self._value("set_current_version", params, not_found=FlowNotFound))

    def pause_flow(self, flow_slug: str) -> bool:
        """Stop claims of the flow's tasks (``pgflow.pause_flow``); true when it was not paused."""
        return bool(self._value("pause_flow", {"flow_slug": flow_slug}, not_found=FlowNotFound))

    def resume_flow(self, flow_slug: str) -> bool:
        """Let claims take the flow's tasks again (``pgflow.resume_flow``); true if it was."""
        return bool(self._value("resume_flow", {"flow_slug": flow_slug}, not_found=FlowNotFound))

    def run_input(self, run_id: RunId) -> Any:
        return self._value("run_input", {"run_id": run_id})

    def listen_tasks(self) -> None:
        self._rows("listen_tasks")

    def listen_channel(self, channel: str) -> None:
        self._rows("listen_channel", identifiers={"channel": channel})

    def unlisten_channel(self, channel: str) -> None:
        self._rows("unlisten_channel", identifiers={"channel": channel})

    def notify_channel(self, channel: str, payload: str) -> None:
        self._rows("notify_channel", {"channel": channel, "payload": payload})

    def notifies(self, timeout: float, stop_after: int | None = None) -> list[Notification]:
        """Notifications arriving within ``timeout`` seconds (at most ``stop_after``)."""
        with translated():
            return [
                Notification(n.channel, n.payload)
                for n in self.conn.notifies(timeout=timeout, stop_after=stop_after)
            ]

    # ------------------------------------------------------------ runs

    def start_flow(
        self,
        flow_slug: str,
        input: Any,
        run_id: RunId | None = None,
        version: int | None = None,
        trace_context: str | None = None,
        priority: int = 0,
    ) -> dict[str, Any]:
        """Start a run; the run row as a dict.  ``input`` is any JSON value;
        ``trace_context`` a W3C traceparent its task spans join; ``priority``
        orders claims (higher first)."""
        params = {
            "flow_slug": flow_slug,
            "input": json_text(input),
            "run_id": run_id,
            "version": version,
            "trace_context": trace_context,
            "priority": priority,
        }
        run: dict[str, Any] = self._value("start_flow", params, not_found=FlowNotFound)
        return run

    def start_flows(
        self,
        flow_slug: str,
        inputs: Sequence[Any],
        run_ids: Sequence[RunId | None] | None = None,
        version: int | None = None,
        trace_context: str | None = None,
        priority: int = 0,
    ) -> list[dict[str, Any]]:
        """Start one run per input in one call; the run rows, in the order of ``inputs``."""
        params = _start_flows_params(flow_slug, inputs, run_ids, version, trace_context, priority)
        rows = self._rows("start_flows", params, not_found=FlowNotFound)
        return [row[0] for row in rows]

    def get_run(self, run_id: RunId) -> dict[str, Any] | None:
        run: dict[str, Any] | None = self._value("get_run", {"run_id": run_id})
        return run

    def get_run_text(self, run_id: RunId) -> str | None:
        """``get_run`` as JSON text, not decoded (any depth)."""
        text: str | None = self._value("get_run_text", {"run_id": run_id})
        return text

    def run_summary(self, run_id: RunId) -> dict[str, Any] | None:
        """``get_run`` without the input and the outputs (run's and steps')."""
        run: dict[str, Any] | None = self._value("run_summary", {"run_id": run_id})
        return run

    def flow_exists(self, flow_slug: str) -> bool:
        """Whether the flow exists (needs ``flow_shape``: the owner, worker roles)."""
        return bool(self._value("flow_exists", {"flow_slug": flow_slug}))

    def list_runs(
        self, flow_slug: str | None, status: str | None, max_rows: int, page: RunsPage | None = None
    ) -> list[dict[str, Any]]:
        params = _list_runs_params(flow_slug, status, max_rows, page or RunsPage())
        return [row[0] for row in self._rows("list_runs", params)]

    def listen_events(self) -> None:
        self._rows("listen_events")

    def unlisten_events(self) -> None:
        self._rows("unlisten_events")

    def subscribe_events(self, listening: bool) -> None:
        self._rows("subscribe_events", {"listening": listening})

    # ------------------------------------------------------------ operations

    def cancel_run(self, run_id: RunId) -> tuple[dict[str, Any], list[str]]:
        """Cancel a run; the run row and the NOTICEs the call raised (already finished)."""
        notices: list[str] = []

        def on_notice(diag: psycopg.errors.Diagnostic) -> None:
            notices.append(diag.message_primary or "")

        self.conn.add_notice_handler(on_notice)
        try:
            run: dict[str, Any] = self._value(
                "cancel_run", {"run_id": run_id}, not_found=RunNotFound
            )
        finally:
            self.conn.remove_notice_handler(on_notice)
        return run, notices

    def retry_run(self, run_id: RunId) -> dict[str, Any]:
        run: dict[str, Any] = self._value("retry_run", {"run_id": run_id}, not_found=RunNotFound)
        return run

    def prune_runs(self, older_than: timedelta, batch_size: int) -> int:
        params = {"older_than": older_than, "batch_size": batch_size}
        return int(self._value("prune_runs", params) or 0)

    def emit_event(self, event_name: str, key: Any, payload: Any, event_id: str | None) -> int:
        """Complete the steps waiting for an event and key; how many (0: kept or repeated id)."""
        params = {
            "event_name": event_name,
            "key": json_text(key),
            "payload": json_text(payload),
            "event_id": event_id,
        }
        return int(self._value("emit_event", params) or 0)

    def expire_waits(self, max_rows: int = 1000) -> int:
        """The maintenance call: time out waits past their deadline; how many timed out."""
        return int(self._value("expire_waits", {"max_rows": max_rows}) or 0)

    def run_stats(self, flow_slug: str | None) -> list[dict[str, Any]]:
        return self._dicts("run_stats", {"flow_slug": flow_slug})

    def step_stats(self, flow_slug: str | None) -> list[dict[str, Any]]:
        return self._dicts("step_stats", {"flow_slug": flow_slug})

    def task_counts(self, flow_slug: str | None) -> dict[str, int]:
        rows = self._dicts("task_counts", {"flow_slug": flow_slug})
        return {k: int(v) for k, v in rows[0].items()}

    # ------------------------------------------------------------ install / upgrade

    def extension_version(self) -> str | None:
        value = self._value("extension_version")
        return None if value is None else str(value)

    def plain_version(self) -> str | None:
        """The latest version a plain install recorded (``None``: no plain install)."""
        if not self._value("has_version_table"):
            return None
        value = self._value("plain_version")
        return None if value is None else str(value)

    def available_versions(self) -> list[str]:
        return [str(row[0]) for row in self._rows("available_versions")]

    def schema_relations(self) -> int:
        return int(self._value("schema_relations") or 0)

    def update_path(self, source: str, target: str) -> str | None:
        value = self._value("update_path", {"source": source, "target": target})
        return None if value is None else str(value)

    def schema_objects(self) -> dict[tuple[str, str], str]:
        """What schema pgflow holds: (kind, name) -> a digest of its definition."""
        with self.transaction():
            self._rows("catalog_search_path")
            rows = self._rows("schema_objects")
        return {(str(k), str(n)): str(d) for k, n, d in rows}

    def install_lock(self) -> None:
        self._rows("install_lock")

    def plain_script_settings(self) -> None:
        """What CREATE EXTENSION sets around a script, for a plain install's transaction."""
        for name in ("no_function_body_checks", "quiet_notices"):
            self._rows(name)

    def plain_search_path(self) -> None:
        self._rows("plain_search_path")

    def record_version(self, version: str, script: str) -> None:
        for name in ("create_version_table", "comment_version_table", "grant_version_table"):
            self._rows(name)
        self._rows("record_version", {"version": version, "script": script})


#: A function opening a fresh :class:`Queries` (the worker's reconnects).
Connector = Callable[[], Queries]


# --------------------------------------------------------------------------- async


async def async_connect(conninfo: str, *, autocommit: bool = True) -> AsyncQueries:
    """Open an ``AsyncConnection`` (``""``: the libpq environment) and bind the queries to it."""
    with translated():
        conn: AsyncConn = await psycopg.AsyncConnection.connect(conninfo, autocommit=autocommit)
    return AsyncQueries(conn, owned=True)


class AsyncQueries:
    """:class:`Queries` for an ``AsyncConnection``: the same statements, the same errors.

    It has the statements an application sends (runs, operations, events,
    statistics); the worker protocol and install/upgrade stay synchronous.
    """

    def __init__(self, conn: AsyncConn, *, owned: bool = False) -> None:
        self.conn = conn
        self.owned = owned

    @property
    def closed(self) -> bool:
        return bool(self.conn.closed)

    async def close(self) -> None:
        """Close the connection if this object opened it (never raises)."""
        if self.owned:
            with suppress(psycopg.Error):
                await self.conn.close()

    async def _rows(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        not_found: type[NotFound] = NotFound,
    ) -> list[tuple[Any, ...]]:
        with translated(not_found), decoded(name):
            cur = await self.conn.execute(statement(name), params)
            return await cur.fetchall() if cur.description else []

    async def _value(self, name: str, params: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        rows = await self._rows(name, params, **kw)
        return rows[0][0] if rows else None

    async def _dicts(self, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        with translated(), decoded(name):
            async with self.conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(QUERIES[name].text, params)
                return await cur.fetchall()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """A transaction (a savepoint inside one already open)."""
        with translated():
            async with self.conn.transaction():
                yield

    # ------------------------------------------------------------ runs

    async def start_flow(
        self,
        flow_slug: str,
        input: Any,
        run_id: RunId | None = None,
        version: int | None = None,
        trace_context: str | None = None,
        priority: int = 0,
    ) -> dict[str, Any]:
        params = {
            "flow_slug": flow_slug,
            "input": json_text(input),
            "run_id": run_id,
            "version": version,
            "trace_context": trace_context,
            "priority": priority,
        }
        run: dict[str, Any] = await self._value("start_flow", params, not_found=FlowNotFound)
        return run

    async def start_flows(
        self,
        flow_slug: str,
        inputs: Sequence[Any],
        run_ids: Sequence[RunId | None] | None = None,
        version: int | None = None,
        trace_context: str | None = None,
        priority: int = 0,
    ) -> list[dict[str, Any]]:
        params = _start_flows_params(flow_slug, inputs, run_ids, version, trace_context, priority)
        rows = await self._rows("start_flows", params, not_found=FlowNotFound)
        return [row[0] for row in rows]

    async def get_run(self, run_id: RunId) -> dict[str, Any] | None:
        run: dict[str, Any] | None = await self._value("get_run", {"run_id": run_id})
        return run

    async def list_runs(
        self, flow_slug: str | None, status: str | None, max_rows: int, page: RunsPage | None = None
    ) -> list[dict[str, Any]]:
        params = _list_runs_params(flow_slug, status, max_rows, page or RunsPage())
        return [row[0] for row in await self._rows("list_runs", params)]

    async def list_flows(self) -> list[dict[str, Any]]:
        return [row[0] for row in await self._rows("list_flows")]

    async def set_current_version(self, flow_name: str, version: int | None) -> int:
        params = {"flow_name": flow_name, "version": version}
        return int(await self._value("set_current_version", params, not_found=FlowNotFound))

    async def pause_flow(self, flow_slug: str) -> bool:
        params = {"flow_slug": flow_slug}
        return bool(await self._value("pause_flow", params, not_found=FlowNotFound))

    async def resume_flow(self, flow_slug: str) -> bool:
        params = {"flow_slug": flow_slug}
        return bool(await self._value("resume_flow", params, not_found=FlowNotFound))

    async def flow_exists(self, flow_slug: str) -> bool:
        return bool(await self._value("flow_exists", {"flow_slug": flow_slug}))

    async def listen_events(self) -> None:
        await self._rows("listen_events")

    async def unlisten_events(self) -> None:
        await self._rows("unlisten_events")

    async def subscribe_events(self, listening: bool) -> None:
        await self._rows("subscribe_events", {"listening": listening})

    async def notifies(self, timeout: float, stop_after: int | None = None) -> list[Notification]:
        """Notifications arriving within ``timeout`` seconds (at most ``stop_after``)."""
        with translated():
            return [
                Notification(n.channel, n.payload)
                async for n in self.conn.notifies(timeout=timeout, stop_after=stop_after)
            ]

    # ------------------------------------------------------------ operations

    async def cancel_run(self, run_id: RunId) -> tuple[dict[str, Any], list[str]]:
        """Cancel a run; the run row and the NOTICEs the call raised (already finished)."""
        notices: list[str] = []

        def on_notice(diag: psycopg.errors.Diagnostic) -> None:
            notices.append(diag.message_primary or "")

        self.conn.add_notice_handler(on_notice)
        try:
            run: dict[str, Any] = await self._value(
                "cancel_run", {"run_id": run_id}, not_found=RunNotFound
            )
        finally:
            self.conn.remove_notice_handler(on_notice)
        return run, notices

    async def retry_run(self, run_id: RunId) -> dict[str, Any]:
        run: dict[str, Any] = await self._value(
            "retry_run", {"run_id": run_id}, not_found=RunNotFound
        )
        return run

    async def prune_runs(self, older_than: timedelta, batch_size: int) -> int:
        params = {"older_than": older_than, "batch_size": batch_size}
        return int(await self._value("prune_runs", params) or 0)

    async def emit_event(
        self, event_name: str, key: Any, payload: Any, event_id: str | None
    ) -> int:
        params = {
            "event_name": event_name,
            "key": json_text(key),
            "payload": json_text(payload),
            "event_id": event_id,
        }
        return int(await self._value("emit_event", params) or 0)

    async def run_stats(self, flow_slug: str | None) -> list[dict[str, Any]]:
        return await self._dicts("run_stats", {"flow_slug": flow_slug})

    async def step_stats(self, flow_slug: str | None) -> list[dict[str, Any]]:
        return await self._dicts("step_stats", {"flow_slug": flow_slug})

    async def task_counts(self, flow_slug: str | None) -> dict[str, int]:
        rows = await self._dicts("task_counts", {"flow_slug": flow_slug})
        return {k: int(v) for k, v in rows[0].items()}
