"""A deep page of list_runs reads a bounded number of rows, with or without statistics.

50 000 runs (a fifth of them sub-flow children, 2 % failed, 1 % cancelled,
1 % still started) are inserted set-based and, in the first case, never
analyzed; auto_explain reports every plan list_runs runs (nested statements
included, as JSON, rows not timings).  For every filter, from a cursor in the
middle of the history and in both directions, no plan node handles (returns
or filters out) more than a small multiple of the page: the page is an index
range from the cursor on, not a read of the history.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]

RUNS = 50_000
PAGE = 51

FILL = """
INSERT INTO pgflow.runs (run_id, flow_slug, status, input, remaining_steps, started_at,
                         parent_run_id, parent_step_slug, parent_task_index, parent_attempt, depth)
SELECT md5('r' || i)::uuid, (ARRAY['a', 'b', 'c'])[1 + i %% 3],
       CASE WHEN i %% 50 = 3 THEN 'failed' WHEN i %% 100 = 8 THEN 'cancelled'
            WHEN i %% 100 = 9 THEN 'started' ELSE 'completed' END,
       '{}', 0,
       timestamptz '2026-01-01 00:00+00' + (i / 4) * interval '1 second',
       CASE WHEN i %% 5 = 2 THEN md5('r' || (i - 1))::uuid END,
       CASE WHEN i %% 5 = 2 THEN 'only' END, CASE WHEN i %% 5 = 2 THEN 0 END,
       CASE WHEN i %% 5 = 2 THEN 1 END, CASE WHEN i %% 5 = 2 THEN 1 ELSE 0 END
FROM generate_series(1, %s) AS i
"""

FILTERS: list[dict[str, Any]] = [
    {},
    {"status": "failed"},
    {"status": "started"},
    {"status": "cancelled"},
    {"status": "completed"},
    {"flow_slug": "b"},
    {"flow_slug": "b", "status": "failed"},
    {"top_level": True},
    {"top_level": True, "status": "failed"},
    {"top_level": True, "flow_slug": "c"},
    {"started_after": "2026-01-01 01:00+00", "started_before": "2026-01-01 02:00+00"},
]


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


@pytest.fixture(params=[False, True], ids=["no statistics", "analyzed"])
def history(request: pytest.FixtureRequest, conn: Conn) -> Conn:
    for flow in ("a", "b", "c"):
        conn.execute("SELECT pgflow.create_flow(%s)", (flow,))
        conn.execute("SELECT pgflow.add_step(%s, 'only')", (flow,))
    conn.execute("ALTER TABLE pgflow.runs SET (autovacuum_enabled = false)")
    conn.execute("SET session_replication_role = replica")  # children name no step_tasks row
    conn.execute(FILL, (RUNS,))
    conn.execute("RESET session_replication_role")
    if request.param:
        conn.execute("ANALYZE pgflow.runs")
    analyzed = conn.execute(
        "SELECT count(*) FROM pg_stats WHERE schemaname = 'pgflow' AND tablename = 'runs'"
    ).fetchone()
    assert (analyzed is not None and analyzed[0] > 0) == request.param
    return conn


def _record_plans(conn: Conn) -> list[dict[str, Any]]:
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


def _per_loop(node: dict[str, Any]) -> float:
    """Rows a plan node returned or filtered out in one of its loops."""
    keys = ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck")
    return float(sum(node.get(k, 0) for k in keys))


def _handled(node: dict[str, Any]) -> float:
    return _per_loop(node) * node.get("Actual Loops", 1)


def test_a_deep_page_reads_an_index_range_not_the_history(history: Conn) -> None:
    conn = history
    middle = conn.execute(
        "SELECT started_at, run_id FROM pgflow.runs ORDER BY started_at DESC, run_id DESC"
        " OFFSET %s LIMIT 1",
        (RUNS // 2,),
    ).fetchone()
    assert middle is not None
    cursor = Jsonb({"started_at": middle[0].isoformat(), "run_id": str(middle[1])})
    plans = _record_plans(conn)
    problems = []
    biggest = 0.0
    for filters in FILTERS:
        for direction in ("older", "newer"):
            plans.clear()
            args = {**filters, "max_rows": PAGE, "cursor": cursor, "direction": direction}
            named = ", ".join(f"{k} => %({k})s" for k in args)
            rows = conn.execute(f"SELECT pgflow.list_runs({named})", args).fetchall()
            assert rows, f"{filters} {direction}: an empty page proves nothing"
            scans = [
                node
                for entry in plans
                for node in _nodes(entry["Plan"])
                if node.get("Relation Name") == "runs"
            ]
            assert scans, f"{filters} {direction}: no plan read pgflow.runs"
            for node in scans:
                handled = _handled(node)
                biggest = max(biggest, handled)
                if handled > 10 * PAGE:
                    problems.append(
                        f"{filters} {direction}: {node['Node Type']}"
                        f" {node.get('Index Name', '')} handled {handled:.0f} rows"
                    )
    assert problems == []
    # the bound is not vacuous: a page reads at least its own rows
    assert biggest >= PAGE


def test_list_flows_counts_stop_at_the_limit_whatever_the_history(history: Conn) -> None:
    """Each flow has about 16 700 runs: every count stops at 10 000 index entries."""
    conn = history
    expected = {
        slug: conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'failed'),"
            " count(*) FILTER (WHERE status = 'cancelled'),"
            " count(*) FILTER (WHERE status = 'started') FROM pgflow.runs WHERE flow_slug = %s",
            (slug,),
        ).fetchone()
        for slug in ("a", "b", "c")
    }
    plans = _record_plans(conn)
    flows = {r[0]["flow_slug"]: r[0] for r in conn.execute("SELECT pgflow.list_flows()").fetchall()}
    for slug, (failed, cancelled, started) in expected.items():
        f = flows[slug]
        assert (f["runs"], f["runs_completed"], f["count_limit"]) == (10_000, None, 10_000)
        assert (f["runs_failed"], f["runs_cancelled"], f["runs_in_flight"]) == (
            failed,
            cancelled,
            started,
        )
    scans = [
        node
        for entry in plans
        if "list_flows" not in entry["Query Text"]
        for node in _nodes(entry["Plan"])
        if node.get("Relation Name") == "runs" or "Index Name" in node
    ]
    assert scans, "no plan of list_flows read pgflow.runs"
    per_loop = [(f"{n['Node Type']} {n.get('Index Name', '')}", _per_loop(n)) for n in scans]
    # the totals read exactly their 10 000 entries, the other counts fewer
    assert max(handled for _, handled in per_loop) == 10_000, [p for p in per_loop if p[1] > 1]
    assert not [name for name, _ in per_loop if name.startswith(("Seq", "Bitmap"))], per_loop
