"""`python -m bench --profile`: where the time of chain3 (and fanout) goes.

Not part of `make bench`: the server runs with pg_stat_statements
(track = all, so statements inside the PL/pgSQL functions are counted too),
track_functions = all, WAL I/O timing and auto_explain, which all cost a
little.  For each workload it reports:

* the protocol calls: client-side time per call (driver) against server
  execution time (pg_stat_statements; the difference is mostly the commit's
  WAL flush and the round trip);
* the statements inside the functions, by total time, with WAL bytes;
* pg_stat_user_functions (self and total time of every pgflow function);
* what the workers' backends were doing (pg_stat_activity sampled every
  5 ms: CPU, WAL flush, lock waits, waiting for the client);
* the plans of the claim query and of start_tasks' statements as the
  functions really run them (auto_explain, ANALYZE + BUFFERS).
"""

from __future__ import annotations

import argparse
import collections
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import db, report, workloads
from bench.report import say
from bench.run import SETTINGS
from pgflow.testing.cluster import Cluster

PROFILE_SETTINGS = {
    **SETTINGS,
    "shared_preload_libraries": "pg_stat_statements,auto_explain",
    "pg_stat_statements.track": "all",
    "pg_stat_statements.max": "5000",
    "track_functions": "all",
    "track_io_timing": "on",
    "track_wal_io_timing": "on",
}

STATEMENTS = """
SELECT toplevel, regexp_replace(query, '\\s+', ' ', 'g'), calls, total_exec_time,
       mean_exec_time, rows, shared_blks_hit, shared_blks_read, shared_blks_dirtied,
       wal_records, wal_fpi, wal_bytes::bigint
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query !~* '^\\s*(BEGIN|COMMIT|SET|SELECT pg_stat|SELECT 1$|CHECKPOINT|TRUNCATE)'
  AND query !~ 'pg_stat_activity|pg_locks|pg_stat_user|pg_get_wal|pg_current_wal|clock_timestamp'
ORDER BY total_exec_time DESC
"""

FUNCTIONS = """
SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions
WHERE schemaname = 'pgflow' ORDER BY self_time DESC
"""


class Sampler:
    """Samples the wait events of the bench database's other client backends."""

    def __init__(self, conninfo: str, interval: float = 0.005) -> None:
        self.conninfo = conninfo
        self.interval = interval
        self.counts: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with db.connect(self.conninfo) as conn:
            while not self._stop.is_set():
                for state, kind, event in conn.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                    " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                    " AND datname = current_database()"
                ).fetchall():
                    if state == "idle":
                        key = "idle: waiting for the client (ClientRead)"
                    elif kind is None:
                        key = "active: on CPU (no wait event)"
                    else:
                        key = f"active: {kind}/{event}"
                    self.counts[key] += 1
                time.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _reset(conn: db.Conn) -> None:
    conn.execute("SELECT pg_stat_statements_reset()")
    conn.execute("SELECT pg_stat_reset()")
    conn.execute("SELECT pg_stat_reset_shared('wal')")


def _collect(conn: db.Conn, tasks: int) -> dict[str, Any]:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    statements = [
        {
            "toplevel": r[0],
            "query": r[1][:160],
            "calls": int(r[2]),
            "total_ms": float(r[3]),
            "mean_ms": float(r[4]),
            "rows": int(r[5]),
            "blks_hit": int(r[6]),
            "blks_read": int(r[7]),
            "blks_dirtied": int(r[8]),
            "wal_records": int(r[9]),
            "wal_fpi": int(r[10]),
            "wal_bytes": int(r[11]),
            "calls_per_task": int(r[2]) / tasks,
            "wal_bytes_per_task": int(r[11]) / tasks,
        }
        for r in conn.execute(STATEMENTS).fetchall()
    ]
    functions = [
        {
            "function": str(r[0]),
            "calls": int(r[1]),
            "total_ms": float(r[2]),
            "self_ms": float(r[3]),
            "calls_per_task": int(r[1]) / tasks,
        }
        for r in conn.execute(FUNCTIONS).fetchall()
    ]
    wal = conn.execute(
        "SELECT wal_records, wal_bytes::bigint, wal_write, wal_sync, wal_write_time, wal_sync_time"
        " FROM pg_stat_wal"
    ).fetchone()
    assert wal is not None
    return {
        "statements": statements,
        "functions": functions,
        "wal": dict(
            zip(
                ("records", "bytes", "writes", "syncs", "write_ms", "sync_ms"),
                [float(x) for x in wal],
                strict=True,
            )
        ),
    }


