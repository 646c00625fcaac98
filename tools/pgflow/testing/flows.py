"""Run a whole flow end to end in-process: :func:`run_flow`.

The run is real -- the extension in the test database decides every
transition -- and the handlers are called inline by an embedded
:class:`~pgflow.worker.Worker` (``run_once`` in a loop, no LISTEN, no extra
process), so a test sees exactly what production would, breakpoints and
coverage included.  docs/howto/testing-flows.md is the how-to.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from pgflow.compiler.migration import compile_flow
from pgflow.db.client import Client
from pgflow.db.queries import Queries, connect
from pgflow.db.shape import shape_differences
from pgflow.errors import Fail, PgflowError, RunTimeoutError, ShapeMismatchError
from pgflow.spec.dsl import Flow
from pgflow.spec.loader import Handler, LoadedFlow, flow_of
from pgflow.worker.config import WorkerConfig
from pgflow.worker.lifecycle import Worker

__all__ = ["run_flow"]

#: Run statuses after which nothing more happens to a run.
FINISHED = frozenset({"completed", "failed", "cancelled"})


def _failing(step: str, message: str) -> Handler:
    def fail(input: Any) -> Any:
        raise Fail(message)

    fail.__name__ = f"fail_{step}"
    return fail


def _skip_retry_delays(queries: Queries, run_id: uuid.UUID) -> bool:
    """Make the run's tasks that wait for a retry claimable now; whether there were any."""
    with queries.conn.transaction():
        cur = queries.conn.execute(
            "UPDATE pgflow.step_tasks SET vt = now()"
            " WHERE run_id = %s AND status = 'queued' AND attempts_count > 0 AND vt > now()",
            (run_id,),
        )
        return cur.rowcount > 0


def install_flow(conninfo: str, loaded: LoadedFlow) -> bool:
    """Create the flow's definition unless the database has it; whether it did.

    A flow of the same slug with another definition is a
    :class:`~pgflow.errors.ShapeMismatchError` (nothing is changed).
    """
    slug = loaded.spec.definition_slug
    queries = connect(conninfo)
    try:
        shape = queries.flow_shape(slug)
        if shape is not None:
            diffs = shape_differences(loaded.spec, shape)
            if diffs:
                raise ShapeMismatchError(
                    f"flow {slug!r} in the database differs from the spec: {'; '.join(diffs)}"
                    " (use a fresh database, the `db` fixture, or a new version)"
                )
            return False
        queries.conn.execute(compile_flow(loaded.spec, generated_at=datetime.now(UTC)))
        return True
    finally:
        queries.close()


def run_flow(
    flow: Flow | LoadedFlow,
    input: Any,
    *,
    conninfo: str = "",
    connection: psycopg.Connection[Any] | None = None,
    fail: Mapping[str, str] | None = None,
    handlers: Mapping[str, Handler] | None = None,
    run_id: uuid.UUID | str | None = None,
    timeout: float = 60.0,
    poll: float = 0.02,
    config: WorkerConfig | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    fast_retries: bool = False,
) -> dict[str, Any]:
    """Run ``flow`` with ``input`` to its end; the finished run as ``pgflow.get_run`` gives it.

    * ``conninfo`` -- the database (``""``: the libpq environment; in pytest,
      the ``db`` fixture); the flow's definition is created there if missing;
    * ``connection`` -- instead of ``conninfo``: a psycopg connection (the
      ``conn`` fixture) whose server, database, user and password are used
      (the worker needs connections of its own; this one is not used or
      closed);
    * ``fail`` -- ``{step_slug: message}``: those steps' handlers raise
      ``pgflow.Fail(message)`` instead of running (the task fails at once, no
      retries, and the step's ``when_exhausted`` applies);
    * ``handlers`` -- ``{step_slug: function}``: replace handlers (stubs for
      steps that call the outside world);
    * ``timeout`` -- seconds the whole run may take (:class:`RunTimeoutError`);
    * ``fast_retries`` -- do not wait for retry delays (below).

    Retry delays are real by default: a handler that raises an ordinary
    exception is retried after the step's backoff (``base_delay`` seconds,
    doubling), and ``run_flow`` waits for it within ``timeout``.  Time is not
    frozen -- the engine reads PostgreSQL's clock -- but with
    ``fast_retries=True``, whenever nothing is claimable, the run's queued
    tasks that wait for a *retry* (``attempts_count > 0``) are made visible
    at once (``UPDATE pgflow.step_tasks SET vt = now()``: the test database's
    owner may do that; a production role may not).  Attempts, error messages
    and ``when_exhausted`` are as they would be; only the waiting is skipped.
    Start delays (``start_delay``) are still waited for.  Other runs of the
    same flow in the database are run too (it is a worker).
    """
    if connection is not None:
        if conninfo:
            raise PgflowError("run_flow takes conninfo or connection, not both")
        conninfo = make_conninfo(connection.info.dsn, password=connection.info.password or None)
    loaded = flow_of(flow) if isinstance(flow, Flow) else flow
    steps = {s.slug for s in loaded.spec.steps}
    replaced = {**(handlers or {}), **{s: _failing(s, m) for s, m in (fail or {}).items()}}
    unknown = sorted(set(replaced) - steps)
    if unknown:
        raise PgflowError(
            f"flow {loaded.spec.slug!r} has no step {', '.join(map(repr, unknown))}"
            f" (steps: {', '.join(sorted(steps))})"
        )
    if replaced:
        callables = {s: loaded.handler(s) for s in steps if s not in replaced}
        loaded = LoadedFlow(loaded.spec, {**callables, **replaced})
    install_flow(conninfo, loaded)
    worker = Worker(
        conninfo,
        [loaded],
        config or WorkerConfig(listen=False, poll_interval=max(poll, 0.01), grace=5.0),
    )
    deadline = time.monotonic() + timeout
    skipper = connect(conninfo) if fast_retries else None
    try:
        with Client(conninfo) as client:
            handle = client.start(loaded.spec.definition_slug, input, run_id)
            while True:
                claimed = worker.run_once()
                run = client.get_run(handle.run_id)
                if run is None:  # pragma: no cover - the run was pruned under the test
                    raise PgflowError(f"run {handle.run_id} disappeared")
                if run["status"] in FINISHED:
                    return run
                if time.monotonic() >= deadline:
                    raise RunTimeoutError(
                        f"run {handle.run_id} of flow {loaded.spec.slug!r} did not finish within"
                        f" {timeout:g} s (status {run['status']}; a retry may be waiting for its"
                        " backoff, see run_flow's docstring)"
                    )
                if not claimed and not (
                    skipper is not None and _skip_retry_delays(skipper, handle.run_id)
                ):
                    sleep(poll)
    finally:
        worker.close()
        if skipper is not None:
            skipper.close()
