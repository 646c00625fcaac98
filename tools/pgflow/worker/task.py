"""A claimed task on its way through the worker: executor -> reporter."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pgflow.spec.loader import Handler

#: Seconds a lease outlives the step's timeout (``start_tasks`` / ``claim_tasks``
#: lease a started task for ``timeout`` + this margin).
LEASE_MARGIN = 2.0


@dataclass
class Task:
    """One claimed attempt of a task: where it belongs, its input, its handler, its state.

    ``started`` is the worker's clock (``time.monotonic``) at the claim;
    ``heartbeat`` the step's heartbeat (``None``: the lease is the timeout);
    ``lease_until`` when, on the worker's clock, its lease ends (moved by each
    renewal); ``lease_lost`` is set when the database says the lease is no
    longer this attempt's (superseded, cancelled, past its timeout).
    ``reported`` is set once a result has been handed to the reporter (later
    ones are dropped), ``done`` once the handler returned or raised.
    """

    flow_slug: str
    run_id: str
    step_slug: str
    task_index: int
    input: Any
    attempt: int
    timeout: float
    handler: Handler
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reported: bool = False
    done: bool = False
    finished: float = 0.0
    future: concurrent.futures.Future[Any] | None = None
    heartbeat: float | None = None
    lease_until: float = 0.0
    lease_lost: bool = False
    max_attempts: int | None = None
    when_exhausted: str = "fail"
    #: the attempt's OpenTelemetry span while tracing (pgflow.worker._tracing), else None
    span: Any = None

    def __post_init__(self) -> None:
        if not self.lease_until:
            first = self.timeout if self.heartbeat is None else min(self.heartbeat, self.timeout)
            self.lease_until = self.started + first + LEASE_MARGIN

    @property
    def label(self) -> str:
        """``run_id=... step_slug=... task_index=... attempt=...`` for log lines."""
        return (
            f"run_id={self.run_id} step_slug={self.step_slug} task_index={self.task_index}"
            f" attempt={self.attempt}"
        )

    @property
    def fields(self) -> dict[str, Any]:
        """``run_id``, ``flow``, ``step``, ``task_index``, ``attempt``: ``extra`` of log records."""
        return {
            "run_id": self.run_id,
            "flow": self.flow_slug,
            "step": self.step_slug,
            "task_index": self.task_index,
            "attempt": self.attempt,
        }

    def final(self, retry: bool) -> bool:
        """Whether a failure of this attempt ends the task (no retry, or no attempt left)."""
        return not retry or (self.max_attempts is not None and self.attempt >= self.max_attempts)

    @property
    def lease_deadline(self) -> float:
        """When, on the worker's clock, the database may give the task to another worker."""
        return self.lease_until

    @property
    def run_limit(self) -> float:
        """The latest a lease of this attempt can ever end (``started + timeout`` + margin)."""
        return self.started + self.timeout + LEASE_MARGIN

    def renewed(self, now: float) -> None:
        """The database renewed the lease at ``now``: it lasts another heartbeat."""
        if self.heartbeat is not None:
            self.lease_until = min(now + self.heartbeat + LEASE_MARGIN, self.run_limit)


@dataclass(frozen=True)
class Outcome:
    """A task's result for the reporter: JSON text of the output, or an error message.

    For an error, ``retry`` false fails the task at once (``pgflow.Fail``) and
    ``retry_delay`` replaces the backoff (``pgflow.RetryAfter``).
    """

    task: Task
    output: str | None = None
    error: str | None = None
    retry: bool = True
    retry_delay: float | None = None
