"""pgflow worker --metrics-port: the worker's counters and histograms, served and parsed."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pgflow
from pgflow.testing import run_flow
from pgflow.worker import metrics

solo = pgflow.Flow("wm_solo", max_attempts=2, base_delay=1)
calls = {"flaky": 0}


@solo.step
def flaky(run: dict[str, int]) -> int:
    calls["flaky"] += 1
    if calls["flaky"] == 1:
        raise RuntimeError("first attempt fails")
    return run["n"]


@pytest.fixture
def served() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, thread = metrics.serve(port)
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        metrics.disable()
        server.shutdown()
        thread.join(timeout=10)


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.db
def test_worker_metrics_count_what_the_worker_did(db: str, served: str) -> None:
    calls["flaky"] = 0
    run = run_flow(solo, {"n": 3}, conninfo=db, fast_retries=True)
    assert run["status"] == "completed"
    got = samples(served)
    step = (("flow", "wm_solo"), ("step", "flaky"))
    assert got[("pgflow_worker_tasks_completed_total", step)] == 1
    assert got[("pgflow_worker_tasks_retried_total", step)] == 1
    assert got.get(("pgflow_worker_tasks_failed_total", step), 0) == 0
    assert got[("pgflow_worker_handler_duration_seconds_count", step)] == 2
    claims = got[("pgflow_worker_claim_seconds_count", (("flow", "wm_solo"),))]
    assert claims >= 2
    assert got[("pgflow_worker_claim_batch_size_count", (("flow", "wm_solo"),))] == claims
    assert got[("pgflow_worker_claim_batch_size_sum", (("flow", "wm_solo"),))] == 2
    assert got[("pgflow_worker_report_batch_size_sum", (("kind", "complete"),))] == 1
    assert got[("pgflow_worker_report_batch_size_sum", (("kind", "fail"),))] == 1
    assert got[("pgflow_worker_report_seconds_count", (("kind", "fail"),))] == 1


def test_hooks_do_nothing_without_a_sink() -> None:
    metrics.disable()
    metrics.observe_claim("f", 0.1, 3)  # no sink: no error, nothing kept
    metrics.observe_report("complete", 0.1, 3)
    assert metrics._sink is None
