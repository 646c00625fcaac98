"""``/metrics`` of ``pgflow ui``: gauges read from SQL (pgflow.dashboard_snapshot) per scrape.

Each scrape makes one call of ``pgflow.dashboard_snapshot()`` (granted by
``pgflow.grant_dashboard``) and one of ``pgflow.list_flows()``.  The metric
list is docs/reference/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector as _Base

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from pgflow.ui._app import Database

TASK_STATUSES = ("queued", "started", "completed", "failed", "cancelled")
RUN_STATUSES = ("started", "completed", "failed", "cancelled")


def families(snapshot: dict[str, Any], flows: list[dict[str, Any]]) -> list[Metric]:
    """The gauges of one snapshot (every known status present, zeros included)."""
    tasks = GaugeMetricFamily(
        "pgflow_tasks", "tasks by flow, step and status", labels=["flow", "step", "status"]
    )
    queue = GaugeMetricFamily(
        "pgflow_queue_tasks",
        "open tasks by flow, step and state (ready, delayed, started, stalled)",
        labels=["flow", "step", "state"],
    )
    oldest = GaugeMetricFamily(
        "pgflow_oldest_claimable_age_seconds",
        "age of the oldest claimable task of a step (0: none)",
        labels=["flow", "step"],
    )
    runs = GaugeMetricFamily("pgflow_runs", "runs by flow and status", labels=["flow", "status"])
    workers = GaugeMetricFamily(
        "pgflow_workers_alive", "registered workers with a heartbeat within 30 s"
    )
    running = GaugeMetricFamily(
        "pgflow_worker_running_tasks", "leased tasks of each live worker", labels=["worker_id"]
    )
    counted: dict[tuple[str, str], dict[str, int]] = {}
    for row in snapshot.get("tasks") or []:
        key = (str(row["flow_slug"]), str(row["step_slug"]))
        counted.setdefault(key, {})[str(row["status"])] = int(row["count"])
    for (flow, step), by_status in sorted(counted.items()):
        for status in TASK_STATUSES:
            tasks.add_metric([flow, step, status], by_status.get(status, 0))
    for row in snapshot.get("queues") or []:
        labels = [str(row["flow_slug"]), str(row["step_slug"])]
        for state in ("ready", "delayed", "started", "stalled"):
            queue.add_metric([*labels, state], int(row[state]))
        oldest.add_metric(labels, float(row["oldest_claimable_s"] or 0.0))
    run_counts: dict[str, dict[str, int]] = {str(f["flow_slug"]): {} for f in flows}
    for row in snapshot.get("runs") or []:
        run_counts.setdefault(str(row["flow_slug"]), {})[str(row["status"])] = int(row["count"])
    for flow, by_status in sorted(run_counts.items()):
        for status in RUN_STATUSES:
            runs.add_metric([flow, status], by_status.get(status, 0))
    alive = [w for w in snapshot.get("workers") or [] if w.get("alive")]
    workers.add_metric([], len(alive))
    for w in alive:
        running.add_metric([str(w["worker_id"])], int(w["running"]))
    return [tasks, queue, oldest, runs, workers, running]


class Collector(_Base):
    """Reads the gauges from the database at each scrape."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        snapshot = self.db.value("SELECT pgflow.dashboard_snapshot()")
        flows = self.db.rows("SELECT pgflow.list_flows()")
        yield from families(snapshot if isinstance(snapshot, dict) else {}, flows)

    def render(self) -> bytes:
        return generate_latest(self.registry)
