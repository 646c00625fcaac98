"""The reference worker: runs the handlers of one or more flows.

It speaks only the SQL API (``claim_tasks`` → handler → ``complete_tasks`` /
``fail_task``), each call its own short transaction; no transaction is ever
open while user code runs.  Any worker in any language
can do the same: see docs/howto/workers.md.

Threads: the main thread claims tasks and waits for wake-ups; sync handlers
run in a thread pool, ``async def`` handlers on one event loop thread; a
reporter thread sends results on its own connection, in batches of whatever
finished while the previous batch was being sent (one commit for many tasks).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import inspect
import itertools
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import psycopg

from pgflow import installer
from pgflow.errors import PgflowError
from pgflow.loader import Handler, LoadedFlow
from pgflow.spec import FlowSpec

log = logging.getLogger(__name__)
#: a line per completed task (`pgflow worker -v`); failures go to ``log``
task_log = logging.getLogger(__name__ + ".tasks")

Conn = psycopg.Connection[tuple[Any, ...]]


class ShapeMismatchError(PgflowError):
    """The database holds a different definition of a flow than the spec."""


@dataclass(frozen=True)
class Context:
    """What a handler that takes a second parameter gets besides its input."""

    flow_slug: str
    run_id: str
    step_slug: str
    task_index: int
    attempt: int
    _flow_input: Callable[[], Any] = field(repr=False, compare=False)

    @property
    def flow_input(self) -> Any:
        """The run's input (fetched on first use for map tasks)."""
        return self._flow_input()


@dataclass(frozen=True)
class WorkerConfig:
    concurrency: int = 10
    batch_size: int = 10
    poll_interval: float = 1.0
    listen: bool = True
    grace: float = 30.0
    heartbeat_interval: float = 5.0
    #: most results sent in one complete_tasks call
    report_batch: int = 100
    #: first and longest pause between reconnection attempts
    reconnect_min: float = 0.2
    reconnect_max: float = 5.0


# ------------------------------------------------------------------ structure check


def expected_shape(spec: FlowSpec) -> list[dict[str, Any]]:
    """The structure part of ``pgflow.flow_shape`` that a spec implies."""
    return [
        {
            "step_slug": step.slug,
            "step_type": step.step_type,
            "deps": sorted(step.depends_on),
            "required_input_pattern": step.if_,
            "forbidden_input_pattern": step.if_not,
            "when_unmet": step.when_unmet,
            "when_exhausted": step.when_exhausted,
        }
        for step in spec.steps
    ]


def shape_differences(spec: FlowSpec, shape: Mapping[str, Any] | None) -> list[str]:
    """Human-readable differences between a spec and ``flow_shape`` (empty: same)."""
    if shape is None:
        return [f'flow "{spec.slug}" does not exist in the database']
    keys = (
        "step_type",
        "deps",
        "required_input_pattern",
        "forbidden_input_pattern",
        "when_unmet",
        "when_exhausted",
    )
    have = {s["step_slug"]: s for s in shape["steps"]}
    want = {s["step_slug"]: s for s in expected_shape(spec)}
    diffs = [f'step "{slug}" is missing in the database' for slug in want if slug not in have]
    diffs += [f'the database has step "{slug}" the spec lacks' for slug in have if slug not in want]
    for slug in want.keys() & have.keys():
        for key in keys:
            if want[slug][key] != have[slug][key]:
                diffs.append(
                    f'step "{slug}": {key} is {json.dumps(have[slug][key])} in the database,'
                    f" {json.dumps(want[slug][key])} in the spec"
                )
    return sorted(diffs)


# ------------------------------------------------------------------ tasks


@dataclass
class _Task:
    flow_slug: str
    run_id: str
    step_slug: str
    task_index: int
    input: Any
    attempt: int
    timeout: float
    handler: Handler
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reported: bool = False
    done: bool = False  # the handler returned or raised (set before its result is reported)
    finished: float = 0.0
    future: concurrent.futures.Future[Any] | None = None

    @property
    def label(self) -> str:
        return (
            f"run_id={self.run_id} step_slug={self.step_slug} task_index={self.task_index}"
            f" attempt={self.attempt}"
        )


