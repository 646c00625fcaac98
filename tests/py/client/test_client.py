"""pgflow.Client: start runs, wait for their results, operate on them, follow their events."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from client_helpers import run_exists, work_once
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

import pgflow
from pgflow.db.client import CancelResult, Stats
from pgflow.errors import (
    DatabaseError,
    FlowNotFound,
    InvalidArgument,
    InvalidState,
    JsonTooDeep,
    PgflowError,
    RunCancelled,
    RunFailed,
    RunIdConflict,
    RunNotCompleted,
    RunNotFound,
    RunTimeoutError,
)

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]
Later = Any  # the `later` fixture: later(delay, fn, *args, **kwargs)


# --------------------------------------------------------------------------- start and wait


def test_start_returns_a_handle_whose_result_is_the_run_output(
    db: str, greet: str, later: Later
) -> None:
    with pgflow.Client(db) as client:
        handle = client.start("greet", {"name": "Ada"})
        assert isinstance(handle, pgflow.RunHandle)
        assert isinstance(handle.run_id, uuid.UUID)
        assert handle.run is not None and handle.run["status"] == "started"
        assert handle.run["input"] == {"name": "Ada"}
        later(0.3, work_once, db, greet, output={"greeting": "hello Ada"})
        assert handle.result(timeout=30) == {"hello": {"greeting": "hello Ada"}}


def test_wait_returns_the_finished_run_as_get_run_describes_it(
    db: str, greet: str, later: Later
) -> None:
    with pgflow.Client(db) as client:
        handle = client.start("greet", [1, 2])
        later(0.2, work_once, db, greet, output=3)
        run = handle.wait(timeout=30)
    assert run["status"] == "completed"
    assert run["run_id"] == str(handle.run_id)
    assert run["input"] == [1, 2]
    assert [s["step_slug"] for s in run["steps"]] == ["hello"]
    assert run["output"] == {"hello": 3}


def test_a_failed_run_raises_run_failed_with_the_step_and_its_message(
    db: str, greet: str, later: Later
) -> None:
    with pgflow.Client(db) as client:
        handle = client.start("greet", {})
        later(0.2, work_once, db, greet, error="ValueError: no name")
        with pytest.raises(RunFailed) as caught:
            handle.result(timeout=30)
    error = caught.value
    assert (error.step_slug, error.error_message) == ("hello", "ValueError: no name")
    assert str(error) == f'run {handle.run_id} failed at step "hello": ValueError: no name'
    assert (error.run_id, error.flow_slug, error.status) == (str(handle.run_id), "greet", "failed")
    assert error.run["status"] == "failed"
    assert isinstance(error, RunNotCompleted) and isinstance(error, PgflowError)


def test_a_cancelled_run_raises_run_cancelled(db: str, greet: str, later: Later) -> None:
    with pgflow.Client(db) as client:
        handle = client.start("greet", {})
        later(0.2, handle.cancel)
        with pytest.raises(RunCancelled, match=rf"run {handle.run_id} was cancelled"):
            handle.result(timeout=30)
        # a finished run is returned at once, and result() says the same again
        assert handle.wait(timeout=0)["status"] == "cancelled"
        with pytest.raises(RunCancelled):
            handle.result(timeout=0)


def test_waiting_past_the_timeout_raises_run_timeout_error(db: str, greet: str) -> None:
    with pgflow.Client(db) as client:
        handle = client.start("greet", {})
        with pytest.raises(RunTimeoutError, match=r"is still started after 0.3 s"):
            handle.result(timeout=0.3)
        assert handle.get()["status"] == "started", "the run goes on"


def test_a_handle_can_be_made_from_a_run_id(db: str, greet: str, later: Later) -> None:
    with pgflow.Client(db) as client:
        started = client.start("greet", {})
        again = client.handle(str(started.run_id))
        assert again.run_id == started.run_id and again.run is None
        later(0.2, work_once, db, greet, output="done")
        assert again.result(timeout=30) == {"hello": "done"}


def test_a_run_id_makes_the_start_idempotent(db: str, greet: str) -> None:
    run_id = uuid.uuid4()
    with pgflow.Client(db) as client:
        first = client.start("greet", {"n": 1}, run_id=run_id)
        again = client.start("greet", {"n": 2}, run_id=str(run_id))
        assert first.run_id == again.run_id == run_id
        run = client.get_run(run_id)
    assert run is not None and run["input"] == {"n": 1}, "the first start's input stays"


def test_a_priority_is_kept_with_the_run_and_its_tasks(db: str, greet: str) -> None:
    with pgflow.Client(db) as client:
        handle = client.start("greet", {"n": 1}, priority=7)
        plain = client.start("greet", {"n": 2})
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT r.run_id, r.priority, array_agg(t.priority) FROM pgflow.runs AS r"
            " JOIN pgflow.step_tasks AS t USING (run_id)"
            " WHERE r.run_id = ANY (%s) GROUP BY r.run_id, r.priority",
            ([handle.run_id, plain.run_id],),
        ).fetchall()
    assert {r[0]: (r[1], r[2]) for r in rows} == {handle.run_id: (7, [7]), plain.run_id: (0, [0])}


def test_start_many_starts_a_run_per_input_in_their_order(
    db: str, greet: str, later: Later
) -> None:
    known = uuid.uuid4()
    with pgflow.Client(db) as client:
        first = client.start("greet", {"n": 0}, run_id=known)
        handles = client.start_many(
            "greet", [{"n": 1}, {"n": 2}, None], run_ids=[None, known, None], priority=3
        )
        assert [type(h) for h in handles] == [pgflow.RunHandle] * 3
        assert handles[1].run_id == first.run_id == known, "a known id returns its run"
        runs = [h.run for h in handles]
        assert [r["input"] if r else "?" for r in runs] == [{"n": 1}, {"n": 0}, None]
        assert [r["priority"] if r else "?" for r in runs] == [3, 0, 3]
        later(0.2, work_once, db, greet, output="ok")
        assert [h.result(timeout=30) for h in handles] == [{"hello": "ok"}] * 3
        assert client.start_many(greet, []) == [], "an empty batch starts nothing"


def test_a_refused_batch_starts_no_run(db: str, greet: str, conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('other')")
    conn.execute("SELECT pgflow.add_step('other', 'only')")
    taken = uuid.uuid4()
    with pgflow.Client(db) as client:
        client.start("other", {}, run_id=taken)
        with pytest.raises(RunIdConflict, match=f"run {taken} already exists"):
            client.start_many("greet", [{}, {}], run_ids=[None, taken])
        with pytest.raises(InvalidArgument, match="run_ids has 1 elements, inputs has 2"):
            client.start_many("greet", [{}, {}], run_ids=[None])
        with pytest.raises(InvalidArgument, match="is not a UUID"):
            client.start_many("greet", [{}], run_ids=["nope"])
        with pytest.raises(FlowNotFound):
            client.start_many("nope", [{}])
    row = conn.execute("SELECT count(*) FROM pgflow.runs WHERE flow_slug = 'greet'").fetchone()
    assert row == (0,)


def test_flow_objects_start_runs_through_a_client(db: str, greet: str, later: Later) -> None:
    flow = pgflow.Flow("greet")

    @flow.step
    def hello(input: dict[str, Any]) -> str:
        return "hi"

    with pgflow.Client(db) as client:
        handle = flow.start(client, {"via": "flow"})
        assert isinstance(handle, pgflow.RunHandle)
        later(0.2, work_once, db, greet, output="hi")
        assert handle.result(timeout=30) == {"hello": "hi"}
        assert client.start(flow, {}).run is not None, "a Flow names its flow too"
        assert [r["run_id"] for r in client.list_runs(flow)][-1] == str(handle.run_id)


# --------------------------------------------------------------------------- errors


def test_database_errors_come_typed(db: str, greet: str, conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('other')")
    conn.execute("SELECT pgflow.add_step('other', 'only')")
    unknown = uuid.uuid4()
    with pgflow.Client(db) as client:
        with pytest.raises(FlowNotFound, match='flow "nope" does not exist') as caught:
            client.start("nope", {})
        assert caught.value.sqlstate == "42704" and caught.value.hint
        with pytest.raises(RunNotFound, match=f"run {unknown} does not exist"):
            client.handle(unknown).wait(timeout=1)
        with pytest.raises(RunNotFound):
            client.handle(unknown).get()
        with pytest.raises(RunNotFound):
            client.cancel(unknown)
        with pytest.raises(RunNotFound):
            client.retry(unknown)
        assert client.get_run(unknown) is None
        with pytest.raises(InvalidArgument, match="'not-a-uuid' is not a UUID"):
            client.get_run("not-a-uuid")
        with pytest.raises(InvalidArgument, match="'nope' is not a UUID"):
            client.start("greet", {}, run_id="nope")
        taken = client.start("greet", {})
        with pytest.raises(RunIdConflict):
            client.start("other", {}, run_id=taken.run_id)
        with pytest.raises(InvalidState):
            client.retry(taken.run_id)
        with pytest.raises(InvalidArgument):
            client.list_runs(status="running")
        # the client is still usable after each error
        assert client.get_run(taken.run_id) is not None
    for cls in (FlowNotFound, RunNotFound, InvalidArgument, RunIdConflict, InvalidState):
        assert issubclass(cls, DatabaseError) and not issubclass(cls, psycopg.Error)


def test_values_too_deep_for_python_are_a_typed_error(db: str, greet: str, conn: Conn) -> None:
    deep: Any = 0
    for _ in range(3000):
        deep = [deep]
    row = conn.execute(
        "SELECT run_id FROM pgflow.start_flow('greet', %s::jsonb)", ("[" * 3000 + "]" * 3000,)
    ).fetchone()
    assert row is not None
    run_id = row[0]
    with pgflow.Client(db) as client:
        with pytest.raises(JsonTooDeep, match="nested too deeply"):
            client.start("greet", deep)
        with pytest.raises(JsonTooDeep, match="the result of get_run is nested too deeply"):
            client.get_run(run_id)
        assert client.list_runs()[0]["run_id"] == str(run_id), "no inputs in list_runs"


def test_wrong_kinds_of_database_are_refused() -> None:
    with pytest.raises(TypeError, match="takes a conninfo string"):
        pgflow.Client(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a conninfo string"):
        pgflow.AsyncClient(b"dbname=x")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- operations


def test_list_cancel_retry_prune_and_stats(db: str, greet: str, later: Later) -> None:
    with pgflow.Client(db) as client:
        first = client.start("greet", {"n": 1})
        second = client.start("greet", {"n": 2})
        listed = client.list_runs("greet")
        assert [r["run_id"] for r in listed] == [str(second.run_id), str(first.run_id)]
        assert "input" not in listed[0]
        assert client.list_runs(limit=1)[0]["run_id"] == str(second.run_id)
        # keyset pages: after the first row, the second; before the second, the first
        (newest,) = client.list_runs(limit=1)
        assert [r["run_id"] for r in client.list_runs(limit=5, cursor=newest)] == [
            str(first.run_id)
        ]
        assert [r["run_id"] for r in client.list_runs(cursor=listed[1], direction="newer")] == [
            str(second.run_id)
        ]
        assert len(client.list_runs(top_level=True)) == 2
        before_newest = datetime.fromisoformat(newest["started_at"])
        assert [r["run_id"] for r in client.list_runs(started_before=before_newest)] == [
            str(first.run_id)
        ]

        cancelled = client.cancel(first.run_id)
        assert isinstance(cancelled, CancelResult)
        assert (cancelled.run["status"], cancelled.already_finished) == ("cancelled", False)
        assert client.cancel(first.run_id).already_finished
        assert [r["run_id"] for r in client.list_runs(status="cancelled")] == [str(first.run_id)]

        resumed = client.retry(first.run_id)
        assert resumed.run_id == first.run_id and resumed.run is not None
        assert resumed.run["status"] == "started"
        later(0.2, work_once, db, greet, output="again")  # completes both runs' tasks
        assert resumed.result(timeout=30) == {"hello": "again"}
        doc = client.get_run(first.run_id)
        assert doc is not None and doc["retries"] == 1

        found = client.stats("greet")
        assert isinstance(found, Stats)
        assert [(r["flow_slug"], r["completed"], r["cancelled"]) for r in found.runs] == [
            ("greet", 2, 0)
        ]
        assert [s["step_slug"] for s in found.steps] == ["hello"]
        assert client.stats().active_tasks == 0

        running = client.start("greet", {})
        assert client.prune(timedelta(days=1)) == 0
        assert client.prune(timedelta(0), batch_size=1) == 2, "batch after batch"
        assert client.get_run(first.run_id) is None and client.get_run(second.run_id) is None
        assert client.get_run(running.run_id) is not None, "a running run stays"


# --------------------------------------------------------------- where connections come from


def test_an_empty_conninfo_means_the_libpq_environment(
    db: str, greet: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = conninfo_to_dict(db)
    for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER")):
        if params.get(key):
            monkeypatch.setenv(var, str(params[key]))
    monkeypatch.setenv("PGDATABASE", str(params["dbname"]))
    client = pgflow.Client("")  # without `with`
    try:
        assert client.start("greet", {}).run is not None
    finally:
        client.close()
    with pytest.raises(PgflowError, match="the pgflow client is closed"):
        client.list_runs()


def test_a_run_started_in_a_transaction_that_rolls_back_does_not_exist(
    db: str, greet: str, conn: Conn
) -> None:
    conn.execute("CREATE TABLE orders (id int PRIMARY KEY, run_id uuid)")
    with psycopg.connect(db) as app:  # the application's connection, not autocommit
        client = pgflow.Client(app)
        with pytest.raises(RuntimeError), app.transaction():
            handle = client.start("greet", {"order": 1})
            app.execute("INSERT INTO orders VALUES (1, %s)", (handle.run_id,))
            raise RuntimeError("the request failed")
        assert not run_exists(conn, handle.run_id)
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)

        with app.transaction():
            kept = client.start("greet", {"order": 2})
            app.execute("INSERT INTO orders VALUES (2, %s)", (kept.run_id,))
            assert not run_exists(conn, kept.run_id), "not visible before the commit"
        assert run_exists(conn, kept.run_id)
        assert conn.execute("SELECT run_id FROM orders").fetchone() == (kept.run_id,)


def test_waiting_on_the_applications_connection_needs_autocommit_outside_a_transaction(
    db: str, greet: str, later: Later
) -> None:
    with psycopg.connect(db) as app:
        handle = pgflow.Client(app).start("greet", {})
        app.commit()
        with pytest.raises(PgflowError, match="needs an autocommit connection"):
            handle.wait(timeout=1)
    with psycopg.connect(db, autocommit=True) as app:
        client = pgflow.Client(app)
        with app.transaction():
            started = client.start("greet", {})
            with pytest.raises(PgflowError, match="cannot wait for a run inside a transaction"):
                started.wait(timeout=1)
        later(0.2, work_once, db, greet, output=1)
        assert started.result(timeout=30) == {"hello": 1}, "autocommit and idle: it waits there"
        assert app.execute("SELECT pg_listening_channels()").fetchall() == []


def test_the_client_leaves_the_applications_connection_open(db: str, greet: str) -> None:
    with psycopg.connect(db, autocommit=True) as app:
        with pgflow.Client(app) as client:
            client.start("greet", {})
        assert not app.closed
        assert app.execute("SELECT 1").fetchone() == (1,)


def test_over_a_pool_each_call_borrows_a_connection(db: str, greet: str, later: Later) -> None:
    with ConnectionPool(db, min_size=1, max_size=1, open=True) as pool:
        client = pgflow.Client(pool)
        handle = client.start("greet", {"pooled": True})
        later(0.2, work_once, db, greet, output="pooled")
        assert handle.result(timeout=30) == {"hello": "pooled"}
        assert client.list_runs()[0]["status"] == "completed"
        # the one connection of the pool came back as it was lent: no LISTEN, no autocommit
        with pool.connection() as conn:
            assert conn.autocommit is False
            assert conn.execute("SELECT pg_listening_channels()").fetchall() == []
        # a transaction of the application's, on a connection of the pool
        with pool.connection() as conn, pytest.raises(RuntimeError), conn.transaction():
            rolled_back = pgflow.Client(conn).start("greet", {})
            raise RuntimeError
        assert client.get_run(rolled_back.run_id) is None
        client.close()  # leaves the pool open
        assert not pool.closed


# --------------------------------------------------------------------------- events


def test_events_stream_the_run_events_of_a_flow(
    db: str, greet: str, conn: Conn, later: Later
) -> None:
    conn.execute("SELECT pgflow.create_flow('quiet')")
    conn.execute("SELECT pgflow.add_step('quiet', 'only')")
    with pgflow.Client(db) as client, client.events(flow="greet", timeout=30) as events:
        client.start("quiet", {})  # another flow: not in this stream
        handle = client.start("greet", {})
        later(0.2, work_once, db, greet, output=1)
        seen: list[pgflow.Event] = []
        for event in events:
            seen.append(event)
            if event.event == "run:completed":
                break
    assert [(e.event, e.status, e.kind) for e in seen] == [
        ("run:started", "started", "run"),
        ("run:completed", "completed", "run"),
    ]
    assert {(e.flow_slug, e.run_id, e.step_slug) for e in seen} == {("greet", handle.run_id, None)}


def test_events_of_one_run_with_step_events(db: str, conn: Conn, later: Later) -> None:
    conn.execute("SELECT pgflow.create_flow('loud', step_events => true)")
    conn.execute("SELECT pgflow.add_step('loud', 'only')")
    with pgflow.Client(db) as client:
        other = client.start("loud", {})
        mine = client.start("loud", {})
        with client.events(run_id=mine.run_id, timeout=30) as events:
            later(0.2, work_once, db, "loud", output=1)
            seen = []
            for event in events:
                seen.append(event)
                if event.event == "run:completed":
                    break
    # the root step started with the run, before the stream was opened
    assert [e.event for e in seen] == ["step:only:completed", "run:completed"]
    assert seen[0].kind == "step" and seen[0].step_slug == "only"
    assert all(e.run_id == mine.run_id != other.run_id for e in seen)


def test_an_event_stream_ends_after_its_timeout_and_unlistens(db: str, greet: str) -> None:
    with psycopg.connect(db, autocommit=True) as app:
        client = pgflow.Client(app)
        events = client.events(timeout=0.3)
        assert list(events) == []
        assert app.execute("SELECT pg_listening_channels()").fetchall() == []
        stream = client.events()
        stream.open()
        assert app.execute("SELECT pg_listening_channels()").fetchall() == [("pgflow_events",)]
        stream.close()
        stream.close()
        assert app.execute("SELECT pg_listening_channels()").fetchall() == []
        assert list(stream) == [], "a closed stream stays closed"


def test_events_need_an_autocommit_connection(db: str) -> None:
    with psycopg.connect(db) as app, pytest.raises(PgflowError, match="autocommit"):
        next(iter(pgflow.Client(app).events(timeout=1)))
