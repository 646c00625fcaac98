"""The benchmarks themselves; each returns plain data for the report."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import db
from bench.driver import FLUSH_STATS, Drivers
from pgflow.testing.cluster import Cluster, pg_bindir

ROOT = Path(__file__).resolve().parents[1]
PGFLOW = str(Path(sys.executable).with_name("pgflow"))
#: tasks one run creates, per flow (fanout: per element, plus the reduce task)
TASKS_PER_RUN = {"chain3": 3, "diamond": 4, "single": 1}


def log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ throughput


def drive(
    conninfo: str,
    flow: str,
    runs: int,
    *,
    flow_input: str = "{}",
    tasks: int | None = None,
    reset: bool = True,
    processes: int = 4,
    batch: int = 10,
    fenced: bool = True,
    per_task: bool = False,
) -> dict[str, Any]:
    """Start ``runs`` runs, drain them with the protocol driver; figures and costs.

    The drivers connect first and wait; the runs are started (one
    transaction); then the drivers go.  Elapsed time is read from the
    database: first ``start_tasks`` to last run completion.
    """
    expected = tasks if tasks is not None else runs * TASKS_PER_RUN[flow]
    with db.connect(conninfo) as conn:
        if reset:
            db.reset(conn)
        conn.execute("CHECKPOINT")
        drivers = Drivers(
            conninfo, flow, processes=processes, batch=batch, fenced=fenced, per_task=per_task
        )
        try:
            drivers.start_drain(expected)
            since = db.db_now(conn)
            s0 = db.snapshot(conn)
            start_s = db.start_runs(conninfo, flow, runs, flow_input)
            s1 = db.snapshot(conn)
            drivers.go.set()
            calls = drivers.finish()
        finally:
            drivers.kill()
        s2 = db.snapshot(conn)
        elapsed, n_runs, open_runs = db.batch_result(conn, flow, since)
        if n_runs != runs or open_runs:
            raise RuntimeError(f"{flow}: {n_runs} runs seen, {open_runs} not completed")
        start_cost = db.cost(conn, s0, s1)
        exec_cost = db.cost(conn, s1, s2)
        run_row = conn.execute(
            "SELECT extract(epoch FROM max(completed_at) - min(started_at))::float8"
            " FROM pgflow.runs WHERE flow_slug = %s AND started_at >= %s",
            (flow, since),
        ).fetchone()
    assert run_row is not None
    return {
        "flow": flow,
        "runs": runs,
        "tasks": calls.tasks,
        "elapsed_s": elapsed,
        "tasks_per_s": calls.tasks / elapsed,
        "start_flow_s": start_s,
        "first_run_start_to_last_completion_s": float(run_row[0]),
        "calls": asdict(calls),
        "start_cost": asdict(start_cost),
        "exec_cost": asdict(exec_cost),
    }


def per_task_cost(result: dict[str, Any]) -> dict[str, float]:
    """Rows, WAL and statements per task, start_flow's share included."""
    tasks = result["tasks"]
    start, run = result["start_cost"], result["exec_cost"]
    calls = result["calls"]
    return {
        "rows": (sum(start["rows"].values()) + sum(run["rows"].values())) / tasks,
        "rows_exec": sum(run["rows"].values()) / tasks,
        "wal_nofpi": (start["wal_record_bytes"] + run["wal_record_bytes"]) / tasks,
        "wal_nofpi_exec": run["wal_record_bytes"] / tasks,
        "wal_total": (start["wal_bytes"] + run["wal_bytes"]) / tasks,
        "fpi_per_task": (start["wal_fpi"] + run["wal_fpi"]) / tasks,
        # one start_flow per run (the bench batches them in one statement)
        "calls": (calls["reads"] + calls["starts"] + calls["completes"] + result["runs"]) / tasks,
        "calls_exec": (calls["reads"] + calls["starts"] + calls["completes"]) / tasks,
        "empty_reads": calls["empty_reads"] / tasks,
        "wal_syncs": (start["wal_syncs"] + run["wal_syncs"]) / tasks,
        "cpu_busy": run["cpu_busy"],
    }


# ------------------------------------------------------------------ starts


