"""The worker's claim loop, reporter and reconnects against fake queries.

No database and no sleeps: time is a fake clock that only moves when the code
under test sleeps, and every database call goes to an object that records it.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from pgflow.db.queries import ClaimedTask, Notification
from pgflow.errors import ConnectionFailed, Fail, InvalidArgument, RetryAfter, RunNotFound
from pgflow.spec import Flow
from pgflow.spec.loader import flow_of
from pgflow.worker import Worker, WorkerConfig
from pgflow.worker.backoff import Backoff, is_transient
from pgflow.worker.executor import Executor
from pgflow.worker.leases import Renewer
from pgflow.worker.loop import ClaimLoop
from pgflow.worker.notify import Listener
from pgflow.worker.reporter import Reporter
from pgflow.worker.task import LEASE_MARGIN, Outcome, Task


class FakeClock:
    """Monotonic time that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.now += seconds
        return False


def task(index: int = 0, *, started: float = 1000.0, timeout: float = 10.0) -> Task:
    return Task(
        flow_slug="f",
        run_id=f"00000000-0000-0000-0000-{index:012d}",
        step_slug="s",
        task_index=index,
        input=None,
        attempt=1,
        timeout=timeout,
        handler=lambda _: None,
        started=started,
    )


# --------------------------------------------------------------------------- claim loop


class FakeClaimQueries:
    def __init__(self, log: list[str], batches: list[list[ClaimedTask]]) -> None:
        self.log = log
        self.batches = batches
        self.alive = True

    def claim_tasks(self, flow_slug: str, qty: int, worker_id: uuid.UUID) -> list[ClaimedTask]:
        self.log.append(f"claim {flow_slug} {qty}")
        return self.batches.pop(0) if self.batches else []

    def worker_heartbeat(self, worker_id: uuid.UUID) -> bool:
        self.log.append("heartbeat")
        return self.alive

    def register_worker(
        self, worker_id: uuid.UUID, flows: Sequence[str], hostname: str, pid: int
    ) -> None:
        self.log.append(f"register {','.join(flows)}")


class FakeListenQueries:
    def __init__(self, log: list[str], notes: list[list[Notification]], clock: FakeClock) -> None:
        self.log = log
        self.notes = notes
        self.clock = clock

    def worker_idle(self, flows: Sequence[str], idle: bool) -> None:
        self.log.append(f"idle {idle}")

    def notifies(self, timeout: float, stop_after: int | None = None) -> list[Notification]:
        self.log.append("wait")
        if self.notes:
            return self.notes.pop(0)
        self.clock.now += timeout  # nothing arrived within the timeout
        return []

    def close(self) -> None:
        self.log.append("close listener")


class FakeExecutor:
    def __init__(self, log: list[str], concurrency: int = 4) -> None:
        self.log = log
        self.concurrency = concurrency
        self.running: list[Task] = []

    def free_slots(self) -> int:
        return self.concurrency - len(self.running)

    def wait_for_slot(self, timeout: float) -> None:
        self.log.append("wait for slot")

    def handler(self, flow: str, step: str) -> Callable[..., Any]:
        return lambda _: None

    def dispatch(self, task: Task, input_text: str) -> None:
        self.log.append(f"run {task.step_slug}[{task.task_index}] {input_text}")
        self.running.append(task)


class IdleReporter:
    def wait_sent(self, timeout: float, stop: threading.Event | None = None) -> bool:
        return False


def make_loop(
    log: list[str],
    batches: list[list[ClaimedTask]],
    notes: list[list[Notification]],
    clock: FakeClock,
) -> tuple[ClaimLoop, FakeClaimQueries, FakeExecutor]:
    executor = FakeExecutor(log)
    loop = ClaimLoop(
        worker_id=uuid.UUID(int=1),
        flows=["f", "g"],
        timeouts={("f", "s"): 30.0},
        executor=executor,  # type: ignore[arg-type]
        reporter=IdleReporter(),  # type: ignore[arg-type]
        batch_size=10,
        poll_interval=5.0,
        heartbeat_interval=60.0,
        stopping=threading.Event(),
        clock=clock,
    )
    claim = FakeClaimQueries(log, batches)
    listener = Listener(lambda: FakeListenQueries(log, notes, clock), ["f", "g"])
    listener.queries = FakeListenQueries(log, notes, clock)
    loop.attach(claim, listener)
    return loop, claim, executor


