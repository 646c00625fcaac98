"""Reporting outcomes: one thread, one connection, batches, retries within the lease.

Outcomes pile up in an outbox while the previous batch is being sent; the
:class:`Reporter` sends whatever is there as one ``complete_tasks`` call (one
commit for many tasks) and the failures as one ``fail_tasks`` call.  Every
report names the attempt its claim returned, so a report of an attempt that
was superseded meanwhile changes nothing (fencing).  An output the database
refuses spoils its batch: the batch is then completed one task at a time,
and a refused output fails its own task with the reason.

A failure of a task whose lease this worker knows has ended -- the database
said so when the lease was renewed, or the lease ran out on the worker's
clock -- is held back: another worker may run the task already, and the
attempt's end is decided by the lease (the next claim counts a new
attempt).  A success is still sent; fencing decides whether it counts.

A call that fails transiently (connection lost, deadlock) is retried with
jittered backoff while the tasks' leases last: past a lease, another worker
may already run the task again, so the result is dropped (the lease expiry
turns it into a new attempt).

The reporter knows the database only through the ``connect`` function it is
given, which returns an object with ``complete_tasks``, ``fail_tasks``,
``close`` and ``closed`` (:class:`pgflow.db.queries.Queries` has them; the
unit tests pass a fake), and reads time only through ``clock`` and ``sleep``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from pgflow.errors import ConnectionFailed, DatabaseError, InvalidArgument
from pgflow.worker import metrics
from pgflow.worker.backoff import Backoff, is_transient
from pgflow.worker.task import Outcome, Task

log = logging.getLogger("pgflow.worker")
#: a line per completed task (`pgflow worker -v`); failures go to ``log``
task_log = logging.getLogger("pgflow.worker.tasks")

T = TypeVar("T")


class ReportQueries(Protocol):
    """What the reporter calls (a subset of :class:`pgflow.db.queries.Queries`)."""

    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...

    def complete_tasks(
        self,
        run_ids: Sequence[str],
        step_slugs: Sequence[str],
        task_indexes: Sequence[int],
        outputs: Sequence[str],
        attempts: Sequence[int | None] | None = None,
    ) -> int: ...

    def fail_tasks(
        self,
        run_ids: Sequence[str],
        step_slugs: Sequence[str],
        task_indexes: Sequence[int],
        errors: Sequence[str],
        attempts: Sequence[int | None],
        retries: Sequence[bool],
        retry_delays: Sequence[float | None],
    ) -> int: ...


class Reporter:
    """Sends outcomes in batches on its own connection (see the module doc)."""

    def __init__(
        self,
        connect: Callable[[], ReportQueries],
        *,
        report_batch: int,
        backoff: Callable[[], Backoff],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
        give_up: Callable[[], bool] = lambda: False,
    ) -> None:
        self._connect = connect
        self._report_batch = report_batch
        self._backoff = backoff
        self._clock = clock
        self._sleep = sleep
        self._give_up = give_up
        self._queries: ReportQueries | None = None
        self._outbox: list[Outcome] = []
        self._cv = threading.Condition()
        self._flushing = False
        self._stopping = False
        self.completed = 0
        self.failed = 0
        self.held_back = 0

    # ------------------------------------------------------------ the outbox

    def put(self, outcome: Outcome) -> None:
        """Queue an outcome for the reporter thread."""
        with self._cv:
            self._outbox.append(outcome)
            self._cv.notify_all()

    @property
    def pending(self) -> bool:
        """Whether outcomes wait or are being sent."""
        with self._cv:
            return bool(self._outbox or self._flushing)

    def wait_sent(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Wait until what is queued has been sent; False at once if nothing was queued.

        Waits in steps of ``timeout`` seconds until done (or ``stop`` is set).
        """
        with self._cv:
            if not (self._outbox or self._flushing):
                return False
            while (self._outbox or self._flushing) and not (stop is not None and stop.is_set()):
                self._cv.wait(timeout=timeout)
            return True

    def run(self) -> None:
        """The reporter thread: send batches until :meth:`stop` and the outbox is empty."""
        while True:
            with self._cv:
                while not self._outbox and not self._stopping:
                    self._cv.wait()
                if not self._outbox:
                    return
                batch = self._outbox[: self._report_batch]
                del self._outbox[: self._report_batch]
                self._flushing = True
            try:
                self.send(batch)
            except Exception:
                log.exception("could not report %d results", len(batch))
            finally:
                with self._cv:
                    self._flushing = False
                    self._cv.notify_all()

    def stop(self, deadline: float) -> None:
        """Let queued outcomes go out until the monotonic ``deadline``, then end :meth:`run`."""
        with self._cv:
            while (self._outbox or self._flushing) and time.monotonic() < deadline:
                self._cv.wait(timeout=max(0.0, deadline - time.monotonic()))
            self._stopping = True
            self._cv.notify_all()

    def close(self) -> None:
        if self._queries is not None:
            self._queries.close()
            self._queries = None

    # ------------------------------------------------------------ sending

    def send(self, batch: Sequence[Outcome]) -> None:
        """Report one batch: completions together, failures together."""
        completed = [o for o in batch if o.error is None]
        failed = [o for o in batch if o.error is not None]
        if completed:
            counted: int | None
            try:
                counted = self._complete(completed)
            except InvalidArgument:
                # an output PostgreSQL refuses spoils the batch: one by one
                counted = None
                for outcome in completed:
                    try:
                        self._complete([outcome])
                        self._log_done(outcome.task, None)
                    except InvalidArgument as exc:
                        failed.append(
                            Outcome(
                                outcome.task,
                                error=f"the database refused the handler's output: {exc}",
                            )
                        )
            else:
                for outcome in completed:
                    self._log_done(outcome.task, None)
            if counted is not None and counted < len(completed):
                log.info(
                    "%d of %d completions changed nothing (cancelled, already done,"
                    " or an attempt another worker took over)",
                    len(completed) - counted,
                    len(completed),
                )
        kept = [o for o in failed if not self._lease_ended(o.task)]
        if kept:
            self._fail(kept)
            for outcome in kept:
                self._log_done(outcome.task, outcome.error, outcome.retry)

    def _lease_ended(self, task: Task) -> bool:
        """Whether this worker knows the task's lease has ended (its failure is held back)."""
        if not (task.lease_lost or self._clock() > task.lease_until):
            return False
        self.held_back += 1
        log.info(
            "failure held back %s: the lease of this attempt has ended (another worker"
            " may run the task; the next claim counts a new attempt)",
            task.label,
        )
        return True

    def _fail(self, outcomes: Sequence[Outcome]) -> int:
        tasks = [o.task for o in outcomes]

        def call(queries: ReportQueries) -> int:
            return queries.fail_tasks(
                [t.run_id for t in tasks],
                [t.step_slug for t in tasks],
                [t.task_index for t in tasks],
                [o.error or "unknown error" for o in outcomes],
                [t.attempt for t in tasks],
                [o.retry for o in outcomes],
                [o.retry_delay for o in outcomes],
            )

        began = time.monotonic()
        counted = self._with_retries(tasks, call)
        metrics.observe_report("fail", time.monotonic() - began, len(tasks))
        return counted

    def _complete(self, outcomes: Sequence[Outcome]) -> int:
        tasks = [o.task for o in outcomes]
        began = time.monotonic()
        counted = self._with_retries(
            tasks,
            lambda q: q.complete_tasks(
                [t.run_id for t in tasks],
                [t.step_slug for t in tasks],
                [t.task_index for t in tasks],
                [o.output or "null" for o in outcomes],
                [t.attempt for t in tasks],
            ),
        )
        metrics.observe_report("complete", time.monotonic() - began, len(tasks))
        return counted

    def _with_retries(self, tasks: Sequence[Task], call: Callable[[ReportQueries], T]) -> T:
        """Run one report call; on a transient error retry while the tasks' leases last."""
        deadline = min(t.lease_until for t in tasks)
        backoff = self._backoff()
        while True:
            try:
                if self._queries is None or self._queries.closed:
                    self._queries = self._connect()
                return call(self._queries)
            except DatabaseError as exc:
                if not is_transient(exc):
                    raise
                if self._clock() > deadline or self._give_up():
                    log.warning(
                        "could not report %d tasks (%s): their leases will expire",
                        len(tasks),
                        exc,
                    )
                    raise
                if isinstance(exc, ConnectionFailed):
                    self.close()
                self._sleep(backoff.next())

    def _log_done(self, task: Task, error: str | None, retry: bool = True) -> None:
        metrics.observe_task(task, error, error is not None and task.final(retry))
        duration_ms = (task.finished - task.started) * 1000
        if error is None:
            self.completed += 1
            if task_log.isEnabledFor(logging.INFO):
                task_log.info("task completed %s duration_ms=%.1f", task.label, duration_ms)
        else:
            self.failed += 1
            if task.final(retry):
                log.error(
                    "task failed for good %s duration_ms=%.1f error=%s (when_exhausted=%s)",
                    task.label,
                    duration_ms,
                    error,
                    task.when_exhausted,
                    extra=task.fields,
                )
            else:
                log.warning(
                    "attempt failed, will be retried %s duration_ms=%.1f error=%s",
                    task.label,
                    duration_ms,
                    error,
                    extra=task.fields,
                )
