"""Runs survive an upgrade: finished ones unchanged, running ones finish with the new code.

At each released version V (by CREATE EXTENSION and by the plain install), a
database gets a completed run, a failed run, a run with a leased (started)
task, a run whose tasks are only queued, a run failed and retried, and a
registered worker; then it is upgraded to the default version.  The finished
runs read the same afterwards; the leased task is completed by the worker
that held it, every running run completes (the retried one too), the failed
run can be retried on the new version, and the worker heartbeats and stops.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from upgrade_helpers import DEFAULT, RELEASED, NewDb, connect

from pgflow.db import install as installer

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]
WORKER = uuid.UUID("00000000-0000-4000-8000-000000000001")


def _define(conn: Conn) -> None:
    # split -> each (map over split's list) -> total; note is a second root
    conn.execute("SELECT pgflow.create_flow('survive')")
    conn.execute("SELECT pgflow.add_step('survive', 'split')")
    conn.execute("SELECT pgflow.add_step('survive', 'each', ARRAY['split'], step_type => 'map')")
    conn.execute("SELECT pgflow.add_step('survive', 'total', ARRAY['each'])")
    conn.execute("SELECT pgflow.add_step('survive', 'note')")
    conn.execute("SELECT pgflow.create_flow('fragile', max_attempts => 1)")
    conn.execute("SELECT pgflow.add_step('fragile', 'only')")


def _start(conn: Conn, flow: str, n: int) -> str:
    row = conn.execute(
        "SELECT run_id FROM pgflow.start_flow(%s, %s::jsonb)", (flow, f'{{"n": {n}}}')
    ).fetchone()
    assert row
    return str(row[0])


def _output(step: str, task_input: Any) -> str:
    if step == "split":
        return "[1, 2, 3]"
    if step == "each":
        return str(int(task_input) * 10)
    if step == "total":
        return str(sum(task_input["each"]))
    return '"noted"'


def _claim(conn: Conn, flow: str, qty: int = 100) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT run_id, step_slug, task_index, input FROM pgflow.claim_tasks(%s, %s, %s)",
        (flow, qty, WORKER),
    ).fetchall()


def _complete(conn: Conn, task: tuple[Any, ...]) -> None:
    run_id, step, index, task_input = task
    conn.execute(
        "SELECT pgflow.complete_task(%s, %s, %s, %s::jsonb)",
        (run_id, step, index, _output(step, task_input)),
    )


def _drain(conn: Conn, flow: str) -> None:
    for _ in range(20):
        tasks = _claim(conn, flow)
        if not tasks:
            return
        for task in tasks:
            _complete(conn, task)
    raise AssertionError("tasks keep coming")


def _run(conn: Conn, run_id: str) -> Any:
    row = conn.execute("SELECT pgflow.get_run(%s)", (run_id,)).fetchone()
    assert row
    return row[0]


def _install_old(conninfo: str, version: str, method: str) -> Conn:
    conn = connect(conninfo)
    if method == "extension":
        conn.execute(f"CREATE EXTENSION pgflow VERSION '{version}'".encode())
    else:
        installer.apply(conn, installer.plan_install(conn, version, "plain"))
    assert installer.installed(conn) == installer.Installed(version, method)  # type: ignore[arg-type]
    return conn


@pytest.mark.parametrize("method", ["extension", "plain"])
@pytest.mark.parametrize("version", RELEASED)
def test_runs_survive_the_upgrade_and_running_ones_complete(
    new_db: NewDb, version: str, method: str
) -> None:
    with _install_old(new_db("data"), version, method) as conn:
        _define(conn)
        done = _start(conn, "survive", 1)
        _drain(conn, "survive")
        failed = _start(conn, "fragile", 2)
        (task,) = _claim(conn, "fragile")
        conn.execute("SELECT pgflow.fail_task(%s, %s, %s, 'boom')", (task[0], task[1], task[2]))
        leased = _start(conn, "survive", 3)
        held = _claim(conn, "survive")  # leased's split and note: started, not completed
        assert {t[1] for t in held} == {"split", "note"}
        queued = _start(conn, "survive", 4)
        # a run failed and retried at the old version: queued again, not yet claimed
        retried = _start(conn, "fragile", 6)
        (task,) = _claim(conn, "fragile")
        conn.execute("SELECT pgflow.fail_task(%s, %s, %s, 'boom')", (task[0], task[1], task[2]))
        conn.execute("SELECT pgflow.retry_run(%s)", (retried,))
        # a worker registered at the old version
        conn.execute(
            "SELECT pgflow.register_worker(%s, ARRAY['survive'], 'old-host', 1)", (WORKER,)
        )
        before = {r: _run(conn, r) for r in (done, failed)}
        assert before[done]["status"] == "completed"
        assert before[failed]["status"] == "failed"

        installer.apply(conn, installer.plan_upgrade(conn, DEFAULT))
        assert installer.installed(conn) == installer.Installed(DEFAULT, method)  # type: ignore[arg-type]

        after = {r: _run(conn, r) for r in (done, failed)}
        if installer.version_key(version) < (0, 3, 0):
            for run in after.values():  # 0.3.0 names the flow and version a run uses
                assert (run.pop("flow_name"), run.pop("version")) == (run["flow_slug"], 1)
                # 0.3.0 links child runs of sub-flows to their parent
                assert (run.pop("depth"), run.pop("parent"), run.pop("children")) == (0, None, [])
                assert run.pop("paused") is False  # 0.3.0 says when the run's flow is paused
                for step in run["steps"]:  # 0.3.0 says what a wait step waits for
                    assert step.pop("waiting_for") is None
                    assert step.pop("subflow") is None  # and which flow a sub-flow step runs
                    # and what waits for a concurrency slot
                    assert step.pop("waiting_for_slot") is None
        assert after == before
        for task in held:  # the worker that held the leases reports after the upgrade
            _complete(conn, task)
        _drain(conn, "survive")
        for run_id in (leased, queued):
            run = _run(conn, run_id)
            assert run["status"] == "completed", run
            assert run["output"] == {"total": 60, "note": "noted"}
        # the run retried before the upgrade finishes after it
        (task,) = _claim(conn, "fragile")
        assert str(task[0]) == retried
        _complete(conn, task)
        assert _run(conn, retried)["status"] == "completed"
        # a run that failed before the upgrade is retried after it, with a new budget
        conn.execute("SELECT pgflow.retry_run(%s)", (failed,))
        (task,) = _claim(conn, "fragile")
        assert str(task[0]) == failed
        _complete(conn, task)
        assert _run(conn, failed)["status"] == "completed"
        # the worker registered at the old version heartbeats and stops on the new one
        heartbeat = conn.execute("SELECT pgflow.worker_heartbeat(%s)", (WORKER,)).fetchone()
        assert heartbeat == (True,)
        stopped = conn.execute("SELECT pgflow.stop_worker(%s)", (WORKER,)).fetchone()
        assert stopped == (True,)
        row = conn.execute(
            "SELECT host, stopped_at IS NOT NULL FROM pgflow.workers WHERE worker_id = %s",
            (WORKER,),
        ).fetchone()
        assert row == ("old-host", True)
        # and new runs work too
        fresh = _start(conn, "survive", 5)
        _drain(conn, "survive")
        assert _run(conn, fresh)["status"] == "completed"