def profile_workload(conninfo: str, name: str, run: Any) -> dict[str, Any]:
    with db.connect(conninfo) as conn:
        _reset(conn)
        with Sampler(conninfo) as sampler:
            result = run()
        time.sleep(0.6)  # the stats of exited backends
        out = _collect(conn, result["tasks"])
    out["result"] = result
    out["waits"] = dict(sampler.counts.most_common())
    return out


def plans(cluster: Cluster, conninfo: str, runs: int) -> str:
    """auto_explain of one worker round trip as the functions execute it (rolled back)."""
    with db.connect(conninfo) as conn:
        db.reset(conn)
        db.start_runs(conninfo, "chain3", runs)
        mark = cluster.logfile.stat().st_size
        conn.execute("BEGIN")
        for setting, value in (
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_analyze", "on"),
            ("auto_explain.log_buffers", "on"),
            ("auto_explain.log_nested_statements", "on"),
            ("auto_explain.log_level", "LOG"),
        ):
            conn.execute(f"SET LOCAL {setting} = {value}")
        # PL/pgSQL may switch to a generic plan after 5 calls: log the 7th round
        mark = 0
        for i in range(7):
            if i == 6:
                time.sleep(0.2)
                mark = cluster.logfile.stat().st_size
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT msg_id FROM pgflow.read_with_poll('chain3', 30, 10)"
                ).fetchall()
            ]
            conn.execute(
                "SELECT * FROM pgflow.start_tasks('chain3', %s, gen_random_uuid())", (ids,)
            )
        conn.execute("ROLLBACK")
        time.sleep(0.3)
    with cluster.logfile.open(encoding="utf-8", errors="replace") as f:
        f.seek(mark)
        last = f.read()
    # keep the plan blocks (LOG: duration ... plan: ...) of the last round
    blocks = re.split(r"\n(?=\S.*LOG:)", last)
    keep = [b for b in blocks if "Query Text" in b]
    return "\n\n".join(keep)


def _print_statements(title: str, rows: list[dict[str, Any]], limit: int) -> None:
    say(title)
    say(
        f"{'calls/task':>10} {'mean ms':>8} {'total ms':>9} {'WAL B/task':>10} "
        f"{'blks hit/call':>13}  statement"
    )
    for s in rows[:limit]:
        say(
            f"{s['calls_per_task']:>10.2f} {s['mean_ms']:>8.3f} {s['total_ms']:>9.0f}"
            f" {s['wal_bytes_per_task']:>10.0f} {s['blks_hit'] / max(1, s['calls']):>13.1f}"
            f"  {s['query'][:110]}"
        )