def starts(conninfo: str, batch: int, one_by_one: int) -> dict[str, Any]:
    """Starting chain3 runs from one connection, three ways: ``batch`` runs in one
    ``start_flows`` call, ``batch`` runs through ``start_flow`` in one statement
    (one transaction), and ``one_by_one`` ``start_flow`` calls each its own
    transaction (a commit, so a WAL flush, per run).  Runs/s of each."""
    with db.connect(conninfo) as conn:
        db.reset(conn)
        conn.execute("CHECKPOINT")
        t0 = time.perf_counter()
        conn.execute(
            "SELECT count(*) FROM pgflow.start_flows('chain3', array_fill('{}'::jsonb, ARRAY[%s]))",
            (batch,),
        )
        batch_s = time.perf_counter() - t0
        db.reset(conn)
        conn.execute("CHECKPOINT")
        t0 = time.perf_counter()
        conn.execute(
            "SELECT count(pgflow.start_flow('chain3', '{}')) FROM generate_series(1, %s)",
            (batch,),
        )
        statement_s = time.perf_counter() - t0
        db.reset(conn)
        conn.execute("CHECKPOINT")
        t0 = time.perf_counter()
        for _ in range(one_by_one):
            conn.execute("SELECT pgflow.start_flow('chain3', '{}')")
        single_s = time.perf_counter() - t0
        row = conn.execute("SELECT count(*) FROM pgflow.runs").fetchone()
        db.reset(conn)
    if row is None or row[0] != one_by_one:
        raise RuntimeError(f"starts: {row} runs seen, {one_by_one} expected")
    return {
        "batch": batch,
        "one_by_one": one_by_one,
        "start_flows_s": batch_s,
        "start_flows_runs_per_s": batch / batch_s,
        "start_flow_statement_runs_per_s": batch / statement_s,
        "start_flow_one_by_one_runs_per_s": one_by_one / single_s,
    }


# ------------------------------------------------------------------ fan-out


#: claim and completion batch of the fan-out drivers: one wide step is where
#: batching pays (issue 8 fixes batch 10 for chain3 and diamond only)
FANOUT_BATCH = 100


def fanout(conninfo: str, elements: int) -> dict[str, Any]:
    """One run whose root map has ``elements`` tasks, then a reduce: seconds to completion."""
    flow_input = json.dumps(list(range(elements)))
    result = drive(
        conninfo, "fanout", 1, flow_input=flow_input, tasks=elements + 1, batch=FANOUT_BATCH
    )
    # start_flow's transaction start to the run's completion
    result["completion_s"] = result["first_run_start_to_last_completion_s"]
    return result


def subflow_fanout(conninfo: str, elements: int) -> dict[str, Any]:
    """One run of sub_fanout: a map sub-flow step starting ``elements`` child runs of
    the two-step flow sub_item, drained by protocol drivers of sub_item; seconds
    from start_flow's transaction to the parent run's completion."""
    flow_input = json.dumps(list(range(elements)))
    with db.connect(conninfo) as conn:
        db.reset(conn)
        conn.execute("CHECKPOINT")
        drivers = Drivers(conninfo, "sub_item", processes=4, batch=FANOUT_BATCH)
        try:
            drivers.start_drain(2 * elements)
            since = db.db_now(conn)
            start_s = db.start_runs(conninfo, "sub_fanout", 1, flow_input)
            drivers.go.set()
            calls = drivers.finish()
        finally:
            drivers.kill()
        row = conn.execute(
            "SELECT status, extract(epoch FROM completed_at - started_at)::float8,"
            " (SELECT count(*) FROM pgflow.runs AS c WHERE c.parent_run_id = r.run_id)"
            " FROM pgflow.runs AS r WHERE r.flow_slug = 'sub_fanout' AND r.started_at >= %s",
            (since,),
        ).fetchone()
    if row is None or row[0] != "completed" or row[2] != elements:
        raise RuntimeError(f"sub_fanout: the parent run is {row}")
    return {
        "elements": elements,
        "tasks": calls.tasks,
        "start_flow_s": start_s,
        "completion_s": float(row[1]),
        "calls": asdict(calls),
    }


# ------------------------------------------------------------------ noisy neighbour

#: the noisy-neighbour flows: one step, without and with a per-tenant limit
NOISY_SETUP = """
SELECT pgflow.create_flow('nn_free');
SELECT pgflow.add_step('nn_free', 'work');
SELECT pgflow.create_flow('nn_gated');
SELECT pgflow.add_step('nn_gated', 'work',
                       concurrency => %(limit)s, concurrency_key => 'run.tenant');
"""
CLAIM_10 = "SELECT count(*) FROM pgflow.claim_tasks(%s, 10, '00000000-0000-0000-0000-0000000000aa')"


