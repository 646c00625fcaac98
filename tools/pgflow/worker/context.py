"""What a handler gets besides its input: :class:`Context`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Context:
    """The task a handler runs, for handlers that take a second parameter.

    ``flow_input`` is the run's input: for single steps it is part of the
    task's input already; for map tasks (whose input is one element) the
    worker fetches it on first use, once per task.
    """

    flow_slug: str
    run_id: str
    step_slug: str
    task_index: int
    attempt: int
    _flow_input: Callable[[], Any] = field(repr=False, compare=False)

    @property
    def flow_input(self) -> Any:
        """The run's input (fetched on first use for map tasks)."""
        return self._flow_input()