class _HandlerThreads:
    """Threads that run synchronous handlers and hand each outcome to ``on_done``.

    ``concurrent.futures.ThreadPoolExecutor`` builds a Future (with its
    Condition and locks) per call and runs callbacks through it: for short
    handlers that bookkeeping was a quarter of the worker's CPU.  Here a task
    goes through one C-implemented queue; threads are started as needed, up
    to ``size``.
    """

    def __init__(
        self, size: int, on_done: Callable[[_Task, Any, BaseException | None, bool], None]
    ) -> None:
        self._size = size
        self._on_done = on_done
        self._queue: queue.SimpleQueue[tuple[_Task, tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, task: _Task, args: tuple[Any, ...]) -> None:
        with self._lock:
            if self._idle == 0 and len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._run, name=f"pgflow-handler_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1
        self._queue.put((task, args))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            task, args = item
            try:
                result, error = task.handler(*args), None
            except BaseException as exc:  # the task's failure, as a Future would hold it
                result, error = None, exc
            try:
                self._on_done(task, result, error, False)
            except Exception:  # keep the thread, as a Future's callback would
                log.exception("handling the outcome of %s failed", task.label)
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Stop the threads once their current handler returns; drop what has not started."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._on_done(item[0], None, None, True)
        for _ in self._threads:
            self._queue.put(None)


class _Deadlines:
    """One thread that reports the tasks whose handlers run past their timeout.

    A ``threading.Timer`` per task would start (and tear down) a thread per
    task, which costs more than a no-op handler; here a heap of deadlines is
    watched by a single thread.  Finished tasks are dropped lazily: when they
    reach the top of the heap, and all at once every 1024 tasks.
    """

    def __init__(self, on_expire: Callable[[_Task], None]) -> None:
        self._on_expire = on_expire
        self._heap: list[tuple[float, int, _Task]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, task: _Task) -> None:
        with self._cv:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pgflow-timeouts", daemon=True
                )
                self._thread.start()
            seq = next(self._seq)
            if seq % 1024 == 1023:  # every 1024 tasks, forget the finished ones
                self._heap = [e for e in self._heap if not e[2].done]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (time.monotonic() + task.timeout, seq, task))
            if self._heap[0][2] is task:
                self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while True:
                    while self._heap and self._heap[0][2].done:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cv.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        task = heapq.heappop(self._heap)[2]
                        break
                    self._cv.wait(delay)
            self._on_expire(task)


def _takes_context(handler: Handler) -> bool:
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def encode_output(value: Any) -> str:
    """JSON text of a handler result; ValueError with a clear message if it has none."""
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            "handler returned a value that is not JSON-serialisable"
            f" ({type(value).__name__}): {exc}"
        ) from exc


# ------------------------------------------------------------------ the worker