def claimed(index: int, step: str = "s") -> ClaimedTask:
    return ClaimedTask(uuid.UUID(int=index), step, index, f'{{"n": {index}}}', 1)


def test_an_idle_loop_waits_for_a_wake_up_and_claims_the_woken_flow_first() -> None:
    log: list[str] = []
    clock = FakeClock()
    # nothing on the first pass, nothing when checking again after "idle", then the
    # wake-up for g, whose claim returns a task
    batches: list[list[ClaimedTask]] = [[], [], [], [], [claimed(7)]]
    notes = [[Notification("pgflow_tasks", "other_flow")], [Notification("pgflow_tasks", "g")]]
    loop, _, executor = make_loop(log, batches, notes, clock)

    assert loop.step() == "idle"

    assert log == [
        "claim f 4",
        "claim g 4",
        "idle True",
        "claim f 4",  # work that committed before the idle mark sent no wake-up
        "claim g 4",
        "wait",  # a wake-up for a flow this worker does not serve is ignored
        "wait",
        "claim g 4",  # claimed before saying "busy" again
        'run s[7] {"n": 7}',
        "idle False",
    ]
    assert [t.run_id for t in executor.running] == [str(uuid.UUID(int=7))]
    assert executor.running[0].timeout == 60.0  # step "s" of g: the default
    assert loop.wake.is_set()


def test_without_a_wake_up_an_idle_loop_polls_after_its_interval() -> None:
    log: list[str] = []
    clock = FakeClock()
    loop, _, executor = make_loop(log, [], [], clock)
    began = clock.now
    assert loop.step() == "idle"
    assert clock.now - began == pytest.approx(5.0), "it waited poll_interval"
    assert log[-1] == "idle False"
    assert log.count("wait") == 10, "in steps of at most 0.5 s (to notice a stop)"
    assert executor.running == []


def test_claimed_tasks_carry_their_attempt_timeout_and_claim_time() -> None:
    log: list[str] = []
    clock = FakeClock()
    loop, _, executor = make_loop(log, [[claimed(1), claimed(2)]], [], clock)
    assert loop.step() == "claimed"
    first = executor.running[0]
    assert (first.flow_slug, first.step_slug, first.task_index, first.attempt) == ("f", "s", 1, 1)
    assert first.timeout == 30.0
    assert first.started == clock.now
    assert 'run s[2] {"n": 2}' in log


def test_a_full_loop_waits_for_a_slot_without_claiming() -> None:
    log: list[str] = []
    loop, _, executor = make_loop(log, [], [], FakeClock())
    executor.running = [task(i) for i in range(4)]
    assert loop.step() == "slot"
    assert log == ["wait for slot"]


def test_the_heartbeat_is_sent_when_due_and_a_forgotten_worker_registers_again() -> None:
    log: list[str] = []
    clock = FakeClock()
    loop, claim, _ = make_loop(log, [], [], clock)
    loop.register()
    log.clear()
    loop.heartbeat()
    assert log == [], "not due yet"
    clock.now += 61
    claim.alive = False
    loop.heartbeat()
    assert log == ["heartbeat", "register f,g"]


# --------------------------------------------------------------------------- reporter


class FakeReportQueries:
    def __init__(self, calls: list[tuple[Any, ...]], script: list[BaseException | None]) -> None:
        self.calls = calls
        self.script = script  # what each call does: raise it, or succeed (None)
        self.closed = False
        self.fails: list[tuple[list[int | None], list[bool], list[float | None]]] = []

    def _next(self) -> None:
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome

    def complete_tasks(
        self,
        run_ids: Sequence[str],
        step_slugs: Sequence[str],
        task_indexes: Sequence[int],
        outputs: Sequence[str],
        attempts: Sequence[int | None] | None = None,
    ) -> int:
        assert attempts is not None and len(attempts) == len(run_ids), "reports name attempts"
        self.calls.append(("complete", list(task_indexes), list(outputs)))
        if any(o == '"refused"' for o in outputs):
            raise InvalidArgument("unsupported Unicode escape sequence", sqlstate="22P05")
        self._next()
        return len(run_ids)

    def fail_tasks(
        self,
        run_ids: Sequence[str],
        step_slugs: Sequence[str],
        task_indexes: Sequence[int],
        errors: Sequence[str],
        attempts: Sequence[int | None],
        retries: Sequence[bool],
        retry_delays: Sequence[float | None],
    ) -> int:
        for index, error in zip(task_indexes, errors, strict=True):
            self.calls.append(("fail", index, error))
        self.fails.append((list(attempts), list(retries), list(retry_delays)))
        self._next()
        return len(run_ids)

    def close(self) -> None:
        self.closed = True