def _claim_ms(conn: db.Conn, flow: str, samples: int = 30) -> float:
    """Median client time (ms, local socket) of a claim of 10, each rolled back."""
    times = []
    for _ in range(samples):
        with conn.transaction(force_rollback=True):
            t0 = time.perf_counter()
            conn.execute(CLAIM_10, (flow,))
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def noisy_neighbour(
    conninfo: str, backlog: int, tenant_runs: int, limited: bool, limit: int = 4
) -> dict[str, Any]:
    """Tenant A queues ``backlog`` runs of a one-step flow, tenant B then starts
    ``tenant_runs``; 4 protocol drivers drain both.  B's time to completion per
    run (p50/p95), without or with ``concurrency: {limit, key: run.tenant}``;
    with the limit also the claim's time while A's backlog is blocked (A's
    slots held, every other A task parked) next to a claim on an empty queue."""
    flow = "nn_gated" if limited else "nn_free"
    result: dict[str, Any] = {"flow": flow, "backlog": backlog, "tenant_runs": tenant_runs}
    with db.connect(conninfo) as conn:
        db.reset(conn)
        if (
            conn.execute("SELECT 1 FROM pgflow.flows WHERE flow_slug = 'nn_gated'").fetchone()
            is None
        ):
            conn.execute(NOISY_SETUP.replace("%(limit)s", str(limit)))
        conn.execute("CHECKPOINT")
        if limited:
            result["claim_empty_ms"] = _claim_ms(conn, flow)
            db.start_runs(conninfo, flow, backlog, json.dumps({"tenant": "A"}))
            conn.execute("ANALYZE pgflow.step_tasks")
            # A's slots held by a worker that does not finish them
            conn.execute(CLAIM_10, (flow,))
            result["claim_blocked_ms"] = _claim_ms(conn, flow)
            db.reset(conn)
        drivers = Drivers(conninfo, flow, processes=4, batch=10)
        try:
            drivers.start_drain(backlog + tenant_runs)
            since = db.db_now(conn)
            result["start_a_s"] = db.start_runs(
                conninfo, flow, backlog, json.dumps({"tenant": "A"})
            )
            result["start_b_s"] = db.start_runs(
                conninfo, flow, tenant_runs, json.dumps({"tenant": "B"})
            )
            drivers.go.set()
            if limited:
                # B's runs are what is measured: A's backlog, four at a time,
                # would take minutes to drain, so the drivers stop once B is done
                _wait_for(conn, flow, since, "B", tenant_runs, timeout=300.0)
            else:
                drivers.finish()
        finally:
            drivers.kill()
        rows = conn.execute(
            "SELECT input ->> 'tenant', extract(epoch FROM completed_at - started_at)::float8"
            " FROM pgflow.runs WHERE flow_slug = %s AND started_at >= %s"
            " AND status = 'completed'",
            (flow, since),
        ).fetchall()
    b_times = sorted(float(r[1]) for r in rows if r[0] == "B")
    a_times = [float(r[1]) for r in rows if r[0] == "A"]
    if len(b_times) != tenant_runs or (not limited and len(a_times) != backlog):
        raise RuntimeError(f"{flow}: {len(a_times)} A / {len(b_times)} B runs completed")
    result.update(
        b_p50_s=percentile(b_times, 50),
        b_p95_s=percentile(b_times, 95),
        a_done=len(a_times),
        a_last_s=max(a_times) if len(a_times) == backlog else None,
    )
    return result


def _wait_for(conn: db.Conn, flow: str, since: Any, tenant: str, runs: int, timeout: float) -> None:
    """Until ``runs`` runs of ``tenant`` started since ``since`` are completed."""
    _wait_count(
        conn,
        "SELECT count(*) FROM pgflow.runs WHERE flow_slug = %s AND started_at >= %s"
        " AND input ->> 'tenant' = %s AND status = 'completed'",
        (flow, since, tenant),
        runs,
        timeout,
        f"{flow}: tenant {tenant}'s {runs} runs not done in {timeout} s",
    )


