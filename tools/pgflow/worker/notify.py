"""Wake-ups: ``LISTEN pgflow_tasks`` on a connection of its own, and the PgBouncer probe.

PgBouncer in transaction mode accepts ``LISTEN`` but never delivers what is
sent: :meth:`Listener.start` checks that a notification sent from another
session (the claim connection) arrives within two seconds, and gives up
listening when it does not -- the worker then polls every
``poll_interval``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from pgflow.db.queries import Notification

log = logging.getLogger("pgflow.worker")

TASKS_CHANNEL = "pgflow_tasks"
#: Seconds the probe waits for its own notification.
PROBE_SECONDS = 2.0


class ListenQueries(Protocol):
    """What the listener calls (a subset of :class:`pgflow.db.queries.Queries`)."""

    def close(self) -> None: ...

    def listen_tasks(self) -> None: ...

    def listen_channel(self, channel: str) -> None: ...

    def unlisten_channel(self, channel: str) -> None: ...

    def notifies(self, timeout: float, stop_after: int | None = None) -> list[Notification]: ...

    def worker_idle(self, flows: Sequence[str], idle: bool) -> None: ...


class ProbeSender(Protocol):
    def notify_channel(self, channel: str, payload: str) -> None: ...


class Listener:
    """One LISTEN connection: probes it, marks the worker idle, collects woken flows."""

    def __init__(self, connect: Callable[[], ListenQueries], flows: Iterable[str]) -> None:
        self._connect = connect
        self._flows = frozenset(flows)
        self.queries: ListenQueries | None = None

    @property
    def listening(self) -> bool:
        return self.queries is not None

    def start(self, sender: ProbeSender, poll_interval: float) -> bool:
        """Open the connection, LISTEN, and probe it; whether wake-ups work through it."""
        self.close()
        queries = self._connect()
        try:
            queries.listen_tasks()
            probe = f"pgflow_probe_{uuid.uuid4().hex}"
            queries.listen_channel(probe)
            sender.notify_channel(probe, "probe")
            arrived = any(
                n.channel == probe for n in queries.notifies(timeout=PROBE_SECONDS, stop_after=1)
            )
            queries.unlisten_channel(probe)
        except BaseException:
            queries.close()
            raise
        if not arrived:
            queries.close()
            log.warning(
                "LISTEN does not work through this connection (PgBouncer in transaction"
                " mode?): polling every %.1f s instead; pass --no-listen to skip this check",
                poll_interval,
            )
            return False
        self.queries = queries
        return True

    def close(self) -> None:
        if self.queries is not None:
            queries, self.queries = self.queries, None
            try:
                queries.close()
            except Exception:  # closing a broken connection may fail; it is gone anyway
                log.debug("closing the LISTEN connection failed", exc_info=True)

    def woken(self, notes: Iterable[Notification]) -> set[str]:
        """The flows of ours that the notifications name."""
        return {n.payload for n in notes if n.channel == TASKS_CHANNEL and n.payload in self._flows}
