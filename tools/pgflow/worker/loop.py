"""The claim loop: claim while there is room, otherwise wait -- for a free slot, for
reports in flight, or idle for a wake-up -- and keep the worker's heartbeat.

One pass (:meth:`ClaimLoop.step`):

1. heartbeat when due (re-register when the registry forgot the worker);
2. claim from every flow, the flows a wake-up named first; claimed something:
   go again;
3. no free handler slot: wait for one;
4. results still being reported: wait for them (a completion this worker
   sends may queue the next step of its run, and claiming right after it is
   quicker than going idle and waiting for the wake-up it sends);
5. otherwise go idle: mark the LISTEN session idle (``worker_idle``), claim
   once more (work that committed meanwhile sent no wake-up), wait for a
   notification or ``poll_interval``, claim what the wake-up named before
   saying "busy" again.

The loop reaches the database only through the claim queries and the
:class:`~pgflow.worker.notify.Listener` it is given, and time only through
``clock``: the unit tests drive it with fakes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from pgflow.db.queries import ClaimedTask
from pgflow.errors import PgflowError
from pgflow.worker import _tracing, metrics
from pgflow.worker.executor import Executor
from pgflow.worker.notify import Listener
from pgflow.worker.reporter import Reporter
from pgflow.worker.task import Task

log = logging.getLogger("pgflow.worker")

#: Timeout a step gets when the database did not say (the flows' default).
DEFAULT_TIMEOUT = 60.0


class ClaimQueries(Protocol):
    """What the loop calls (a subset of :class:`pgflow.db.queries.Queries`)."""

    def claim_tasks(self, flow_slug: str, qty: int, worker_id: uuid.UUID) -> list[ClaimedTask]: ...

    def worker_heartbeat(self, worker_id: uuid.UUID) -> bool: ...

    def register_worker(
        self, worker_id: uuid.UUID, flows: Sequence[str], hostname: str, pid: int
    ) -> None: ...

    def trace_contexts(self, run_ids: Sequence[str]) -> dict[str, str]: ...


class ClaimLoop:
    """Claims tasks of ``flows`` and hands them to the executor (see the module doc)."""

    def __init__(
        self,
        *,
        worker_id: uuid.UUID,
        flows: Sequence[str],
        timeouts: Mapping[tuple[str, str], float],
        executor: Executor,
        heartbeats: Mapping[tuple[str, str], float | None] | None = None,
        on_heartbeat: Callable[[], None] | None = None,
        reporter: Reporter,
        batch_size: int,
        poll_interval: float,
        heartbeat_interval: float,
        stopping: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        limits: Mapping[tuple[str, str], tuple[int, str]] | None = None,
    ) -> None:
        self.worker_id = worker_id
        #: (flow, step) -> (max_attempts, when_exhausted), for the failure log's level
        self.limits = limits if limits is not None else {}
        self.flows = sorted(flows)
        self.timeouts = timeouts
        self.heartbeats = heartbeats if heartbeats is not None else {}
        self.on_heartbeat = on_heartbeat
        self.executor = executor
        self.reporter = reporter
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.stopping = stopping
        self.clock = clock
        self.wake = threading.Event()
        self.claim_queries: ClaimQueries | None = None
        self.listener: Listener | None = None
        self._woken: set[str] = set()
        self._last_heartbeat = clock()
        self._expire_refused = False
        #: spans of task attempts (None: opentelemetry is not installed)
        self.tracer = (
            _tracing.Tracer(lambda ids: self._claim_queries().trace_contexts(ids))
            if _tracing.available()
            else None
        )

    def drop_flow(self, flow: str) -> None:
        """Stop claiming tasks of ``flow`` (its definition changed under the worker)."""
        self.flows = [f for f in self.flows if f != flow]

    def attach(self, claim_queries: ClaimQueries, listener: Listener | None) -> None:
        """Use these connections from now on (after a (re)connect)."""
        self.claim_queries = claim_queries
        self.listener = listener if listener is not None and listener.listening else None

    def _claim_queries(self) -> ClaimQueries:
        if self.claim_queries is None:
            raise RuntimeError("the claim loop has no connection (attach() first)")
        return self.claim_queries

    # ------------------------------------------------------------ registry

    def register(self) -> None:
        """Register the worker (again) and restart the heartbeat clock."""
        self._claim_queries().register_worker(
            self.worker_id, self.flows, socket.gethostname(), os.getpid()
        )
        self._last_heartbeat = self.clock()

    def heartbeat(self) -> None:
        """Say "alive" when due; re-register when the registry no longer knows us.

        Each heartbeat also makes the maintenance call ``pgflow.expire_waits``
        (wait steps past their deadline time out), so waits time out without
        pg_cron as long as some worker runs."""
        if self.clock() - self._last_heartbeat < self.heartbeat_interval:
            return
        if not self._claim_queries().worker_heartbeat(self.worker_id):
            self.register()
        self._expire_waits()
        self._last_heartbeat = self.clock()
        if self.on_heartbeat is not None:
            self.on_heartbeat()

    def _expire_waits(self) -> None:
        """``pgflow.expire_waits()``; a database that refuses it (no EXECUTE: a role
        granted before 0.3.0 without the upgrade's grants) is logged, not fatal."""
        expire = getattr(self._claim_queries(), "expire_waits", None)
        if expire is None:  # a test double without the maintenance call
            return
        try:
            timed_out = expire()
        except PgflowError as exc:
            if not self._expire_refused:
                log.warning("pgflow.expire_waits failed (waits will not time out): %s", exc)
                self._expire_refused = True
            return
        if timed_out:
            log.info("%d wait step(s) timed out (pgflow.expire_waits)", timed_out)

    # ------------------------------------------------------------ one pass

    def run(self) -> None:
        """Passes until :attr:`stopping` is set (connection errors propagate)."""
        while not self.stopping.is_set():
            self.step()

    def step(self) -> str:
        """One pass of the loop; what it did: claimed, slot, reports or idle."""
        self.heartbeat()
        if not self.flows:
            return "idle"  # every flow was redefined under the worker: it is stopping
        woken, self._woken = self._woken, set()
        self.wake.clear()
        claimed = 0
        for flow in sorted(self.flows, key=lambda f: f not in woken):
            if self.stopping.is_set():
                break
            claimed += self.claim(flow)
        if claimed:
            return "claimed"
        if self.executor.free_slots() == 0:
            self.executor.wait_for_slot(self.poll_interval)
            return "slot"
        if self.reporter.wait_sent(self.poll_interval, self.stopping):
            return "reports"
        self.wait_for_work()
        return "idle"

    def claim(self, flow: str) -> int:
        """Claim what fits into the free slots from one flow and dispatch it."""
        qty = min(self.batch_size, self.executor.free_slots())
        if qty <= 0:
            return 0
        began = time.monotonic()
        rows = self._claim_queries().claim_tasks(flow, qty, self.worker_id)
        metrics.observe_claim(flow, time.monotonic() - began, len(rows))
        if not rows:
            log.debug("poll flow=%s: nothing claimable", flow)
            return 0
        tracer = self.tracer if self.tracer is not None and self.tracer.active() else None
        parents = {} if tracer is None else tracer.parents(str(row.run_id) for row in rows)
        for row in rows:
            task = Task(
                flow_slug=flow,
                run_id=str(row.run_id),
                step_slug=row.step_slug,
                task_index=row.task_index,
                input=None,
                attempt=row.attempt,
                timeout=self.timeouts.get((flow, row.step_slug), DEFAULT_TIMEOUT),
                heartbeat=self.heartbeats.get((flow, row.step_slug)),
                handler=self.executor.handler(flow, row.step_slug),
                started=self.clock(),
            )
            limit = self.limits.get((flow, row.step_slug))
            if limit is not None:
                task.max_attempts, task.when_exhausted = limit
            if tracer is not None:
                task.span = tracer.start(
                    flow,
                    task.step_slug,
                    task.run_id,
                    task.task_index,
                    task.attempt,
                    parents.get(task.run_id),
                )
            self.executor.dispatch(task, row.input)
        return len(rows)

    def wait_for_work(self) -> None:
        """Idle until a wake-up, a free slot's signal, a stop, or ``poll_interval``."""
        listener = self.listener
        if listener is None or listener.queries is None:
            self.wake.wait(self.poll_interval)
            return
        queries = listener.queries
        queries.worker_idle(self.flows, True)
        try:
            # look once more now that producers will wake us
            if any(self.claim(flow) for flow in self.flows):
                return
            deadline = self.clock() + self.poll_interval
            while not self.wake.is_set() and not self.stopping.is_set():
                left = deadline - self.clock()
                if left <= 0:
                    break
                woken = listener.woken(queries.notifies(timeout=min(left, 0.5), stop_after=1))
                if woken:
                    self._woken |= woken
                    self.wake.set()
            # claim before saying "busy": the wake-up's task is the latency
            woken, self._woken = self._woken, set()
            for flow in sorted(woken):
                if not self.stopping.is_set():
                    self.claim(flow)
        finally:
            queries.worker_idle(self.flows, False)
