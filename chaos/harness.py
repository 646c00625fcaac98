"""The chaos run: reference workers killed with SIGKILL every few hundred ms
and PostgreSQL restarted a few times while runs of the chaos flows go on;
then every invariant is checked from SQL (checks.py).  See chaos/README.md.

Bounded and self-stopping: the chaos phase ends after a number of kills or at
a deadline, the drain phase at another; whatever happens, the workers are
killed and the throwaway cluster is stopped and deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from chaos import model
from chaos.checks import CHECKS, FIGURES
from pgflow.compiler.migration import compile_flow
from pgflow.spec.loader import load
from pgflow.testing.cluster import FAST_SETTINGS, Cluster, stop_on_signals

log = logging.getLogger("chaos")

ROOT = Path(__file__).resolve().parents[1]
SPEC = "chaos/flows.py"
PGFLOW = str(Path(sys.executable).with_name("pgflow"))

#: Fast, but a commit the server acknowledged survives an immediate-mode
#: restart (synchronous_commit=off could lose it: not what is under test).
SETTINGS = {**FAST_SETTINGS, "synchronous_commit": "on", "max_connections": "200"}


@dataclass(frozen=True)
class Profile:
    kills: int  # the chaos phase ends after this many kills
    restarts: int  # PostgreSQL restarts spread over the chaos phase
    workers: int
    active_runs: int  # runs kept in flight while the chaos lasts
    chaos_deadline: float  # seconds: the chaos phase ends by then whatever the kills
    drain_deadline: float  # seconds the runs get to finish afterwards
    kill_every: tuple[float, float] = (0.2, 0.5)


SHORT = Profile(
    kills=60, restarts=2, workers=4, active_runs=30, chaos_deadline=40, drain_deadline=60
)
FULL = Profile(
    kills=1000, restarts=6, workers=5, active_runs=40, chaos_deadline=500, drain_deadline=120
)


@dataclass
class Slot:
    """One worker position: a process that is killed and replaced over and over."""

    number: int
    proc: subprocess.Popen[bytes] | None = None
    spawned_at: float = 0.0
    log_offset: int = 0  # where this process's output starts in the slot's log
    up: bool = False  # it logged "started" (registered, shapes checked, claiming)


@dataclass
class Record:
    kills: list[tuple[int, int, int, float, float]] = field(default_factory=list)
    restarts: list[tuple[int, str, float, float]] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    self_exits: int = 0


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


class Harness:
    def __init__(self, profile: Profile, seed: int, workdir: Path) -> None:
        self.profile = profile
        self.rng = random.Random(seed)
        self.seed = seed
        self.workdir = workdir
        self.cluster = Cluster(settings=SETTINGS)
        self.slots = [Slot(i) for i in range(profile.workers)]
        self.record = Record()
        self._stop_starting = threading.Event()
        self._starter: threading.Thread | None = None
        self._starter_error: BaseException | None = None

    # ---------------------------------------------------------------- setup

    @property
    def dsn(self) -> str:
        return self.cluster.conninfo()

    def setup(self) -> None:
        self.cluster.start()
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            flows = load(SPEC)
        finally:
            os.chdir(cwd)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pgflow")
            for flow in flows:
                conn.execute(compile_flow(flow.spec, generated_at=datetime(2026, 1, 1, tzinfo=UTC)))
            conn.execute((ROOT / "chaos" / "audit.sql").read_text())

    # ---------------------------------------------------------------- workers

    def spawn(self, slot: Slot) -> None:
        out = (self.workdir / f"worker-{slot.number}.log").open("ab")
        slot.log_offset = out.tell()
        slot.up = False
        env = {
            **os.environ,
            "CHAOS_HANDLER_LOG": str(self.workdir / f"handlers-{slot.number}.jsonl"),
            "PYTHONPATH": str(ROOT),
        }
        try:
            slot.spawned_at = time.time()
            slot.proc = subprocess.Popen(
                [
                    PGFLOW,
                    "worker",
                    SPEC,
                    "--dsn",
                    self.dsn,
                    "--concurrency",
                    "8",
                    "--poll-interval",
                    "0.5",
                    "--grace",
                    "2",
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            out.close()

    def kill(self, slot: Slot) -> bool:
        """SIGKILL the slot's worker; False if it had already exited by itself."""
        proc = slot.proc
        if proc is None or self._exited(slot):
            return False
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)  # not reaped yet: the pid is still ours
        proc.wait()
        self.record.kills.append(
            (len(self.record.kills) + 1, slot.number, proc.pid, slot.spawned_at, killed_at)
        )
        slot.proc = None
        return True

    def _exited(self, slot: Slot) -> bool:
        """Whether the slot's worker exited on its own (logged, counted, slot emptied)."""
        proc = slot.proc
        if proc is None or proc.poll() is None:
            return False
        log.warning(
            "worker %d (pid %d) exited by itself with status %s (see worker-%d.log)",
            slot.number,
            proc.pid,
            proc.returncode,
            slot.number,
        )
        self.record.self_exits += 1
        slot.proc = None
        return True

    def is_up(self, slot: Slot) -> bool:
        """Whether the slot's worker finished starting (it logs "worker ... started")."""
        if not slot.up and slot.proc is not None:
            with (self.workdir / f"worker-{slot.number}.log").open("rb") as f:
                f.seek(slot.log_offset)
                slot.up = b" started: flows=" in f.read()
        return slot.up

    def revive(self) -> None:
        """Replace the workers that exited on their own."""
        for slot in self.slots:
            if self._exited(slot):
                self.spawn(slot)

    def stop_workers(self) -> None:
        """SIGTERM (graceful), then SIGKILL whatever is left."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for slot in self.slots:
            if slot.proc is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                slot.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            if slot.proc.poll() is None:
                slot.proc.kill()
                slot.proc.wait()
            slot.proc = None

    # ---------------------------------------------------------------- runs

    def _start_run(self, conn: psycopg.Connection[Any], rng: random.Random) -> str:
        flow = rng.choice(model.FLOWS)
        inp = model.make_input(flow, rng)
        exp = model.expect(flow, inp)
        run_id = str(uuid.uuid4())
        rows = model.scripts(flow, inp)
        with conn.transaction():
            conn.execute(
                "INSERT INTO chaos.expected VALUES (%s, %s, %s, %s, %s)",
                (
                    run_id,
                    flow,
                    exp.status,
                    None if exp.output is None else json.dumps(exp.output),
                    list(exp.fatal_steps),
                ),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO chaos.scripts VALUES (%s, %s, %s, %s)",
                    [(run_id, step, index, json.dumps(b)) for step, index, b in rows],
                )
            # the child runs of its sub-flow steps, one per attempt: their ids are
            # derived from (parent run, step, task, attempt)
            for step, index, child in model.children(flow, inp):
                child_exp = model.expect("chaos_chain", child)
                for attempt in range(1, model.NEST_ATTEMPTS + 1):
                    (child_id,) = conn.execute(
                        "SELECT pgflow._subflow_child_id(%s, %s, %s, %s)::text",
                        (run_id, step, index, attempt),
                    ).fetchone() or (None,)
                    conn.execute(
                        "INSERT INTO chaos.expected VALUES (%s, %s, %s, %s, %s)",
                        (
                            child_id,
                            "chaos_chain",
                            child_exp.status,
                            None if child_exp.output is None else json.dumps(child_exp.output),
                            list(child_exp.fatal_steps),
                        ),
                    )
                    with conn.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO chaos.scripts VALUES (%s, %s, %s, %s)",
                            [
                                (child_id, s, i, json.dumps(b))
                                for s, i, b in model.scripts("chaos_chain", child)
                            ],
                        )
            conn.execute(
                "SELECT pgflow.start_flow(flow_slug => %s, input => %s::jsonb, run_id => %s)",
                (flow, json.dumps(inp), run_id),
            )
        return run_id

    def _starter_loop(self) -> None:
        """Keep about ``active_runs`` runs in flight; survive server restarts."""
        rng = random.Random(self.rng.random())
        conn: psycopg.Connection[Any] | None = None
        try:
            while not self._stop_starting.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)
                    row = conn.execute(
                        "SELECT count(*) FROM pgflow.runs WHERE status = 'started'"
                    ).fetchone()
                    active = int(row[0]) if row else 0
                    for _ in range(max(0, self.profile.active_runs - active)):
                        if self._stop_starting.is_set():
                            break
                        self.record.started.append(self._start_run(conn, rng))
                    self._stop_starting.wait(0.2)
                except psycopg.OperationalError:
                    # the server is restarting; a start whose commit we did not
                    # see is not counted (it may or may not exist: both are fine)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                    conn = None
                    self._stop_starting.wait(0.3)
        except BaseException as exc:
            self._starter_error = exc
            raise
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    # ---------------------------------------------------------------- phases

    def chaos(self) -> None:
        p = self.profile
        for slot in self.slots:
            self.spawn(slot)
        self._starter = threading.Thread(target=self._starter_loop, name="starter", daemon=True)
        self._starter.start()
        time.sleep(2.0)  # let the workers come up and the first runs start
        # restart i is due after its share of the kills, or of the deadline,
        # whichever comes first (kills slow down when workers start slowly)
        t0 = time.monotonic()
        share = [(i + 1) / (p.restarts + 1) for i in range(p.restarts)]
        restart_at = [(int(p.kills * f), t0 + p.chaos_deadline * f) for f in share]
        modes = ["fast", "immediate"]
        deadline = time.monotonic() + p.chaos_deadline
        kills = 0
        while kills < p.kills and time.monotonic() < deadline:
            if self._starter_error is not None:
                raise RuntimeError("the run starter died") from self._starter_error
            time.sleep(self.rng.uniform(*p.kill_every))
            if restart_at and (kills >= restart_at[0][0] or time.monotonic() >= restart_at[0][1]):
                restart_at.pop(0)
                mode = modes[len(self.record.restarts) % 2]
                began = time.time()
                self.cluster.restart(mode)
                ended = time.time()
                self.record.restarts.append((len(self.record.restarts) + 1, mode, began, ended))
                log.info("restart %d (%s): %.1f s", len(self.record.restarts), mode, ended - began)
            self.revive()
            # kill only workers that are up, and never the last one: recovery
            # needs a survivor, and on a loaded machine a worker can take
            # longer to start than the kill interval
            up = [slot for slot in self.slots if self.is_up(slot)]
            if len(up) < 2:
                continue
            slot = self.rng.choice(up)
            if not self.kill(slot):
                self.spawn(slot)
                continue
            self.spawn(slot)
            kills += 1
            if kills % 100 == 0:
                log.info("%d kills, %d runs started", kills, len(self.record.started))
        if kills < p.kills:
            log.warning("chaos deadline reached after %d of %d kills", kills, p.kills)
        self._stop_starting.set()
        self._starter.join(timeout=30)

    def drain(self) -> bool:
        """Let the surviving workers finish every run; False at the deadline."""
        deadline = time.monotonic() + self.profile.drain_deadline
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.OperationalError), psycopg.connect(self.dsn) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pgflow.runs WHERE status = 'started'"
                ).fetchone()
                if row is not None and row[0] == 0:
                    return True
            self.revive()
            time.sleep(0.5)
        return False

    # ---------------------------------------------------------------- verdict

    def load_records(self) -> None:
        executions: list[tuple[str, str, int, int, int]] = []
        for path in sorted(self.workdir.glob("handlers-*.jsonl")):
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    e = json.loads(line)
                    executions.append(
                        (e["run_id"], e["step"], int(e["task"]), int(e["attempt"]), int(e["pid"]))
                    )
        with psycopg.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO chaos.kills VALUES (%s, %s, %s, %s, %s)",
                [(n, s, pid, _ts(a), _ts(b)) for n, s, pid, a, b in self.record.kills],
            )
            cur.executemany(
                "INSERT INTO chaos.restarts VALUES (%s, %s, %s, %s)",
                [(n, m, _ts(a), _ts(b)) for n, m, a, b in self.record.restarts],
            )
            cur.executemany(
                "INSERT INTO chaos.started VALUES (%s)", [(r,) for r in self.record.started]
            )
            with cur.copy("COPY chaos.executions FROM STDIN") as copy:
                for row in executions:
                    copy.write_row(row)

    def verdict(self) -> tuple[dict[str, Any], dict[str, list[tuple[Any, ...]]]]:
        violations: dict[str, list[tuple[Any, ...]]] = {}
        with psycopg.connect(self.dsn) as conn:
            conn.execute("SET statement_timeout = '300s'")
            cur = conn.execute(FIGURES)
            names = [d.name for d in cur.description or ()]
            row = cur.fetchone()
            figures = dict(zip(names, row or (), strict=True))
            figures["self_exits"] = self.record.self_exits
            for name, query in CHECKS.items():
                rows = conn.execute(query).fetchall()
                if rows:
                    violations[name] = rows
        return figures, violations


def _print_report(
    figures: dict[str, Any],
    violations: dict[str, list[tuple[Any, ...]]],
    duration: float,
    drained: bool,
    out: Any,
) -> None:
    worst = figures.get("worst_recovery_s")
    lines = [
        "chaos: "
        f"runs={figures['runs']} (completed {figures['completed']}, failed {figures['failed']})"
        f" tasks={figures['tasks']} attempts={figures['attempts']}"
        f" handler_executions={figures['executions']}"
        f" child_runs={figures['child_runs']} (retries {figures['child_retries']})",
        f"chaos: kills={figures['kills']} (holding tasks: {figures['kills_holding_tasks']},"
        f" tasks held: {figures['tasks_held_at_kills']}) restarts={figures['restarts']}"
        f" lost_attempts={figures['lost_attempts']}"
        f" kill_exhausted_runs={figures['kill_exhausted_runs']}"
        f" late_completions={figures['late_completions']}"
        f" workers_exited_by_themselves={figures['self_exits']}",
        f"chaos: lost={int(figures['lost_runs']) + int(figures['lost_tasks'])}"
        f" duplicates={figures['duplicates']}"
        f" worst_recovery={'-' if worst is None else f'{float(worst):.2f}'} s"
        f" never_recovered={figures['never_recovered']}"
        f" duration={duration:.0f} s drained={'yes' if drained else 'NO'}",
    ]
    for name, rows in violations.items():
        lines.append(f"chaos: VIOLATION {name}: {len(rows)} rows, e.g.")
        lines.extend(f"chaos:   {r}" for r in rows[:5])
    lines.append(
        "chaos: "
        + (
            "OK: every invariant holds"
            if not violations and drained
            else f"FAILED: {len(violations)} invariants violated"
        )
    )
    print("\n".join(lines), file=out, flush=True)


@dataclass(frozen=True)
class Outcome:
    figures: dict[str, Any]
    violations: dict[str, list[tuple[Any, ...]]]
    drained: bool
    duration: float
    workdir: Path

    @property
    def ok(self) -> bool:
        return self.drained and not self.violations


#: tables copied to <workdir>/evidence/*.csv when an invariant fails
EVIDENCE = (
    "pgflow.runs",
    "pgflow.step_states",
    "pgflow.step_tasks",
    "pgflow.workers",
    "chaos.task_events",
    "chaos.step_events",
    "chaos.run_events",
    "chaos.expected",
    "chaos.scripts",
    "chaos.kills",
    "chaos.restarts",
    "chaos.executions",
)


def _save_evidence(dsn: str, workdir: Path) -> None:
    target = workdir / "evidence"
    target.mkdir(exist_ok=True)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        for table in EVIDENCE:
            with (
                (target / f"{table}.csv").open("wb") as out,
                cur.copy(f"COPY {table} TO STDOUT WITH (FORMAT csv, HEADER)") as copy,
            ):
                for chunk in copy:
                    out.write(chunk)


def execute(profile: Profile, seed: int, workdir: Path) -> Outcome:
    """One whole chaos run; always stops the workers and the cluster."""
    harness = Harness(profile, seed, workdir)
    began = time.monotonic()
    try:
        harness.setup()
        harness.chaos()
        drained = harness.drain()
        harness.stop_workers()
        harness.load_records()
        figures, violations = harness.verdict()
        outcome = Outcome(figures, violations, drained, time.monotonic() - began, workdir)
        if not outcome.ok:
            _save_evidence(harness.dsn, workdir)
        return outcome
    finally:
        harness._stop_starting.set()
        harness.stop_workers()
        harness.cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Kill workers and restart PostgreSQL under load, then check the "
        "invariants from SQL.  Exit 0 when every invariant holds.",
    )
    parser.add_argument("--short", action="store_true", help="the CI run (about a minute)")
    parser.add_argument("--kills", type=int, help="end the chaos phase after this many kills")
    parser.add_argument("--restarts", type=int, help="PostgreSQL restarts during the chaos")
    parser.add_argument("--workers", type=int, help="worker processes")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--keep", action="store_true", help="keep the logs directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="chaos: %(message)s", stream=sys.stdout)
    profile = SHORT if args.short else FULL
    overrides = {
        k: v
        for k, v in (("kills", args.kills), ("restarts", args.restarts), ("workers", args.workers))
        if v is not None
    }
    if overrides:
        profile = Profile(**{**profile.__dict__, **overrides})
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    workdir = Path(tempfile.mkdtemp(prefix="pgflow-chaos-"))
    log.info(
        "seed=%d kills=%d restarts=%d workers=%d logs=%s",
        seed,
        profile.kills,
        profile.restarts,
        profile.workers,
        workdir,
    )
    ok = False
    with stop_on_signals():
        try:
            outcome = execute(profile, seed, workdir)
            _print_report(
                outcome.figures, outcome.violations, outcome.duration, outcome.drained, sys.stdout
            )
            ok = outcome.ok
        finally:
            if ok and not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                log.info("worker and handler logs (and evidence/*.csv) kept in %s", workdir)
    return 0 if ok else 1
