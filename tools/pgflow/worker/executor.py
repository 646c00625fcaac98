"""Running handlers: threads for plain functions, one event loop for ``async def``,
one thread watching deadlines, and the :class:`Context` a handler may ask for.

The :class:`Executor` takes claimed tasks (:meth:`Executor.dispatch`), runs
each handler once, and hands every task's outcome -- the output as JSON text,
or an error message -- to ``on_outcome`` exactly once: a result that arrives
after the deadline's failure has been handed over is dropped.  It knows
nothing of the database: the run input a map task's context needs comes from
the ``run_input`` function it is given.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import inspect
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from pgflow.errors import Fail, RetryAfter
from pgflow.spec.loader import Handler
from pgflow.worker import _tracing
from pgflow.worker.context import Context
from pgflow.worker.convert import Binding, encode_json
from pgflow.worker.task import Outcome, Task

log = logging.getLogger("pgflow.worker")

OnDone = Callable[[Task, Any, BaseException | None, bool], None]


class HandlerThreads:
    """Threads that run synchronous handlers and hand each outcome to ``on_done``.

    ``concurrent.futures.ThreadPoolExecutor`` builds a Future (with its
    Condition and locks) per call and runs callbacks through it: for short
    handlers that bookkeeping was a quarter of the worker's CPU.  Here a task
    goes through one C-implemented queue; threads are started as needed, up
    to ``size``.
    """

    def __init__(self, size: int, on_done: OnDone) -> None:
        self._size = size
        self._on_done = on_done
        self._queue: queue.SimpleQueue[
            tuple[Task, tuple[Any, ...], Callable[..., Any] | None] | None
        ] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(
        self, task: Task, args: tuple[Any, ...], call: Callable[..., Any] | None = None
    ) -> None:
        """Run ``call(*args)`` (default: the task's handler) on a handler thread."""
        with self._lock:
            if self._idle == 0 and len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._run, name=f"pgflow-handler_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1
        self._queue.put((task, args, call))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            task, args, call = item
            try:
                result, error = (call or task.handler)(*args), None
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


class Deadlines:
    """One thread that reports the tasks whose handlers run past their timeout.

    A ``threading.Timer`` per task would start (and tear down) a thread per
    task, which costs more than a no-op handler; here a heap of deadlines is
    watched by a single thread.  Finished tasks are dropped lazily: when they
    reach the top of the heap, and all at once every 1024 tasks.
    """

    def __init__(self, on_expire: Callable[[Task], None]) -> None:
        self._on_expire = on_expire
        self._heap: list[tuple[float, int, Task]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, task: Task) -> None:
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


def encode_output(value: Any) -> str:
    """JSON text of a handler result (:func:`pgflow.worker.convert.encode_json`)."""
    return encode_json(value)


def missing_handler(flow: str, step: str) -> Handler:
    """A handler that fails its task: the worker has none for this step."""

    def missing(*_: Any) -> Any:
        raise LookupError(f'no handler for step "{step}" of flow "{flow}" in this worker')

    return missing


def plain_binding(handler: Handler) -> Binding:
    """A handler's :class:`Binding` without step information (no keyword form)."""
    try:
        return Binding(handler, is_map=True, deps=())
    except Exception as exc:  # the worker refuses such handlers at start already
        problem = f"{exc}"

        def refuse(*_: Any) -> Any:
            raise TypeError(problem)

        return Binding(refuse, is_map=True, deps=())


class Executor:
    """Runs the handlers of claimed tasks, at most ``concurrency`` at once.

    ``handlers`` maps ``(flow, step)`` to a handler; ``on_outcome`` receives
    each task's :class:`~pgflow.worker.task.Outcome` once; ``on_free`` is
    called whenever a handler slot frees (the claim loop may claim again);
    ``run_input`` fetches a run's input for a map task's context.
    ``bindings`` say how to call each handler (typed inputs, keyword
    arguments); a handler without one is called the plain way (input, and
    the Context if it takes a second positional parameter).
    """

    def __init__(
        self,
        concurrency: int,
        handlers: Mapping[tuple[str, str], Handler],
        *,
        on_outcome: Callable[[Outcome], None],
        on_free: Callable[[], None],
        run_input: Callable[[str], Any],
        bindings: Mapping[tuple[str, str], Binding] | None = None,
    ) -> None:
        self.concurrency = concurrency
        self._handlers = dict(handlers)
        self._bindings = dict(bindings or {})
        for key, h in self._handlers.items():
            if key not in self._bindings:
                self._bindings[key] = plain_binding(h)
        self._on_outcome = on_outcome
        self._on_free = on_free
        self._run_input = run_input
        self._inflight = 0
        self._running: dict[int, Task] = {}
        self._cv = threading.Condition()
        self._threads = HandlerThreads(concurrency, self._on_done)
        self._deadlines = Deadlines(self._on_timeout)
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ capacity

    @property
    def inflight(self) -> int:
        with self._cv:
            return self._inflight

    def free_slots(self) -> int:
        with self._cv:
            return self.concurrency - self._inflight

    def wait_for_slot(self, timeout: float) -> None:
        """Wait until a handler slot is free (or ``timeout`` seconds)."""
        with self._cv:
            if self._inflight >= self.concurrency:
                self._cv.wait(timeout=timeout)

    def running(self) -> list[Task]:
        """The tasks whose handlers run now (a snapshot)."""
        with self._cv:
            return list(self._running.values())

    def wait_idle(self, deadline: float) -> int:
        """Wait until no handler runs or the monotonic ``deadline``; how many still run."""
        with self._cv:
            while self._inflight and time.monotonic() < deadline:
                self._cv.wait(timeout=max(0.0, deadline - time.monotonic()))
            return self._inflight

    # ------------------------------------------------------------ running

    def dispatch(self, task: Task, input_text: str) -> None:
        """Parse a claimed task's input and start its handler."""
        # the input comes as text and is parsed here, per task: valid jsonb
        # nested deeper than Python's json module can load must fail this
        # task, not the whole worker
        try:
            task.input = json.loads(input_text)
        except RecursionError:
            task.finished = time.monotonic()
            self.report(
                task,
                error="the task input is nested too deeply for Python's json module"
                " (RecursionError); flatten it or raise sys.setrecursionlimit in the worker",
            )
            return
        with self._cv:
            self._inflight += 1
            self._running[id(task)] = task
        binding = self._bindings.get((task.flow_slug, task.step_slug))
        if binding is None or binding.handler is not task.handler:
            binding = plain_binding(task.handler)
        args: tuple[Any, ...] = (task.input, lambda: self.context(task))
        self._deadlines.watch(task)
        if inspect.iscoroutinefunction(task.handler):
            try:
                coroutine = binding.call(*args)
            except Exception as exc:  # the input does not fit the annotations
                self._on_done(task, None, exc, False)
                return
            if task.span is not None:
                coroutine = _tracing.awaited_in_span(task.span, coroutine)
            future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(
                coroutine, self._event_loop()
            )
            task.future = future
            future.add_done_callback(lambda f: self._on_future_done(task, f))
        elif task.span is not None:
            self._threads.submit(task, args, _tracing.in_span(task.span, binding.call))
        else:
            self._threads.submit(task, args, binding.call)

    def handler(self, flow: str, step: str) -> Handler:
        """The handler of a step (one that fails the task when the worker has none)."""
        found = self._handlers.get((flow, step))
        return found if found is not None else missing_handler(flow, step)

    def context(self, task: Task) -> Context:
        """The :class:`Context` of a task (a map task fetches its run input on first use)."""
        if isinstance(task.input, dict) and "run" in task.input:
            run_input = task.input["run"]
            return Context.lazy(
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
                cache.append(self._run_input(task.run_id))
            return cache[0]

        return Context.lazy(
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

    def _on_future_done(self, task: Task, future: concurrent.futures.Future[Any]) -> None:
        """An async handler's outcome (its coroutine ran on the event loop thread)."""
        if future.cancelled():
            self._on_done(task, None, None, True)
            return
        exc = future.exception()
        self._on_done(task, None if exc else future.result(), exc, False)

    def _on_done(self, task: Task, result: Any, exc: BaseException | None, cancelled: bool) -> None:
        task.done = True
        try:
            if cancelled:
                self._abandon(task)
                return
            if exc is not None:
                # one line per failure comes from the reporter (WARNING or ERROR);
                # the traceback only at DEBUG
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "handler raised %s error=%s: %s",
                        task.label,
                        type(exc).__name__,
                        exc,
                        exc_info=(type(exc), exc, exc.__traceback__),
                        extra=task.fields,
                    )
                self.report(
                    task,
                    error=f"{type(exc).__name__}: {exc}",
                    retry=not isinstance(exc, Fail),
                    retry_delay=exc.seconds if isinstance(exc, RetryAfter) else None,
                    exc=exc,
                )
                return
            try:
                output = encode_output(result)
            except ValueError as bad:
                self.report(task, error=str(bad))
                return
            self.report(task, output=output)
        finally:
            with self._cv:
                self._inflight -= 1
                self._running.pop(id(task), None)
                self._cv.notify_all()
            self._on_free()

    def _on_timeout(self, task: Task) -> None:
        log.info(
            "task timed out %s after %.0f s: reporting failure",
            task.label,
            task.timeout,
            extra=task.fields,
        )
        self.report(task, error=f"timeout: the handler ran longer than {task.timeout:.0f} s")
        if task.future is not None and inspect.iscoroutinefunction(task.handler):
            task.future.cancel()  # a coroutine can be stopped; a thread cannot

    def report(
        self,
        task: Task,
        output: str | None = None,
        error: str | None = None,
        *,
        retry: bool = True,
        retry_delay: float | None = None,
        exc: BaseException | None = None,
    ) -> None:
        """Hand a task's outcome over (once per task; later ones are dropped).

        ``exc`` is the handler's exception, for the attempt's span.
        """
        with task.lock:
            if task.reported:
                log.info("late result dropped %s (already reported)", task.label)
                return
            task.reported = True
            span, task.span = task.span, None
        task.finished = time.monotonic()
        if span is not None:
            _tracing.finish(
                span,
                _tracing.outcome_of(error),
                error,
                exc,
                will_retry=None if error is None else not task.final(retry),
            )
        self._on_outcome(Outcome(task, output, error, retry, retry_delay))

    def _abandon(self, task: Task) -> None:
        """End the span of an attempt that will report nothing (shut down before it ran)."""
        with task.lock:
            span, task.span = task.span, None
        if span is not None:
            _tracing.finish(span, "abandoned")

    def shutdown(self) -> None:
        """Stop the handler threads (after their current handler) and the event loop."""
        self._threads.shutdown()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