def _wait_count(
    conn: db.Conn, sql: str, params: tuple[Any, ...], n: int, timeout: float, late: str
) -> None:
    """Until the count ``sql`` returns reaches ``n``; TimeoutError(late) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(sql, params).fetchone()
        if row and row[0] >= n:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(late)
        time.sleep(0.05)


# ------------------------------------------------------------------ idle latency


#: unmeasured samples after the warm-up burst (see idle_latency)
IDLE_WARMUP = 5


def idle_latency(conninfo: str, samples: int, processes: int = 4) -> dict[str, Any]:
    """Workers idle on LISTEN; start_flow commit → run:completed arrival, per sample.

    The drivers' sessions are warmed first: a session's first calls compile
    the functions and plan their statements (about 8 ms, once per connection,
    which a long-lived worker pays once), and with a sample at a time only
    one driver of the woken herd gets the task.  So a burst of runs first
    (every driver claims and reports some), then IDLE_WARMUP samples that
    are not counted.  Without it, the first sample each driver won was an
    outlier: 4 of 50 samples at 8-11 ms, the p95.
    """
    latencies: list[float] = []
    run_ids: list[str] = []
    with (
        db.connect(conninfo) as admin,
        db.connect(conninfo) as starter,
        db.connect(conninfo) as events,
    ):
        db.reset(admin)
        events.execute("LISTEN pgflow_events")
        events.execute("SELECT pgflow.listen_events()")
        drivers = Drivers(conninfo, "single", processes=processes)
        try:
            drivers.start_listen()
            burst = 10 * processes
            starter.execute(
                "SELECT count(pgflow.start_flow('single', '{}')) FROM generate_series(1, %s)",
                (burst,),
            )
            _wait_completed(admin, "single", burst)
            for i in range(IDLE_WARMUP + samples):
                db.wait_idle(admin, "single", processes)
                run_id, latency = _idle_sample(starter, events)
                if i >= IDLE_WARMUP:
                    latencies.append(latency)
                    run_ids.append(run_id)
            drivers.finish()
        finally:
            drivers.kill()
        # where the time goes, from the database's clocks (transaction starts)
        parts = admin.execute(
            """
            SELECT 1000 * extract(epoch FROM t.started_at - r.started_at)::float8,
                   1000 * extract(epoch FROM r.completed_at - t.started_at)::float8
            FROM pgflow.runs AS r JOIN pgflow.step_tasks AS t ON t.run_id = r.run_id
            WHERE r.run_id = ANY (%s::uuid[])
            """,
            (run_ids,),
        ).fetchall()
    ms = sorted(x * 1000 for x in latencies)
    return {
        "samples_ms": ms,
        "samples_in_order_ms": [x * 1000 for x in latencies],
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "start_flow_to_start_tasks_ms_median": statistics.median(p[0] for p in parts),
        "start_tasks_to_complete_task_ms_median": statistics.median(p[1] for p in parts),
    }


def _idle_sample(starter: db.Conn, events: db.Conn) -> tuple[str, float]:
    """Start one run; its id and the seconds until its run:completed event arrived."""
    row = starter.execute("SELECT run_id FROM pgflow.start_flow('single', '{}')").fetchone()
    t0 = time.perf_counter()
    assert row is not None
    run_id = str(row[0])
    for note in events.notifies(timeout=5.0):
        arrived = time.perf_counter()
        payload = json.loads(note.payload)
        if payload["event"] == "run:completed" and payload["run_id"] == run_id:
            return run_id, arrived - t0
    raise TimeoutError(f"run {run_id} did not complete within 5 s")


def _wait_completed(conn: db.Conn, flow: str, runs: int, timeout: float = 30.0) -> None:
    """Until ``runs`` runs of ``flow`` are completed."""
    _wait_count(
        conn,
        "SELECT count(*) FROM pgflow.runs WHERE flow_slug = %s AND status = 'completed'",
        (flow,),
        runs,
        timeout,
        f"{flow}: {runs} runs not completed in {timeout} s",
    )


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (in any order)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# ------------------------------------------------------------------ ceiling

CEILING_SQL = """
CREATE TABLE ceiling_accounts (id integer PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
INSERT INTO ceiling_accounts (id) SELECT generate_series(1, 10000);
CREATE TABLE ceiling_log (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                          account integer NOT NULL, at timestamptz NOT NULL DEFAULT now());
"""

CEILING_SCRIPT = r"""\set account random(1, 10000)
BEGIN;
INSERT INTO ceiling_log (account) VALUES (:account);
UPDATE ceiling_accounts SET n = n + 1 WHERE id = :account;
END;
"""


def setup_ceiling(cluster: Cluster) -> None:
    with db.connect(cluster.conninfo()) as conn:
        conn.execute("CREATE DATABASE ceiling")
    with db.connect(cluster.conninfo("ceiling")) as conn:
        conn.execute(CEILING_SQL)
        conn.execute("VACUUM ANALYZE")


def ceiling(cluster: Cluster, seconds: int, clients: int = 4) -> float:
    """pgbench TPS of a one-INSERT-one-UPDATE transaction with ``clients`` clients."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(CEILING_SCRIPT)
        script.flush()
        with db.connect(cluster.conninfo("ceiling")) as conn:
            conn.execute("CHECKPOINT")
        out = subprocess.run(
            [
                str(pg_bindir() / "pgbench"),
                "-n",
                "-M",
                "prepared",
                "-c",
                str(clients),
                "-j",
                str(clients),
                "-T",
                str(seconds),
                "-f",
                script.name,
            ],
            env={**os.environ, **cluster.env("ceiling")},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    if not match:
        raise RuntimeError(f"cannot read TPS from pgbench output:\n{out}")
    return float(match.group(1))


# ------------------------------------------------------------------ reference worker


def reference(conninfo: str, runs: int, processes: int = 4) -> dict[str, Any]:
    """chain3 through `pgflow worker` processes (concurrency 10, batch 10, no-op handlers)."""
    logfile = tempfile.NamedTemporaryFile("w", prefix="bench-worker-", suffix=".log")  # noqa: SIM115
    procs: list[subprocess.Popen[bytes]] = []
    with logfile, db.connect(conninfo) as conn:
        db.reset(conn)
        conn.execute("CHECKPOINT")
        try:
            for _ in range(processes):
                cmd = [PGFLOW, "worker", "bench.flows:chain3", "--dsn", conninfo]
                cmd += ["--concurrency", "10", "--batch-size", "10"]
                procs.append(
                    subprocess.Popen(cmd, cwd=ROOT, stdout=logfile, stderr=subprocess.STDOUT)
                )
            # all of them connected, checked the flow and waiting on LISTEN
            db.wait_idle(conn, "chain3", processes, timeout=60)
            since = db.db_now(conn)
            db.start_runs(conninfo, "chain3", runs)
            deadline = time.monotonic() + 300
            while db.unfinished(conn, "chain3", since):
                if time.monotonic() > deadline:
                    raise TimeoutError("reference workers did not finish chain3 in 300 s")
                time.sleep(0.02)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        elapsed, n_runs, open_runs = db.batch_result(conn, "chain3", since)
    if n_runs != runs or open_runs:
        raise RuntimeError(f"reference: {n_runs} runs seen, {open_runs} not completed")
    tasks = runs * TASKS_PER_RUN["chain3"]
    return {"runs": runs, "tasks": tasks, "elapsed_s": elapsed, "tasks_per_s": tasks / elapsed}


# ------------------------------------------------------------------ history

HISTORY_IDS = """
INSERT INTO bench_history_ids
SELECT gen_random_uuid(), now() - interval '60 days' + i * (interval '60 days' / %(total)s)
FROM generate_series(%(first)s, %(last)s) AS i;
"""

# completed chain3 runs, as the engine leaves them (a -> b -> c, outputs {})
HISTORY_RUNS = """
INSERT INTO pgflow.runs (run_id, flow_slug, status, input, output, remaining_steps,
                         started_at, completed_at)
SELECT run_id, 'chain3', 'completed', '{}', '{"c": {}}', 0, t, t + interval '30 ms'
FROM bench_history_ids ORDER BY run_id;
INSERT INTO pgflow.step_states (run_id, step_slug, flow_slug, status, remaining_deps,
                                initial_tasks, remaining_tasks, output, created_at,
                                started_at, completed_at)
SELECT run_id, s.slug, 'chain3', 'completed', 0, 1, 0, '{}', t,
       t + s.n * interval '10 ms', t + (s.n + 1) * interval '10 ms'
FROM bench_history_ids, (VALUES ('a', 0), ('b', 1), ('c', 2)) AS s (slug, n)
ORDER BY run_id, s.slug;
"""

HISTORY_TASKS = """
INSERT INTO pgflow.step_tasks (run_id, step_slug, task_index, flow_slug, status,
                               attempts_count, read_ct, vt, output, queued_at,
                               started_at, completed_at)
SELECT run_id, s.slug, 0, 'chain3', 'completed', 1, 1, t + s.n * interval '10 ms', '{}',
       t + s.n * interval '10 ms', t + s.n * interval '10 ms', t + (s.n + 1) * interval '10 ms'
FROM bench_history_ids, (VALUES ('a', 0), ('b', 1), ('c', 2)) AS s (slug, n)
ORDER BY run_id, s.slug;
"""


def make_history(
    conninfo: str, target: int, deadline: float, reserve: float, chunk: int = 100_000
) -> dict[str, Any]:
    """Insert up to ``target`` finished chain3 runs, chunk by chunk, while time allows.

    Each chunk goes in as two parallel sessions (runs + step_states, and
    step_tasks) with foreign-key triggers off (session_replication_role =
    replica): the rows are consistent by construction.  A chunk is started
    only if, at the pace of the last one, it and ``reserve`` seconds still
    fit before ``deadline``.  Then VACUUM ANALYZE.
    """
    t0 = time.monotonic()
    done = 0
    last = 0.0
    limited = False
    with db.connect(conninfo) as ids, db.connect(conninfo) as a, db.connect(conninfo) as b:
        for conn in (a, b):
            conn.execute("SET session_replication_role = replica")
        while done < target:
            n = min(chunk, target - done)
            if time.monotonic() + last * n / chunk * 1.2 + reserve > deadline:
                limited = True
                break
            c0 = time.monotonic()
            ids.execute(
                "CREATE UNLOGGED TABLE IF NOT EXISTS bench_history_ids (run_id uuid, t timestamptz)"
            )
            ids.execute("TRUNCATE bench_history_ids")
            # spread over the 60 days before now, however many (at one a
            # second, 10 000 000 runs reached 55 days into the future)
            ids.execute(HISTORY_IDS, {"first": done + 1, "last": done + n, "total": target})
            errors: list[BaseException] = []

            def run(conn: db.Conn, query: str, errors: list[BaseException] = errors) -> None:
                try:
                    conn.execute(query)
                except BaseException as exc:
                    errors.append(exc)

            threads = [
                threading.Thread(target=run, args=(a, HISTORY_RUNS)),
                threading.Thread(target=run, args=(b, HISTORY_TASKS)),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if errors:
                raise errors[0]
            done += n
            last = time.monotonic() - c0
            log(f"history: {done} runs ({time.monotonic() - t0:.0f} s)")
        generated = time.monotonic() - t0
        ids.execute("DROP TABLE IF EXISTS bench_history_ids")
        ids.execute("VACUUM ANALYZE pgflow.runs, pgflow.step_states, pgflow.step_tasks")
        sizes = ids.execute(
            "SELECT relname, n_live_tup, pg_total_relation_size(relid) FROM pg_stat_user_tables"
            " WHERE schemaname = 'pgflow' AND relname = ANY (%s)",
            (list(db.TABLES),),
        ).fetchall()
    return {
        "target_runs": target,
        "runs": done,
        "limited_by_time": limited,
        "generate_s": generated,
        "generate_and_vacuum_s": time.monotonic() - t0,
        "tables": {str(r[0]): {"rows": int(r[1]), "bytes": int(r[2])} for r in sizes},
    }


def prune_history(conninfo: str, runs: int, batch: int = 10_000) -> dict[str, Any]:
    """``prune_runs(interval '0', batch)`` until ``runs`` finished runs are gone (or none
    is left): seconds, and the dead tuples it leaves in the runtime tables
    (before and after a plain VACUUM of them)."""

    def dead(conn: db.Conn) -> int:
        conn.execute(FLUSH_STATS)
        row = conn.execute(
            "SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables"
            " WHERE schemaname = 'pgflow' AND relname = ANY (%s)",
            (list(db.TABLES),),
        ).fetchone()
        return int(row[0]) if row else 0

    with db.connect(conninfo) as conn:
        before = dead(conn)
        deleted = 0
        t0 = time.perf_counter()
        while deleted < runs:
            row = conn.execute(
                "SELECT pgflow.prune_runs(interval '0', %s)", (min(batch, runs - deleted),)
            ).fetchone()
            n = int(row[0]) if row else 0
            if n == 0:
                break
            deleted += n
        prune_s = time.perf_counter() - t0
        after = dead(conn)
        t0 = time.perf_counter()
        conn.execute("VACUUM pgflow.runs, pgflow.step_states, pgflow.step_tasks")
        vacuum_s = time.perf_counter() - t0
        vacuumed = dead(conn)
    return {
        "runs": deleted,
        "batch": batch,
        "prune_s": prune_s,
        "prune_s_per_million": prune_s * 1_000_000 / deleted if deleted else math.inf,
        "dead_tuples_before": before,
        "dead_tuples_after": after,
        "dead_tuples_per_run": (after - before) / deleted if deleted else 0.0,
        "vacuum_s": vacuum_s,
        "dead_tuples_after_vacuum": vacuumed,
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


# ------------------------------------------------------------------ leases


def recovery(conninfo: str, flow: str, kills: int, parallel: int = 5) -> dict[str, Any]:
    """Seconds from SIGKILL of a worker holding a task to another worker starting it again.

    Rounds of ``parallel`` victim workers (`pgflow worker`, concurrency 1) each
    claim one task of ``flow`` (whose handler holds its first attempt); a
    rescuer worker is started and idles; the victims are killed; each task's
    recovery is the database time from the kill to its attempt 2's start.
    Each round has its own rescuer.
    """
    logfile = tempfile.NamedTemporaryFile("w", prefix="bench-recovery-", suffix=".log")  # noqa: SIM115
    samples: list[float] = []
    with logfile, db.connect(conninfo) as conn:
        db.reset(conn)
        base = [PGFLOW, "worker", f"bench.flows:{flow}", "--dsn", conninfo]
        base += ["--poll-interval", "0.2"]
        rescuer: subprocess.Popen[bytes] | None = None
        try:
            while len(samples) < kills:
                n = min(parallel, kills - len(samples))
                since = db.db_now(conn)
                victims = [
                    subprocess.Popen(
                        [*base, "--concurrency", "1"],
                        cwd=ROOT,
                        stdout=logfile,
                        stderr=subprocess.STDOUT,
                    )
                    for _ in range(n)
                ]
                db.start_runs(conninfo, flow, n)
                deadline = time.monotonic() + 60
                while True:
                    row = conn.execute(
                        "SELECT count(*) FROM pgflow.step_tasks WHERE flow_slug = %s"
                        " AND queued_at >= %s AND status = 'started' AND attempts_count = 1",
                        (flow, since),
                    ).fetchone()
                    if row and row[0] == n:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError("recovery: victims did not claim their tasks")
                    time.sleep(0.05)
                if rescuer is None:
                    rescuer = subprocess.Popen(
                        [*base, "--concurrency", str(parallel)],
                        cwd=ROOT,
                        stdout=logfile,
                        stderr=subprocess.STDOUT,
                    )
                    db.wait_idle(conn, flow, 1, timeout=60)
                for victim in victims:
                    victim.send_signal(signal.SIGKILL)
                killed_row = conn.execute("SELECT clock_timestamp()").fetchone()
                assert killed_row is not None
                killed = killed_row[0]
                for victim in victims:
                    victim.wait(timeout=10)
                deadline = time.monotonic() + 120
                while True:
                    rows = conn.execute(
                        "SELECT extract(epoch FROM started_at - %s)::float8 FROM pgflow.step_tasks"
                        " WHERE flow_slug = %s AND queued_at >= %s AND attempts_count >= 2",
                        (killed, flow, since),
                    ).fetchall()
                    if len(rows) == n:
                        samples.extend(float(r[0]) for r in rows)
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError("recovery: no takeover within 120 s")
                    time.sleep(0.05)
                # a new rescuer each round, started once the victims hold their
                # tasks: one left idle would race the next round's victims for
                # the new tasks, and a first attempt it took would hold its slot
                rescuer.send_signal(signal.SIGKILL)
                rescuer.wait(timeout=10)
                rescuer = None
        finally:
            if rescuer is not None:
                rescuer.send_signal(signal.SIGKILL)
                rescuer.wait(timeout=10)
    return {
        "flow": flow,
        "kills": len(samples),
        "recovery_s": samples,
        "p50": percentile(samples, 50),
        "p95": percentile(samples, 95),
        **summary(samples),
    }


def renewal(conninfo: str, tasks: int = 1000, rounds: int = 10) -> dict[str, Any]:
    """What heartbeats cost: ``tasks`` started tasks renewed by one extend_leases call."""
    with db.connect(conninfo) as conn:
        db.reset(conn)
        db.start_runs(conninfo, "lease_beat", tasks)
        rows = conn.execute(
            "SELECT run_id, step_slug, task_index, attempt FROM pgflow.claim_tasks(%s, %s, %s)",
            ("lease_beat", tasks, "00000000-0000-0000-0000-00000000beef"),
        ).fetchall()
        args = [[r[i] for r in rows] for i in range(4)]
        conn.execute("CHECKPOINT")
        times: list[float] = []
        wal: list[float] = []
        held = 0
        for _ in range(rounds):
            lsn0 = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
            t0 = time.perf_counter()
            held = len(
                conn.execute(
                    "SELECT * FROM pgflow.extend_leases(%s::uuid[], %s::text[], %s::int[],"
                    " %s::int[])",
                    args,
                ).fetchall()
            )
            times.append(time.perf_counter() - t0)
            lsn1 = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", (lsn0[0] if lsn0 else 0,)
            ).fetchone()
            wal.append(float(lsn1[0]) if lsn1 else 0.0)
        db.reset(conn)
    return {
        "tasks": tasks,
        "held": held,
        "call_ms": [t * 1000 for t in times],
        "wal_bytes_per_call": wal,
        "wal_bytes_per_task": [w / tasks for w in wal],
    }


# ------------------------------------------------------------------ a held snapshot


def snapshot_hold(conninfo: str, hold_s: float, processes: int = 4) -> dict[str, Any]:
    """chain3 drained while one REPEATABLE READ transaction holds its snapshot.

    A backlog of runs is started first (enough for the whole measurement);
    the drivers drain it; after 5 s a session opens a REPEATABLE READ
    transaction, reads ``pgflow.runs`` (taking its snapshot) and keeps it
    ``hold_s`` seconds, so vacuum cannot remove the dead rows the engine
    writes meanwhile; 25 s after it ends the drivers are stopped.  Rates come
    from ``step_tasks.completed_at`` afterwards: before, during, and per second
    after the snapshot ends.
    """
    lead, tail = 5.0, 25.0
    runs = int(1500 * (lead + hold_s + tail))  # more than 4 drivers drain in that time
    with db.connect(conninfo) as conn:
        db.reset(conn)
        start_s = db.start_runs(conninfo, "chain3", runs)
        conn.execute("VACUUM ANALYZE pgflow.runs, pgflow.step_states, pgflow.step_tasks")
        conn.execute("CHECKPOINT")
        drivers = Drivers(conninfo, "chain3", processes=processes)
        try:
            drivers.start_drain(runs * 3, timeout=lead + hold_s + tail + 120)
            go = db.db_now(conn)
            drivers.go.set()
            time.sleep(lead)
            with db.connect(conninfo) as holder:
                holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                holder.execute("SELECT count(*) FROM pgflow.runs")
                held_from = db.db_now(conn)
                time.sleep(hold_s)
                held_to = db.db_now(conn)
                holder.execute("ROLLBACK")
            time.sleep(tail)
            stopped = db.db_now(conn)
        finally:
            drivers.kill()

        def rate(a: float, b: float) -> float:
            """tasks/s completed between a and b seconds after the drivers went."""
            row = conn.execute(
                "SELECT count(*) FROM pgflow.step_tasks WHERE completed_at >= %s::timestamptz"
                " + make_interval(secs => %s) AND completed_at < %s::timestamptz"
                " + make_interval(secs => %s)",
                (go, a, go, b),
            ).fetchone()
            assert row is not None
            return float(row[0]) / (b - a)

        t_from = (held_from - go).total_seconds()
        t_to = (held_to - go).total_seconds()
        t_stop = (stopped - go).total_seconds()
        before = rate(1.0, t_from)
        during = rate(t_from, t_to)
        after = [rate(t_to + i, t_to + i + 1) for i in range(int(t_stop - t_to) - 1)]
    back = next(
        (i + 2 for i in range(len(after) - 1) if (after[i] + after[i + 1]) / 2 >= 0.95 * before),
        None,
    )
    return {
        "runs": runs,
        "start_flow_s": start_s,
        "hold_s": hold_s,
        "before_tasks_per_s": before,
        "during_tasks_per_s": during,
        "during_ratio": during / before if before else 0.0,
        "after_per_second": after,
        "back_within_s": back,
    }


def events(conninfo: str, runs: int, processes: int = 4) -> dict[str, Any]:
    """emit_event throughput: ``runs`` runs of ``waits`` (one wait step each, distinct
    keys) started in one transaction, then one emit per key, each its own
    transaction, from ``processes`` connections in parallel: events/s completing a
    waiting step (each completes its run), next to start_flow's runs/s."""
    with db.connect(conninfo) as conn:
        conn.execute("TRUNCATE pgflow.events, pgflow.waits")
        db.reset(conn)
    with db.connect(conninfo) as conn:
        t0 = time.perf_counter()
        conn.execute(
            "SELECT count(pgflow.start_flow('waits', jsonb_build_object('k', i)))"
            " FROM generate_series(1, %s) AS i",
            (runs,),
        )
        start_s = time.perf_counter() - t0
    completed = [0] * processes

    def emit(worker: int) -> None:
        with db.connect(conninfo) as conn:
            for key in range(worker + 1, runs + 1, processes):
                row = conn.execute(
                    "SELECT pgflow.emit_event('bench_event', to_jsonb(%s::int), '{}')", (key,)
                ).fetchone()
                completed[worker] += int(row[0]) if row else 0

    threads = [threading.Thread(target=emit, args=(w,)) for w in range(processes)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emit_s = time.perf_counter() - t0
    with db.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'completed') FROM pgflow.runs"
            " WHERE flow_slug = 'waits'"
        ).fetchone()
    done = int(row[0]) if row else 0
    return {
        "runs": runs,
        "start_flow_s": start_s,
        "start_flow_runs_per_s": runs / start_s,
        "emit_s": emit_s,
        "events_per_s": sum(completed) / emit_s,
        "steps_completed": sum(completed),
        "runs_completed": done,
    }
