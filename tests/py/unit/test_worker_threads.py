"""The worker's handler threads and deadline watcher, without a database."""

from __future__ import annotations

import threading
import time
from typing import Any

from pgflow.worker.executor import Deadlines as _Deadlines
from pgflow.worker.executor import HandlerThreads as _HandlerThreads
from pgflow.worker.task import Task as _Task


def _task(handler: Any, timeout: float = 60.0, index: int = 0) -> _Task:
    return _Task(
        flow_slug="f",
        run_id="r",
        step_slug="s",
        task_index=index,
        input=None,
        attempt=1,
        timeout=timeout,
        handler=handler,
    )


class _Outcomes:
    def __init__(self) -> None:
        self.items: list[tuple[int, Any, BaseException | None, bool]] = []
        self.cv = threading.Condition()

    def __call__(
        self, task: _Task, result: Any, exc: BaseException | None, cancelled: bool
    ) -> None:
        with self.cv:
            self.items.append((task.task_index, result, exc, cancelled))
            self.cv.notify_all()

    def wait(self, n: int) -> None:
        with self.cv:
            assert self.cv.wait_for(lambda: len(self.items) >= n, timeout=10)


def test_results_and_exceptions_reach_the_callback() -> None:
    outcomes = _Outcomes()
    pool = _HandlerThreads(3, outcomes)

    class Stop(BaseException):
        pass

    def fail(x: int) -> int:
        raise (ValueError("bad") if x == 1 else Stop())

    pool.submit(_task(lambda x: x * 2, index=0), (21,))
    pool.submit(_task(fail, index=1), (1,))
    pool.submit(_task(fail, index=2), (2,))
    outcomes.wait(3)
    pool.shutdown()
    by_index = {i: (r, e, c) for i, r, e, c in outcomes.items}
    assert by_index[0] == (42, None, False)
    assert isinstance(by_index[1][1], ValueError) and by_index[1][2] is False
    assert isinstance(by_index[2][1], Stop), "a BaseException is the task's failure too"


def test_no_more_threads_than_the_size_and_they_are_reused() -> None:
    outcomes = _Outcomes()
    pool = _HandlerThreads(2, outcomes)
    running = threading.Semaphore(0)
    release = threading.Event()
    seen: set[str] = set()

    def slow(_: Any) -> None:
        seen.add(threading.current_thread().name)
        running.release()
        release.wait(10)

    for i in range(5):
        pool.submit(_task(slow, index=i), (None,))
    assert running.acquire(timeout=10) and running.acquire(timeout=10)
    # two handlers run; the other three wait for a thread
    assert not running.acquire(timeout=0.2)
    release.set()
    outcomes.wait(5)
    pool.shutdown()
    assert len(seen) == 2


def test_shutdown_drops_what_has_not_started() -> None:
    outcomes = _Outcomes()
    pool = _HandlerThreads(1, outcomes)
    started = threading.Event()
    release = threading.Event()

    def block(_: Any) -> str:
        started.set()
        release.wait(10)
        return "done"

    pool.submit(_task(block, index=0), (None,))
    assert started.wait(10)
    pool.submit(_task(block, index=1), (None,))
    pool.shutdown()
    release.set()
    outcomes.wait(2)
    assert sorted(outcomes.items, key=lambda o: o[0]) == [
        (0, "done", None, False),
        (1, None, None, True),
    ]


def test_deadlines_report_only_tasks_still_running() -> None:
    expired: list[int] = []
    cv = threading.Condition()

    def on_expire(task: _Task) -> None:
        with cv:
            expired.append(task.task_index)
            cv.notify_all()

    deadlines = _Deadlines(on_expire)
    finished = _task(None, timeout=0.05, index=1)
    late = _task(None, timeout=0.1, index=2)
    later = _task(None, timeout=30, index=3)
    for task in (later, late, finished):
        deadlines.watch(task)
    finished.done = True
    with cv:
        assert cv.wait_for(lambda: expired, timeout=10)
    time.sleep(0.2)
    assert expired == [2]
