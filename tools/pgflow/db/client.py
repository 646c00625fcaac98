"""Starting runs, following them and operating on them, from Python.

:class:`Client` (and :class:`AsyncClient`, its ``asyncio`` twin) is what an
application uses: made from a conninfo, from a psycopg connection of the
application's (its calls then join that connection's transaction) or from a
``psycopg_pool`` pool (each call borrows a connection), it starts runs and
returns a :class:`RunHandle` to wait for them, reads and operates on runs, and
streams the run events of channel ``pgflow_events``
(docs/reference/python-api.md, docs/howto/applications.md).

The module functions below it (``start_flow``, ``get_run``, ``wait_for_run``,
...) take a psycopg connection or a :class:`~pgflow.db.queries.Queries`; the
CLI and the demo use them.  Everything goes through the named statements of
``queries.sql``; none reads tables.  Errors come as the typed errors of
:mod:`pgflow.errors` (``RunNotFound``, ``FlowNotFound``, ...).

Waiting and events need an autocommit connection that is not inside a
transaction (they LISTEN): a client made from a conninfo opens a dedicated
connection for each wait or event stream; one made from a pool borrows a
connection from it for as long as it waits; one made from a connection waits
on that connection, which must be in autocommit mode.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    ExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast

import psycopg
from psycopg.pq import TransactionStatus

from pgflow.db.queries import (
    AsyncQueries,
    Queries,
    RunsPage,
    async_connect,
    connect,
    translated,
)
from pgflow.errors import (
    InvalidArgument,
    PgflowError,
    RunCancelled,
    RunFailed,
    RunNotFound,
    RunTimeoutError,
)
from pgflow.spec.dsl import Flow
from pgflow.spec.model import definition_slug

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

__all__ = [
    "FINISHED",
    "AsyncClient",
    "AsyncEvents",
    "AsyncRunHandle",
    "CancelResult",
    "Client",
    "Event",
    "Events",
    "RunHandle",
    "RunTimeoutError",
    "Stats",
    "cancel_run",
    "emit_event",
    "flow_exists",
    "get_run",
    "get_run_text",
    "list_runs",
    "prune_runs",
    "retry_run",
    "run_output",
    "run_summary",
    "start_flow",
    "start_flows",
    "stats",
    "wait_for_run",
]

#: The statuses a run ends in.
FINISHED: Final = frozenset({"completed", "failed", "cancelled"})

#: A connection, or the queries bound to one.
Database = Queries | psycopg.Connection[Any]
RunId = uuid.UUID | str
#: A flow as the client methods take it: its slug, or the :class:`~pgflow.Flow` itself.
FlowRef = str | Flow

#: Longest single wait for a notification (a wait or stream checks its deadline this often).
_NOTIFY_SLICE: Final = 1.0


def queries_of(db: Database) -> Queries:
    """The queries bound to ``db`` (a connection is wrapped, not closed later)."""
    return db if isinstance(db, Queries) else Queries(db)


# --------------------------------------------------------------------------- trace context

_NO_OTEL: Final = object()
_otel: Any = None  # the opentelemetry modules once looked up; _NO_OTEL when absent


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current OpenTelemetry span; ``None`` without one.

    ``None`` too when ``opentelemetry-api`` is not installed (looked up once).
    """
    global _otel
    if _otel is None:
        try:
            from opentelemetry import trace  # noqa: PLC0415 - the optional otel extra
            from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
                TraceContextTextMapPropagator,
            )
        except ImportError:
            _otel = _NO_OTEL
        else:
            _otel = (trace, TraceContextTextMapPropagator())
    if _otel is _NO_OTEL:
        return None
    trace, propagator = _otel
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagator.inject(carrier)
    return carrier.get("traceparent")


# --------------------------------------------------------------------------- module functions


def start_flow(
    db: Database,
    flow_slug: str,
    input: Any,
    run_id: RunId | None = None,
    *,
    version: int | None = None,
    priority: int = 0,
) -> dict[str, Any]:
    """Start a run (idempotent when ``run_id`` is given); returns the run as a dict."""
    return queries_of(db).start_flow(flow_slug, input, run_id, version, priority=priority)


def start_flows(
    db: Database,
    flow_slug: str,
    inputs: Iterable[Any],
    run_ids: Iterable[RunId | None] | None = None,
    *,
    version: int | None = None,
    priority: int = 0,
) -> list[dict[str, Any]]:
    """Start one run per input in one call (``pgflow.start_flows``); the runs as dicts,
    in the order of ``inputs`` (idempotent per run id when ``run_ids`` is given)."""
    ids = None if run_ids is None else list(run_ids)
    return queries_of(db).start_flows(flow_slug, list(inputs), ids, version, priority=priority)


def get_run(db: Database, run_id: RunId) -> dict[str, Any] | None:
    """The run with its steps as one document (``pgflow.get_run``); None if unknown."""
    return queries_of(db).get_run(run_id)


def get_run_text(db: Database, run_id: RunId) -> str | None:
    """``get_run`` as JSON text, as PostgreSQL prints it (any depth); None if unknown."""
    return queries_of(db).get_run_text(run_id)


def run_summary(db: Database, run_id: RunId) -> dict[str, Any] | None:
    """``get_run`` without the input and outputs (for runs too deep for Python's json)."""
    return queries_of(db).run_summary(run_id)


