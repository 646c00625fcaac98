"""The protocol driver: worker processes that speak the SQL protocol and nothing else.

Each process has one autocommit connection and loops ``claim_tasks`` (a
batch) → ``complete_tasks`` (the whole batch, outputs ``{}``): two
transactions per batch, the batch forms of the protocol a real worker uses.
With ``per_task`` it speaks the per-task protocol instead, the one a first
worker in another language speaks (docs/howto/workers.md): per task
``read_with_poll`` (one message) → ``start_tasks`` → ``complete_task``, three
transactions.  In *drain*
mode the processes stop once all of them together have completed the number
of tasks the caller expects; in *listen* mode (idle latency) they mark
themselves idle with ``worker_idle`` on a second, LISTENing connection and
wait for ``NOTIFY pgflow_tasks`` like a real worker, until told to stop.

Processes are started with the ``spawn`` method: a forked child would share
the parent's open connections.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.synchronize as mps
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import psycopg

CLAIM = "SELECT run_id, step_slug, task_index, attempt FROM pgflow.claim_tasks(%s, %s, %s)"
#: fenced, as workers report since 0.3.0: each completion names its attempt
COMPLETE = "SELECT pgflow.complete_tasks(%s::uuid[], %s::text[], %s::int[], %s::jsonb[], %s::int[])"
#: the unfenced report (no attempts), to measure what fencing costs
COMPLETE_UNFENCED = "SELECT pgflow.complete_tasks(%s::uuid[], %s::text[], %s::int[], %s::jsonb[])"
#: the per-task protocol: read one message, start it, complete it
READ_ONE = "SELECT msg_id FROM pgflow.read_with_poll(%s, %s, 1)"
START_ONE = (
    "SELECT run_id, step_slug, task_index, attempt FROM pgflow.start_tasks(%s, %s::bigint[], %s)"
)
COMPLETE_ONE = "SELECT pgflow.complete_task(%s, %s, %s, '{}'::jsonb, %s)"
#: flush this backend's table and WAL statistics before it goes idle
FLUSH_STATS = "SELECT pg_stat_force_next_flush()"

CTX = mp.get_context("spawn")


@dataclass
class CallStats:
    """Protocol calls one driver process made, and the time it spent in them."""

    reads: int = 0
    empty_reads: int = 0
    starts: int = 0
    completes: int = 0
    tasks: int = 0
    read_s: float = 0.0
    start_s: float = 0.0
    complete_s: float = 0.0
    cpu_s: float = 0.0  # CPU time of the driver process itself

    def add(self, other: CallStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def calls(self) -> int:
        return self.reads + self.starts + self.completes


@dataclass
class _Worker:
    conn: psycopg.Connection[tuple[Any, ...]]
    flow: str
    batch: int
    vt: int = 30
    fenced: bool = True
    per_task: bool = False
    worker_id: uuid.UUID = field(default_factory=uuid.uuid4)
    stats: CallStats = field(default_factory=CallStats)

    def step(self) -> int:
        """Claim one batch and complete it; the number of tasks completed."""
        if self.per_task:
            return self._one()
        t0 = time.perf_counter()
        rows = self.conn.execute(CLAIM, (self.flow, self.batch, self.worker_id)).fetchall()
        t1 = time.perf_counter()
        self.stats.reads += 1
        self.stats.read_s += t1 - t0
        if not rows:
            self.stats.empty_reads += 1
            return 0
        columns = ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        if self.fenced:
            self.conn.execute(COMPLETE, (*columns, ["{}"] * len(rows), [r[3] for r in rows]))
        else:
            self.conn.execute(COMPLETE_UNFENCED, (*columns, ["{}"] * len(rows)))
        self.stats.completes += 1
        self.stats.complete_s += time.perf_counter() - t1
        self.stats.tasks += len(rows)
        return len(rows)

    def _one(self) -> int:
        """read_with_poll one message, start_tasks it, complete_task it."""
        t0 = time.perf_counter()
        msgs = self.conn.execute(READ_ONE, (self.flow, self.vt)).fetchall()
        t1 = time.perf_counter()
        self.stats.reads += 1
        self.stats.read_s += t1 - t0
        if not msgs:
            self.stats.empty_reads += 1
            return 0
        rows = self.conn.execute(START_ONE, (self.flow, [msgs[0][0]], self.worker_id)).fetchall()
        t2 = time.perf_counter()
        self.stats.starts += 1
        self.stats.start_s += t2 - t1
        for row in rows:
            self.conn.execute(COMPLETE_ONE, row)
            self.stats.completes += 1
        self.stats.complete_s += time.perf_counter() - t2
        self.stats.tasks += len(rows)
        return len(rows)


def _drain(
    conninfo: str,
    flow: str,
    batch: int,
    expected: int,
    deadline: float,
    ready: mps.Barrier,
    go: mps.Event,
    done: Synchronized[int],
    results: mp.Queue[CallStats | str],
    fenced: bool = True,
    per_task: bool = False,
) -> None:
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            worker = _Worker(conn, flow, batch, fenced=fenced, per_task=per_task)
            ready.wait()
            go.wait()
            while done.value < expected:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{flow}: {done.value}/{expected} tasks done at deadline")
                n = worker.step()
                if n:
                    with done.get_lock():
                        done.value += n
                else:
                    time.sleep(0.0005)  # the queue is empty for now: others hold the tasks
            conn.execute(FLUSH_STATS)
            conn.execute("SELECT 1")
        worker.stats.cpu_s = time.process_time()
        results.put(worker.stats)
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")
        raise


def _listen(
    conninfo: str,
    flow: str,
    batch: int,
    ready: mps.Barrier,
    stop: mps.Event,
    results: mp.Queue[CallStats | str],
) -> None:
    try:
        with (
            psycopg.connect(conninfo, autocommit=True) as listen,
            psycopg.connect(conninfo, autocommit=True) as conn,
        ):
            listen.execute("LISTEN pgflow_tasks")
            worker = _Worker(conn, flow, batch)
            ready.wait()
            while not stop.is_set():
                if worker.step():
                    continue
                # mark idle, look once more, then wait for wake-ups; claim as
                # soon as one arrives and say "busy" only after that
                listen.execute("SELECT pgflow.worker_idle(%s)", ([flow],))
                while not stop.is_set() and not worker.step():
                    for _ in listen.notifies(timeout=0.2, stop_after=1):
                        pass
                listen.execute("SELECT pgflow.worker_idle(%s, false)", ([flow],))
        worker.stats.cpu_s = time.process_time()
        results.put(worker.stats)
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")
        raise


class DriverError(RuntimeError):
    """A driver process failed or timed out."""


class Drivers:
    """N driver processes; ``start`` returns once all are connected and waiting."""

    def __init__(
        self,
        conninfo: str,
        flow: str,
        processes: int = 4,
        batch: int = 10,
        fenced: bool = True,
        per_task: bool = False,
    ) -> None:
        self.fenced = fenced
        self.per_task = per_task
        self.conninfo = conninfo
        self.flow = flow
        self.n = processes
        self.batch = batch
        self.ready = CTX.Barrier(processes + 1)
        self.go = CTX.Event()
        self.stop = CTX.Event()
        self.done = CTX.Value("q", 0)
        self.results: mp.Queue[CallStats | str] = CTX.Queue()
        self.procs: list[mp.process.BaseProcess] = []

    def start_drain(self, expected_tasks: int, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        self._spawn(
            _drain,
            (
                self.conninfo,
                self.flow,
                self.batch,
                expected_tasks,
                deadline,
                self.ready,
                self.go,
                self.done,
                self.results,
                self.fenced,
                self.per_task,
            ),
        )

    def start_listen(self) -> None:
        self._spawn(
            _listen, (self.conninfo, self.flow, self.batch, self.ready, self.stop, self.results)
        )

    def _spawn(self, target: Any, args: Sequence[Any]) -> None:
        for _ in range(self.n):
            proc = CTX.Process(target=target, args=tuple(args), daemon=True)
            proc.start()
            self.procs.append(proc)
        self.ready.wait(timeout=60)

    def finish(self, timeout: float = 300.0) -> CallStats:
        """Wait for the processes to end (drain) or stop them (listen); summed stats."""
        self.stop.set()
        total = CallStats()
        errors: list[str] = []
        for _ in self.procs:
            item = self.results.get(timeout=timeout)
            if isinstance(item, str):
                errors.append(item)
            else:
                total.add(item)
        for proc in self.procs:
            proc.join(timeout=10)
        if errors:
            raise DriverError("; ".join(errors))
        return total

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
