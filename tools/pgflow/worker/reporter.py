"""Reporting outcomes: one thread, one connection, batches, retries within the lease.

Outcomes pile up in an outbox while the previous batch is being sent; the
:class:`Reporter` sends whatever is there as one ``complete_tasks`` call (one
commit for many tasks) and the failures one ``fail_task`` each.  An output
the database refuses spoils its batch: the batch is then completed one task
at a time, and a refused output fails its own task with the reason.

A call that fails transiently (connection lost, deadlock) is retried with
jittered backoff while the tasks' leases last: past a lease, another worker
may already run the task again, so the result is dropped (the lease expiry
turns it into a new attempt).

The reporter knows the database only through the ``connect`` function it is
given, which returns an object with ``complete_tasks``, ``fail_task``,
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
    ) -> int: ...

    def fail_task(self, run_id: str, step_slug: str, task_index: int, error: str) -> bool: ...


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
        """Report one batch: completions together, failures one by one."""
        completed = [o for o in batch if o.error is None]
        failed = [(o.task, o.error) for o in batch if o.error is not None]
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
                            (outcome.task, f"the database refused the handler's output: {exc}")
                        )
            else:
                for outcome in completed:
                    self._log_done(outcome.task, None)
            if counted is not None and counted < len(completed):
                log.info(
                    "%d of %d completions changed nothing (cancelled or already done)",
                    len(completed) - counted,
                    len(completed),
                )
        for task, error in failed:
            assert error is not None
            self._fail(task, error)
            self._log_done(task, error)

    def _fail(self, task: Task, error: str) -> bool:
        def call(queries: ReportQueries) -> bool:
            return queries.fail_task(task.run_id, task.step_slug, task.task_index, error)

        return self._with_retries([task], call)

    def _complete(self, outcomes: Sequence[Outcome]) -> int:
        tasks = [o.task for o in outcomes]
        return self._with_retries(
            tasks,
            lambda q: q.complete_tasks(
                [t.run_id for t in tasks],
                [t.step_slug for t in tasks],
                [t.task_index for t in tasks],
                [o.output or "null" for o in outcomes],
            ),
        )

    def _with_retries(self, tasks: Sequence[Task], call: Callable[[ReportQueries], T]) -> T:
        """Run one report call; on a transient error retry while the tasks' leases last."""
        deadline = min(t.lease_deadline for t in tasks)
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

    def _log_done(self, task: Task, error: str | None) -> None:
        duration_ms = (task.finished - task.started) * 1000
        if error is None:
            self.completed += 1
            if task_log.isEnabledFor(logging.INFO):
                task_log.info("task completed %s duration_ms=%.1f", task.label, duration_ms)
        else:
            self.failed += 1
            log.info(
                "task failure recorded %s duration_ms=%.1f error=%s", task.label, duration_ms, error
            )
