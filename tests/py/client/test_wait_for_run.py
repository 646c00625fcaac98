"""pgflow.client.wait_for_run: wakes on the run's events instead of polling."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgflow.db.client
from pgflow.db.client import RunTimeoutError, start_flow, wait_for_run
from pgflow.errors import PgflowError

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run ids passed to pgflow.db.client.get_run (which wait_for_run calls)."""
    seen: list[str] = []
    real = pgflow.db.client.get_run

    def counted(conn: Conn, run_id: uuid.UUID | str) -> dict[str, Any] | None:
        seen.append(str(run_id))
        return real(conn, run_id)

    monkeypatch.setattr(pgflow.db.client, "get_run", counted)
    return seen


@pytest.fixture
def flow(conn: Conn) -> str:
    conn.execute("SELECT pgflow.create_flow('waited')")
    conn.execute("SELECT pgflow.add_step('waited', 'only')")
    return "waited"


def complete_one(db: str, run_id: str) -> None:
    """Claim the run's task and complete it, as a worker would."""
    with psycopg.connect(db, autocommit=True) as conn:
        msgs = conn.execute("SELECT msg_id FROM pgflow.read_with_poll('waited', 30, 10)").fetchall()
        tasks = conn.execute(
            "SELECT run_id::text, step_slug, task_index FROM pgflow.start_tasks('waited', %s, %s)",
            ([m[0] for m in msgs], uuid.uuid4()),
        ).fetchall()
        for task_run, step, index in tasks:
            assert task_run == run_id
            conn.execute(
                "SELECT pgflow.complete_task(%s, %s, %s, %s)",
                (task_run, step, index, json.dumps({"done": True})),
            )


@pytest.fixture
def later() -> Iterator[Callable[[float, Callable[[], None]], None]]:
    """Run a function in a thread after a delay; every thread is joined after the test."""
    threads: list[threading.Thread] = []

    def schedule(delay: float, fn: Callable[[], None]) -> None:
        def run() -> None:
            time.sleep(delay)
            fn()

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)

    yield schedule
    for thread in threads:
        thread.join(timeout=30)


def test_returns_when_the_run_completes_without_polling(
    db: str, conn: Conn, flow: str, calls: list[str], later: Any
) -> None:
    run_id = str(start_flow(conn, flow, {"n": 1})["run_id"])
    later(1.0, lambda: complete_one(db, run_id))
    run = wait_for_run(conn, run_id, timeout=30)
    assert run["status"] == "completed"
    assert run["output"] == {"only": {"done": True}}
    assert len(calls) <= 3, f"get_run called {len(calls)} times for a run of about 1 s"


def test_events_of_other_runs_do_not_make_it_read_the_run(
    db: str, conn: Conn, flow: str, calls: list[str], later: Any
) -> None:
    other = str(start_flow(conn, flow, {})["run_id"])
    mine = str(start_flow(conn, flow, {})["run_id"])

    def finish_other_then_mine() -> None:
        with psycopg.connect(db, autocommit=True) as c:
            c.execute("SELECT pgflow.cancel_run(%s)", (other,))
        time.sleep(0.5)
        with psycopg.connect(db, autocommit=True) as c:
            c.execute("SELECT pgflow.cancel_run(%s)", (mine,))

    later(0.3, finish_other_then_mine)
    run = wait_for_run(conn, mine, timeout=30)
    assert run["status"] == "cancelled"
    assert calls == [mine, mine], "read once at the start, once after its own event"


def test_a_run_already_finished_is_returned_at_once(
    conn: Conn, flow: str, calls: list[str]
) -> None:
    run_id = str(start_flow(conn, flow, {})["run_id"])
    conn.execute("SELECT pgflow.cancel_run(%s)", (run_id,))
    assert wait_for_run(conn, run_id, timeout=0)["status"] == "cancelled"
    assert calls == [run_id]


def test_a_failed_run_is_returned_too(db: str, conn: Conn, flow: str, later: Any) -> None:
    conn.execute("SELECT pgflow.create_flow('waited', max_attempts => 1)")  # tunable update
    run_id = str(start_flow(conn, flow, {})["run_id"])

    def fail() -> None:
        with psycopg.connect(db, autocommit=True) as c:
            (msg,) = c.execute(
                "SELECT msg_id FROM pgflow.read_with_poll('waited', 30, 1)"
            ).fetchone()
            c.execute("SELECT pgflow.start_tasks('waited', %s, %s)", ([msg], uuid.uuid4()))
            c.execute("SELECT pgflow.fail_task(%s, 'only', 0, 'boom')", (run_id,))

    later(0.2, fail)
    run = wait_for_run(conn, run_id, timeout=30)
    assert run["status"] == "failed"
    assert "boom" in run["error_message"]


def test_raises_run_timeout_error_after_its_timeout(
    conn: Conn, flow: str, calls: list[str]
) -> None:
    run_id = str(start_flow(conn, flow, {})["run_id"])
    began = time.monotonic()
    with pytest.raises(RunTimeoutError, match=rf"run {run_id} is still started after 0.5 s"):
        wait_for_run(conn, run_id, timeout=0.5)
    assert time.monotonic() - began >= 0.5
    assert calls == [run_id], "nothing happened to the run, so it was read once"
    assert issubclass(RunTimeoutError, PgflowError)


def test_leaves_the_connection_as_it_found_it(conn: Conn, flow: str) -> None:
    run_id = str(start_flow(conn, flow, {})["run_id"])
    with pytest.raises(RunTimeoutError):
        wait_for_run(conn, run_id, timeout=0.1)
    channels = conn.execute("SELECT pg_listening_channels()").fetchall()
    assert channels == [], "UNLISTENed after waiting"
    conn.execute("SELECT pgflow.cancel_run(%s)", (run_id,))
    assert wait_for_run(conn, run_id, timeout=1)["status"] == "cancelled"


def test_an_unknown_run_is_an_error(conn: Conn) -> None:
    run_id = str(uuid.uuid4())
    with pytest.raises(PgflowError, match=rf"run {run_id} does not exist"):
        wait_for_run(conn, run_id, timeout=5)


def test_needs_an_autocommit_connection(db: str, flow: str) -> None:
    with (
        psycopg.connect(db) as plain,
        pytest.raises(PgflowError, match="needs an autocommit connection"),
    ):
        wait_for_run(plain, str(uuid.uuid4()), timeout=1)