def make_reporter(
    script: list[BaseException | None], clock: FakeClock
) -> tuple[Reporter, list[tuple[Any, ...]], list[int]]:
    calls: list[tuple[Any, ...]] = []
    connects: list[int] = []

    def connect() -> FakeReportQueries:
        connects.append(1)
        return FakeReportQueries(calls, script)

    reporter = Reporter(
        connect,
        report_batch=100,
        backoff=lambda: Backoff(0.2, 5.0, uniform=random.Random(7).uniform),
        clock=clock,
        sleep=clock.sleep,
    )
    return reporter, calls, connects


def test_what_piles_up_is_reported_in_one_batch_and_failures_one_by_one() -> None:
    clock = FakeClock()
    reporter, calls, connects = make_reporter([], clock)
    reporter.put(Outcome(task(1), output='{"a": 1}'))
    reporter.put(Outcome(task(2), error="ValueError: no"))
    reporter.put(Outcome(task(3), output="[]"))
    assert reporter.pending
    reporter.stop(deadline=0)  # nothing sends yet: the reporter thread is not running
    reporter.run()  # the thread's body, here: sends what is queued, then returns
    assert calls == [("complete", [1, 3], ['{"a": 1}', "[]"]), ("fail", 2, "ValueError: no")]
    assert (reporter.completed, reporter.failed) == (2, 1)
    assert connects == [1], "one connection for all of it"
    assert not reporter.pending
    assert clock.sleeps == []


def test_an_output_the_database_refuses_fails_only_its_own_task() -> None:
    reporter, calls, _ = make_reporter([], FakeClock())
    reporter.send(
        [
            Outcome(task(1), output="1"),
            Outcome(task(2), output='"refused"'),
            Outcome(task(3), output="3"),
        ]
    )
    assert calls == [
        ("complete", [1, 2, 3], ["1", '"refused"', "3"]),
        ("complete", [1], ["1"]),
        ("complete", [2], ['"refused"']),
        ("complete", [3], ["3"]),
        (
            "fail",
            2,
            "the database refused the handler's output: unsupported Unicode escape sequence",
        ),
    ]
    assert (reporter.completed, reporter.failed) == (2, 1)


def test_a_lost_connection_is_retried_with_a_new_one_while_the_lease_lasts() -> None:
    clock = FakeClock()
    lost = ConnectionFailed("server closed the connection unexpectedly")
    reporter, calls, connects = make_reporter([lost, lost, None], clock)
    reporter.send([Outcome(task(1, timeout=10), output="1")])
    assert [c[0] for c in calls] == ["complete"] * 3
    assert len(connects) == 3, "a new connection after each loss"
    assert len(clock.sleeps) == 2
    assert reporter.completed == 1


def test_retries_stop_at_the_lease_deadline() -> None:
    clock = FakeClock()
    lost = ConnectionFailed("connection refused")
    reporter, calls, _ = make_reporter([lost] * 1000, clock)
    doomed = task(1, started=clock.now, timeout=10)
    with pytest.raises(ConnectionFailed):
        reporter.send([Outcome(doomed, output="1")])
    deadline = doomed.started + 10 + LEASE_MARGIN
    assert clock.now > deadline, "it kept trying until the lease ended"
    assert clock.now - clock.sleeps[-1] <= deadline, "and no longer"
    assert len(calls) == len(clock.sleeps) + 1
    assert all(0.2 <= pause <= 5.0 for pause in clock.sleeps)


