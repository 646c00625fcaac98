"""Claims and completions do work in proportion to their batch, with or without statistics.

A new installation, or tables just truncated, have no statistics: the planner
then guesses, and a guess once turned a completion of 100 tasks into a nested
loop over every started run (1.4 s a call with 2 000 runs) and a claim into a
read of every claimable task.  Here 20 000 runs are queued, nothing is
analyzed, and auto_explain reports every plan the protocol functions run
(nested statements included, as JSON): no plan node handles (returns or
filters out) more rows than a small multiple of the batch.  The same for one
run whose map step has 20 000 tasks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]

RUNS = 20_000
BATCH = 100
RUNTIME_TABLES = ("runs", "step_states", "step_tasks")

# 20 000 started runs of a -> b -> c with a's task queued, as start_flow leaves
# them (inserted set-based: start_flow one by one would take seconds)
QUEUE_RUNS = (
    """INSERT INTO pgflow.runs (run_id, flow_slug, status, input, remaining_steps)
       SELECT pgflow._uuid_v7(), 'plans', 'started', '{}', 3 FROM generate_series(1, %s)""",
    """INSERT INTO pgflow.step_states (run_id, step_slug, flow_slug, status, remaining_deps,
                                      initial_tasks, remaining_tasks, started_at)
       SELECT r.run_id, s.slug, 'plans', CASE WHEN s.slug = 'a' THEN 'started' ELSE 'created' END,
              CASE WHEN s.slug = 'a' THEN 0 ELSE 1 END,
              CASE WHEN s.slug = 'a' THEN 1 END, CASE WHEN s.slug = 'a' THEN 1 END,
              CASE WHEN s.slug = 'a' THEN now() END
       FROM pgflow.runs AS r, (VALUES ('a'), ('b'), ('c')) AS s (slug)""",
    """INSERT INTO pgflow.step_tasks (run_id, step_slug, flow_slug)
       SELECT r.run_id, 'a', 'plans' FROM pgflow.runs AS r""",
)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


@pytest.fixture
def queued(conn: Conn) -> Conn:
    conn.execute("SELECT pgflow.create_flow('plans')")
    conn.execute("SELECT pgflow.add_step('plans', 'a')")
    conn.execute("SELECT pgflow.add_step('plans', 'b', ARRAY['a'])")
    conn.execute("SELECT pgflow.add_step('plans', 'c', ARRAY['b'])")
    for table in RUNTIME_TABLES:
        conn.execute(f"ALTER TABLE pgflow.{table} SET (autovacuum_enabled = false)")
    conn.execute(QUEUE_RUNS[0], (RUNS,))
    conn.execute(QUEUE_RUNS[1])
    conn.execute(QUEUE_RUNS[2])
    analyzed = conn.execute(
        "SELECT count(*) FROM pg_stats WHERE schemaname = 'pgflow'"
        " AND tablename IN ('runs', 'step_states', 'step_tasks')"
    ).fetchone()
    assert analyzed == (0,), "the runtime tables must have no statistics for this test"
    return conn


def _record_plans(conn: Conn) -> list[dict[str, Any]]:
    """Every plan this session runs from now on, nested statements included."""
    plans: list[dict[str, Any]] = []
    conn.add_notice_handler(
        lambda diag: (
            plans.append(json.loads(diag.message_primary.split("plan:", 1)[1]))
            if diag.message_primary and "plan:" in diag.message_primary
            else None
        )
    )
    conn.execute("LOAD 'auto_explain'")
    for setting, value in (
        ("auto_explain.log_min_duration", "0"),
        ("auto_explain.log_analyze", "on"),
        ("auto_explain.log_timing", "off"),
        ("auto_explain.log_nested_statements", "on"),
        ("auto_explain.log_format", "json"),
        ("auto_explain.log_level", "notice"),
    ):
        conn.execute(f"SET {setting} = '{value}'")
    return plans


def _problems(plans: list[dict[str, Any]]) -> list[str]:
    """Plan nodes that handled (returned or filtered out) more than 10 rows per batch task."""
    problems = []
    for entry in plans:
        query = " ".join(entry["Query Text"].split())[:90]
        for node in _nodes(entry["Plan"]):
            handled = sum(
                node.get(key, 0)
                for key in (
                    "Actual Rows",
                    "Rows Removed by Filter",
                    "Rows Removed by Join Filter",
                    "Rows Removed by Index Recheck",
                )
            ) * node.get("Actual Loops", 1)
            if handled > 10 * BATCH:
                where = f" on {node['Relation Name']}" if "Relation Name" in node else ""
                problems.append(
                    f"{node['Node Type']}{where} handled {handled:.0f} rows in: {query}"
                )
    return problems


def _rounds(conn: Conn, flow: str, rounds: int) -> int:
    """Claim a batch, renew its leases and complete it, ``rounds`` times; tasks completed."""
    done = 0
    for _ in range(rounds):
        rows = conn.execute(
            "SELECT run_id, step_slug, task_index, attempt FROM pgflow.claim_tasks(%s, %s, %s)",
            (flow, BATCH, "00000000-0000-0000-0000-00000000000a"),
        ).fetchall()
        assert len(rows) == BATCH
        keys = ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        attempts = [r[3] for r in rows]
        held = conn.execute(
            "SELECT count(*) FROM pgflow.extend_leases(%s::uuid[], %s::text[], %s::int[],"
            " %s::int[])",
            (*keys, attempts),
        ).fetchone()
        assert held == (BATCH,)
        n = conn.execute(
            "SELECT pgflow.complete_tasks(%s::uuid[], %s::text[], %s::int[], %s::jsonb[],"
            " %s::int[])",
            (*keys, ["{}"] * BATCH, attempts),
        ).fetchone()
        assert n is not None
        done += n[0]
    return done


def test_chain_claims_and_completions_stay_on_the_keys(queued: Conn) -> None:
    conn = queued
    plans = _record_plans(conn)
    # more rounds than PL/pgSQL's five custom plans: both kinds are exercised
    assert _rounds(conn, "plans", 8) == 8 * BATCH
    conn.execute("RESET auto_explain.log_min_duration")
    assert len(plans) > 50, "auto_explain reported no nested plans"
    problems = _problems(plans)
    assert problems == [], "\n".join(problems)
    # the runs advanced: b is queued for the runs whose a completed
    queued_b = conn.execute(
        "SELECT count(*) FROM pgflow.step_tasks WHERE step_slug = 'b' AND status = 'queued'"
    ).fetchone()
    assert queued_b == (8 * BATCH,)


@pytest.mark.parametrize("analyzed", [False, True], ids=["no statistics", "analyzed"])
def test_per_task_protocol_stays_on_the_keys(queued: Conn, analyzed: bool) -> None:
    """read_with_poll + start_tasks + complete_task, as a minimal worker speaks it.

    Also with statistics: the generic plan of read_with_poll's claim then
    estimated thousands of leased rows and joined them by hashing the table.
    """
    conn = queued
    if analyzed:
        conn.execute("ANALYZE pgflow.runs, pgflow.step_states, pgflow.step_tasks")
    plans = _record_plans(conn)
    done = 0
    for _ in range(8):
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT msg_id FROM pgflow.read_with_poll('plans', 30, %s)", (BATCH,)
            ).fetchall()
        ]
        assert len(ids) == BATCH
        tasks = conn.execute(
            "SELECT run_id, step_slug, task_index, attempt FROM pgflow.start_tasks('plans', %s,"
            " '00000000-0000-0000-0000-00000000000a')",
            (ids,),
        ).fetchall()
        assert len(tasks) == BATCH
        for run_id, step, index, attempt in tasks[:10]:
            row = conn.execute(
                "SELECT pgflow.complete_task(%s, %s, %s, '{}', %s)", (run_id, step, index, attempt)
            ).fetchone()
            done += bool(row and row[0])
    conn.execute("RESET auto_explain.log_min_duration")
    problems = _problems(plans)
    assert problems == [], "\n".join(problems)
    assert done == 80


@pytest.mark.parametrize("analyzed", [False, True], ids=["no statistics", "analyzed"])
def test_claims_by_priority_level_stay_on_the_keys(queued: Conn, analyzed: bool) -> None:
    """A flow that had a run with a priority claims level by level: the same bound."""
    conn = queued
    if analyzed:
        conn.execute("ANALYZE pgflow.runs, pgflow.step_states, pgflow.step_tasks")
    # levels 0 (the 20 000 queued runs) and 5: BATCH runs, their tasks claimed first
    conn.execute(
        "SELECT count(pgflow.start_flow('plans', '{}', priority => 5)) FROM generate_series(1, %s)",
        (BATCH,),
    )
    plans = _record_plans(conn)
    claimed: list[int] = []
    for _ in range(8):
        rows = conn.execute(
            "SELECT run_id, step_slug, task_index, attempt FROM pgflow.claim_tasks('plans', %s,"
            " '00000000-0000-0000-0000-00000000000a')",
            (BATCH // 2,),
        ).fetchall()
        ids = conn.execute(
            "SELECT msg_id FROM pgflow.read_with_poll('plans', 30, %s)", (BATCH // 2,)
        ).fetchall()
        claimed.append(len(rows) + len(ids))
    conn.execute("RESET auto_explain.log_min_duration")
    problems = _problems(plans)
    assert problems == [], "\n".join(problems)
    assert claimed == [BATCH] * 8
    # the priority-5 tasks went first
    left = conn.execute(
        "SELECT count(*) FROM pgflow.step_tasks WHERE priority = 5 AND read_ct = 0"
    ).fetchone()
    assert left == (0,)


@pytest.mark.parametrize("runs", [3_000, 6_000])
def test_a_backlog_of_a_few_thousand_tasks_stays_on_the_keys(conn: Conn, runs: int) -> None:
    """Half the tasks claimed (a started backlog), half queued: a few thousand rows,
    where generic plans without statistics once read every task per call (a
    completion, a start_tasks).  Then every protocol call, one task and batches."""
    conn.execute("SELECT pgflow.create_flow('plans')")
    conn.execute("SELECT pgflow.add_step('plans', 'a')")
    conn.execute("SELECT pgflow.add_step('plans', 'b', ARRAY['a'])")
    conn.execute("SELECT pgflow.add_step('plans', 'c', ARRAY['b'])")
    for table in RUNTIME_TABLES:
        conn.execute(f"ALTER TABLE pgflow.{table} SET (autovacuum_enabled = false)")
    conn.execute(
        "SELECT count(pgflow.start_flow('plans', '{}')) FROM generate_series(1, %s)", (runs,)
    )
    tasks = conn.execute(
        "SELECT run_id, step_slug, task_index, attempt FROM pgflow.claim_tasks('plans', %s,"
        " '00000000-0000-0000-0000-00000000000a')",
        (runs // 2,),
    ).fetchall()
    assert len(tasks) == runs // 2
    plans = _record_plans(conn)
    for _ in range(8):
        ids = conn.execute("SELECT msg_id FROM pgflow.read_with_poll('plans', 30, 1)").fetchall()
        started = conn.execute(
            "SELECT run_id, step_slug, task_index, attempt FROM pgflow.start_tasks('plans', %s,"
            " '00000000-0000-0000-0000-00000000000a')",
            ([ids[0][0]],),
        ).fetchall()
        assert len(started) == 1
        row = conn.execute("SELECT pgflow.complete_task(%s, %s, %s, '{}', %s)", started[0])
        assert row.fetchone() == (True,)
    for run_id, step, index, attempt in tasks[:8]:
        row = conn.execute(
            "SELECT pgflow.complete_task(%s, %s, %s, '{}', %s)", (run_id, step, index, attempt)
        )
        assert row.fetchone() == (True,)
    rest = tasks[8:]
    for i in range(0, 3 * BATCH, BATCH):
        batch = rest[i : i + BATCH]
        keys = ([r[0] for r in batch], [r[1] for r in batch], [r[2] for r in batch])
        attempts = [r[3] for r in batch]
        held = conn.execute(
            "SELECT count(*) FROM pgflow.extend_leases(%s::uuid[], %s::text[], %s::int[],"
            " %s::int[])",
            (*keys, attempts),
        ).fetchone()
        assert held == (BATCH,)
        n = conn.execute(
            "SELECT pgflow.complete_tasks(%s::uuid[], %s::text[], %s::int[], %s::jsonb[],"
            " %s::int[])",
            (*keys, ["{}"] * BATCH, attempts),
        ).fetchone()
        assert n == (BATCH,)
    failing = rest[3 * BATCH : 4 * BATCH]
    n = conn.execute(
        "SELECT pgflow.fail_tasks(%s::uuid[], %s::text[], %s::int[], %s::text[], %s::int[])",
        (
            [r[0] for r in failing],
            [r[1] for r in failing],
            [r[2] for r in failing],
            ["boom"] * BATCH,
            [r[3] for r in failing],
        ),
    ).fetchone()
    assert n == (BATCH,)
    conn.execute("RESET auto_explain.log_min_duration")
    problems = _problems(plans)
    assert problems == [], "\n".join(problems)


def test_plans_made_while_the_queue_is_small_stay_on_the_keys_as_it_grows(conn: Conn) -> None:
    """PL/pgSQL keeps a session's generic plans: made on a queue of a few tasks (a
    seq scan is cheapest then), they must not read the whole queue once it has
    grown to thousands."""
    conn.execute("SELECT pgflow.create_flow('plans')")
    conn.execute("SELECT pgflow.add_step('plans', 'a')")
    conn.execute("SELECT pgflow.add_step('plans', 'b', ARRAY['a'])")
    for table in RUNTIME_TABLES:
        conn.execute(f"ALTER TABLE pgflow.{table} SET (autovacuum_enabled = false)")
    claim = (
        "SELECT run_id, step_slug, task_index, attempt FROM pgflow.claim_tasks('plans', %s,"
        " '00000000-0000-0000-0000-00000000000a')"
    )
    complete = (
        "SELECT pgflow.complete_tasks(%s::uuid[], %s::text[], %s::int[], %s::jsonb[], %s::int[])"
    )

    def round_trip(qty: int) -> None:
        rows = conn.execute(claim, (qty,)).fetchall()
        assert len(rows) == qty
        conn.execute(
            complete,
            (
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                ["{}"] * qty,
                [r[3] for r in rows],
            ),
        )

    conn.execute("SELECT count(pgflow.start_flow('plans', '{}')) FROM generate_series(1, 20)")
    for _ in range(6):  # past PL/pgSQL's five custom plans: the generic ones are cached
        round_trip(2)
    conn.execute("SELECT count(pgflow.start_flow('plans', '{}')) FROM generate_series(1, 5000)")
    conn.execute(claim, (2_000,))  # a started backlog beside the queued one
    plans = _record_plans(conn)
    for _ in range(4):
        round_trip(BATCH)
    conn.execute("RESET auto_explain.log_min_duration")
    problems = _problems(plans)
    assert problems == [], "\n".join(problems)


def test_map_claims_and_completions_stay_on_the_keys(conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('wide')")
    conn.execute("SELECT pgflow.add_step('wide', 'items', step_type => 'map')")
    conn.execute("SELECT pgflow.add_step('wide', 'total', ARRAY['items'])")
    for table in RUNTIME_TABLES:
        conn.execute(f"ALTER TABLE pgflow.{table} SET (autovacuum_enabled = false)")
    conn.execute(
        "SELECT pgflow.start_flow('wide', (SELECT jsonb_agg(i) FROM generate_series(1, %s) AS i))",
        (RUNS,),
    )
    plans = _record_plans(conn)
    assert _rounds(conn, "wide", 8) == 8 * BATCH
    conn.execute("RESET auto_explain.log_min_duration")
    problems = _problems(plans)
    assert problems == [], "\n".join(problems)
    left = conn.execute(
        "SELECT remaining_tasks FROM pgflow.step_states WHERE step_slug = 'items'"
    ).fetchone()
    assert left == (RUNS - 8 * BATCH,)


def test_failures_stay_on_the_keys(queued: Conn) -> None:
    conn = queued
    plans = _record_plans(conn)
    for _ in range(8):
        rows = conn.execute(
            "SELECT run_id, step_slug, task_index, attempt FROM pgflow.claim_tasks(%s, %s, %s)",
            ("plans", BATCH, "00000000-0000-0000-0000-00000000000a"),
        ).fetchall()
        n = conn.execute(
            "SELECT pgflow.fail_tasks(%s::uuid[], %s::text[], %s::int[], %s::text[], %s::int[])",
            (
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                ["boom"] * len(rows),
                [r[3] for r in rows],
            ),
        ).fetchone()
        assert n == (BATCH,)
    conn.execute("RESET auto_explain.log_min_duration")
    problems = _problems(plans)
    assert problems == [], "\n".join(problems)


BLOCKED = 20_000
TENANTS = 50


def test_limited_claims_never_read_the_blocked_backlog(conn: Conn) -> None:
    """Tenant A has 20 000 tasks parked behind its limit of 4, 50 other tenants
    one task each: every claim asks for more than is claimable, and still no
    plan node reads the parked rows (nor do the refills completions trigger)."""
    conn.execute("SELECT pgflow.create_flow('limited')")
    conn.execute(
        "SELECT pgflow.add_step('limited', 'a', concurrency => 4, concurrency_key => 'run.tenant')"
    )
    conn.execute("SELECT pgflow.add_step('limited', 'b', ARRAY['a'])")
    for table in RUNTIME_TABLES:
        conn.execute(f"ALTER TABLE pgflow.{table} SET (autovacuum_enabled = false)")
    # A's first 4 runs take its slots; the rest park, here inserted set-based
    # as start_flow leaves them (gate from a real run, vt = infinity)
    for _ in range(5):
        conn.execute("""SELECT pgflow.start_flow('limited', '{"tenant": "A"}')""")
    gate = conn.execute(
        "SELECT gate FROM pgflow.step_tasks WHERE vt = 'infinity' AND gate IS NOT NULL"
    ).fetchone()
    assert gate is not None and gate[0].startswith('a|"A"'), gate
    conn.execute(
        """INSERT INTO pgflow.runs (run_id, flow_slug, status, input, remaining_steps)
           SELECT pgflow._uuid_v7(), 'limited', 'started', '{"tenant": "A"}', 2
           FROM generate_series(1, %s)""",
        (BLOCKED,),
    )
    conn.execute(
        """INSERT INTO pgflow.step_states (run_id, step_slug, flow_slug, status, remaining_deps,
                                          initial_tasks, remaining_tasks, started_at)
           SELECT r.run_id, s.slug, 'limited',
                  CASE WHEN s.slug = 'a' THEN 'started' ELSE 'created' END,
                  CASE WHEN s.slug = 'a' THEN 0 ELSE 1 END,
                  CASE WHEN s.slug = 'a' THEN 1 END, CASE WHEN s.slug = 'a' THEN 1 END,
                  CASE WHEN s.slug = 'a' THEN now() END
           FROM pgflow.runs AS r, (VALUES ('a'), ('b')) AS s (slug)
           WHERE NOT EXISTS (SELECT 1 FROM pgflow.step_states AS x WHERE x.run_id = r.run_id)"""
    )
    conn.execute(
        """INSERT INTO pgflow.step_tasks (run_id, step_slug, flow_slug, gate, vt)
           SELECT r.run_id, 'a', 'limited', %s, 'infinity' FROM pgflow.runs AS r
           WHERE NOT EXISTS (SELECT 1 FROM pgflow.step_tasks AS x WHERE x.run_id = r.run_id)""",
        (gate[0],),
    )
    for tenant in range(TENANTS):
        conn.execute(
            "SELECT pgflow.start_flow('limited', jsonb_build_object('tenant', %s::text))",
            (f"B{tenant}",),
        )
    analyzed = conn.execute(
        "SELECT count(*) FROM pg_stats WHERE schemaname = 'pgflow'"
        " AND tablename IN ('runs', 'step_states', 'step_tasks')"
    ).fetchone()
    assert analyzed == (0,), "the runtime tables must have no statistics for this test"

    plans = _record_plans(conn)
    claimed = 0
    for _ in range(8):
        rows = conn.execute(
            "SELECT run_id, step_slug, task_index, attempt FROM pgflow.claim_tasks(%s, %s, %s)",
            ("limited", BATCH, "00000000-0000-0000-0000-00000000000a"),
        ).fetchall()
        assert 0 < len(rows) < BATCH, "each claim asks for more than is claimable"
        claimed += len(rows)
        conn.execute(
            "SELECT pgflow.complete_tasks(%s::uuid[], %s::text[], %s::int[], %s::jsonb[],"
            " %s::int[])",
            (
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                ["{}"] * len(rows),
                [r[3] for r in rows],
            ),
        )
    conn.execute("RESET auto_explain.log_min_duration")
    problems = _problems(plans)
    assert problems == [], "\n".join(problems)
    # the limit held throughout and the refills moved A on: 4 of its a-tasks
    # completed per round, and never more than 4 hold a slot
    held = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'completed'),"
        "       count(*) FILTER (WHERE status IN ('queued', 'started') AND vt < 'infinity')"
        " FROM pgflow.step_tasks WHERE step_slug = 'a' AND gate = %s",
        (gate[0],),
    ).fetchone()
    assert held == (8 * 4, 4), held
    assert claimed > 8 * 4 + TENANTS
