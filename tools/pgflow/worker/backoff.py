"""Pauses between retries, and which errors are worth retrying.

:class:`Backoff` doubles a pause from ``minimum`` up to ``maximum`` and draws
each actual pause uniformly between ``minimum`` and that ceiling ("full
jitter" above the floor), so that workers cut off together do not come back
together.  :func:`is_transient` decides by error class -- which the
SQLSTATE chose (:func:`pgflow.errors.database_error`) -- never by message
text.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pgflow.errors import PgflowError


class Backoff:
    """Jittered exponential pauses: ``minimum`` <= pause <= min(maximum, minimum * 2**n)."""

    def __init__(
        self,
        minimum: float,
        maximum: float,
        *,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
        self._uniform = uniform
        self._ceiling = minimum

    def next(self) -> float:
        """The next pause in seconds (and raise the ceiling for the one after)."""
        pause = self._uniform(self.minimum, self._ceiling)
        self._ceiling = min(self.maximum, self._ceiling * 2)
        return min(max(pause, self.minimum), self.maximum)

    def reset(self) -> None:
        """Start again from ``minimum`` (after a success)."""
        self._ceiling = self.minimum


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same call later may succeed: a lost or refused connection,
    a server shutting down or starting up, a deadlock or serialisation failure."""
    return isinstance(exc, PgflowError) and bool(getattr(exc, "transient", False))