def test_an_error_that_is_not_transient_is_not_retried() -> None:
    clock = FakeClock()
    reporter, calls, _ = make_reporter(
        [RunNotFound("run x does not exist", sqlstate="42704")], clock
    )
    with pytest.raises(RunNotFound):
        reporter.send([Outcome(task(1), error="boom")])
    assert len(calls) == 1
    assert clock.sleeps == []


# --------------------------------------------------------------------------- backoff


def test_backoff_doubles_its_ceiling_and_jitters_below_it() -> None:
    backoff = Backoff(0.2, 5.0, uniform=random.Random(1).uniform)
    pauses = [backoff.next() for _ in range(12)]
    ceilings = [min(5.0, 0.2 * 2**n) for n in range(12)]
    assert all(0.2 <= p <= c for p, c in zip(pauses, ceilings, strict=True))
    assert len({round(p, 6) for p in pauses[3:]}) == len(pauses[3:]), "jittered, not fixed"
    assert max(pauses) > 2.5, "the ceiling reaches the maximum"
    backoff.reset()
    assert backoff.next() == 0.2


def test_transience_is_decided_by_error_class() -> None:
    assert is_transient(ConnectionFailed("x"))
    assert not is_transient(InvalidArgument("x", sqlstate="22023"))
    assert not is_transient(RuntimeError("connection refused"))


# --------------------------------------------------------------------------- reconnects

flow = Flow("fake")


@flow.step()
def only(input: Any) -> Any:
    return input


class FakeSession:
    """The claim connection of a worker being (re)connected."""

    def __init__(self, log: list[str], fail_register: bool) -> None:
        self.log = log
        self.fail_register = fail_register
        self.closed = False

    def register_worker(self, *args: Any) -> None:
        self.log.append("register")
        if self.fail_register:
            raise ConnectionFailed(
                "terminating connection due to administrator command", sqlstate="57P01"
            )

    def close(self) -> None:
        self.closed = True
        self.log.append("close")


def test_reconnecting_retries_connect_and_register_as_one_unit_with_jitter() -> None:
    log: list[str] = []
    clock = FakeClock()
    attempts: list[FakeSession] = []
    # refused twice, then a session cut while it registers, then fine
    plan: list[str] = ["refuse", "refuse", "cut", "ok"]

    def connector() -> FakeSession:
        what = plan.pop(0)
        log.append(f"connect {what}")
        if what == "refuse":
            raise ConnectionFailed("connection refused")
        session = FakeSession(log, fail_register=what == "cut")
        attempts.append(session)
        return session

    worker = Worker(
        "",
        [flow_of(flow)],
        WorkerConfig(listen=False, reconnect_min=0.2, reconnect_max=5.0),
        connector=connector,  # type: ignore[arg-type]
        sleep=clock.sleep,
        clock=clock,
    )
    worker._connect()
    assert log == [
        "connect refuse",
        "connect refuse",
        "connect cut",
        "register",
        "close",
        "connect ok",
        "register",
    ]
    assert len(clock.sleeps) == 3
    assert all(0.2 <= p <= 5.0 for p in clock.sleeps)
    assert worker.loop.claim_queries is attempts[-1]


def test_at_start_up_the_worker_gives_up_after_its_connect_timeout() -> None:
    clock = FakeClock()

    def connector() -> FakeSession:
        raise ConnectionFailed("the database system is starting up")

    worker = Worker(
        "",
        [flow_of(flow)],
        WorkerConfig(listen=False, connect_timeout=10),
        connector=connector,  # type: ignore[arg-type]
        sleep=clock.sleep,
        clock=clock,
    )
    began = clock.now
    with pytest.raises(ConnectionFailed):
        worker._connect(first=True)
    assert 10 <= clock.now - began <= 10 + 5.0
    assert len(clock.sleeps) >= 3


# --------------------------------------------------------------------------- fencing, retry control


def test_failures_go_out_in_one_call_with_their_attempts_and_retry_control() -> None:
    clock = FakeClock()
    calls: list[tuple[Any, ...]] = []
    queries = FakeReportQueries(calls, [])
    reporter = Reporter(
        lambda: queries,
        report_batch=100,
        backoff=lambda: Backoff(0.2, 5.0),
        clock=clock,
        sleep=clock.sleep,
    )
    first, second, third = task(1), task(2), task(3)
    second.attempt = 4
    reporter.send(
        [
            Outcome(first, error="ValueError: boom"),
            Outcome(second, error="Fail: card declined", retry=False),
            Outcome(third, error="RetryAfter: rate limited", retry_delay=30.0),
        ]
    )
    assert [c[0] for c in calls] == ["fail", "fail", "fail"]
    assert queries.fails == [([1, 4, 1], [True, False, True], [None, None, 30.0])]


