"""What a handler gets besides its input: :class:`Context`."""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

#: The logger behind :attr:`Context.logger` (handlers' own lines).
HANDLER_LOGGER = "pgflow.handler"


class TaskLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter whose records carry the task's ``run_id``, ``flow``, ``step``,
    ``task_index`` and ``attempt`` as attributes (``extra``); a line's own
    ``extra`` is merged in, not replaced."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


class Context:
    """The task a handler runs, for handlers that ask for it (see typed-handlers.md).

    ``flow_input`` is the run's input: for single steps it is part of the
    task's input already; for map tasks (whose input is one element) the
    worker fetches it on first use, once per task.  ``logger`` logs with the
    task's fields attached.

    The constructor is public so that handlers can be unit-tested without a
    worker::

        ctx = pgflow.Context("order", step_slug="charge", attempt=2, flow_input={"id": 1})
        assert charge({"run": {"id": 1}}, ctx) == ...
    """

    __slots__ = (
        "_flow_input",
        "_logger",
        "attempt",
        "flow_slug",
        "run_id",
        "step_slug",
        "task_index",
    )

    def __init__(
        self,
        flow_slug: str,
        run_id: str = "",
        step_slug: str = "",
        task_index: int = 0,
        attempt: int = 1,
        *,
        flow_input: Any = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.flow_slug = flow_slug
        self.run_id = run_id
        self.step_slug = step_slug
        self.task_index = task_index
        self.attempt = attempt
        self._flow_input: Callable[[], Any] = lambda: flow_input
        self._logger: logging.Logger | None = logger

    @classmethod
    def lazy(
        cls,
        flow_slug: str,
        run_id: str,
        step_slug: str,
        task_index: int,
        attempt: int,
        fetch: Callable[[], Any],
    ) -> Context:
        """A context whose ``flow_input`` comes from ``fetch`` on first use (the worker's)."""
        ctx = cls(flow_slug, run_id, step_slug, task_index, attempt)
        ctx._flow_input = fetch
        return ctx

    @property
    def flow_input(self) -> Any:
        """The run's input (fetched on first use for map tasks)."""
        return self._flow_input()

    @property
    def fields(self) -> dict[str, Any]:
        """``run_id``, ``flow``, ``step``, ``task_index``, ``attempt``: the logger's ``extra``."""
        return {
            "run_id": self.run_id,
            "flow": self.flow_slug,
            "step": self.step_slug,
            "task_index": self.task_index,
            "attempt": self.attempt,
        }

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A :class:`logging.LoggerAdapter` of logger ``pgflow.handler`` carrying :attr:`fields`."""
        base = self._logger or logging.getLogger(HANDLER_LOGGER)
        return TaskLogger(base, self.fields)

    def __repr__(self) -> str:
        return (
            f"Context(flow_slug={self.flow_slug!r}, run_id={self.run_id!r},"
            f" step_slug={self.step_slug!r}, task_index={self.task_index},"
            f" attempt={self.attempt})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return self.fields == other.fields

    def __hash__(self) -> int:
        return hash(tuple(self.fields.values()))
