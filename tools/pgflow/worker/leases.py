"""Heartbeats: one thread renews the leases of every task the worker runs.

Steps with a ``heartbeat`` are leased for ``heartbeat`` + 2 seconds at their
claim.  The :class:`Renewer` calls ``extend_leases`` once per interval
(half the shortest heartbeat of the steps served) for all running tasks of
such steps together -- one statement per interval, however many tasks --
and marks the tasks the database no longer gives it as ``lease_lost`` (their
attempt was superseded, cancelled, finished, or ran past its timeout), so
that the reporter holds back a late failure for them.

Like the reporter it reaches the database only through the ``connect``
function it is given and time only through ``clock`` and ``wait``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pgflow.errors import DatabaseError
from pgflow.worker.backoff import is_transient
from pgflow.worker.task import Task

log = logging.getLogger("pgflow.worker")


class LeaseQueries(Protocol):
    """What the renewer calls (a subset of :class:`pgflow.db.queries.Queries`)."""

    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...

    def extend_leases(
        self,
        run_ids: Sequence[str],
        step_slugs: Sequence[str],
        task_indexes: Sequence[int],
        attempts: Sequence[int],
    ) -> set[tuple[str, str, int]]: ...


class Renewer:
    """Renews the leases of ``running()`` tasks that have a heartbeat, every ``interval`` s."""

    def __init__(
        self,
        connect: Callable[[], LeaseQueries],
        running: Callable[[], list[Task]],
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], Any] | None = None,
    ) -> None:
        self._connect = connect
        self._running = running
        self.interval = interval
        self._clock = clock
        self._stop = threading.Event()
        self._wait: Callable[[float], Any] = wait or self._stop.wait
        self._queries: LeaseQueries | None = None
        self.renewals = 0
        self.lost = 0

    def run(self) -> None:
        """The renewer thread: renew, wait ``interval``, until :meth:`stop`."""
        while not self._stop.is_set():
            try:
                self.renew_once()
            except DatabaseError as exc:
                # the next round tries again on a new connection; leases that
                # end meanwhile make the tasks claimable again (at least once)
                if is_transient(exc):
                    log.warning("could not renew leases (%s); trying again", exc)
                else:
                    log.error("could not renew leases: %s (hint: %s)", exc, exc.hint or "-")
                self.close()
            except Exception:
                log.exception("lease renewal failed")
            self._wait(self.interval)

    def renew_once(self) -> int:
        """One renewal of every running task with a heartbeat; how many were renewed."""
        tasks = [t for t in self._running() if t.heartbeat is not None and not t.lease_lost]
        if not tasks:
            return 0
        if self._queries is None or self._queries.closed:
            self._queries = self._connect()
        sent_at = self._clock()
        held = self._queries.extend_leases(
            [t.run_id for t in tasks],
            [t.step_slug for t in tasks],
            [t.task_index for t in tasks],
            [t.attempt for t in tasks],
        )
        self.renewals += 1
        renewed = 0
        for task in tasks:
            if (task.run_id, task.step_slug, task.task_index) in held:
                task.renewed(sent_at)
                renewed += 1
            elif not task.done:
                task.lease_lost = True
                self.lost += 1
                log.warning(
                    "lease lost %s: the attempt was taken over, cancelled or ran past its"
                    " timeout; a failure of it will not be reported",
                    task.label,
                )
        return renewed

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self._queries is not None:
            self._queries.close()
            self._queries = None