def test_a_failure_after_the_lease_ended_is_held_back_a_success_is_not() -> None:
    clock = FakeClock()
    reporter, calls, _ = make_reporter([], clock)
    lost, expired, fine = task(1), task(2, started=clock.now - 100, timeout=10), task(3)
    lost.lease_lost = True
    reporter.send(
        [
            Outcome(lost, error="late"),
            Outcome(expired, error="also late"),
            Outcome(fine, error="in time"),
            Outcome(task(4, started=clock.now - 100, timeout=10), output="1"),
        ]
    )
    assert ("fail", 3, "in time") in calls
    assert not any(c[0] == "fail" and c[1] in (1, 2) for c in calls)
    assert ("complete", [4], ["1"]) in calls, "a success is sent anyway: fencing decides"
    assert reporter.held_back == 2


def test_executor_maps_fail_and_retry_after_to_retry_control() -> None:
    outcomes: list[Outcome] = []
    done = threading.Event()

    def record(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 2:
            done.set()

    def declined(_: Any) -> Any:
        raise Fail("card declined")

    def limited(_: Any) -> Any:
        raise RetryAfter(12.5, "slow down")

    executor = Executor(
        2,
        {("f", "a"): declined, ("f", "b"): limited},
        on_outcome=record,
        on_free=lambda: None,
        run_input=lambda _: None,
    )
    for index, step in enumerate("ab"):
        t = task(index)
        t.step_slug, t.handler = step, executor.handler("f", step)
        executor.dispatch(t, "{}")
    assert done.wait(10)
    executor.shutdown()
    by_step = {o.task.step_slug: o for o in outcomes}
    assert (by_step["a"].retry, by_step["a"].error) == (False, "Fail: card declined")
    assert (by_step["b"].retry, by_step["b"].retry_delay) == (True, 12.5)
    with pytest.raises(ValueError, match="finite number of seconds"):
        RetryAfter(-1)


class FakeLeaseQueries:
    def __init__(self, held: set[tuple[str, str, int]]) -> None:
        self.held = held
        self.calls: list[list[int]] = []
        self.closed = False

    def extend_leases(
        self,
        run_ids: Sequence[str],
        step_slugs: Sequence[str],
        task_indexes: Sequence[int],
        attempts: Sequence[int],
    ) -> set[tuple[str, str, int]]:
        self.calls.append(list(task_indexes))
        return {k for k in zip(run_ids, step_slugs, task_indexes, strict=True) if k in self.held}

    def close(self) -> None:
        self.closed = True


def test_the_renewer_renews_heartbeat_tasks_in_one_call_and_marks_lost_leases() -> None:
    clock = FakeClock()
    beating = [task(i, started=clock.now, timeout=600) for i in range(3)]
    for t in beating:
        t.heartbeat = 2.0
        t.lease_until = clock.now + 4
    plain = task(9)  # no heartbeat: not renewed
    held = {(t.run_id, t.step_slug, t.task_index) for t in beating[:2]}
    queries = FakeLeaseQueries(held)
    renewer = Renewer(lambda: queries, lambda: [*beating, plain], 1.0, clock=clock)
    clock.now += 1.5
    assert renewer.renew_once() == 2
    assert queries.calls == [[0, 1, 2]], "one statement for every running heartbeat task"
    assert beating[0].lease_until == clock.now + 2.0 + LEASE_MARGIN
    assert beating[2].lease_lost and not beating[0].lease_lost
    assert renewer.renew_once() == 2
    assert queries.calls[-1] == [0, 1], "a lost lease is not renewed again"


def test_a_renewal_never_moves_a_lease_past_the_attempt_s_timeout() -> None:
    t = task(1, started=0.0, timeout=10)
    t.heartbeat = 5.0
    t.renewed(9.0)
    assert t.lease_until == t.run_limit == 10 + LEASE_MARGIN