def _check_listening(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Refuse a connection LISTEN would not work on (not autocommit, or in a transaction)."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise PgflowError(
            "cannot wait for a run inside a transaction: a run started in it is not"
            " visible to workers until it commits; commit first, then wait"
        )
    if not conn.autocommit:
        raise PgflowError(
            "waiting for runs needs an autocommit connection (it uses LISTEN):"
            " give the client a conninfo or a pool, or a connection with autocommit=True"
        )


def _run_event(payload: str, run_key: str) -> bool:
    """Whether a ``pgflow_events`` payload is a run event of this run."""
    try:
        event = json.loads(payload)
    except ValueError:
        return False
    return (
        isinstance(event, dict)
        and event.get("run_id") == run_key
        and str(event.get("event", "")).startswith("run:")
    )


def _timed_out(run_key: str, status: str, timeout: float | None) -> RunTimeoutError:
    return RunTimeoutError(f"run {run_key} is still {status} after {timeout:g} s")


def wait_for_run(db: Database, run_id: RunId, timeout: float | None) -> dict[str, Any]:
    """Block until the run is completed, failed or cancelled; returns ``get_run``.

    Waits on ``LISTEN pgflow_events`` with ``pgflow.listen_events()`` (no
    polling; events are only sent while a session subscribes): the run's status is read
    once after LISTEN, then again only when an event for this run arrives.
    Raises :class:`RunTimeoutError` after ``timeout`` seconds (``None``: no
    limit) and :class:`~pgflow.errors.RunNotFound` for an unknown run.  The
    connection must be in autocommit mode and not inside a transaction.
    """
    queries = queries_of(db)
    _check_listening(queries.conn)
    run_key = str(run_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    queries.listen_events()
    queries.subscribe_events(True)
    try:
        run = get_run(queries, run_key)
        if run is None:
            raise RunNotFound(f"run {run_key} does not exist", sqlstate="42704")
        while run["status"] not in FINISHED:
            left = _NOTIFY_SLICE if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise _timed_out(run_key, run["status"], timeout)
            # events that arrived during get_run wait in psycopg's backlog
            # and come out of notifies() first
            notes = queries.notifies(timeout=min(left, _NOTIFY_SLICE), stop_after=1)
            if any(_run_event(note.payload, run_key) for note in notes):
                run = get_run(queries, run_key) or run
        return run
    finally:
        queries.subscribe_events(False)
        queries.unlisten_events()


async def async_wait_for_run(
    queries: AsyncQueries, run_id: RunId, timeout: float | None
) -> dict[str, Any]:
    """:func:`wait_for_run` on an ``AsyncConnection``."""
    _check_listening(queries.conn)
    run_key = str(run_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    await queries.listen_events()
    await queries.subscribe_events(True)
    try:
        run = await queries.get_run(run_key)
        if run is None:
            raise RunNotFound(f"run {run_key} does not exist", sqlstate="42704")
        while run["status"] not in FINISHED:
            left = _NOTIFY_SLICE if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise _timed_out(run_key, run["status"], timeout)
            notes = await queries.notifies(timeout=min(left, _NOTIFY_SLICE), stop_after=1)
            if any(_run_event(note.payload, run_key) for note in notes):
                run = await queries.get_run(run_key) or run
        return run
    finally:
        await queries.subscribe_events(False)
        await queries.unlisten_events()


def list_runs(
    db: Database,
    flow_slug: str | None = None,
    status: str | None = None,
    limit: int = 20,
    *,
    top_level: bool = False,
    cursor: Mapping[str, Any] | None = None,
    direction: Literal["older", "newer"] = "older",
    started_after: datetime | None = None,
    started_before: datetime | None = None,
) -> list[dict[str, Any]]:
    """A page of runs, newest first: ids, status and times (never inputs or outputs).

    Pass the last row of a page as ``cursor`` for the next (older) page, the
    first one with ``direction="newer"`` for the previous page.
    """
    return queries_of(db).list_runs(
        flow_slug,
        status,
        limit,
        RunsPage(cursor, direction, started_after, started_before, top_level),
    )


def flow_exists(db: Database, flow_slug: str) -> bool:
    """Whether a flow exists (calls ``pgflow.flow_shape``: the owner and worker roles may)."""
    return queries_of(db).flow_exists(flow_slug)


@dataclass(frozen=True)
class CancelResult:
    """What ``cancel_run`` did: the run afterwards, and whether it was already finished."""

    run: dict[str, Any]
    already_finished: bool


def cancel_run(db: Database, run_id: RunId) -> CancelResult:
    """Cancel a running run; a finished run is left as it is (not an error)."""
    run, notices = queries_of(db).cancel_run(run_id)
    return CancelResult(run, bool(notices))


def emit_event(
    db: Database, event: str, key: Any, payload: Any = None, event_id: str | None = None
) -> int:
    """Complete the steps waiting for ``event`` with ``key``; how many (see
    :meth:`Client.emit_event`)."""
    return queries_of(db).emit_event(event, key, payload, event_id)


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


# --------------------------------------------------------------------------- shared pieces


def as_run_id(value: RunId) -> uuid.UUID:
    """A run id as a UUID (a string that is not one is an :class:`InvalidArgument`)."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidArgument(f"run id {value!r} is not a UUID", sqlstate="22P02") from None


def slug_of(flow: FlowRef) -> str:
    """The slug of a flow given by slug or as a :class:`~pgflow.Flow`."""
    if isinstance(flow, Flow):
        # a Flow object is one definition: its version, not the flow's current one
        return definition_slug(flow.slug, flow.version)
    if isinstance(flow, str):
        return flow
    raise TypeError(f"a flow is a slug or a pgflow.Flow, got {type(flow).__name__}")


def run_output(run: Mapping[str, Any]) -> Any:
    """The output of a finished run (``get_run``'s document).

    Raises :class:`~pgflow.errors.RunFailed` (with the failing step and its
    error) for a failed run and :class:`~pgflow.errors.RunCancelled` for a
    cancelled one.
    """
    status = run.get("status")
    run_key = run.get("run_id")
    if status == "completed":
        return run.get("output")
    if status == "failed":
        failed = next((s for s in run.get("steps") or () if s.get("status") == "failed"), None)
        step = None if failed is None else str(failed["step_slug"])
        error = str((failed or {}).get("error_message") or run.get("error_message") or "")
        where = f' at step "{step}"' if step is not None else ""
        raise RunFailed(f"run {run_key} failed{where}: {error}", run, step, error)
    if status == "cancelled":
        raise RunCancelled(f"run {run_key} was cancelled", run)
    raise PgflowError(f"run {run_key} has not finished (status {status})")


@dataclass(frozen=True)
class Event:
    """One notification of channel ``pgflow_events``.

    ``event`` is ``run:started``, ``run:completed``, ``run:failed``,
    ``run:cancelled``, ``run:retried``, or ``step:<slug>:<status>`` for flows
    with ``step_events``; ``step_slug`` is set for step events only.  Events
    carry ids and statuses, never inputs or outputs: read the run with
    ``get_run`` for those.
    """

    event: str
    flow_slug: str
    run_id: uuid.UUID
    status: str
    step_slug: str | None = None

    @property
    def kind(self) -> Literal["run", "step"]:
        """``"run"`` or ``"step"``."""
        return "step" if self.event.startswith("step:") else "run"

    @classmethod
    def parse(cls, payload: str) -> Event | None:
        """The event a payload describes (``None`` for one that is not pgflow's)."""
        try:
            doc = json.loads(payload)
            return cls(
                event=str(doc["event"]),
                flow_slug=str(doc["flow_slug"]),
                run_id=uuid.UUID(str(doc["run_id"])),
                status=str(doc["status"]),
                step_slug=None if doc.get("step_slug") is None else str(doc["step_slug"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class _Filter:
    flow_slug: str | None
    run_id: uuid.UUID | None
    timeout: float | None

    def matches(self, event: Event) -> bool:
        return (self.flow_slug is None or event.flow_slug == self.flow_slug) and (
            self.run_id is None or event.run_id == self.run_id
        )


def _filter(flow: FlowRef | None, run_id: RunId | None, timeout: float | None) -> _Filter:
    return _Filter(
        None if flow is None else slug_of(flow),
        None if run_id is None else as_run_id(run_id),
        timeout,
    )


def _pool_class(name: str) -> type | None:
    """A class of psycopg_pool when the application has imported it (never imports it)."""
    module = sys.modules.get("psycopg_pool")
    found = getattr(module, name, None) if module is not None else None
    return found if isinstance(found, type) else None


def _closed() -> PgflowError:
    return PgflowError("the pgflow client is closed")


# --------------------------------------------------------------------------- sync sources


class _Source:
    """Where a :class:`Client` gets its connections."""

    def queries(self) -> AbstractContextManager[Queries]:
        raise NotImplementedError

    def listening(self) -> AbstractContextManager[Queries]:
        """An autocommit connection outside any transaction, for LISTEN."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Conninfo(_Source):
    """One connection of the client's own, opened on first use (again after it broke)."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.shared: Queries | None = None
        self.lock = threading.Lock()
        self.closed = False

    @contextmanager
    def queries(self) -> Iterator[Queries]:
        with self.lock:
            if self.closed:
                raise _closed()
            if self.shared is None or self.shared.closed:
                self.shared = connect(self.conninfo)
            shared = self.shared
        yield shared

    @contextmanager
    def listening(self) -> Iterator[Queries]:
        if self.closed:
            raise _closed()
        dedicated = connect(self.conninfo)
        try:
            yield dedicated
        finally:
            dedicated.close()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self.shared is not None:
                self.shared.close()
                self.shared = None


class _Connection(_Source):
    """The application's connection: used as it is, never closed."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.bound = Queries(conn)

    @contextmanager
    def queries(self) -> Iterator[Queries]:
        yield self.bound

    @contextmanager
    def listening(self) -> Iterator[Queries]:
        _check_listening(self.bound.conn)
        yield self.bound


class _Pool(_Source):
    """An application's pool: each call borrows a connection and gives it back."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    @contextmanager
    def queries(self) -> Iterator[Queries]:
        with translated(), self.pool.connection() as conn:
            yield Queries(conn)

    @contextmanager
    def listening(self) -> Iterator[Queries]:
        with translated(), self.pool.connection() as conn:
            was = conn.autocommit
            conn.autocommit = True
            try:
                yield Queries(conn)
            finally:
                if not conn.closed:
                    conn.autocommit = was


def _source(db: object) -> _Source:
    if isinstance(db, str):
        return _Conninfo(db)
    if isinstance(db, psycopg.Connection):
        return _Connection(db)
    pool = _pool_class("ConnectionPool")
    if pool is not None and isinstance(db, pool):
        return _Pool(cast("ConnectionPool[Any]", db))
    if isinstance(db, psycopg.AsyncConnection) or (
        (apool := _pool_class("AsyncConnectionPool")) is not None and isinstance(db, apool)
    ):
        raise TypeError("pgflow.Client is synchronous: use pgflow.AsyncClient for asyncio")
    raise TypeError(
        "pgflow.Client takes a conninfo string, a psycopg Connection or a"
        f" psycopg_pool ConnectionPool, got {type(db).__name__}"
    )


# --------------------------------------------------------------------------- sync client


class RunHandle:
    """A run started (or named) through a :class:`Client`: wait for it, get its result.

    ``run_id`` identifies the run; ``run`` is the ``pgflow.runs`` row that
    :meth:`Client.start` got back (``None`` for a handle made from an id).
    """

    def __init__(
        self, client: Client, run_id: uuid.UUID, run: dict[str, Any] | None = None
    ) -> None:
        self._client = client
        self.run_id = run_id
        self.run = run

    def __repr__(self) -> str:
        return f"RunHandle({str(self.run_id)!r})"

    def get(self) -> dict[str, Any]:
        """The run now, as ``pgflow.get_run`` describes it (``RunNotFound`` if it is gone)."""
        run = self._client.get_run(self.run_id)
        if run is None:
            raise RunNotFound(f"run {self.run_id} does not exist", sqlstate="42704")
        return run

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the run has finished; the finished run as ``get_run`` describes it.

        Raises :class:`~pgflow.errors.RunTimeoutError` after ``timeout``
        seconds (``None``: no limit); the run itself goes on.
        """
        with self._client._source.listening() as queries:
            return wait_for_run(queries, self.run_id, timeout)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run and return its output (``{leaf_step: output, ...}``).

        Raises :class:`~pgflow.errors.RunFailed` (``step_slug``,
        ``error_message``) if it failed, :class:`~pgflow.errors.RunCancelled`
        if it was cancelled, :class:`~pgflow.errors.RunTimeoutError` on timeout.
        """
        return run_output(self.wait(timeout))

    def cancel(self) -> CancelResult:
        """Cancel the run (:meth:`Client.cancel`)."""
        return self._client.cancel(self.run_id)


class Events:
    """Events of channel ``pgflow_events`` as an iterator (see :meth:`Client.events`).

    The subscription starts when the stream is entered (``with``) or first
    iterated, and ends with :meth:`close` (or the ``with`` block, or the end
    of ``timeout``).
    """

    def __init__(self, client: Client, where: _Filter) -> None:
        self._client = client
        self._where = where
        self._stack: ExitStack | None = None
        self._queries: Queries | None = None
        self._pending: deque[Event] = deque()
        self._deadline: float | None = None
        self._done = False

    def __enter__(self) -> Events:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Events:
        return self

    def open(self) -> None:
        """Subscribe now (LISTEN); iterating does it when it has not been done."""
        if self._queries is not None or self._done:
            return
        stack = ExitStack()
        try:
            queries = stack.enter_context(self._client._source.listening())
            queries.listen_events()
            stack.callback(queries.unlisten_events)
            queries.subscribe_events(True)
            stack.callback(queries.subscribe_events, False)
        except BaseException:
            stack.close()
            raise
        self._stack, self._queries = stack, queries
        if self._where.timeout is not None:
            self._deadline = time.monotonic() + self._where.timeout

    def __next__(self) -> Event:
        self.open()
        while not self._pending:
            if self._queries is None:
                raise StopIteration
            left = _NOTIFY_SLICE if self._deadline is None else self._deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise StopIteration
            notes = self._queries.notifies(timeout=min(left, _NOTIFY_SLICE), stop_after=1)
            for note in notes:
                event = Event.parse(note.payload)
                if event is not None and self._where.matches(event):
                    self._pending.append(event)
        return self._pending.popleft()

    def close(self) -> None:
        """End the subscription and give the connection back (idempotent)."""
        self._done = True
        stack, self._stack, self._queries = self._stack, None, None
        if stack is not None:
            stack.close()


class Client:
    """Start, follow and operate on pgflow runs from an application.

    ``db`` is a libpq conninfo (``""``: the ``PG*`` environment), a psycopg
    ``Connection`` of the application's, or a ``psycopg_pool.ConnectionPool``:

    * conninfo: the client opens one autocommit connection on first use
      (each call is its own transaction) and closes it in :meth:`close`;
    * connection: every call runs on it as it is -- inside the application's
      transaction when one is open (or begun by psycopg when the connection
      is not in autocommit mode: commit it yourself); never closed;
    * pool: every call borrows a connection (committed when given back).

    Waiting (:meth:`RunHandle.wait`, :meth:`RunHandle.result`) and
    :meth:`events` LISTEN: on a dedicated connection opened from the conninfo,
    on one connection borrowed from the pool for as long as they wait, or on
    the application's connection, which must then be in autocommit mode.

    A context manager (``with pgflow.Client(dsn) as client:``), also usable
    without ``with`` (call :meth:`close`).
    """

    def __init__(self, db: str | psycopg.Connection[Any] | ConnectionPool[Any] = "") -> None:
        self._source = _source(db)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection the client opened (an application's connection or pool stays)."""
        self._source.close()

    # ------------------------------------------------------------ runs

    def start(
        self,
        flow: FlowRef,
        input: Any,
        run_id: RunId | None = None,
        *,
        version: int | None = None,
        trace_context: str | None = None,
        priority: int = 0,
    ) -> RunHandle:
        """Start a run of ``flow`` with ``input`` (any JSON value); a handle to it.

        A flow name starts its current version (pinned, else the highest);
        ``version`` picks one, and a :class:`~pgflow.Flow` object starts the
        version it defines.  With ``run_id`` the start is idempotent: a run of
        the same flow under that id is returned as it is.  ``priority`` (any
        integer, default 0) orders the claims: workers take the tasks of
        higher-priority runs first, then the oldest; it does not shorten
        delays nor pass concurrency limits.  ``trace_context``
        is a W3C ``traceparent`` the run's task spans join (a tracing worker
        makes them its children); by default the current OpenTelemetry
        span's, when ``opentelemetry-api`` is installed and a span is active.
        Raises :class:`~pgflow.errors.FlowNotFound` for an unknown flow or
        version, :class:`~pgflow.errors.RunIdConflict` when the id belongs to
        a run of another flow, :class:`~pgflow.errors.InvalidArgument` for a
        ``trace_context`` that is not a traceparent.
        """
        rid = None if run_id is None else as_run_id(run_id)
        context = trace_context if trace_context is not None else current_traceparent()
        with self._source.queries() as queries:
            run = queries.start_flow(slug_of(flow), input, rid, version, context, priority)
        return RunHandle(self, uuid.UUID(str(run["run_id"])), run)

    def start_many(
        self,
        flow: FlowRef,
        inputs: Iterable[Any],
        run_ids: Iterable[RunId | None] | None = None,
        *,
        version: int | None = None,
        trace_context: str | None = None,
        priority: int = 0,
    ) -> list[RunHandle]:
        """Start one run of ``flow`` per element of ``inputs``, in one call; their handles.

        ``pgflow.start_flows``: one transaction, one set-based insert per
        table, so thousands of runs start in a fraction of what as many
        :meth:`start` calls take.  ``run_ids`` (as many as ``inputs``; an
        element may be ``None``) makes each start idempotent as in
        :meth:`start`; ``version``, ``priority`` and ``trace_context`` apply
        to every run.  The handles come in the order of ``inputs``.  Raises
        as :meth:`start` does, and :class:`~pgflow.errors.InvalidArgument`
        when ``run_ids`` is not as long as ``inputs``; a refused batch starts
        no run at all.
        """
        values = list(inputs)
        ids = None if run_ids is None else [None if r is None else as_run_id(r) for r in run_ids]
        context = trace_context if trace_context is not None else current_traceparent()
        with self._source.queries() as queries:
            runs = queries.start_flows(slug_of(flow), values, ids, version, context, priority)
        return [RunHandle(self, uuid.UUID(str(run["run_id"])), run) for run in runs]

    def flows(self) -> list[dict[str, Any]]:
        """Every flow definition with its version, whether it is current, its runs by status
        (``pgflow.list_flows``: each count stops at ``count_limit``, 10 000)."""
        with self._source.queries() as queries:
            return queries.list_flows()

    def set_current_version(self, flow_name: str, version: int | None) -> int:
        """Pin the version ``start(flow_name)`` starts (``None``: the highest again; operator
        rights); the version now current."""
        with self._source.queries() as queries:
            return queries.set_current_version(flow_name, version)

    def pause(self, flow: FlowRef) -> bool:
        """Stop claims of the flow's tasks until :meth:`resume` (``pgflow.pause_flow``).

        Runs still start and queue; tasks already started finish and report.
        True when the flow was not paused.  Operator rights (the extension
        owner, or a role granted EXECUTE on ``pgflow.pause_flow(text)``).
        """
        with self._source.queries() as queries:
            return queries.pause_flow(slug_of(flow))

    def resume(self, flow: FlowRef) -> bool:
        """Let claims take a paused flow's tasks again; true when it was paused."""
        with self._source.queries() as queries:
            return queries.resume_flow(slug_of(flow))

    def handle(self, run_id: RunId) -> RunHandle:
        """A handle to a run started elsewhere (nothing is read yet)."""
        return RunHandle(self, as_run_id(run_id))

    def get_run(self, run_id: RunId) -> dict[str, Any] | None:
        """The run with its steps as one document (``pgflow.get_run``); ``None`` if unknown."""
        with self._source.queries() as queries:
            return queries.get_run(as_run_id(run_id))

    def list_runs(
        self,
        flow: FlowRef | None = None,
        status: str | None = None,
        limit: int = 20,
        *,
        top_level: bool = False,
        cursor: Mapping[str, Any] | None = None,
        direction: Literal["older", "newer"] = "older",
        started_after: datetime | None = None,
        started_before: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """A page of runs, newest first (ids, status, times; never inputs or outputs).

        ``cursor``: a row of a page (its last for the next, older page; its
        first with ``direction="newer"`` for the previous one);
        ``top_level`` leaves sub-flow children out; ``started_after`` /
        ``started_before`` bound ``started_at``.
        """
        slug = None if flow is None else slug_of(flow)
        page = RunsPage(cursor, direction, started_after, started_before, top_level)
        with self._source.queries() as queries:
            return queries.list_runs(slug, status, limit, page)

    def cancel(self, run_id: RunId) -> CancelResult:
        """Cancel a running run; a finished one is left as it is (``already_finished``)."""
        with self._source.queries() as queries:
            run, notices = queries.cancel_run(as_run_id(run_id))
        return CancelResult(run, bool(notices))

    def emit_event(
        self, event: str, key: Any, payload: Any = None, *, event_id: str | None = None
    ) -> int:
        """An event happened: complete every step waiting for ``event`` with ``key``.

        ``key`` is a JSON string, number or boolean, compared by JSON equality
        (``42 == 42.0``, but ``"42"`` is another key); ``payload`` (any JSON
        value) becomes the output of the steps it completes.  Returns how many
        it completed; 0 when none waited (the event is then kept for
        ``pgflow.event_retention`` and consumed by the first wait step that
        becomes ready) or when ``event_id`` was emitted before (idempotent).
        Runs in the client's transaction when it has one (emit atomically with
        the application's own writes).
        """
        with self._source.queries() as queries:
            return queries.emit_event(event, key, payload, event_id)

    def retry(self, run_id: RunId) -> RunHandle:
        """Resume a failed or cancelled run from its failed steps (operator rights).

        Raises :class:`~pgflow.errors.InvalidState` for a run that has not
        failed or been cancelled.
        """
        rid = as_run_id(run_id)
        with self._source.queries() as queries:
            run = queries.retry_run(rid)
        return RunHandle(self, rid, run)

    def prune(self, older_than: timedelta, batch_size: int = 1000) -> int:
        """Delete the runs finished more than ``older_than`` ago, in batches; how many.

        Each batch is one call of ``pgflow.prune_runs`` (operator rights); the
        cutoff stays where it was when the call began.
        """
        total = 0
        began = time.monotonic()
        while True:
            elapsed = timedelta(seconds=time.monotonic() - began)
            with self._source.queries() as queries:
                deleted = queries.prune_runs(older_than + elapsed, batch_size)
            total += deleted
            if deleted == 0:
                return total

    def stats(self, flow: FlowRef | None = None) -> Stats:
        """The operator views (``run_stats``, ``step_stats``, task counts; operator rights)."""
        with self._source.queries() as queries:
            return stats(queries, None if flow is None else slug_of(flow))

    def events(
        self,
        flow: FlowRef | None = None,
        run_id: RunId | None = None,
        *,
        timeout: float | None = None,
    ) -> Events:
        """The events on ``pgflow_events`` (optionally of one flow or one run) as they come.

        Iterate it, ideally in a ``with`` block: iteration ends after
        ``timeout`` seconds (``None``: when the caller stops).  Only events
        sent while the stream is open are seen.
        """
        return Events(self, _filter(flow, run_id, timeout))


# --------------------------------------------------------------------------- async sources


class _AsyncSource:
    """Where an :class:`AsyncClient` gets its connections."""

    def queries(self) -> AbstractAsyncContextManager[AsyncQueries]:
        raise NotImplementedError

    def listening(self) -> AbstractAsyncContextManager[AsyncQueries]:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class _AsyncConninfo(_AsyncSource):
    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.shared: AsyncQueries | None = None
        self.lock = asyncio.Lock()
        self.closed = False

    @asynccontextmanager
    async def queries(self) -> AsyncIterator[AsyncQueries]:
        async with self.lock:
            if self.closed:
                raise _closed()
            if self.shared is None or self.shared.closed:
                self.shared = await async_connect(self.conninfo)
            shared = self.shared
        yield shared

    @asynccontextmanager
    async def listening(self) -> AsyncIterator[AsyncQueries]:
        if self.closed:
            raise _closed()
        dedicated = await async_connect(self.conninfo)
        try:
            yield dedicated
        finally:
            await dedicated.close()

    async def close(self) -> None:
        async with self.lock:
            self.closed = True
            if self.shared is not None:
                await self.shared.close()
                self.shared = None


class _AsyncConnection(_AsyncSource):
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.bound = AsyncQueries(conn)

    @asynccontextmanager
    async def queries(self) -> AsyncIterator[AsyncQueries]:
        yield self.bound

    @asynccontextmanager
    async def listening(self) -> AsyncIterator[AsyncQueries]:
        _check_listening(self.bound.conn)
        yield self.bound


class _AsyncPool(_AsyncSource):
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    @asynccontextmanager
    async def queries(self) -> AsyncIterator[AsyncQueries]:
        with translated():
            async with self.pool.connection() as conn:
                yield AsyncQueries(conn)

    @asynccontextmanager
    async def listening(self) -> AsyncIterator[AsyncQueries]:
        with translated():
            async with self.pool.connection() as conn:
                was = conn.autocommit
                await conn.set_autocommit(True)
                try:
                    yield AsyncQueries(conn)
                finally:
                    if not conn.closed:
                        await conn.set_autocommit(was)


def _async_source(db: object) -> _AsyncSource:
    if isinstance(db, str):
        return _AsyncConninfo(db)
    if isinstance(db, psycopg.AsyncConnection):
        return _AsyncConnection(db)
    pool = _pool_class("AsyncConnectionPool")
    if pool is not None and isinstance(db, pool):
        return _AsyncPool(cast("AsyncConnectionPool[Any]", db))
    if isinstance(db, psycopg.Connection) or (
        (spool := _pool_class("ConnectionPool")) is not None and isinstance(db, spool)
    ):
        raise TypeError("pgflow.AsyncClient is for asyncio: use pgflow.Client for a sync one")
    raise TypeError(
        "pgflow.AsyncClient takes a conninfo string, a psycopg AsyncConnection or a"
        f" psycopg_pool AsyncConnectionPool, got {type(db).__name__}"
    )


# --------------------------------------------------------------------------- async client


class AsyncRunHandle:
    """:class:`RunHandle` for an :class:`AsyncClient`: its methods are coroutines.

    Awaiting the handle itself is ``await handle.result()``.
    """

    def __init__(
        self, client: AsyncClient, run_id: uuid.UUID, run: dict[str, Any] | None = None
    ) -> None:
        self._client = client
        self.run_id = run_id
        self.run = run

    def __repr__(self) -> str:
        return f"AsyncRunHandle({str(self.run_id)!r})"

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result().__await__()

    async def get(self) -> dict[str, Any]:
        """The run now (``RunNotFound`` if it is gone)."""
        run = await self._client.get_run(self.run_id)
        if run is None:
            raise RunNotFound(f"run {self.run_id} does not exist", sqlstate="42704")
        return run

    async def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the run has finished; the finished run (``RunTimeoutError`` on timeout)."""
        async with self._client._source.listening() as queries:
            return await async_wait_for_run(queries, self.run_id, timeout)

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the run and return its output (``RunFailed`` / ``RunCancelled`` otherwise)."""
        return run_output(await self.wait(timeout))

    async def cancel(self) -> CancelResult:
        """Cancel the run (:meth:`AsyncClient.cancel`)."""
        return await self._client.cancel(self.run_id)


class AsyncEvents:
    """Events of channel ``pgflow_events`` as an async iterator (:meth:`AsyncClient.events`)."""

    def __init__(self, client: AsyncClient, where: _Filter) -> None:
        self._client = client
        self._where = where
        self._stack: AsyncExitStack | None = None
        self._queries: AsyncQueries | None = None
        self._pending: deque[Event] = deque()
        self._deadline: float | None = None
        self._done = False

    async def __aenter__(self) -> AsyncEvents:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncEvents:
        return self

    async def open(self) -> None:
        """Subscribe now (LISTEN); iterating does it when it has not been done."""
        if self._queries is not None or self._done:
            return
        stack = AsyncExitStack()
        try:
            queries = await stack.enter_async_context(self._client._source.listening())
            await queries.listen_events()
            stack.push_async_callback(queries.unlisten_events)
            await queries.subscribe_events(True)
            stack.push_async_callback(queries.subscribe_events, False)
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._queries = stack, queries
        if self._where.timeout is not None:
            self._deadline = time.monotonic() + self._where.timeout

    async def __anext__(self) -> Event:
        await self.open()
        while not self._pending:
            if self._queries is None:
                raise StopAsyncIteration
            left = _NOTIFY_SLICE if self._deadline is None else self._deadline - time.monotonic()
            if left <= 0:
                await self.aclose()
                raise StopAsyncIteration
            notes = await self._queries.notifies(timeout=min(left, _NOTIFY_SLICE), stop_after=1)
            for note in notes:
                event = Event.parse(note.payload)
                if event is not None and self._where.matches(event):
                    self._pending.append(event)
        return self._pending.popleft()

    async def aclose(self) -> None:
        """End the subscription and give the connection back (idempotent)."""
        self._done = True
        stack, self._stack, self._queries = self._stack, None, None
        if stack is not None:
            await stack.aclose()


T = TypeVar("T")


class AsyncClient:
    """:class:`Client` for ``asyncio``: the same calls, as coroutines.

    ``db`` is a conninfo, a psycopg ``AsyncConnection`` or a
    ``psycopg_pool.AsyncConnectionPool``, with the same meaning as for
    :class:`Client`.  ``async with pgflow.AsyncClient(dsn) as client:``, or
    without ``async with`` and ``await client.close()`` at the end.
    """

    def __init__(
        self, db: str | psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any] = ""
    ) -> None:
        self._source = _async_source(db)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection the client opened (an application's connection or pool stays)."""
        await self._source.close()

    async def _call(self, call: Callable[[AsyncQueries], Awaitable[T]]) -> T:
        async with self._source.queries() as queries:
            return await call(queries)

    async def start(
        self,
        flow: FlowRef,
        input: Any,
        run_id: RunId | None = None,
        *,
        version: int | None = None,
        trace_context: str | None = None,
        priority: int = 0,
    ) -> AsyncRunHandle:
        """Start a run of ``flow`` with ``input``; a handle to it (see :meth:`Client.start`)."""
        rid = None if run_id is None else as_run_id(run_id)
        slug = slug_of(flow)
        context = trace_context if trace_context is not None else current_traceparent()
        run = await self._call(lambda q: q.start_flow(slug, input, rid, version, context, priority))
        return AsyncRunHandle(self, uuid.UUID(str(run["run_id"])), run)

    async def start_many(
        self,
        flow: FlowRef,
        inputs: Iterable[Any],
        run_ids: Iterable[RunId | None] | None = None,
        *,
        version: int | None = None,
        trace_context: str | None = None,
        priority: int = 0,
    ) -> list[AsyncRunHandle]:
        """Start one run per input in one call; their handles (see :meth:`Client.start_many`)."""
        values = list(inputs)
        ids = None if run_ids is None else [None if r is None else as_run_id(r) for r in run_ids]
        slug = slug_of(flow)
        context = trace_context if trace_context is not None else current_traceparent()
        runs = await self._call(
            lambda q: q.start_flows(slug, values, ids, version, context, priority)
        )
        return [AsyncRunHandle(self, uuid.UUID(str(run["run_id"])), run) for run in runs]

    async def flows(self) -> list[dict[str, Any]]:
        """Every flow definition (see :meth:`Client.flows`)."""
        return await self._call(lambda q: q.list_flows())

    async def pause(self, flow: FlowRef) -> bool:
        """Stop claims of the flow's tasks (see :meth:`Client.pause`)."""
        return await self._call(lambda q: q.pause_flow(slug_of(flow)))

    async def resume(self, flow: FlowRef) -> bool:
        """Let claims take a paused flow's tasks again (see :meth:`Client.resume`)."""
        return await self._call(lambda q: q.resume_flow(slug_of(flow)))

    async def set_current_version(self, flow_name: str, version: int | None) -> int:
        """Pin the version ``start(flow_name)`` starts (see :meth:`Client.set_current_version`)."""
        return await self._call(lambda q: q.set_current_version(flow_name, version))

    def handle(self, run_id: RunId) -> AsyncRunHandle:
        """A handle to a run started elsewhere (nothing is read yet)."""
        return AsyncRunHandle(self, as_run_id(run_id))

    async def get_run(self, run_id: RunId) -> dict[str, Any] | None:
        """The run with its steps as one document; ``None`` if unknown."""
        rid = as_run_id(run_id)
        return await self._call(lambda q: q.get_run(rid))

    async def list_runs(
        self,
        flow: FlowRef | None = None,
        status: str | None = None,
        limit: int = 20,
        *,
        top_level: bool = False,
        cursor: Mapping[str, Any] | None = None,
        direction: Literal["older", "newer"] = "older",
        started_after: datetime | None = None,
        started_before: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """A page of runs, newest first; the arguments as for ``Client.list_runs``."""
        slug = None if flow is None else slug_of(flow)
        page = RunsPage(cursor, direction, started_after, started_before, top_level)
        return await self._call(lambda q: q.list_runs(slug, status, limit, page))

    async def cancel(self, run_id: RunId) -> CancelResult:
        """Cancel a running run; a finished one is left as it is (``already_finished``)."""
        rid = as_run_id(run_id)
        run, notices = await self._call(lambda q: q.cancel_run(rid))
        return CancelResult(run, bool(notices))

    async def emit_event(
        self, event: str, key: Any, payload: Any = None, *, event_id: str | None = None
    ) -> int:
        """Complete every step waiting for ``event`` with ``key`` (:meth:`Client.emit_event`)."""
        return await self._call(lambda q: q.emit_event(event, key, payload, event_id))

    async def retry(self, run_id: RunId) -> AsyncRunHandle:
        """Resume a failed or cancelled run from its failed steps (operator rights)."""
        rid = as_run_id(run_id)
        run = await self._call(lambda q: q.retry_run(rid))
        return AsyncRunHandle(self, rid, run)

    async def prune(self, older_than: timedelta, batch_size: int = 1000) -> int:
        """Delete the runs finished more than ``older_than`` ago, in batches; how many."""
        total = 0
        began = time.monotonic()
        while True:
            cutoff = older_than + timedelta(seconds=time.monotonic() - began)
            async with self._source.queries() as queries:
                deleted = await queries.prune_runs(cutoff, batch_size)
            total += deleted
            if deleted == 0:
                return total

    async def stats(self, flow: FlowRef | None = None) -> Stats:
        """The operator views (``run_stats``, ``step_stats``, task counts; operator rights)."""
        slug = None if flow is None else slug_of(flow)
        async with self._source.queries() as queries:
            counts = await queries.task_counts(slug)
            return Stats(
                runs=await queries.run_stats(slug),
                steps=await queries.step_stats(slug),
                active_tasks=counts["active_tasks"],
                stalled_tasks=counts["stalled_tasks"],
            )

    def events(
        self,
        flow: FlowRef | None = None,
        run_id: RunId | None = None,
        *,
        timeout: float | None = None,
    ) -> AsyncEvents:
        """The events on ``pgflow_events`` as an async iterator (see :meth:`Client.events`)."""
        return AsyncEvents(self, _filter(flow, run_id, timeout))
