"""Database plumbing of the benchmark: setup, resets, snapshots of counters."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.driver import FLUSH_STATS
from bench.flows import FLOWS
from pgflow.compiler.migration import compile_flow
from pgflow.spec.dsl import Flow

Conn = psycopg.Connection[tuple[Any, ...]]

DATABASE = "bench"
#: chain3 with a million finished runs lives in a database of its own, so that
#: its repeats can alternate with those on empty tables
HISTORY_DATABASE = "bench_history"
TABLES = ("runs", "step_states", "step_tasks")
#: advisory lock classid under which idle workers wait (see pgflow.worker_idle)
IDLE_CLASSID = 1885824631


def connect(conninfo: str) -> Conn:
    return psycopg.connect(conninfo, autocommit=True)


def setup(admin_conninfo: str, conninfo: str, dbname: str = DATABASE) -> None:
    """Create a database with pgflow, pg_walinspect and the bench flows."""
    with connect(admin_conninfo) as conn:
        conn.execute(f"CREATE DATABASE {dbname}")
    with connect(conninfo) as conn:
        conn.execute("CREATE EXTENSION pgflow")
        conn.execute("CREATE EXTENSION pg_walinspect")
        for flow in FLOWS:
            apply_flow(conn, flow)


def apply_flow(conn: Conn, flow: Flow) -> None:
    conn.execute(compile_flow(flow.spec(), generated_at=datetime(2026, 1, 1, tzinfo=UTC)))


def reset(conn: Conn) -> None:
    """Empty the runtime tables (fresh files: every repeat starts alike)."""
    conn.execute("TRUNCATE pgflow.step_tasks, pgflow.step_states, pgflow.runs CASCADE")


def start_runs(conninfo: str, flow: str, runs: int, flow_input: str = "{}") -> float:
    """Start ``runs`` runs in one transaction on a connection of its own; seconds taken."""
    with connect(conninfo) as conn:
        t0 = time.perf_counter()
        conn.execute(
            "SELECT count(pgflow.start_flow(%s, %s::jsonb)) FROM generate_series(1, %s)",
            (flow, flow_input, runs),
        )
        took = time.perf_counter() - t0
        conn.execute(FLUSH_STATS)
        conn.execute("SELECT 1")
    return took


def db_now(conn: Conn) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def batch_result(conn: Conn, flow: str, since: datetime) -> tuple[float, int, int]:
    """(seconds from first start_tasks to last run completion, runs, unfinished runs)."""
    row = conn.execute(
        """
        SELECT extract(epoch FROM max(r.completed_at) - min(t.started_at))::float8,
               count(DISTINCT r.run_id)::int,
               count(DISTINCT r.run_id) FILTER (WHERE r.status <> 'completed')::int
        FROM pgflow.runs AS r
        JOIN pgflow.step_tasks AS t ON t.run_id = r.run_id
        WHERE r.flow_slug = %s AND r.started_at >= %s
        """,
        (flow, since),
    ).fetchone()
    assert row is not None
    return float(row[0] or 0.0), int(row[1]), int(row[2])


def unfinished(conn: Conn, flow: str, since: datetime) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pgflow.runs"
        " WHERE flow_slug = %s AND started_at >= %s AND status = 'started'",
        (flow, since),
    ).fetchone()
    assert row is not None
    return int(row[0])


def idle_workers(conn: Conn, flow: str) -> int:
    """Sessions marked idle (worker_idle) for ``flow``: they hold its shared advisory lock."""
    row = conn.execute(
        """
        SELECT count(*) FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND mode = 'ShareLock'
          AND classid = %s AND objsubid = 2
          AND objid = pgflow._waiting_key(%s)::bigint::bit(32)::bigint::oid
        """,
        (IDLE_CLASSID, flow),
    ).fetchone()
    assert row is not None
    return int(row[0])


def wait_idle(conn: Conn, flow: str, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while idle_workers(conn, flow) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} workers of {flow} did not become idle in {timeout} s")
        time.sleep(0.001)


@dataclass(frozen=True)
class Snapshot:
    """Cumulative counters at one instant."""

    lsn: str
    rows: dict[str, int]  # table -> n_tup_ins + n_tup_upd + n_tup_del
    wal_records: int
    wal_fpi: int
    wal_bytes: int
    wal_sync: int
    cpu: tuple[float, float]  # machine-wide (busy, total) jiffies from /proc/stat


def _cpu() -> tuple[float, float]:
    with open("/proc/stat", encoding="ascii") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


def snapshot(conn: Conn) -> Snapshot:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = {
        str(name): int(n)
        for name, n in conn.execute(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables"
            " WHERE schemaname = 'pgflow' AND relname = ANY (%s)",
            (list(TABLES),),
        ).fetchall()
    }
    wal = conn.execute(
        "SELECT pg_current_wal_flush_lsn()::text, wal_records, wal_fpi, wal_bytes, wal_sync"
        " FROM pg_stat_wal"
    ).fetchone()
    assert wal is not None
    return Snapshot(str(wal[0]), rows, int(wal[1]), int(wal[2]), int(wal[3]), int(wal[4]), _cpu())


@dataclass(frozen=True)
class Cost:
    """What happened between two snapshots."""

    rows: dict[str, int]
    wal_bytes: int  # LSN distance: everything, full-page images included
    wal_record_bytes: int  # pg_walinspect: record bytes without full-page images
    wal_fpi_bytes: int
    wal_fpi: int
    wal_syncs: int
    by_rmgr: dict[str, dict[str, int]]
    cpu_busy: float  # machine-wide busy share (0..1)

    @property
    def rows_total(self) -> int:
        return sum(self.rows.values())


def cost(conn: Conn, a: Snapshot, b: Snapshot) -> Cost:
    dist = conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (b.lsn, a.lsn))
    row = dist.fetchone()
    assert row is not None
    by_rmgr: dict[str, dict[str, int]] = {}
    for rmgr, count, rec, fpi in conn.execute(
        'SELECT "resource_manager/record_type", count, record_size, fpi_size'
        " FROM pg_get_wal_stats(%s::pg_lsn, %s::pg_lsn) WHERE count > 0",
        (a.lsn, b.lsn),
    ).fetchall():
        by_rmgr[str(rmgr)] = {"count": int(count), "record_bytes": int(rec), "fpi_bytes": int(fpi)}
    busy = b.cpu[0] - a.cpu[0]
    total = b.cpu[1] - a.cpu[1]
    return Cost(
        rows={t: b.rows.get(t, 0) - a.rows.get(t, 0) for t in TABLES},
        wal_bytes=int(row[0]),
        wal_record_bytes=sum(v["record_bytes"] for v in by_rmgr.values()),
        wal_fpi_bytes=sum(v["fpi_bytes"] for v in by_rmgr.values()),
        wal_fpi=b.wal_fpi - a.wal_fpi,
        wal_syncs=b.wal_sync - a.wal_sync,
        by_rmgr=by_rmgr,
        cpu_busy=busy / total if total else 0.0,
    )
