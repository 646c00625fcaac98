"""The worker's settings (:class:`WorkerConfig`), checked when created."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from pgflow.errors import ConfigError
from pgflow.spec.model import did_you_mean

__all__ = ["ConfigError", "WorkerConfig"]


@dataclass(frozen=True)
class WorkerConfig:
    """How a :class:`~pgflow.worker.Worker` runs.  Every value is checked on creation.

    * ``concurrency`` -- handlers running at once;
    * ``batch_size`` -- tasks claimed per call;
    * ``poll_interval`` -- seconds between fallback polls (delayed retries,
      start delays, missed wake-ups);
    * ``listen`` -- wait for NOTIFY wake-ups (off behind PgBouncer in
      transaction mode);
    * ``grace`` -- seconds running handlers get to finish after a stop;
    * ``heartbeat_interval`` -- seconds between ``worker_heartbeat`` calls;
    * ``report_batch`` -- most results sent in one ``complete_tasks`` call;
    * ``reconnect_min`` / ``reconnect_max`` -- the first and the longest pause
      between reconnection attempts (jittered);
    * ``connect_timeout`` -- how long a worker that has not started yet keeps
      trying to reach the database (server starting up, pool full) before it
      gives up.
    """

    concurrency: int = 10
    batch_size: int = 10
    poll_interval: float = 1.0
    listen: bool = True
    grace: float = 30.0
    heartbeat_interval: float = 5.0
    report_batch: int = 100
    reconnect_min: float = 0.2
    reconnect_max: float = 5.0
    connect_timeout: float = 30.0

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any], where: str = "") -> WorkerConfig:
        """A config from keyword settings (``Worker(..., concurrency=20)``, pyproject.toml);
        an unknown name is a :class:`ConfigError` naming it (and ``where`` it came from)."""
        names = [f.name for f in fields(cls)]
        prefix = f"{where}: " if where else ""
        for key in settings:
            if key not in names:
                raise ConfigError(
                    f"{prefix}unknown worker setting {key!r}{did_you_mean(key, names)}"
                    f" (settings: {', '.join(names)})"
                )
        try:
            return cls(**settings)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}") from None

    def __post_init__(self) -> None:
        limits: dict[str, tuple[float, float]] = {
            "concurrency": (1, 1000),
            "batch_size": (1, 1000),
            "poll_interval": (0.01, 3600),
            "grace": (0, 86400),
            "heartbeat_interval": (0.1, 3600),
            "report_batch": (1, 10000),
            "reconnect_min": (0.001, 60),
            "reconnect_max": (0.001, 3600),
            "connect_timeout": (0, 86400),
        }
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "listen":
                if not isinstance(value, bool):
                    raise ConfigError(f"listen must be true or false, got {value!r}")
                continue
            low, high = limits[f.name]
            integral = f.type in ("int", int)
            if isinstance(value, bool) or not isinstance(value, int if integral else (int, float)):
                kind = "an integer" if integral else "a number"
                raise ConfigError(f"{f.name} must be {kind}, got {value!r}")
            if not low <= value <= high:
                raise ConfigError(f"{f.name} must be between {low:g} and {high:g}, got {value!r}")
        if self.reconnect_max < self.reconnect_min:
            raise ConfigError(
                f"reconnect_max ({self.reconnect_max:g}) must not be below reconnect_min"
                f" ({self.reconnect_min:g})"
            )
