"""Server time of each dashboard list page with a large history (issue 21: <= 50 ms).

``python -m bench.ui_pages [--runs 1000000]`` starts its own throwaway
cluster, fills ``pgflow.runs`` with finished runs in one INSERT ... SELECT
generate_series (no start_flow: seconds, not hours), and times every list
page of ``pgflow ui`` in process (Starlette's test client: the server's work
from request to rendered page, no network), as a role with
``grant_dashboard``.  Not part of ``make bench`` (filling and timing take
about two minutes more); bench/README.md says how to run it.  A report,
never a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import psycopg

from bench.db import connect
from bench.workloads import log
from pgflow.testing.cluster import Cluster

TARGET_MS = 50.0
FLOWS = ("orders", "mail", "report")

# runs spread over 60 days, newest last; about 1 % failed, 0.5 % cancelled,
# the newest 200 still started (as in a busy installation with a long
# history); every fifth run a sub-flow child of the run before it.  Run ids
# are derived from the row number (so a child can name its parent); the
# rows the runs of a real start would have beside them (step_states,
# step_tasks) are left out: the list pages do not read them.
FILL = """
INSERT INTO pgflow.runs (run_id, flow_slug, status, input, output, remaining_steps,
                         error_message, started_at, completed_at, failed_at, cancelled_at,
                         parent_run_id, parent_step_slug, parent_task_index, parent_attempt, depth)
SELECT md5('run' || g.i)::uuid, f.slug, s.status, '{}',
       CASE WHEN s.status = 'completed' THEN '{}'::jsonb END,
       CASE WHEN s.status = 'started' THEN 1 ELSE 0 END,
       CASE WHEN s.status = 'failed' THEN 'handler raised: boom' END,
       g.t, CASE WHEN s.status = 'completed' THEN g.t + interval '40 ms' END,
       CASE WHEN s.status = 'failed' THEN g.t + interval '40 ms' END,
       CASE WHEN s.status = 'cancelled' THEN g.t + interval '40 ms' END,
       CASE WHEN c.child THEN md5('run' || (g.i - 1))::uuid END,
       CASE WHEN c.child THEN 'work' END, CASE WHEN c.child THEN 0 END,
       CASE WHEN c.child THEN 1 END, CASE WHEN c.child THEN 1 ELSE 0 END
FROM (SELECT i, now() - interval '60 days' + i * (interval '60 days' / %(n)s) AS t
      FROM generate_series(1, %(n)s) AS i) AS g,
     LATERAL (SELECT (ARRAY['orders', 'mail', 'report'])[1 + g.i %% 3] AS slug) AS f,
     LATERAL (SELECT g.i %% 5 = 1 AND g.i > 1 AS child) AS c,
     LATERAL (SELECT CASE WHEN g.i > %(n)s - 200 THEN 'started'
                          WHEN g.i %% 100 = 7 THEN 'failed'
                          WHEN g.i %% 200 = 11 THEN 'cancelled'
                          ELSE 'completed' END AS status) AS s
