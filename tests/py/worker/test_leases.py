"""Heartbeats, fencing and retry control with real worker processes.

No timing assertions: waits are bounded far from what the code needs (a
heartbeat of 2 s against a timeout of 600 s), so they only tell "recovered by
the heartbeat" from "recovered by the timeout".  The figures live in
`make bench`.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from worker_helpers import Workers, apply_spec, run_status, start, wait_until

pytestmark = pytest.mark.db

SPEC = "tests/py/worker/lease_flows.py"


def marks(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def task_row(db: str, run_id: str) -> tuple[Any, ...]:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT status, attempts_count, output, error_message, last_worker_id"
            " FROM pgflow.step_tasks WHERE run_id = %s",
            (run_id,),
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_a_killed_worker_s_task_is_taken_over_at_its_heartbeat_not_its_timeout(
    db: str, workers: Workers, tmp_path: Path
) -> None:
    apply_spec(db, SPEC)
    marker = tmp_path / "marks"
    run_id = start(
        db, "wt_beat", json.dumps({"marker": str(marker), "seconds": 300, "until_attempt": 2})
    )
    first = workers.start(db, spec=SPEC)
    wait_until(lambda: len(marks(marker)) == 1, 30, "the first attempt to start")
    second = workers.start(db, spec=SPEC)
    wait_until(lambda: "started" in workers.output(second), 30, "the second worker to start")
    first.send_signal(signal.SIGKILL)
    # timeout is 600 s: anything well below it is the heartbeat's doing
    wait_until(lambda: run_status(db, run_id)[0] == "completed", 60, "the run to complete")
    assert run_status(db, run_id)[1] == {"hold": {"pid": second.pid, "attempt": 2}}
    assert [m[:2] for m in marks(marker)] == [[str(first.pid), "1"], [str(second.pid), "2"]]


def test_a_live_worker_keeps_a_long_task_beyond_its_heartbeat(
    db: str, workers: Workers, tmp_path: Path
) -> None:
    apply_spec(db, SPEC)
    marker = tmp_path / "marks"
    # 8 s of work against a lease of heartbeat + 2 = 4 s: only renewals keep it
    run_id = start(
        db, "wt_beat", json.dumps({"marker": str(marker), "seconds": 8, "until_attempt": 99})
    )
    one = workers.start(db, spec=SPEC)
    two = workers.start(db, spec=SPEC)
    wait_until(lambda: run_status(db, run_id)[0] == "completed", 60, "the run to complete")
    assert len(marks(marker)) == 1, "nobody took the task over while its worker renewed it"
    assert task_row(db, run_id)[:2] == ("completed", 1)
    assert {one.pid, two.pid} >= {int(marks(marker)[0][0])}


def test_a_paused_worker_s_late_result_does_not_replace_the_new_attempt_s(
    db: str, workers: Workers, tmp_path: Path
) -> None:
    """A zombie: SIGSTOP past its lease, another worker finishes, SIGCONT."""
    apply_spec(db, SPEC)
    marker = tmp_path / "marks"
    run_id = start(
        db, "wt_beat", json.dumps({"marker": str(marker), "seconds": 6, "until_attempt": 2})
    )
    zombie = workers.start(db, spec=SPEC)
    wait_until(lambda: len(marks(marker)) == 1, 30, "the first attempt to start")
    zombie.send_signal(signal.SIGSTOP)
    try:
        other = workers.start(db, spec=SPEC)
        wait_until(lambda: run_status(db, run_id)[0] == "completed", 60, "the takeover")
    finally:
        zombie.send_signal(signal.SIGCONT)
    # the zombie's handler wakes up, finishes attempt 1 and reports it
    wait_until(
        lambda: (
            "changed nothing" in workers.output(zombie) or "lease lost" in workers.output(zombie)
        ),
        60,
        "the zombie to report (and be refused)",
    )
    time.sleep(0.5)
    assert run_status(db, run_id)[1] == {"hold": {"pid": other.pid, "attempt": 2}}
    assert task_row(db, run_id)[:3] == ("completed", 2, {"pid": other.pid, "attempt": 2})


def test_pgflow_fail_fails_the_task_without_retries(
    db: str, workers: Workers, tmp_path: Path
) -> None:
    apply_spec(db, SPEC)
    marker = tmp_path / "marks"
    run_id = start(db, "wt_control", json.dumps({"marker": str(marker), "mode": "fail"}))
    workers.start(db, spec=SPEC)
    wait_until(lambda: run_status(db, run_id)[0] == "failed", 30, "the run to fail")
    assert len(marks(marker)) == 1, "one attempt of four"
    status, attempts, _, error, _ = task_row(db, run_id)
    assert (status, attempts, error) == ("failed", 1, "Fail: card declined")


def test_retry_after_sets_when_the_next_attempt_runs(
    db: str, workers: Workers, tmp_path: Path
) -> None:
    apply_spec(db, SPEC)
    marker = tmp_path / "marks"
    run_id = start(
        db, "wt_control", json.dumps({"marker": str(marker), "mode": "retry_after", "seconds": 3})
    )
    workers.start(db, spec=SPEC)
    wait_until(lambda: run_status(db, run_id)[0] == "completed", 30, "the run to complete")
    (a1, t1), (a2, t2) = ((m[0], float(m[1])) for m in marks(marker))
    assert (a1, a2) == ("1", "2")
    # base_delay is 1 s: a gap of 3 s or more is the handler's RetryAfter(3)
    assert t2 - t1 >= 3.0
    assert run_status(db, run_id)[1] == {"act": {"attempt": 2}}


def test_workers_survive_their_sessions_being_cut_again_and_again(
    db: str, workers: Workers, tmp_path: Path
) -> None:
    """pg_terminate_backend on every worker session every 1-50 ms for 10 s."""
    apply_spec(db)  # the worker tests' flows: wt_dag
    run_ids = [start(db, "wt_dag", json.dumps({"n": n})) for n in range(1, 31)]
    procs = [workers.start(db, "--concurrency", "4") for _ in range(3)]
    wait_until(
        lambda: all("started" in workers.output(p) for p in procs), 30, "the workers to start"
    )
    stop = threading.Event()
    cuts: list[int] = []

    def cutter() -> None:
        rng = random.Random(7)
        with psycopg.connect(db, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND backend_type = 'client backend'"
                ).fetchone()
                cuts.append(int(row[0]) if row else 0)
                time.sleep(rng.uniform(0.001, 0.05))

    thread = threading.Thread(target=cutter)
    thread.start()
    try:
        time.sleep(10)
    finally:
        stop.set()
        thread.join()
    assert sum(cuts) > 50, "sessions were cut"
    for proc in procs:
        assert proc.poll() is None, f"a worker exited:\n{workers.output(proc)[-3000:]}"

    def finished() -> bool:
        with psycopg.connect(db) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pgflow.runs WHERE status = 'completed'"
                " AND run_id = ANY(%s::uuid[])",
                (run_ids,),
            ).fetchone()
        return row == (len(run_ids),)

    wait_until(finished, 120, "every run to complete after the churn")


def test_a_worker_stops_serving_a_flow_redefined_under_it(
    db: str, workers: Workers, tmp_path: Path
) -> None:
    apply_spec(db, SPEC)
    only = tmp_path / "control_only.py"
    only.write_text(
        "from pgflow import Flow\n"
        "control = Flow('wt_control', max_attempts=4, base_delay=1)\n"
        "@control.step()\n"
        "def act(inp):\n"
        "    return 1\n"
    )
    proc = workers.start(db, spec=str(only))
    wait_until(lambda: "started" in workers.output(proc), 30, "the worker to start")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SELECT pgflow.delete_flow('wt_control')")
        conn.execute("SELECT pgflow.create_flow('wt_control', max_attempts => 4)")
        conn.execute("SELECT pgflow.add_step('wt_control', 'other')")
    out = workers.finish(proc, timeout=60)
    assert proc.returncode == 1
    assert "flow 'wt_control' changed in the database under this worker" in out
    assert 'the database has step "other" the spec lacks' in out


def test_one_worker_serves_two_versions_while_the_old_one_drains(
    db: str, workers: Workers, tmp_path: Path
) -> None:
    spec = "tests/py/worker/version_flows.py"
    apply_spec(db, spec)
    gate = tmp_path / "gate"
    # the name starts the highest version, 2; a v1 run is started explicitly
    v2_run = start(db, "wt_versions", json.dumps({"gate": str(gate)}))
    with psycopg.connect(db, autocommit=True) as conn:
        row = conn.execute(
            "SELECT run_id FROM pgflow.start_flow('wt_versions', %s::jsonb, version => 1)",
            (json.dumps({"gate": str(gate)}),),
        ).fetchone()
    assert row is not None
    v1_run = str(row[0])
    proc = workers.start(db, spec=spec)
    wait_until(lambda: run_status(db, v2_run)[0] == "completed", 30, "the v2 run to complete")
    assert run_status(db, v2_run)[1] == {"audit": {"saw": 2}}

    def drained() -> dict[str, bool]:
        with psycopg.connect(db) as conn:
            return {
                f["flow_slug"]: f["drained"]
                for (f,) in conn.execute("SELECT pgflow.list_flows()").fetchall()
            }

    assert drained() == {"wt_versions": False, "wt_versions@2": True}, "v1 still in flight"
    gate.write_text("open")
    wait_until(lambda: run_status(db, v1_run)[0] == "completed", 30, "the v1 run to drain")
    assert run_status(db, v1_run)[1] == {"work": {"version": 1, "pid": proc.pid}}
    assert drained() == {"wt_versions": True, "wt_versions@2": True}
    assert run_status(db, v2_run)[0] == "completed"
