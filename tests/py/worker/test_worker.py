"""The reference worker as a real process against a real database."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from worker_helpers import Workers, apply_spec, run_status, start, wait_until

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]


def _finished(db: str, run_ids: list[str]) -> bool:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pgflow.runs WHERE run_id = ANY(%s::uuid[])"
            " AND status <> 'started'",
            (run_ids,),
        ).fetchone()
    return row == (len(run_ids),)


def test_two_workers_complete_every_run_of_a_diamond_with_a_map(db: str, workers: Workers) -> None:
    apply_spec(db)
    runs = [start(db, "wt_dag", json.dumps({"n": n})) for n in range(1, 21)]
    workers.start(db, "--concurrency", "4")
    workers.start(db, "--concurrency", "4")
    wait_until(lambda: _finished(db, runs), 60, "all runs to finish")
    for n, run_id in enumerate(runs, start=1):
        assert run_status(db, run_id) == (
            "completed",
            {"total": {"sum": sum(i * i for i in range(n)), "count": n}},
            None,
        )
    with psycopg.connect(db) as conn:
        live = conn.execute(
            "SELECT count(*) FROM pgflow.workers WHERE stopped_at IS NULL"
            " AND last_heartbeat_at > now() - interval '30 seconds'"
        ).fetchone()
    assert live == (2,), "both workers are registered and alive"


def test_a_raising_handler_is_retried_then_fails_the_run(db: str, workers: Workers) -> None:
    apply_spec(db)
    run_id = start(db, "wt_behave", '{"mode": "raise"}')
    workers.start(db)
    wait_until(lambda: _finished(db, [run_id]), 30, "the run to fail")
    status, _, error = run_status(db, run_id)
    assert status == "failed"
    assert error == 'step "act" failed: ValueError: boom on attempt 3'
    with psycopg.connect(db) as conn:
        task = conn.execute(
            "SELECT status, attempts_count, error_message FROM pgflow.step_tasks WHERE run_id = %s",
            (run_id,),
        ).fetchone()
    assert task == ("failed", 3, "ValueError: boom on attempt 3")


@pytest.mark.parametrize("value", [0, False, "", [], {}, None])
def test_falsy_results_are_stored_as_themselves(db: str, workers: Workers, value: Any) -> None:
    apply_spec(db)
    run_id = start(db, "wt_behave", json.dumps({"mode": "return", "value": value}))
    workers.start(db)
    wait_until(lambda: _finished(db, [run_id]), 30, "the run to finish")
    assert run_status(db, run_id) == ("completed", {"act": value}, None)


def test_a_result_that_is_not_json_fails_the_task_clearly(db: str, workers: Workers) -> None:
    apply_spec(db)
    run_id = start(db, "wt_behave", '{"mode": "nonjson"}')
    workers.start(db)
    wait_until(lambda: _finished(db, [run_id]), 30, "the run to fail")
    status, _, error = run_status(db, run_id)
    assert status == "failed"
    assert "handler returned a value that is not JSON-serialisable (object)" in error


def test_a_handler_past_its_timeout_is_failed_and_run_again(db: str, workers: Workers) -> None:
    apply_spec(db)
    run_id = start(db, "wt_behave", '{"mode": "sleep", "seconds": 5, "until_attempt": 2}')
    proc = workers.start(db)
    wait_until(lambda: _finished(db, [run_id]), 30, "the run to finish")
    assert run_status(db, run_id) == ("completed", {"act": {"slept_on_attempt": 2}}, None)
    with psycopg.connect(db) as conn:
        task = conn.execute(
            "SELECT attempts_count, error_message FROM pgflow.step_tasks WHERE run_id = %s",
            (run_id,),
        ).fetchone()
    assert task == (2, "timeout: the handler ran longer than 3 s")
    time.sleep(2.5)  # the first attempt's late result arrives and is dropped
    proc.send_signal(signal.SIGTERM)
    out = workers.finish(proc, timeout=30)
    assert "late result dropped" in out
    assert proc.returncode == 0


def test_handlers_get_a_context_when_they_ask_for_one(db: str, workers: Workers) -> None:
    apply_spec(db)
    run_id = start(db, "wt_behave", '{"mode": "ctx"}')
    async_run = start(db, "wt_async", "[1, 2, 3]")
    workers.start(db)
    wait_until(lambda: _finished(db, [run_id, async_run]), 30, "the runs to finish")
    assert run_status(db, run_id)[1] == {
        "act": {
            "flow_slug": "wt_behave",
            "run_id": run_id,
            "step_slug": "act",
            "task_index": 0,
            "attempt": 1,
            "flow_input": {"mode": "ctx"},
        }
    }
    assert run_status(db, async_run)[1] == {
        "wait_and_double": [{"double": i * 2, "input": [1, 2, 3]} for i in (1, 2, 3)]
    }


def test_a_killed_worker_s_task_is_finished_by_another_after_the_lease(
    db: str, workers: Workers, tmp_path: Path
) -> None:
    apply_spec(db)
    marker = tmp_path / "started"
    run_id = start(
        db,
        "wt_behave",
        json.dumps({"mode": "sleep", "seconds": 60, "until_attempt": 2, "marker": str(marker)}),
    )
    first = workers.start(db)
    wait_until(marker.exists, 20, "the handler to start")
    first.kill()
    first.wait(timeout=10)
    killed_at = time.monotonic()
    workers.start(db)
    wait_until(lambda: _finished(db, [run_id]), 30, "the run to finish")
    recovery = time.monotonic() - killed_at
    assert run_status(db, run_id) == ("completed", {"act": {"slept_on_attempt": 2}}, None)
    with psycopg.connect(db) as conn:
        attempts = conn.execute(
            "SELECT attempts_count FROM pgflow.step_tasks WHERE run_id = %s", (run_id,)
        ).fetchone()
    assert attempts == (2,), "the killed attempt counts"
    assert recovery < 3 + 2 + 5, "recovered within the lease (timeout + 2 s) plus slack"


def test_sigterm_lets_running_handlers_finish_then_exits_0(
    db: str, workers: Workers, tmp_path: Path
) -> None:
    apply_spec(db)
    marker = tmp_path / "started"
    run_id = start(
        db, "wt_behave", json.dumps({"mode": "sleep", "seconds": 1.5, "marker": str(marker)})
    )
    proc = workers.start(db)
    wait_until(marker.exists, 20, "the handler to start")
    proc.send_signal(signal.SIGTERM)
    out = workers.finish(proc, timeout=20)
    assert proc.returncode == 0, out
    assert run_status(db, run_id)[0] == "completed"
    assert "stopped: 1 tasks completed" in out


def test_a_second_signal_exits_at_once(db: str, workers: Workers, tmp_path: Path) -> None:
    apply_spec(db)
    marker = tmp_path / "started"
    start(db, "wt_behave", json.dumps({"mode": "sleep", "seconds": 30, "marker": str(marker)}))
    proc = workers.start(db)
    wait_until(marker.exists, 20, "the handler to start")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    workers.finish(proc, timeout=10)
    assert proc.returncode == 128 + signal.SIGINT


def test_a_worker_refuses_to_start_when_the_database_has_another_shape(
    db: str, conn: Conn, workers: Workers
) -> None:
    conn.execute("SELECT pgflow.create_flow('wt_dag')")
    conn.execute("SELECT pgflow.add_step('wt_dag', 'root')")
    conn.execute("SELECT pgflow.add_step('wt_dag', 'square', ARRAY['root'])")  # not a map
    conn.execute("SELECT pgflow.add_step('wt_dag', 'count', ARRAY['root'])")
    conn.execute("SELECT pgflow.add_step('wt_dag', 'total', ARRAY['square', 'count'])")
    proc = workers.start(db)
    out = workers.finish(proc, timeout=30)
    assert proc.returncode == 1
    assert 'step "square": step_type is "single" in the database, "map" in the spec' in out
    assert 'flow "wt_behave" does not exist in the database' in out
    assert "pgflow-build" in out