"""


def fill(conninfo: str, runs: int) -> float:
    """The flows and ``runs`` runs, then VACUUM ANALYZE; seconds taken."""
    t0 = time.monotonic()
    with connect(conninfo) as conn:
        for flow in FLOWS:
            conn.execute("SELECT pgflow.create_flow(%s)", (flow,))
            conn.execute("SELECT pgflow.add_step(%s, 'work')", (flow,))
        conn.execute("SET session_replication_role = replica")  # no FK checks (see FILL)
        conn.execute(FILL, {"n": runs})
        conn.execute("RESET session_replication_role")
        conn.execute("VACUUM ANALYZE pgflow.runs")
        # the VACUUM right after the load leaves the visibility map empty here
        # (relallvisible 0: index-only scans then fetch every heap row); the
        # second sets it, as autovacuum has for the old part of a real history
        conn.execute("VACUUM pgflow.runs")
    return time.monotonic() - t0


def _dashboard_role(conninfo: str) -> str:
    role = f"bench_ui_{uuid.uuid4().hex[:8]}"
    with connect(conninfo) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute("SELECT pgflow.grant_dashboard(%s)", (role,))
    return psycopg.conninfo.make_conninfo(conninfo, user=role)


def pages(conninfo: str) -> dict[str, str]:
    """The list pages to time: name -> path (a deep page through its cursor)."""
    with connect(conninfo) as conn:
        total = conn.execute("SELECT count(*) FROM pgflow.runs").fetchone()
        middle = conn.execute(
            "SELECT started_at, run_id FROM pgflow.runs ORDER BY started_at DESC, run_id DESC"
            " OFFSET %s LIMIT 1",
            ((total[0] if total else 0) // 2,),
        ).fetchone()
        flow = conn.execute(
            "SELECT flow_name FROM pgflow.flows ORDER BY flow_name LIMIT 1"
        ).fetchone()
    deep = ""
    if middle is not None:
        stamp = middle[0].isoformat()
        deep = f"/runs?cursor={stamp.replace('+', '%2B')},{middle[1]}"
    f = flow[0] if flow else ""
    week = "since=" + (middle[0] - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M") if middle else ""
    result = {
        "runs page 1 (top level)": "/runs",
        "runs deep (top level, middle of history)": deep,
        "runs deep, newer direction": deep + "&dir=newer" if deep else "",
        "runs page 1 with children": "/runs?children=1",
        "runs deep with children": deep + "&children=1" if deep else "",
        "runs status=failed": "/runs?status=failed",
        "runs status=failed, deep": deep.replace("?", "?status=failed&") if deep else "",
        "runs status=started": "/runs?status=started",
        "runs status=completed, deep": deep.replace("?", "?status=completed&") if deep else "",
        "runs flow": f"/runs?flow={f}" if f else "",
        "runs flow, deep": deep.replace("?", f"?flow={f}&") if deep and f else "",
        "runs flow + status=failed": f"/runs?flow={f}&status=failed" if f else "",
        "runs flow + status=failed, deep": deep.replace("?", f"?flow={f}&status=failed&")
        if deep and f
        else "",
        "runs time range (a week), deep": deep + "&" + week if deep else "",
        "flows": "/",
        "workers": "/workers",
        "queues": "/queues",
    }
    return {name: path for name, path in result.items() if path}


def measure(conninfo: str, requests: int = 20) -> dict[str, Any]:
    """Time every list page ``requests`` times (after one warm-up); ms per page."""
    from starlette.testclient import TestClient  # noqa: PLC0415 - the ui extra

    from pgflow.ui import app  # noqa: PLC0415

    dsn = _dashboard_role(conninfo)
    out: dict[str, Any] = {}
    with TestClient(app(dsn), base_url="http://127.0.0.1") as ui:
        for name, path in pages(conninfo).items():
            first = ui.get(path)
            if first.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {first.status_code}: {first.text[:300]}")
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                response = ui.get(path)
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200
            out[name] = {
                "path": path,
                "rows": first.text.count("<tr data-run="),
                "ms": {
                    "min": min(times),
                    "median": statistics.median(times),
                    "max": max(times),
                },
            }
    return out


def table(result: dict[str, Any], runs: int) -> str:
    lines = [
        f"dashboard list pages, {runs:,} runs in history (server time in process, ms)",
        f"{'page':44} {'rows':>5} {'min':>7} {'median':>7} {'max':>7}  target {TARGET_MS:.0f} ms",
    ]
    for name, r in result.items():
        ms = r["ms"]
        verdict = "met" if ms["median"] <= TARGET_MS else "MISSED"
        lines.append(
            f"{name:44} {r['rows']:>5} {ms['min']:7.1f} {ms['median']:7.1f} {ms['max']:7.1f}"
            f"  {verdict}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ui_pages", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=1_000_000, help="runs in history (default 1e6)")
    p.add_argument("--requests", type=int, default=20, help="timed requests per page")
    args = p.parse_args(argv)
    with Cluster(settings={"shared_buffers": "512MB"}) as cluster:
        with connect(cluster.conninfo()) as conn:
            conn.execute("CREATE DATABASE bench_ui")
        conninfo = cluster.conninfo("bench_ui")
        with connect(conninfo) as conn:
            conn.execute("CREATE EXTENSION pgflow")
        took = fill(conninfo, args.runs)
        log(f"ui pages: {args.runs:,} runs generated and analyzed in {took:.1f} s")
        print(table(measure(conninfo, args.requests), args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
