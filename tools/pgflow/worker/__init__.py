"""The reference worker: runs the handlers of one or more flows.

Threads and connections (docs/design/architecture.md draws them):

* the claim loop (:mod:`~pgflow.worker.loop`, the calling thread) claims on
  the claim connection and waits for wake-ups;
* the listener (:mod:`~pgflow.worker.notify`) holds the LISTEN connection;
* the executor (:mod:`~pgflow.worker.executor`) runs plain handlers on up to
  ``concurrency`` threads, ``async def`` handlers on one event loop thread,
  and watches deadlines from one more thread;
* the reporter (:mod:`~pgflow.worker.reporter`) sends outcomes in batches on
  its own connection;
* the lifecycle (:mod:`~pgflow.worker.lifecycle`) starts, reconnects and stops
  them; :mod:`~pgflow.worker.backoff` times the retries.
"""

from __future__ import annotations

from pgflow.worker.config import ConfigError, WorkerConfig
from pgflow.worker.context import Context
from pgflow.worker.lifecycle import Worker

__all__ = ["ConfigError", "Context", "Worker", "WorkerConfig"]
