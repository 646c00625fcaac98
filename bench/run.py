"""`make bench`: throughput, latency and cost of pgflow on a throwaway durable cluster.

Usage: python -m bench [--quick] [--only NAMES] [--profile] [...]; see --help
and bench/README.md.  Progress goes to stderr, the table to stdout, every
figure (and the raw samples) to bench/results/<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import db, report, workloads
from bench.report import Row
from bench.workloads import log
from pgflow.testing.cluster import Cluster

#: durable server: fsync, synchronous_commit and full_page_writes keep their
#: defaults (on); memory and checkpoint spacing are set so that no timed
#: checkpoint falls inside a measurement (each one starts after a CHECKPOINT)
SETTINGS: dict[str, str] = {
    "shared_buffers": "512MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "max_connections": "50",
}

BENCHMARKS = (
    "chain3",
    "events",
    "diamond",
    "fanout",
    "subflow",
    "idle",
    "ceiling",
    "reference",
    "history",
    "unfenced",
    "pertask",
    "recovery",
    "renewal",
    "snapshot",
    "noisy",
    "starts",
    "prune",
)
#: measured once (not per repeat): they kill workers, or measure a single cost
ONCE = ("recovery", "renewal", "snapshot", "noisy", "prune")
#: start_flow one by one (a transaction each) ÷ pgbench TPS with 0.3.0's start_flow
#: before the second wave's work on it (b649d5c, this 2-core machine, median of
#: 3 rounds: 1 223 runs/s against 4 882 TPS); issue 22 asks for 1.5 times it
#: finished runs prune_runs deletes (the history's oldest): s per million reported
PRUNE, PRUNE_LONG = 200_000, 1_000_000
START_ONE_BASELINE = 0.262
START_ONE_TARGET = round(1.5 * START_ONE_BASELINE, 3)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer runs and repeats (development)")
    p.add_argument("--repeats", type=int, help="repeats of each benchmark (default 5)")
    p.add_argument("--runs", type=int, help="runs of chain3 / diamond (default 1000)")
    p.add_argument("--fanout", type=int, default=5000, help="map elements (default 5000)")
    p.add_argument("--subflow", type=int, default=1000, help="sub-flow map elements (default 1000)")
    p.add_argument(
        "--noisy", type=int, help="noisy neighbour: tenant A's backlog of tasks (default 20000)"
    )
    p.add_argument("--samples", type=int, help="idle-latency samples per repeat (default 50)")
    p.add_argument("--pgbench-seconds", type=int, help="pgbench duration (default 20)")
    p.add_argument("--history-runs", type=int, help="finished runs for history (default 1e6)")
    p.add_argument("--processes", type=int, default=4, help="worker processes (default 4)")
    p.add_argument("--kills", type=int, help="workers killed for recovery (default 20)")
    p.add_argument(
        "--long",
        action="store_true",
        help="history of 10 000 000 finished runs (takes about an hour, not part of make bench)",
    )
    p.add_argument(
        "--budget", type=float, help="seconds the whole run may take (default 570; --long 3600)"
    )
    p.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}"
    )
    p.add_argument("--profile", action="store_true", help="profile pass instead (see profile.py)")
    p.add_argument("--out", type=Path, help="JSON file (default bench/results/<timestamp>.json)")
    args = p.parse_args(argv)
    quick = args.quick
    args.repeats = args.repeats or (2 if quick else 5)
    args.runs = args.runs or (300 if quick else 1000)
    args.samples = args.samples or (20 if quick else 50)
    args.pgbench_seconds = args.pgbench_seconds or (5 if quick else 20)
    args.history_runs = args.history_runs or (
        100_000 if quick else 10_000_000 if args.long else 1_000_000
    )
    args.budget = args.budget or (3600.0 if args.long else 570.0)
    args.kills = args.kills or (5 if quick else 20)
    args.noisy = args.noisy or (5_000 if quick else 20_000)
    args.only = [x for x in args.only.split(",") if x]
    unknown = set(args.only) - set(BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile:
        from bench.profile import profile  # noqa: PLC0415

        return profile(args)
    started = time.monotonic()
    deadline = started + args.budget
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_path = args.out or Path(report.ROOT, "bench", "results", f"{stamp}.json")
    results: dict[str, Any] = {}
    with Cluster(settings=SETTINGS) as cluster:
        conninfo = cluster.conninfo(db.DATABASE)
        db.setup(cluster.conninfo(), conninfo)
        with db.connect(conninfo) as conn:
            info = report.machine_info(conn)
        info["loadavg_before"] = os.getloadavg()
        log(f"cluster up, extension installed ({time.monotonic() - started:.1f} s)")
        n, runs, procs = args.repeats, args.runs, args.processes
        if "ceiling" in args.only:
            workloads.setup_ceiling(cluster)
        history = cluster.conninfo(db.HISTORY_DATABASE)
        if "history" in args.only:
            db.setup(cluster.conninfo(), history, db.HISTORY_DATABASE)
            # what the rounds will need afterwards, at the pace measured here
            reserve = n * (args.pgbench_seconds * ("ceiling" in args.only) + 45.0) + 20.0
            results["history_setup"] = workloads.make_history(
                history, args.history_runs, deadline, reserve
            )
        rounds: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("chain3", lambda: workloads.drive(conninfo, "chain3", runs, processes=procs)),
            (
                "history",
                lambda: workloads.drive(history, "chain3", runs, reset=False, processes=procs),
            ),
            ("reference", lambda: workloads.reference(conninfo, runs, procs)),
            (
                "ceiling",
                lambda: {"tps": workloads.ceiling(cluster, args.pgbench_seconds, procs)},
            ),
            (
                "unfenced",
                lambda: workloads.drive(conninfo, "chain3", runs, processes=procs, fenced=False),
            ),
            (
                "pertask",
                lambda: workloads.drive(conninfo, "chain3", runs, processes=procs, per_task=True),
            ),
            ("diamond", lambda: workloads.drive(conninfo, "diamond", runs, processes=procs)),
            ("events", lambda: workloads.events(conninfo, runs, procs)),
            ("fanout", lambda: workloads.fanout(conninfo, args.fanout)),
            ("subflow", lambda: workloads.subflow_fanout(conninfo, args.subflow)),
            ("idle", lambda: workloads.idle_latency(conninfo, args.samples, procs)),
            (
                "starts",
                lambda: workloads.starts(
                    conninfo, 4_000 if args.quick else 20_000, 300 if args.quick else 1_000
                ),
            ),
        ]
        # repeats interleaved (round by round), so that a change in the
        # machine's load spreads over every benchmark instead of skewing one
        for i in range(n):
            for name, fn in rounds:
                if name in args.only:
                    t0 = time.monotonic()
                    results.setdefault(name, []).append(fn())
                    log(f"{name} {i + 1}/{n} ({time.monotonic() - t0:.1f} s)")
        once: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("recovery", lambda: workloads.recovery(conninfo, "lease_beat", args.kills)),
            # without a heartbeat the lease is timeout + 2 s: timeout 10 here
            # (the heartbeat flow's 600 s would take ten minutes per kill)
            ("recovery_plain", lambda: workloads.recovery(conninfo, "lease_plain", 5)),
            ("renewal", lambda: workloads.renewal(conninfo)),
            # a REPEATABLE READ snapshot held 60 s (15 s with --quick) during a drain
            (
                "snapshot",
                lambda: workloads.snapshot_hold(conninfo, 15.0 if args.quick else 60.0, procs),
            ),
            # tenant B's 50 runs behind tenant A's backlog, without and with a
            # per-tenant limit of 4 (concurrency: {limit: 4, key: run.tenant})
            (
                "noisy",
                lambda: {
                    "free": workloads.noisy_neighbour(conninfo, args.noisy, 50, limited=False),
                    "gated": workloads.noisy_neighbour(conninfo, args.noisy, 50, limited=True),
                },
            ),
        ]
        if "prune" in args.only and "history" in args.only:
            # last: it empties the history the history rounds ran on
            once.append(
                (
                    "prune",
                    # 200 000 runs (1 000 000 with --long): the time per
                    # million is what is reported
                    lambda: workloads.prune_history(
                        history,
                        min(results["history_setup"]["runs"], PRUNE_LONG if args.long else PRUNE),
                    ),
                )
            )
        for name, fn in once:
            if name.split("_")[0] in args.only:
                t0 = time.monotonic()
                results[name] = [fn()]
                log(f"{name} ({time.monotonic() - t0:.1f} s)")
    info["loadavg_after"] = os.getloadavg()
    rows = build_rows(results, args)
    total = time.monotonic() - started
    text = "\n".join(
        [
            report.header(info),
            f"workers: {args.processes} processes, batch 10; chain3/diamond {args.runs} runs;"
            f" {args.repeats} repeats; total {total:.0f} s",
            "",
            report.table(rows),
            *notes(results, args),
        ]
    )
    report.say(text)
    document = {
        "timestamp": stamp,
        "total_s": total,
        "machine": info,
        "server_settings_requested": SETTINGS,
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "summary": {r.label: r.as_json() for r in rows},
        "results": results,
        "table": text,
    }
    report.write_json(out_path, document)
    report.say(f"\nwrote {out_path}")
    return 0


def _prune_rows(results: dict[str, Any]) -> list[Row]:
    prune = results.get("prune", [])
    runs = prune[0]["runs"] if prune else 0
    return [
        Row(
            f"prune_runs of {runs:,} finished runs, batch 10 000 (s per 1 000 000 runs)",
            _values(results, "prune", "prune_s_per_million"),
            "s",
            target="<= 10",
            check=lambda v: v <= 10,
            digits=1,
        ),
        Row(
            "  dead tuples it leaves in the runtime tables, per run",
            _values(results, "prune", "dead_tuples_per_run"),
            target="0",
            check=lambda v: v == 0,
            digits=1,
        ),
        Row("  then VACUUM of them (s)", _values(results, "prune", "vacuum_s"), "s", digits=1),
    ]


def _start_rows(results: dict[str, Any], tps: list[float]) -> list[Row]:
    starts = results.get("starts", [])
    batch = starts[0]["batch"] if starts else 0
    one = _values(results, "starts", "start_flow_one_by_one_runs_per_s")
    return [
        Row(
            f"start_flows: {batch:,} chain3 runs in one call (runs/s)",
            _values(results, "starts", "start_flows_runs_per_s"),
            "runs/s",
            target=">= 20000",
            check=lambda v: v >= 20_000,
            digits=0,
        ),
        Row(
            f"  start_flow, {batch:,} runs in one statement (runs/s)",
            _values(results, "starts", "start_flow_statement_runs_per_s"),
            "runs/s",
            digits=0,
        ),
        Row("  start_flow one by one, a transaction each (runs/s)", one, "runs/s", digits=0),
        Row(
            "  start_flow one by one ÷ pgbench TPS",
            _ratio(one, tps),
            target=f">= {START_ONE_TARGET}",
            check=lambda v: v >= START_ONE_TARGET,
            digits=3,
        ),
    ]


def _noisy_rows(results: dict[str, Any], args: argparse.Namespace) -> list[Row]:
    noisy = results.get("noisy", [])

    def v(kind: str, key: str, scale: float = 1.0) -> list[float]:
        return [float(r[kind][key]) * scale for r in noisy]

    label = f"noisy neighbour: B's 50 runs behind A's {args.noisy} tasks"
    return [
        Row(f"{label}, no limit: B p50 (s)", v("free", "b_p50_s"), "s", digits=3),
        Row("  no limit: B p95 (s)", v("free", "b_p95_s"), "s", digits=3),
        Row("  no limit: A's last run done (s)", v("free", "a_last_s"), "s", digits=2),
        Row("  limit 4 per tenant: B p50 (s)", v("gated", "b_p50_s"), "s", digits=3),
        Row("  limit 4 per tenant: B p95 (s)", v("gated", "b_p95_s"), "s", digits=3),
        Row(
            "  claim of 10, A's backlog blocked (ms)",
            v("gated", "claim_blocked_ms"),
            "ms",
            digits=2,
        ),
        Row("  claim of 10, empty queue (ms)", v("gated", "claim_empty_ms"), "ms", digits=2),
    ]


def _per_task(results: dict[str, Any], name: str, key: str) -> list[float]:
    return [workloads.per_task_cost(r)[key] for r in results.get(name, [])]


def _values(results: dict[str, Any], name: str, key: str) -> list[float]:
    return [float(r[key]) for r in results.get(name, [])]


def _ratio(a: list[float], b: list[float]) -> list[float]:
    """Ratios of figures measured in the same round (next to each other in time)."""
    return [x / y for x, y in zip(a, b, strict=False)]


def build_rows(results: dict[str, Any], args: argparse.Namespace) -> list[Row]:
    chain3 = _values(results, "chain3", "tasks_per_s")
    diamond = _values(results, "diamond", "tasks_per_s")
    tps = _values(results, "ceiling", "tps")
    ref = _values(results, "reference", "tasks_per_s")
    hist = _values(results, "history", "tasks_per_s")
    idle = results.get("idle", [])
    hist_runs = results.get("history_setup", {}).get("runs", 0)
    rows = [
        Row("chain3 tasks/s (protocol driver)", chain3, "tasks/s", digits=0),
        Row("diamond tasks/s (protocol driver)", diamond, "tasks/s", digits=0),
        Row(
            f"emit_event events/s completing a waiting step ({args.processes} connections)",
            _values(results, "events", "events_per_s"),
            "events/s",
            digits=0,
        ),
        Row(
            "  next to start_flow runs/s of the same flow (one transaction)",
            _values(results, "events", "start_flow_runs_per_s"),
            "runs/s",
            digits=0,
        ),
        Row(f"pgbench TPS (INSERT+UPDATE, {args.processes} clients)", tps, "TPS", digits=0),
        Row(
            "chain3 ÷ pgbench TPS",
            _ratio(chain3, tps),
            target=">= 1.5",
            check=lambda v: v >= 1.5,
            digits=2,
        ),
        Row(
            "diamond ÷ pgbench TPS",
            _ratio(diamond, tps),
            target=">= 1.5",
            check=lambda v: v >= 1.5,
            digits=2,
        ),
        Row(
            f"fanout: {args.fanout}-element map → reduce, batch {workloads.FANOUT_BATCH} (s)",
            _values(results, "fanout", "completion_s"),
            "s",
            target="<= 0.12",
            check=lambda v: v <= 0.12,
            digits=3,
        ),
        Row(
            "  fanout: of which start_flow (5 000 tasks queued)",
            _values(results, "fanout", "start_flow_s"),
            "s",
            digits=3,
        ),
        Row(
            f"subflow: {args.subflow}-element map over a 2-step sub-flow (s)",
            _values(results, "subflow", "completion_s"),
            "s",
            digits=3,
        ),
        Row(
            f"  subflow: of which start_flow ({args.subflow} child runs started)",
            _values(results, "subflow", "start_flow_s"),
            "s",
            digits=3,
        ),
        Row(
            "idle latency p50 (ms)",
            [float(r["p50_ms"]) for r in idle],
            "ms",
            target="<= 1.5",
            check=lambda v: v <= 1.5,
            digits=2,
        ),
        Row(
            "idle latency p95 (ms)",
            [float(r["p95_ms"]) for r in idle],
            "ms",
            target="<= 3",
            check=lambda v: v <= 3,
            digits=2,
        ),
        Row(
            "  idle: start_flow txn → start_tasks txn (ms)",
            [float(r["start_flow_to_start_tasks_ms_median"]) for r in idle],
            "ms",
            digits=2,
        ),
        Row(
            "  idle: start_tasks txn → complete_task txn (ms)",
            [float(r["start_tasks_to_complete_task_ms_median"]) for r in idle],
            "ms",
            digits=2,
        ),
        Row(
            "chain3 rows written per task",
            _per_task(results, "chain3", "rows"),
            target="<= 5",
            check=lambda v: v <= 5,
            digits=2,
        ),
        Row(
            "  of which executing (start_flow excluded)",
            _per_task(results, "chain3", "rows_exec"),
            digits=2,
        ),
        Row(
            "chain3 WAL bytes per task, no FPI",
            _per_task(results, "chain3", "wal_nofpi"),
            "bytes",
            target="<= 1200",
            check=lambda v: v <= 1200,
            digits=0,
        ),
        Row("  of which executing", _per_task(results, "chain3", "wal_nofpi_exec"), digits=0),
        Row(
            "chain3 WAL bytes per task, with FPI",
            _per_task(results, "chain3", "wal_total"),
            digits=0,
        ),
        Row(
            "chain3 full-page images per task",
            _per_task(results, "chain3", "fpi_per_task"),
            digits=3,
        ),
        Row(
            "chain3 WAL flushes (fsync) per task",
            _per_task(results, "chain3", "wal_syncs"),
            digits=2,
        ),
        Row("chain3 protocol calls per task", _per_task(results, "chain3", "calls"), digits=2),
        Row("  of which empty reads", _per_task(results, "chain3", "empty_reads"), digits=3),
        Row(
            "chain3 CPU busy (whole machine)",
            [100 * v for v in _per_task(results, "chain3", "cpu_busy")],
            "%",
            digits=0,
        ),
        Row(f"chain3 tasks/s after {hist_runs:,} finished runs", hist, "tasks/s", digits=0),
        Row(
            "history ratio (after ÷ empty)",
            _ratio(hist, chain3),
            target=">= 0.9",
            check=lambda v: v >= 0.9,
            digits=2,
        ),
        *_prune_rows(results),
        Row(
            "chain3 tasks/s, per-task protocol (read_with_poll + start_tasks + complete_task)",
            _values(results, "pertask", "tasks_per_s"),
            "tasks/s",
            digits=0,
        ),
        Row(
            "  per-task protocol ÷ pgbench TPS",
            _ratio(_values(results, "pertask", "tasks_per_s"), tps),
            target=">= 0.6",
            check=lambda v: v >= 0.6,
            digits=2,
        ),
        Row(
            "  per-task protocol: rows written per task",
            _per_task(results, "pertask", "rows_exec"),
            digits=2,
        ),
        Row(
            "  per-task protocol: WAL bytes per task (no FPI)",
            _per_task(results, "pertask", "wal_nofpi_exec"),
            "B",
            digits=0,
        ),
        Row(
            "chain3 while a REPEATABLE READ snapshot is held ÷ before it",
            [r["during_ratio"] for r in results.get("snapshot", [])],
            target=">= 0.7",
            check=lambda v: v >= 0.7,
            digits=2,
        ),
        Row(
            "  seconds after it ends until back at 0.95 of before",
            [
                float(r["back_within_s"]) if r["back_within_s"] is not None else math.inf
                for r in results.get("snapshot", [])
            ],
            "s",
            target="<= 10",
            check=lambda v: v <= 10,
            digits=0,
        ),
        *_start_rows(results, tps),
        *_noisy_rows(results, args),
        Row(
            "chain3 fenced ÷ unfenced reports (tasks/s)",
            _ratio(chain3, _values(results, "unfenced", "tasks_per_s")),
            target=">= 0.97",
            check=lambda v: v >= 0.97,
            digits=3,
        ),
        Row(
            "recovery after kill -9, heartbeat 2 s, timeout 600 s: p50 (s)",
            [r["p50"] for r in results.get("recovery", [])],
            "s",
            target="<= 5",
            check=lambda v: v <= 5,
            digits=2,
        ),
        Row(
            "  p95 (s)",
            [r["p95"] for r in results.get("recovery", [])],
            "s",
            target="<= 5",
            check=lambda v: v <= 5,
            digits=2,
        ),
        Row(
            "  the same without heartbeat, timeout 10 s: p50 (s)",
            [r["p50"] for r in results.get("recovery_plain", [])],
            "s",
            digits=2,
        ),
        Row(
            "heartbeat: extend_leases of 1000 tasks (ms per call)",
            [x for r in results.get("renewal", []) for x in r["call_ms"]],
            "ms",
            digits=2,
        ),
        Row(
            "  WAL bytes per renewed task",
            [x for r in results.get("renewal", []) for x in r["wal_bytes_per_task"]],
            "bytes",
            digits=0,
        ),
        Row("chain3 tasks/s, reference worker", ref, "tasks/s", digits=0),
        Row(
            "reference worker ÷ protocol driver",
            _ratio(ref, chain3),
            target=">= 0.7",
            check=lambda v: v >= 0.7,
            digits=2,
        ),
    ]
    return rows


def notes(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    out = [""]
    h = results.get("history_setup")
    if h:
        out.append(
            f"history: {h['runs']:,} finished chain3 runs generated in {h['generate_s']:.0f} s"
            f" (+ VACUUM ANALYZE: {h['generate_and_vacuum_s']:.0f} s)"
            + (
                f"; LIMITED by the time budget (target {h['target_runs']:,})"
                if h["limited_by_time"]
                else ""
            )
        )
    out += [
        "ratios are per round (figures measured one after the other), then min/median/max;",
        "tasks/s = tasks ÷ (first task start → last run completion),",
        "read from the database; fanout = start_flow's transaction → run completion;",
        "idle latency = start_flow commit → run:completed arrival on a LISTEN connection;",
        "cost per task includes the task's share of start_flow (a repeat's runs are started",
        "in one statement); WAL without FPI from pg_walinspect (CHECKPOINT before each repeat).",
        "drivers claim with claim_tasks and report with complete_tasks (batch 10; fanout 100).",
    ]
    return out
