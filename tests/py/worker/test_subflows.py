"""Sub-flows with real workers: a three-level nesting and a 1 000-element map
over a two-step sub-flow."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time

import psycopg
import pytest
from worker_helpers import PGFLOW, ROOT, Workers, apply_spec, run_status, start, wait_until

pytestmark = pytest.mark.db

SPEC = "tests/py/worker/subflow_flows.py"


def finished(db: str, run_id: str) -> tuple[object, ...] | None:
    status = run_status(db, run_id)
    return status if status[0] != "started" else None


def test_three_levels_of_sub_flows_complete_through_workers(db: str, workers: Workers) -> None:
    apply_spec(db, SPEC)
    workers.start(db, spec=SPEC)
    run_id = start(db, "sf_top", '{"n": 5}')
    status, output, error = wait_until(lambda: finished(db, run_id), 60, "sf_top to finish")
    assert (status, error) == ("completed", None)
    assert output == {"report": {"total": sum(2 * i for i in range(5))}}
    with psycopg.connect(db) as conn:
        tree = conn.execute(
            """
            WITH RECURSIVE t AS (
                SELECT run_id, flow_slug, status, depth FROM pgflow.runs WHERE run_id = %s
                UNION ALL
                SELECT r.run_id, r.flow_slug, r.status, r.depth
                FROM pgflow.runs AS r JOIN t ON r.parent_run_id = t.run_id
            )
            SELECT flow_slug, depth, status, count(*) FROM t GROUP BY 1, 2, 3 ORDER BY 2
            """,
            (run_id,),
        ).fetchall()
        doc = conn.execute("SELECT pgflow.get_run(%s)", (run_id,)).fetchone()
    assert tree == [
        ("sf_top", 0, "completed", 1),
        ("sf_mid", 1, "completed", 1),
        ("sf_leaf", 2, "completed", 5),
    ]
    assert doc is not None
    (child,) = doc[0]["children"]
    assert (child["flow_slug"], child["status"], child["step_slug"]) == (
        "sf_mid", "completed", "mid",
    )  # fmt: skip

    # pgflow status nests the children under their sub-flow steps
    shown = subprocess.run(
        [PGFLOW, "status", run_id, "--dsn", db],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    lines = shown.splitlines()
    assert lines[0].startswith(f"run {run_id}  flow sf_top  completed")
    assert any(line.startswith("├─ mid ") for line in lines)
    assert any(line.startswith("│    run ") and "flow sf_mid  completed" in line for line in lines)
    assert sum("flow sf_leaf  completed" in line for line in lines) == 5
    assert any(line.startswith("│    ├─ each ") for line in lines)


def test_a_thousand_element_map_over_a_two_step_sub_flow(db: str, workers: Workers) -> None:
    apply_spec(db, SPEC)
    workers.start(db, "--concurrency", "20", spec=SPEC)
    began = time.monotonic()
    run_id = start(db, "sf_fan", json.dumps(list(range(1000))))
    status, output, error = wait_until(lambda: finished(db, run_id), 300, "sf_fan to finish")
    elapsed = time.monotonic() - began
    assert (status, error) == ("completed", None)
    assert isinstance(output, dict)
    assert output["each"] == [{"times_ten": (i + 1) * 10} for i in range(1000)]
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (parent_task_index, parent_attempt)),"
            " bool_and(status = 'completed') FROM pgflow.runs WHERE parent_run_id = %s",
            (run_id,),
        ).fetchone()
    assert row == (1000, 1000, True)  # one child per element and attempt, none left over
    shown = subprocess.run(
        [PGFLOW, "status", run_id, "--dsn", db],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "… 995 more child runs (995 completed)" in shown
    assert sum("flow sf_item  completed" in line for line in shown.splitlines()) == 5
    print(f"1 000-element map over a 2-step sub-flow: {elapsed:.1f} s")


def test_sub_flows_survive_worker_kills(db: str, workers: Workers) -> None:
    """Workers killed (SIGKILL) and replaced while 20 runs map over a sub-flow: every
    parent completes with its children's outputs in element order, no child is left
    without its parent, and no task attempt has two children."""
    apply_spec(db, SPEC)
    rng = random.Random(20)
    procs = [workers.start(db, "--concurrency", "4", spec=SPEC) for _ in range(3)]
    sizes = [rng.randint(0, 12) for _ in range(20)]
    runs = [start(db, "sf_slow_fan", json.dumps(list(range(n)))) for n in sizes]
    deadline = time.monotonic() + 8
    kills = 0
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 0.5))
        victim = procs.pop(rng.randrange(len(procs)))
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        kills += 1
        procs.append(workers.start(db, "--concurrency", "4", spec=SPEC))
    assert kills >= 10

    def all_done() -> bool:
        return all(run_status(db, r)[0] != "started" for r in runs)

    wait_until(all_done, 120, "every sf_slow_fan run to finish after the kills")
    for run_id, n in zip(runs, sizes, strict=True):
        status, output, error = run_status(db, run_id)
        assert (status, error) == ("completed", None), run_id
        assert output == {"each": [{"square": i * i} for i in range(n)]}
    with psycopg.connect(db) as conn:
        orphans = conn.execute(
            "SELECT count(*) FROM pgflow.runs AS c WHERE c.parent_run_id IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM pgflow.step_tasks AS t WHERE t.run_id ="
            " c.parent_run_id AND t.step_slug = c.parent_step_slug"
            " AND t.task_index = c.parent_task_index)"
        ).fetchone()
        duplicates = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM pgflow.runs WHERE parent_run_id IS NOT NULL"
            " GROUP BY parent_run_id, parent_step_slug, parent_task_index, parent_attempt"
            " HAVING count(*) > 1) AS d"
        ).fetchone()
        children = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'completed')"
            " FROM pgflow.runs WHERE flow_slug = 'sf_slow_item'"
        ).fetchone()
    assert orphans == (0,)
    assert duplicates == (0,)
    # a child is a fresh run per attempt of its task; none failed, so one per element
    assert children == (sum(sizes), sum(sizes))


def test_events_of_a_child_run_carry_its_parent(db: str) -> None:
    apply_spec(db, SPEC)
    with psycopg.connect(db, autocommit=True) as events:
        events.execute("LISTEN pgflow_events")
        events.execute("SELECT pgflow.listen_events()")
        run_id = start(db, "sf_top", '{"n": 1}')
        seen = [json.loads(n.payload) for n in events.notifies(timeout=2, stop_after=2)]
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT run_id FROM pgflow.runs WHERE parent_run_id = %s", (run_id,))
        (child,) = row.fetchall()
    assert seen == [
        {"event": "run:started", "flow_slug": "sf_top", "run_id": run_id, "status": "started"},
        {
            "event": "run:started",
            "flow_slug": "sf_mid",
            "run_id": str(child[0]),
            "status": "started",
            "parent_run_id": run_id,
        },
    ]
