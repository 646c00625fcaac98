"""/metrics: the Prometheus text parsed by prometheus_client's parser, checked against SQL."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from .conftest import Start, Work

pytestmark = pytest.mark.db
Conn = psycopg.Connection[tuple[Any, ...]]


def scrape(ui: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = ui.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_match_the_sql_counts(
    ui: TestClient, conn: Conn, pipe: str, start: Start, work: Work
) -> None:
    for _ in range(4):
        start()
    work()  # one fetch completed, its store queued
    work(error="nope")  # the next fetch (oldest first) failed: its run failed
    worker = uuid.uuid4()
    conn.execute("SELECT pgflow.register_worker(%s, ARRAY['pipe'])", (worker,))
    conn.execute("SELECT pgflow.claim_tasks('pipe', 1, %s)", (worker,))
    samples = scrape(ui)

    for flow, step, status, count in conn.execute(
        "SELECT s.flow_slug, s.step_slug, st.status,"
        " (SELECT count(*) FROM pgflow.step_tasks AS t WHERE t.flow_slug = s.flow_slug"
        "  AND t.step_slug = s.step_slug AND t.status = st.status)"
        " FROM pgflow.steps AS s,"
        " unnest(ARRAY['queued', 'started', 'completed', 'failed', 'cancelled']) AS st(status)"
    ).fetchall():
        key = ("pgflow_tasks", (("flow", flow), ("status", status), ("step", step)))
        assert samples.get(key, 0.0) == count, key
    for status, count in conn.execute(
        "SELECT st.status, (SELECT count(*) FROM pgflow.runs AS r WHERE r.status = st.status)"
        " FROM unnest(ARRAY['started', 'completed', 'failed', 'cancelled']) AS st(status)"
    ).fetchall():
        assert samples[("pgflow_runs", (("flow", "pipe"), ("status", status)))] == count
    assert samples[("pgflow_runs", (("flow", "pipe"), ("status", "failed")))] == 1
    ready = conn.execute(
        "SELECT count(*) FROM pgflow.step_tasks"
        " WHERE step_slug = 'fetch' AND status = 'queued' AND vt <= now()"
    ).fetchone()
    assert ready is not None
    assert (
        samples[("pgflow_queue_tasks", (("flow", "pipe"), ("state", "ready"), ("step", "fetch")))]
        == ready[0]
        == 1
    )
    assert (
        samples[("pgflow_queue_tasks", (("flow", "pipe"), ("state", "started"), ("step", "fetch")))]
        == 1
    )
    assert (
        samples[("pgflow_oldest_claimable_age_seconds", (("flow", "pipe"), ("step", "fetch")))] >= 0
    )
    assert samples[("pgflow_workers_alive", ())] == 1
    assert samples[("pgflow_worker_running_tasks", (("worker_id", str(worker)),))] == 1


def test_metrics_of_an_empty_database_are_zero(ui: TestClient, pipe: str) -> None:
    samples = scrape(ui)
    assert samples[("pgflow_workers_alive", ())] == 0
    assert samples[("pgflow_runs", (("flow", "pipe"), ("status", "started")))] == 0
    assert not [k for k in samples if k[0] == "pgflow_tasks"]
