"""The worker protocol under real concurrent connections."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]


def _define(conn: Conn, flow: str, steps: list[tuple[str, list[str], str]]) -> None:
    conn.execute("SELECT pgflow.create_flow(%s)", (flow,))
    for slug, deps, step_type in steps:
        conn.execute(
            "SELECT pgflow.add_step(%s, %s, %s, step_type => %s)", (flow, slug, deps, step_type)
        )


def _claim(conn: Conn, flow: str, qty: int, worker: uuid.UUID) -> list[tuple[Any, ...]]:
    """read_with_poll + start_tasks, each its own transaction (autocommit)."""
    msgs = conn.execute(
        "SELECT msg_id FROM pgflow.read_with_poll(%s, 30, %s)", (flow, qty)
    ).fetchall()
    if not msgs:
        return []
    return conn.execute(
        "SELECT run_id, step_slug, task_index, input, msg_id FROM pgflow.start_tasks(%s, %s, %s)",
        (flow, [m[0] for m in msgs], worker),
    ).fetchall()


def test_many_workers_complete_a_wide_map_with_each_task_started_once(db: str, conn: Conn) -> None:
    _define(conn, "wide", [("each", [], "map"), ("total", ["each"], "single")])
    size = 1000
    run_id = conn.execute(
        "SELECT run_id FROM pgflow.start_flow('wide', %s)", (json.dumps(list(range(size))),)
    ).fetchone()[0]  # type: ignore[index]

    started: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        me = uuid.uuid4()
        try:
            with psycopg.connect(db, autocommit=True) as c:
                idle = 0
                while idle < 20:
                    tasks = _claim(c, "wide", 10, me)
                    if not tasks:
                        idle += 1
                        status = c.execute(
                            "SELECT status FROM pgflow.runs WHERE run_id = %s", (run_id,)
                        ).fetchone()
                        if status and status[0] != "started":
                            return
                        continue
                    idle = 0
                    for rid, step, index, task_input, _ in tasks:
                        with lock:
                            started[(step, index)] += 1
                        output = task_input * 2 if step == "each" else sum(task_input["each"])
                        c.execute(
                            "SELECT pgflow.complete_task(%s, %s, %s, %s)",
                            (rid, step, index, json.dumps(output)),
                        )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert all(n == 1 for n in started.values()), [k for k, n in started.items() if n > 1]
    assert len(started) == size + 1

    run = conn.execute(
        "SELECT status, remaining_steps, output FROM pgflow.runs WHERE run_id = %s", (run_id,)
    ).fetchone()
    assert run == ("completed", 0, {"total": sum(2 * i for i in range(size))})
    each = conn.execute(
        "SELECT status, initial_tasks, remaining_tasks, output FROM pgflow.step_states"
        " WHERE run_id = %s AND step_slug = 'each'",
        (run_id,),
    ).fetchone()
    assert each == ("completed", size, 0, [2 * i for i in range(size)])
    attempts = conn.execute(
        "SELECT attempts_count, status, count(*) FROM pgflow.step_tasks"
        " WHERE run_id = %s GROUP BY 1, 2",
        (run_id,),
    ).fetchall()
    assert attempts == [(1, "completed", size + 1)]


def test_concurrent_sibling_completions_queue_the_join_exactly_once(db: str, conn: Conn) -> None:
    """Many diamonds; both branches of each are completed at the same moment."""
    _define(
        conn,
        "diamond",
        [
            ("root", [], "single"),
            ("left", ["root"], "single"),
            ("right", ["root"], "single"),
            ("join", ["left", "right"], "single"),
        ],
    )
    runs = 30
    for _ in range(runs):
        conn.execute("SELECT pgflow.start_flow('diamond', '{}')")
    me = uuid.uuid4()
    for rid, step, index, _, _ in _claim(conn, "diamond", runs, me):
        conn.execute("SELECT pgflow.complete_task(%s, %s, %s, '1')", (rid, step, index))
    branches = _claim(conn, "diamond", 2 * runs, me)
    assert len(branches) == 2 * runs

    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def complete(side: str) -> None:
        try:
            with psycopg.connect(db, autocommit=True) as c:
                for rid, step, index, _, _ in branches:
                    if step != side:
                        continue
                    barrier.wait(timeout=10)
                    c.execute(
                        "SELECT pgflow.complete_task(%s, %s, %s, %s)",
                        (rid, step, index, json.dumps(side)),
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=complete, args=(s,)) for s in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    joins = conn.execute(
        "SELECT count(*), count(DISTINCT run_id) FROM pgflow.step_tasks WHERE step_slug = 'join'"
    ).fetchone()
    assert joins == (runs, runs)
    states = conn.execute(
        "SELECT status, remaining_deps, count(*) FROM pgflow.step_states"
        " WHERE step_slug = 'join' GROUP BY 1, 2"
    ).fetchall()
    assert states == [("started", 0, runs)]
    inputs = conn.execute(
        "SELECT DISTINCT input FROM pgflow.start_tasks('diamond',"
        " ARRAY(SELECT msg_id FROM pgflow.read_with_poll('diamond', 30, 100)), gen_random_uuid())"
    ).fetchall()
    assert inputs == [({"run": {}, "left": "left", "right": "right"},)]


def test_a_stalled_claim_does_not_block_other_workers(db: str, conn: Conn) -> None:
    _define(conn, "stall", [("each", [], "map")])
    conn.execute("SELECT pgflow.start_flow('stall', '[1, 2, 3, 4]')")
    with psycopg.connect(db) as stalled:  # not autocommit: holds its row locks
        first = stalled.execute("SELECT msg_id FROM pgflow.read_with_poll('stall', 30, 2)")
        held = {row[0] for row in first.fetchall()}
        assert len(held) == 2
        with psycopg.connect(db, autocommit=True) as other:
            other.execute("SET lock_timeout = '2s'")
            got = other.execute(
                "SELECT msg_id FROM pgflow.read_with_poll('stall', 30, 10)"
            ).fetchall()
        assert len(got) == 2
        assert held.isdisjoint(row[0] for row in got)
        stalled.rollback()
    # the stalled transaction rolled back: its two tasks are claimable again
    again = conn.execute("SELECT msg_id FROM pgflow.read_with_poll('stall', 30, 10)").fetchall()
    assert {row[0] for row in again} == held


def test_two_workers_starting_the_same_leased_tasks_start_each_once(db: str, conn: Conn) -> None:
    _define(conn, "race", [("each", [], "map")])
    conn.execute("SELECT pgflow.start_flow('race', '[1, 2, 3, 4, 5, 6]')")
    msg_ids = [
        r[0] for r in conn.execute("SELECT msg_id FROM pgflow.read_with_poll('race', 30, 10)")
    ]
    results: list[int] = []
    barrier = threading.Barrier(2)

    def start() -> None:
        with psycopg.connect(db, autocommit=True) as c:
            barrier.wait(timeout=10)
            rows = c.execute(
                "SELECT msg_id FROM pgflow.start_tasks('race', %s, gen_random_uuid())", (msg_ids,)
            ).fetchall()
            results.extend(r[0] for r in rows)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == sorted(msg_ids)
    assert conn.execute(
        "SELECT count(*) FROM pgflow.step_tasks WHERE attempts_count = 1 AND status = 'started'"
    ).fetchone() == (6,)