def report_workload(name: str, p: dict[str, Any]) -> None:
    r = p["result"]
    calls = r["calls"]
    tasks = r["tasks"]
    say(f"\n=== {name}: {tasks} tasks in {r['elapsed_s']:.2f} s = {r['tasks_per_s']:.0f} tasks/s")
    wall = r["elapsed_s"] * 4
    say(
        f"driver: client CPU {calls['cpu_s']:.1f} s of {wall:.1f} process-seconds;"
        f" time in calls: claim {calls['read_s']:.1f} s, complete {calls['complete_s']:.1f} s"
    )
    top = {s["query"]: s for s in p["statements"] if s["toplevel"]}
    say("protocol calls: client ms/call (driver) vs server exec ms/call (pg_stat_statements)")
    for label, key, n, t in (
        ("claim_tasks", "pgflow.claim_tasks(", calls["reads"], calls["read_s"]),
        ("complete_tasks", "pgflow.complete_tasks(", calls["completes"], calls["complete_s"]),
    ):
        server = next((s for q, s in top.items() if key in q), None)
        exec_ms = server["mean_ms"] if server else float("nan")
        say(
            f"  {label:<15} {n / tasks:5.2f} calls/task  client {1000 * t / max(1, n):6.3f} ms"
            f"  server exec {exec_ms:6.3f} ms"
        )
    w = p["wal"]
    say(
        f"WAL: {w['records'] / tasks:.1f} records/task, {w['bytes'] / tasks:.0f} B/task,"
        f" {w['syncs'] / tasks:.2f} flushes/task, flush time {w['sync_ms']:.0f} ms total"
        f" ({w['sync_ms'] / max(1.0, w['syncs']):.3f} ms/flush)"
    )
    total = sum(p["waits"].values()) or 1
    say("worker backends (sampled):")
    for key, n in p["waits"].items():
        say(f"  {100 * n / total:5.1f} %  {key}")
    say("pgflow functions (self time):")
    for f in p["functions"][:12]:
        say(
            f"  {f['function']:<22} {f['calls_per_task']:6.2f} calls/task"
            f"  self {f['self_ms']:8.0f} ms  total {f['total_ms']:8.0f} ms"
        )
    _print_cost(r)
    _print_statements("statements (nested included), by total time:", p["statements"], 18)


def _print_cost(result: dict[str, Any]) -> None:
    """Rows written by table and WAL by record type, per task (what the cost targets count)."""
    tasks = result["tasks"]
    start, run = result["start_cost"], result["exec_cost"]
    say("rows written per task (ins + upd + del), by table: start_flow's share + executing")
    for table in sorted(set(start["rows"]) | set(run["rows"])):
        a, b = start["rows"].get(table, 0) / tasks, run["rows"].get(table, 0) / tasks
        say(f"  {table:<12} {a:5.2f} + {b:5.2f} = {a + b:5.2f}")
    merged: dict[str, list[int]] = {}
    for part in (start, run):
        for kind, v in part["by_rmgr"].items():
            acc = merged.setdefault(kind, [0, 0])
            acc[0] += v["count"]
            acc[1] += v["record_bytes"]
    total = sum(b for _, b in merged.values())
    say(f"WAL per task without full-page images, by record type ({total / tasks:.0f} B in all):")
    for kind, (count, size) in sorted(merged.items(), key=lambda kv: -kv[1][1])[:10]:
        say(f"  {kind:<26} {count / tasks:5.2f} records {size / tasks:7.0f} B")


def profile(args: argparse.Namespace) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: dict[str, Any] = {"timestamp": stamp, "settings": PROFILE_SETTINGS}
    with Cluster(settings=PROFILE_SETTINGS) as cluster:
        conninfo = cluster.conninfo(db.DATABASE)
        db.setup(cluster.conninfo(), conninfo)
        with db.connect(conninfo) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
            out["machine"] = report.machine_info(conn)
        say(report.header(out["machine"]))
        out["plans"] = plans(cluster, conninfo, args.runs)
        out["chain3"] = profile_workload(
            conninfo,
            "chain3",
            lambda: workloads.drive(conninfo, "chain3", args.runs, processes=args.processes),
        )
        report_workload(f"chain3 ({args.runs} runs)", out["chain3"])
        out["pertask"] = profile_workload(
            conninfo,
            "pertask",
            lambda: workloads.drive(
                conninfo, "chain3", args.runs, processes=args.processes, per_task=True
            ),
        )
        report_workload(f"chain3, per-task protocol ({args.runs} runs)", out["pertask"])
        out["fanout"] = profile_workload(
            conninfo, "fanout", lambda: workloads.fanout(conninfo, args.fanout)
        )
        report_workload(f"fanout ({args.fanout} elements)", out["fanout"])
    say("\n=== plans of one claim round (read_with_poll + start_tasks), auto_explain:")
    say(out["plans"])
    path = args.out or Path(report.ROOT, "bench", "results", f"profile-{stamp}.json")
    report.write_json(path, out)
    say(f"\nwrote {path}")
    return 0
