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

    @property
    def label(self) -> str:
        """``run_id=... step_slug=... task_index=... attempt=...`` for log lines."""
        return (
            f"run_id={self.run_id} step_slug={self.step_slug} task_index={self.task_index}"
            f" attempt={self.attempt}"
        )

    @property
    def lease_deadline(self) -> float:
        """When, on the worker's clock, the database may give the task to another worker."""
        return self.started + self.timeout + LEASE_MARGIN


@dataclass(frozen=True)
class Outcome:
    """A task's result for the reporter: JSON text of the output, or an error message."""

    task: Task
    output: str | None = None
    error: str | None = None
