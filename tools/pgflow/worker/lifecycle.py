"""The reference worker's life: start, run (or run once), stop.

A :class:`Worker` puts the parts together -- the claim loop
(:mod:`~pgflow.worker.loop`), the LISTEN connection
(:mod:`~pgflow.worker.notify`), the handler threads
(:mod:`~pgflow.worker.executor`) and the reporter
(:mod:`~pgflow.worker.reporter`) -- and owns what spans them: connecting and
reconnecting (one retried unit: connect, register, LISTEN), the start-up
checks (version, flow shapes), signals, and the drain on stop.

It speaks only the SQL API (``claim_tasks`` -> handler -> ``complete_tasks``
/ ``fail_task``), each call its own short transaction; no transaction is
ever open while user code runs.  Any worker in any language can do the same:
see docs/howto/workers.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from pgflow.db import install
from pgflow.db.queries import Queries, connect
from pgflow.db.shape import shape_differences
from pgflow.errors import DatabaseError, PgflowError, ShapeMismatchError
from pgflow.spec.dsl import Flow
from pgflow.spec.loader import Handler, LoadedFlow, flow_of, load
from pgflow.worker.backoff import Backoff, is_transient
from pgflow.worker.config import WorkerConfig
from pgflow.worker.convert import bind_all
from pgflow.worker.executor import Executor
from pgflow.worker.leases import Renewer
from pgflow.worker.loop import ClaimLoop
from pgflow.worker.notify import Listener
from pgflow.worker.reporter import Reporter

log = logging.getLogger("pgflow.worker")


def _loaded(flows: Sequence[LoadedFlow | Flow | str] | LoadedFlow | Flow) -> list[LoadedFlow]:
    """Loaded specs of what ``Worker`` was given (Flow objects, loaded specs, SPEC strings)."""
    items = [flows] if isinstance(flows, LoadedFlow | Flow) else list(flows)
    out: list[LoadedFlow] = []
    for item in items:
        if isinstance(item, LoadedFlow):
            out.append(item)
        elif isinstance(item, Flow):
            out.append(flow_of(item))
        elif isinstance(item, str):
            out.extend(load(item))
        else:
            raise PgflowError(
                f"a worker runs pgflow.Flow objects, loaded specs or SPEC strings,"
                f" not {type(item).__name__}"
            )
    return out


class Worker:
    """Claims and runs tasks of ``flows`` until :meth:`stop` (or SIGTERM/SIGINT)."""

    def __init__(
        self,
        flows: Sequence[LoadedFlow | Flow | str] | LoadedFlow | Flow,
        conninfo: str | Sequence[LoadedFlow | Flow | str] = "",
        config: WorkerConfig | None = None,
        worker_id: uuid.UUID | None = None,
        *,
        connector: Callable[[], Queries] | None = None,
        sleep: Callable[[float], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        **settings: Any,
    ) -> None:
        """``flows``: :class:`pgflow.Flow` objects, loaded specs, or SPEC strings as
        ``pgflow worker`` takes them (``"myapp.flows"``, ``"flows/order.yaml"``);
        ``conninfo``: libpq conninfo or URL (``""``: the ``PG*`` environment);
        ``settings``: :class:`WorkerConfig` fields (``concurrency=20``), over ``config``.
        The 0.2 order ``Worker(conninfo, flows, ...)`` still works.

        ``connector`` opens a connection (default: ``conninfo`` with psycopg, prepared
        statements off); ``sleep`` pauses between reconnection attempts (default: a wait
        that a stop interrupts); ``clock`` times the start-up's connection attempts.
        All three are for tests and embedding."""
        if isinstance(flows, str) and not isinstance(conninfo, str):
            flows, conninfo = conninfo, flows  # Worker(conninfo, flows): the 0.2 order
        assert isinstance(conninfo, str)
        loaded_flows = _loaded(flows)
        if not loaded_flows:
            raise PgflowError("a worker needs at least one flow")
        self.conninfo = conninfo
        self.config = config or WorkerConfig()
        if settings:
            merged = {**dataclasses.asdict(self.config), **settings}
            self.config = WorkerConfig.from_mapping(merged, "Worker()")
        flows = loaded_flows
        self.worker_id = worker_id or uuid.uuid4()
        # keyed by definition slug: a worker may serve several versions of a flow
        self.flows = {f.spec.definition_slug: f for f in flows}
        handlers: dict[tuple[str, str], Handler] = {
            (slug, step): handler
            for slug, f in self.flows.items()
            for step, handler in f.handlers().items()
        }
        # every handler's signature and annotations, checked before connecting
        bindings = bind_all(
            [
                (slug, step.slug, handlers[slug, step.slug], step.map, step.depends_on)
                for slug, f in self.flows.items()
                for step in f.spec.steps
                if (slug, step.slug) in handlers
            ]
        )
        self.timeouts: dict[tuple[str, str], float] = {}
        self.heartbeats: dict[tuple[str, str], float | None] = {}
        self.limits: dict[tuple[str, str], tuple[int, str]] = {}
        self._status = 0
        self._stopping = threading.Event()
        self._connector = connector
        self._clock = clock
        self._sleep: Callable[[float], Any] = sleep or self._stopping.wait
        self._signals = 0
        self._started = False
        self._claim: Queries | None = None
        self._aux: Queries | None = None
        self._aux_lock = threading.Lock()
        self.reporter = Reporter(
            self._open,
            report_batch=self.config.report_batch,
            backoff=self._backoff,
            sleep=self._sleep,
            give_up=lambda: self._stopping.is_set() and self._signals > 1,
        )
        self.executor = Executor(
            self.config.concurrency,
            handlers,
            on_outcome=self.reporter.put,
            on_free=lambda: self.loop.wake.set(),  # noqa: PLW0108 - self.loop comes later
            run_input=self._run_input,
            bindings=bindings,
        )
        self.listener = Listener(self._open, self.flows)
        self.loop = ClaimLoop(
            worker_id=self.worker_id,
            flows=list(self.flows),
            timeouts=self.timeouts,
            heartbeats=self.heartbeats,
            limits=self.limits,
            on_heartbeat=self._recheck_shapes,
            executor=self.executor,
            reporter=self.reporter,
            batch_size=self.config.batch_size,
            poll_interval=self.config.poll_interval,
            heartbeat_interval=self.config.heartbeat_interval,
            stopping=self._stopping,
        )
        self._reporter_thread = threading.Thread(
            target=self.reporter.run, name="pgflow-reporter", daemon=True
        )
        self.renewer: Renewer | None = None
        self._renewer_thread: threading.Thread | None = None

    @property
    def completed(self) -> int:
        """Tasks this worker completed."""
        return self.reporter.completed

    @property
    def failed(self) -> int:
        """Attempts this worker reported as failed."""
        return self.reporter.failed

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect, check the database (version, flow shapes), register; start reporting."""
        if self._started:
            return
        self._connect(first=True)
        self._reporter_thread.start()
        beats = [b for b in self.heartbeats.values() if b is not None]
        if beats:
            # one renewal for all running tasks, twice per shortest heartbeat
            self.renewer = Renewer(self._open, self.executor.running, min(beats) / 2)
            self._renewer_thread = threading.Thread(
                target=self.renewer.run, name="pgflow-leases", daemon=True
            )
            self._renewer_thread.start()
        self._started = True
        log.info(
            "worker %s started: flows=%s concurrency=%d batch_size=%d listen=%s",
            self.worker_id,
            ",".join(sorted(self.flows)),
            self.config.concurrency,
            self.config.batch_size,
            self.loop.listener is not None,
        )

    def run(self) -> int:
        """Run until stopped; returns the process exit status (0 after a clean stop)."""
        restore = self._install_signal_handlers()
        try:
            self.start()
            while not self._stopping.is_set():
                try:
                    self.loop.run()
                except DatabaseError as exc:
                    if self._stopping.is_set() or not is_transient(exc):
                        if self._stopping.is_set():
                            break
                        raise
                    log.warning("database connection lost (%s); reconnecting", exc)
                    self._connect()
            self._drain()
            try:
                if self._claim is not None:
                    self._claim.stop_worker(self.worker_id)
            except DatabaseError:
                pass
            log.info(
                "worker %s stopped: %d tasks completed, %d failed",
                self.worker_id,
                self.completed,
                self.failed,
            )
            return self._status
        finally:
            restore()
            self.close()

    async def run_async(self) -> int:
        """:meth:`run` in a thread, for an asyncio application (FastAPI lifespan, ...).

        Returns the exit status once stopped (:meth:`stop`); cancelling the
        awaiting task stops the worker, waits for the drain (``config.grace``)
        and re-raises the cancellation.  No signal handlers are installed: the
        application stops the worker.
        """
        running = asyncio.ensure_future(asyncio.to_thread(self.run))
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            self.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(running), self.config.grace + 10)
            raise

    def run_once(self) -> int:
        """Claim once from every flow, run what was claimed, report it; how many tasks.

        For scripts and tests that want one batch without a loop; call
        :meth:`close` at the end (or use the worker as a context manager).
        """
        self.start()
        claimed = sum(self.loop.claim(flow) for flow in sorted(self.flows))
        deadline = time.monotonic() + max(self.timeouts.values(), default=60.0) + 5
        self.executor.wait_idle(deadline)
        self.reporter.wait_sent(self.config.poll_interval)
        return claimed

    def stop(self) -> None:
        """Stop claiming; in-flight handlers get ``config.grace`` seconds to finish."""
        self._stopping.set()
        self.loop.wake.set()

    def close(self) -> None:
        """Stop the threads and close the connections (idempotent)."""
        if self.renewer is not None:
            self.renewer.stop()
            if self._renewer_thread is not None:
                self._renewer_thread.join(timeout=5)
            self.renewer.close()
        self.executor.shutdown()
        if self._reporter_thread.is_alive():
            self.reporter.stop(time.monotonic() + self.config.grace)
            self._reporter_thread.join(timeout=1)
        self.reporter.close()
        self.listener.close()
        for queries in (self._claim, self._aux):
            if queries is not None:
                queries.close()
        self._claim = self._aux = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals > 1:
                log.warning("second signal %d: exiting at once", signum)
                os._exit(128 + signum)
            log.info("signal %d: finishing in-flight tasks (again to exit at once)", signum)
            self.stop()

        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore

    def _drain(self) -> None:
        deadline = time.monotonic() + self.config.grace
        left = self.executor.wait_idle(deadline)
        if left:
            log.warning(
                "%d handlers still running after the %.0f s grace period: their leases will"
                " expire and other workers will run them again",
                left,
                self.config.grace,
            )
        self.reporter.stop(deadline)
        self._reporter_thread.join(timeout=max(0.0, deadline - time.monotonic()) + 1)

    # ------------------------------------------------------------ connections

    def _open(self) -> Queries:
        if self._connector is not None:
            return self._connector()
        # no prepared statements: they do not survive PgBouncer in transaction mode
        return connect(self.conninfo, prepare=False)

    def _backoff(self) -> Backoff:
        return Backoff(self.config.reconnect_min, self.config.reconnect_max)

    def _connect(self, first: bool = False) -> None:
        """Connect, (check,) register and LISTEN as one unit, retried with jittered backoff.

        A session cut halfway (say, while ``register_worker`` runs) starts the
        unit again.  The first time, the unit also checks the database's
        pgflow version and the flows' shapes, and gives up after
        ``config.connect_timeout`` seconds; afterwards it retries until stopped.
        """
        backoff = self._backoff()
        give_up_at = self._clock() + self.config.connect_timeout
        while True:
            try:
                self._close_session()
                claim = self._claim = self._open()
                if first:
                    install.check_version(claim)
                    self._check_shapes(claim)
                self.loop.attach(claim, None)
                self.loop.register()
                if self.config.listen:
                    self.listener.start(claim, self.config.poll_interval)
                self.loop.attach(claim, self.listener)
                return
            except DatabaseError as exc:
                if not is_transient(exc) or self._stopping.is_set():
                    raise
                if first and self._clock() >= give_up_at:
                    raise
                pause = backoff.next()
                log.warning("cannot connect (%s); retrying in %.1f s", exc, pause)
                self._sleep(pause)

    def _close_session(self) -> None:
        self.listener.close()
        if self._claim is not None:
            self._claim.close()
            self._claim = None

    def _run_input(self, run_id: str) -> Any:
        """A run's input, on a connection shared by the handler threads (opened on first use)."""
        with self._aux_lock:
            for attempt in (1, 2):
                try:
                    if self._aux is None or self._aux.closed:
                        self._aux = self._open()
                    return self._aux.run_input(run_id)
                except DatabaseError as exc:
                    if attempt == 2 or not is_transient(exc):
                        raise
                    self._aux = None
        return None  # pragma: no cover - the loop returns or raises

    # ------------------------------------------------------------ start-up checks

    def _check_shapes(self, queries: Queries) -> None:
        problems: list[str] = []
        for slug, loaded in self.flows.items():
            shape = queries.flow_shape(slug)
            diffs = shape_differences(loaded.spec, shape)
            if diffs:
                problems.append(f"flow {slug!r} ({loaded.spec.origin.file}): " + "; ".join(diffs))
                continue
            assert shape is not None
            self._take_tunables(slug, shape)
        if problems:
            raise ShapeMismatchError(
                "the database does not have the flows this worker runs: "
                + " | ".join(problems)
                + ". Build the migration with `pgflow-build SPEC` and apply it"
                " (a changed structure needs a new flow slug)."
            )

    def _take_tunables(self, slug: str, shape: dict[str, Any]) -> None:
        """The effective timeout and heartbeat of each step, as the database has them."""
        for step in shape["steps"]:
            key = (slug, step["step_slug"])
            self.timeouts[key] = float(step["timeout"])
            beat = step.get("heartbeat")
            self.heartbeats[key] = None if beat is None else float(beat)
            if step.get("max_attempts") is not None:
                self.limits[key] = (int(step["max_attempts"]), str(step.get("when_exhausted")))

    def _recheck_shapes(self) -> None:
        """With each registry heartbeat: does the database still hold the flows served?

        A flow deleted and created again with another structure under a running
        worker would hand its handlers inputs of another shape: the worker stops
        serving such a flow (and stops with exit status 1 once it serves none).
        Tunables changed in place are taken over.
        """
        queries = self._claim
        if queries is None:
            return
        for slug in list(self.loop.flows):
            shape = queries.flow_shape(slug)
            diffs = shape_differences(self.flows[slug].spec, shape)
            if not diffs:
                assert shape is not None
                self._take_tunables(slug, shape)
                continue
            log.error(
                "flow %r changed in the database under this worker (%s): no longer serving it;"
                " start a worker with the matching spec",
                slug,
                "; ".join(diffs),
            )
            self.loop.drop_flow(slug)
        if not self.loop.flows and not self._stopping.is_set():
            log.error("no flow left to serve: stopping")
            self._status = 1
            self.stop()
