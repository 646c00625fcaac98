"""Prometheus metrics of the reference worker (``pgflow worker --metrics-port N``).

The worker calls the ``observe_*`` hooks; they do nothing until :func:`serve`
(or :func:`enable`) installed a sink, so a worker without the ``ui`` extra
(prometheus_client) pays one ``None`` check per hook.  The metric list is
docs/reference/metrics.md ("Worker").
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from pgflow.errors import PgflowError

if TYPE_CHECKING:
    from pgflow.worker.task import Task

#: Seconds buckets for handler durations and database round trips.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class WorkerMetrics:
    """The worker's counters and histograms in a registry of their own."""

    def __init__(self) -> None:
        try:
            from prometheus_client import (  # noqa: PLC0415 - optional dependency
                CollectorRegistry,
                Counter,
                Histogram,
            )
        except ImportError as exc:
            raise PgflowError(
                "--metrics-port needs prometheus_client: pip install 'pgflow-tools[ui]'"
            ) from exc
        self.registry = CollectorRegistry()
        r = self.registry
        step = ["flow", "step"]
        self.completed = Counter(
            "pgflow_worker_tasks_completed", "tasks this worker completed", step, registry=r
        )
        self.failed = Counter(
            "pgflow_worker_tasks_failed",
            "attempts that failed for good (no retry left, or Fail)",
            step,
            registry=r,
        )
        self.retried = Counter(
            "pgflow_worker_tasks_retried", "failed attempts that will be retried", step, registry=r
        )
        self.duration = Histogram(
            "pgflow_worker_handler_duration_seconds",
            "claim to outcome of each attempt (the handler's run time)",
            step,
            buckets=BUCKETS,
            registry=r,
        )
        self.claim = Histogram(
            "pgflow_worker_claim_seconds",
            "round trip of one claim_tasks call",
            ["flow"],
            buckets=BUCKETS,
            registry=r,
        )
        self.claim_size = Histogram(
            "pgflow_worker_claim_batch_size",
            "tasks one claim_tasks call returned (empty claims included)",
            ["flow"],
            buckets=SIZES,
            registry=r,
        )
        self.report = Histogram(
            "pgflow_worker_report_seconds",
            "round trip of one complete_tasks / fail_tasks call",
            ["kind"],
            buckets=BUCKETS,
            registry=r,
        )
        self.report_size = Histogram(
            "pgflow_worker_report_batch_size",
            "outcomes one complete_tasks / fail_tasks call reported",
            ["kind"],
            buckets=SIZES,
            registry=r,
        )


_lock = threading.Lock()
_sink: WorkerMetrics | None = None


def enable() -> WorkerMetrics:
    """Install the sink (idempotent) and return it."""
    global _sink
    with _lock:
        if _sink is None:
            _sink = WorkerMetrics()
        return _sink


def disable() -> None:
    """Remove the sink: the hooks do nothing again."""
    global _sink
    with _lock:
        _sink = None


def serve(port: int, host: str = "127.0.0.1") -> tuple[Any, Any]:
    """Install the sink and serve it on ``host:port`` (``/metrics``); (server, thread)."""
    from prometheus_client import start_http_server  # noqa: PLC0415 - optional dependency

    sink = enable()
    try:
        return start_http_server(port, addr=host, registry=sink.registry)
    except OSError as exc:
        raise PgflowError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc


def observe_task(task: Task, error: str | None, final: bool) -> None:
    """One reported outcome: completed, failed for good, or to be retried."""
    sink = _sink
    if sink is None:
        return
    labels = (task.flow_slug, task.step_slug)
    if error is None:
        sink.completed.labels(*labels).inc()
    elif final:
        sink.failed.labels(*labels).inc()
    else:
        sink.retried.labels(*labels).inc()
    if task.finished:
        sink.duration.labels(*labels).observe(max(0.0, task.finished - task.started))


def observe_claim(flow: str, seconds: float, size: int) -> None:
    sink = _sink
    if sink is not None:
        sink.claim.labels(flow).observe(seconds)
        sink.claim_size.labels(flow).observe(size)


def observe_report(kind: str, seconds: float, size: int) -> None:
    sink = _sink
    if sink is not None:
        sink.report.labels(kind).observe(seconds)
        sink.report_size.labels(kind).observe(size)