class Worker:
    """Claims and runs tasks of ``flows`` until :meth:`stop` (or SIGTERM/SIGINT)."""

    def __init__(
        self,
        conninfo: str,
        flows: Sequence[LoadedFlow],
        config: WorkerConfig | None = None,
        worker_id: uuid.UUID | None = None,
    ) -> None:
        if not flows:
            raise PgflowError("a worker needs at least one flow")
        self.conninfo = conninfo
        self.config = config or WorkerConfig()
        self.worker_id = worker_id or uuid.uuid4()
        self.flows = {f.spec.slug: f for f in flows}
        self.handlers: dict[str, dict[str, Handler]] = {
            slug: f.handlers() for slug, f in self.flows.items()
        }
        self.timeouts: dict[tuple[str, str], float] = {}
        self._takes_context = {
            (flow, step): _takes_context(h)
            for flow, steps in self.handlers.items()
            for step, h in steps.items()
        }
        self._stopping = threading.Event()
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._idle_cv = threading.Condition(self._inflight_lock)
        self._wake = threading.Event()
        self._woken: set[str] = set()
        self._claim_conn: Conn | None = None
        self._listen_conn: Conn | None = None
        self._report_conn: Conn | None = None
        self._outbox: list[tuple[_Task, str | None, str | None]] = []
        self._outbox_cv = threading.Condition()
        self._flushing = False
        self._reporter_stop = False
        self._reporter = threading.Thread(
            target=self._reporter_loop, name="pgflow-reporter", daemon=True
        )
        self._listening = False
        self._pool = _HandlerThreads(self.config.concurrency, self._on_done)
        self._deadlines = _Deadlines(self._on_timeout)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals = 0
        self.completed = 0
        self.failed = 0

    # -------------------------------------------------------------- lifecycle

    def run(self) -> int:
        """Run until stopped; returns the process exit status (0 after a clean stop)."""
        restore = self._install_signal_handlers()
        try:
            self._connect(first=True)
            self._check_version()
            self._check_shapes()
            self._register()
            self._reporter.start()
            log.info(
                "worker %s started: flows=%s concurrency=%d batch_size=%d listen=%s",
                self.worker_id,
                ",".join(sorted(self.flows)),
                self.config.concurrency,
                self.config.batch_size,
                self._listening,
            )
            self._loop_forever()
            self._drain()
            with contextlib.suppress(psycopg.Error):
                self._call(self._claim_conn, "SELECT pgflow.stop_worker(%s)", (self.worker_id,))
            log.info(
                "worker %s stopped: %d tasks completed, %d failed",
                self.worker_id,
                self.completed,
                self.failed,
            )
            return 0
        finally:
            restore()
            self._shutdown()

    def stop(self) -> None:
        """Stop claiming; in-flight handlers get ``config.grace`` seconds to finish."""
        self._stopping.set()
        self._wake.set()

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals > 1:
                log.warning("second signal %d: exiting at once", signum)
                os._exit(128 + signum)
            log.info("signal %d: finishing in-flight tasks (again to exit at once)", signum)
            self.stop()

        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore

    def _shutdown(self) -> None:
        self._pool.shutdown()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        for conn in (self._claim_conn, self._listen_conn, self._report_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.config.grace
        with self._idle_cv:
            while self._inflight and time.monotonic() < deadline:
                self._idle_cv.wait(timeout=max(0.0, deadline - time.monotonic()))
            left = self._inflight
        if left:
            log.warning(
                "%d handlers still running after the %.0f s grace period: their leases will"
                " expire and other workers will run them again",
                left,
                self.config.grace,
            )
        with self._outbox_cv:
            while (self._outbox or self._flushing) and time.monotonic() < deadline:
                self._outbox_cv.wait(timeout=max(0.0, deadline - time.monotonic()))
            self._reporter_stop = True
            self._outbox_cv.notify_all()
        self._reporter.join(timeout=max(0.0, deadline - time.monotonic()) + 1)

    # -------------------------------------------------------------- connections

    def _open(self) -> Conn:
        return psycopg.connect(self.conninfo, autocommit=True, prepare_threshold=None)

    def _connect(self, first: bool = False) -> None:
        delay = self.config.reconnect_min
        while True:
            try:
                for conn in (self._claim_conn, self._listen_conn):
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                self._claim_conn = self._open()
                self._listening = False
                self._listen_conn = None
                if self.config.listen:
                    self._start_listening()
                return
            except psycopg.OperationalError as exc:
                if first and not self._is_transient(exc):
                    raise
                if self._stopping.is_set():
                    raise
                log.warning("cannot connect (%s); retrying in %.1f s", _one_line(exc), delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, self.config.reconnect_max)

    @staticmethod
    def _is_transient(exc: psycopg.OperationalError) -> bool:
        text = str(exc)
        return any(
            hint in text
            for hint in (
                "starting up",
                "shutting down",
                "not yet accepting connections",  # 57P03 during crash recovery
                "in recovery",
                "Connection refused",
                "No such file",
            )
        )

    def _start_listening(self) -> None:
        conn = self._open()
        conn.execute("LISTEN pgflow_tasks")
        # PgBouncer in transaction mode accepts LISTEN but never delivers:
        # check that a notification sent from another session arrives.
        probe = f"pgflow_probe_{uuid.uuid4().hex}"
        conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(probe)))
        assert self._claim_conn is not None
        self._claim_conn.execute("SELECT pg_notify(%s, 'probe')", (probe,))
        arrived = any(n.channel == probe for n in conn.notifies(timeout=2.0, stop_after=1))
        conn.execute(psycopg.sql.SQL("UNLISTEN {}").format(psycopg.sql.Identifier(probe)))
        if arrived:
            self._listen_conn = conn
            self._listening = True
        else:
            conn.close()
            log.warning(
                "LISTEN does not work through this connection (PgBouncer in transaction"
                " mode?): polling every %.1f s instead; pass --no-listen to skip this check",
                self.config.poll_interval,
            )

    def _on_notify(self, note: psycopg.Notify) -> None:
        if note.channel == "pgflow_tasks" and note.payload in self.flows:
            self._woken.add(note.payload)
            self._wake.set()

    def _call(self, conn: Conn | None, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if conn is None:
            raise psycopg.OperationalError("not connected")
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    # -------------------------------------------------------------- start-up checks

    def _check_version(self) -> None:
        """The database must run the pgflow version of this worker."""
        assert self._claim_conn is not None
        installer.check_version(self._claim_conn)

    def _check_shapes(self) -> None:
        problems: list[str] = []
        for slug, loaded in self.flows.items():
            rows = self._call(self._claim_conn, "SELECT pgflow.flow_shape(%s)", (slug,))
            shape = rows[0][0]
            diffs = shape_differences(loaded.spec, shape)
            if diffs:
                problems.append(f"flow {slug!r} ({loaded.spec.origin.file}): " + "; ".join(diffs))
                continue
            for step in shape["steps"]:
                self.timeouts[(slug, step["step_slug"])] = float(step["timeout"])
        if problems:
            raise ShapeMismatchError(
                "the database does not have the flows this worker runs: "
                + " | ".join(problems)
                + ". Build the migration with `pgflow-build SPEC` and apply it"
                " (a changed structure needs a new flow slug)."
            )

    def _register(self) -> None:
        self._call(
            self._claim_conn,
            "SELECT pgflow.register_worker(%s, %s, %s, %s)",
            (self.worker_id, sorted(self.flows), socket.gethostname(), os.getpid()),
        )
        self._last_heartbeat = time.monotonic()

    def _heartbeat(self) -> None:
        if time.monotonic() - self._last_heartbeat < self.config.heartbeat_interval:
            return
        alive = self._call(
            self._claim_conn, "SELECT pgflow.worker_heartbeat(%s)", (self.worker_id,)
        )
        if not alive or not alive[0][0]:
            self._register()
        self._last_heartbeat = time.monotonic()

    # -------------------------------------------------------------- main loop

    def _loop_forever(self) -> None:
        order = sorted(self.flows)
        while not self._stopping.is_set():
            try:
                self._heartbeat()
                claimed = 0
                woken, self._woken = self._woken, set()
                self._wake.clear()
                for flow in sorted(order, key=lambda f: f not in woken):
                    if self._stopping.is_set():
                        break
                    claimed += self._claim(flow)
                if claimed:
                    continue
                if self._free_slots() == 0:
                    self._wait_for_slot()
                    continue
                if self._wait_for_reports():
                    continue  # the results just reported may have queued next steps
                self._wait_for_work(order)
            except psycopg.OperationalError as exc:
                if self._stopping.is_set():
                    return
                log.warning("database connection lost (%s); reconnecting", _one_line(exc))
                self._connect()
                self._register()

    def _free_slots(self) -> int:
        with self._inflight_lock:
            return self.config.concurrency - self._inflight

    def _wait_for_slot(self) -> None:
        with self._idle_cv:
            if self._inflight >= self.config.concurrency and not self._stopping.is_set():
                self._idle_cv.wait(timeout=self.config.poll_interval)

    def _wait_for_reports(self) -> bool:
        """Wait until the results handed to the reporter are sent; False if none were.

        Before going idle: a completion this worker is reporting may queue
        the next step of its run, and claiming right after it is quicker than
        marking idle and waiting for the wake-up that completion sends.
        """
        with self._outbox_cv:
            if not (self._outbox or self._flushing):
                return False
            while (self._outbox or self._flushing) and not self._stopping.is_set():
                self._outbox_cv.wait(timeout=self.config.poll_interval)
            return True

    def _wait_for_work(self, flows: Sequence[str]) -> None:
        if not self._listening or self._listen_conn is None:
            self._wake.wait(self.config.poll_interval)
            return
        conn = self._listen_conn
        conn.execute("SELECT pgflow.worker_idle(%s)", (list(flows),))
        try:
            # look once more now that producers will wake us
            if any(self._claim(flow) for flow in flows):
                return
            deadline = time.monotonic() + self.config.poll_interval
            while not self._wake.is_set() and not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for note in conn.notifies(timeout=min(left, 0.5), stop_after=1):
                    self._on_notify(note)
            # claim before saying "busy": the wake-up's task is the latency
            woken, self._woken = self._woken, set()
            for flow in sorted(woken):
                if not self._stopping.is_set():
                    self._claim(flow)
        finally:
            conn.execute("SELECT pgflow.worker_idle(%s, false)", (list(flows),))

    def _claim(self, flow: str) -> int:
        qty = min(self.config.batch_size, self._free_slots())
        if qty <= 0:
            return 0
        rows = self._call(
            self._claim_conn,
            "SELECT run_id, step_slug, task_index, input::text, attempt"
            " FROM pgflow.claim_tasks(%s, %s, %s)",
            (flow, qty, self.worker_id),
        )
        if not rows:
            log.debug("poll flow=%s: nothing claimable", flow)
            return 0
        for row in rows:
            self._dispatch(flow, row)
        return len(rows)

    # -------------------------------------------------------------- running handlers

    def _dispatch(self, flow: str, row: tuple[Any, ...]) -> None:
        run_id, step, index, input_text, attempt = row
        handler = self.handlers[flow].get(step)
        task = _Task(
            flow_slug=flow,
            run_id=str(run_id),
            step_slug=step,
            task_index=index,
            input=None,
            attempt=attempt,
            timeout=self.timeouts.get((flow, step), 60.0),
            handler=handler if handler is not None else _missing_handler(flow, step),
        )
        # the input comes as text and is parsed here, per task: valid jsonb
        # nested deeper than Python's json module can load must fail this
        # task, not the whole worker
        try:
            task_input = task.input = json.loads(input_text)
        except RecursionError:
            task.finished = time.monotonic()
            self._report(
                task,
                error="the task input is nested too deeply for Python's json module"
                " (RecursionError); flatten it or raise sys.setrecursionlimit in the worker",
            )
            return
        with self._inflight_lock:
            self._inflight += 1
        args: tuple[Any, ...] = (task_input,)
        if self._takes_context.get((flow, step)):
            args = (task_input, self._context(task))
        self._deadlines.watch(task)
        if inspect.iscoroutinefunction(task.handler):
            future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(
                task.handler(*args), self._event_loop()
            )
            task.future = future
            future.add_done_callback(lambda f: self._on_future_done(task, f))
        else:
            self._pool.submit(task, args)

    def _context(self, task: _Task) -> Context:
        if isinstance(task.input, dict) and "run" in task.input:
            run_input = task.input["run"]
            return Context(
                task.flow_slug,
                task.run_id,
                task.step_slug,
                task.task_index,
                task.attempt,
                lambda: run_input,
            )
        cache: list[Any] = []

        def fetch() -> Any:
            if not cache:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    row = conn.execute("SELECT pgflow.run_input(%s)", (task.run_id,)).fetchone()
                cache.append(row[0] if row else None)
            return cache[0]

        return Context(
            task.flow_slug, task.run_id, task.step_slug, task.task_index, task.attempt, fetch
        )

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="pgflow-async-handlers", daemon=True
            )
            thread.start()
            self._loop = loop
        return self._loop

    def _on_future_done(self, task: _Task, future: concurrent.futures.Future[Any]) -> None:
        """An async handler's outcome (its coroutine ran on the event loop thread)."""
        if future.cancelled():
            self._on_done(task, None, None, True)
            return
        exc = future.exception()
        self._on_done(task, None if exc else future.result(), exc, False)

    def _on_done(
        self, task: _Task, result: Any, exc: BaseException | None, cancelled: bool
    ) -> None:
        task.done = True
        try:
            if cancelled:
                return
            if exc is not None:
                log.info(
                    "task failed %s error=%s: %s",
                    task.label,
                    type(exc).__name__,
                    exc,
                    exc_info=(type(exc), exc, exc.__traceback__),
                )
                self._report(task, error=f"{type(exc).__name__}: {exc}")
                return
            try:
                output = encode_output(result)
            except ValueError as bad:
                self._report(task, error=str(bad))
                return
            self._report(task, output=output)
        finally:
            with self._idle_cv:
                self._inflight -= 1
                self._idle_cv.notify_all()
            self._wake.set()

    def _on_timeout(self, task: _Task) -> None:
        log.warning("task timed out %s after %.0f s: reporting failure", task.label, task.timeout)
        self._report(task, error=f"timeout: the handler ran longer than {task.timeout:.0f} s")
        if task.future is not None and inspect.iscoroutinefunction(task.handler):
            task.future.cancel()  # a coroutine can be stopped; a thread cannot

    def _report(self, task: _Task, output: str | None = None, error: str | None = None) -> None:
        """Hand a result to the reporter thread (once per task; later ones are dropped)."""
        with task.lock:
            if task.reported:
                log.info("late result dropped %s (already reported)", task.label)
                return
            task.reported = True
        task.finished = time.monotonic()
        with self._outbox_cv:
            self._outbox.append((task, output, error))
            self._outbox_cv.notify_all()

    def _reporter_loop(self) -> None:
        """Send results in batches: whatever piled up while the last batch was sent."""
        while True:
            with self._outbox_cv:
                while not self._outbox and not self._reporter_stop:
                    self._outbox_cv.wait()
                if not self._outbox:
                    return
                batch = self._outbox[: self.config.report_batch]
                del self._outbox[: self.config.report_batch]
                self._flushing = True
            try:
                self._send(batch)
            except Exception:
                log.exception("could not report %d results", len(batch))
            finally:
                with self._outbox_cv:
                    self._flushing = False
                    self._outbox_cv.notify_all()

    def _send(self, batch: list[tuple[_Task, str | None, str | None]]) -> None:
        completed = [(t, out) for t, out, err in batch if err is None]
        failed = [(t, err) for t, _, err in batch if err is not None]
        if completed:
            try:
                counted = self._with_retries(
                    [t for t, _ in completed],
                    "SELECT pgflow.complete_tasks(%s::uuid[], %s::text[], %s::int[],"
                    " %s::text[]::jsonb[])",
                    (
                        [t.run_id for t, _ in completed],
                        [t.step_slug for t, _ in completed],
                        [t.task_index for t, _ in completed],
                        [out for _, out in completed],
                    ),
                )
            except psycopg.DataError:
                # an output PostgreSQL refuses spoils the batch: one by one
                for task, out in completed:
                    try:
                        self._with_retries(
                            [task],
                            "SELECT pgflow.complete_tasks(ARRAY[%s]::uuid[], ARRAY[%s],"
                            " ARRAY[%s]::int[], ARRAY[%s::jsonb])",
                            (task.run_id, task.step_slug, task.task_index, out),
                        )
                        self._log_done(task, None)
                    except psycopg.DataError as exc:
                        failed.append(
                            (task, f"the database refused the handler's output: {_one_line(exc)}")
                        )
                completed = []
                counted = None
            for task, _ in completed:
                self._log_done(task, None)
            if counted is not None and counted < len(completed):
                log.info(
                    "%d of %d completions changed nothing (cancelled or already done)",
                    len(completed) - counted,
                    len(completed),
                )
        for task, err in failed:
            self._with_retries(
                [task],
                "SELECT pgflow.fail_task(%s, %s, %s, %s)",
                (task.run_id, task.step_slug, task.task_index, err),
            )
            self._log_done(task, err)

    def _log_done(self, task: _Task, error: str | None) -> None:
        duration_ms = (task.finished - task.started) * 1000
        if error is None:
            self.completed += 1
            if task_log.isEnabledFor(logging.INFO):
                task_log.info("task completed %s duration_ms=%.1f", task.label, duration_ms)
        else:
            self.failed += 1
            log.info(
                "task failure recorded %s duration_ms=%.1f error=%s", task.label, duration_ms, error
            )

    def _with_retries(self, tasks: Sequence[_Task], query: str, params: Sequence[Any]) -> Any:
        """Run one report statement; on a lost connection or a deadlock, retry while the
        tasks' leases last (timeout + 2 s after their start: past it, another
        worker may already run them again)."""
        deadline = min(t.started + t.timeout + 2 for t in tasks)
        delay = self.config.reconnect_min
        while True:
            try:
                if self._report_conn is None or self._report_conn.closed:
                    self._report_conn = self._open()
                rows = self._call(self._report_conn, query, params)
                return rows[0][0] if rows else None
            except (psycopg.OperationalError, psycopg.errors.DeadlockDetected) as exc:
                if time.monotonic() > deadline or (self._stopping.is_set() and self._signals > 1):
                    log.warning(
                        "could not report %d tasks (%s): their leases will expire",
                        len(tasks),
                        _one_line(exc),
                    )
                    raise
                time.sleep(delay)
                delay = min(delay * 2, self.config.reconnect_max)
                if isinstance(exc, psycopg.OperationalError) and self._report_conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        self._report_conn.close()


def _missing_handler(flow: str, step: str) -> Handler:
    def missing(*_: Any) -> Any:
        raise LookupError(f'no handler for step "{step}" of flow "{flow}" in this worker')

    return missing


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
