"""pgflow: durable DAG workflows inside PostgreSQL (the Python package).

The names an application uses are importable from here; each is loaded on
first use, so ``import pgflow`` (and ``pgflow-build``) costs no database
driver.  The layers below are described in docs/design/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.4.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "AsyncClient": "pgflow.db.client",
    "AsyncEvents": "pgflow.db.client",
    "AsyncRunHandle": "pgflow.db.client",
    "Client": "pgflow.db.client",
    "Event": "pgflow.db.client",
    "Events": "pgflow.db.client",
    "RunHandle": "pgflow.db.client",
    "Flow": "pgflow.spec.dsl",
    "Concurrency": "pgflow.spec.dsl",
    "Fail": "pgflow.errors",
    "RetryAfter": "pgflow.errors",
    "Context": "pgflow.worker.context",
    "Worker": "pgflow.worker.lifecycle",
    "WorkerConfig": "pgflow.worker.config",
}

if TYPE_CHECKING:
    from pgflow.db.client import (
        AsyncClient,
        AsyncEvents,
        AsyncRunHandle,
        Client,
        Event,
        Events,
        RunHandle,
    )
    from pgflow.errors import Fail, RetryAfter
    from pgflow.spec.dsl import Concurrency, Flow
    from pgflow.worker.config import WorkerConfig
    from pgflow.worker.context import Context
    from pgflow.worker.lifecycle import Worker


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pgflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "AsyncClient",
    "AsyncEvents",
    "AsyncRunHandle",
    "Client",
    "Concurrency",
    "Context",
    "Event",
    "Events",
    "Fail",
    "Flow",
    "RetryAfter",
    "RunHandle",
    "Worker",
    "WorkerConfig",
    "__version__",
]
