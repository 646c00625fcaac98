"""pgflow.AsyncClient: the same API as pgflow.Client, as coroutines (run with asyncio.run)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from client_helpers import run_exists, work_once
from psycopg_pool import AsyncConnectionPool

import pgflow
from pgflow.errors import (
    FlowNotFound,
    InvalidArgument,
    InvalidState,
    PgflowError,
    RunCancelled,
    RunFailed,
    RunNotFound,
    RunTimeoutError,
)

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]
Later = Any  # the `later` fixture: later(delay, fn, *args, **kwargs)


def test_start_and_await_the_result(db: str, greet: str, later: Later) -> None:
    async def main() -> tuple[Any, Any, dict[str, Any]]:
        async with pgflow.AsyncClient(db) as client:
            handle = await client.start("greet", {"name": "Ada"})
            assert isinstance(handle, pgflow.AsyncRunHandle)
            assert handle.run is not None and handle.run["status"] == "started"
            later(0.2, work_once, db, greet, output="hello Ada")
            result = await handle.result(timeout=30)
            awaited = await handle  # awaiting the handle is awaiting its result
            run = await handle.wait(timeout=0)
            return result, awaited, run

    result, awaited, run = asyncio.run(main())
    assert result == awaited == {"hello": "hello Ada"}
    assert run["status"] == "completed" and run["input"] == {"name": "Ada"}


def test_start_many_and_await_every_result(db: str, greet: str, later: Later) -> None:
    async def main() -> list[Any]:
        async with pgflow.AsyncClient(db) as client:
            handles = await client.start_many("greet", [{"n": i} for i in range(3)])
            assert [type(h) for h in handles] == [pgflow.AsyncRunHandle] * 3
            later(0.2, work_once, db, greet, output="ok")
            return [await h.result(timeout=30) for h in handles]

    assert asyncio.run(main()) == [{"hello": "ok"}] * 3


def test_failed_cancelled_and_timed_out_runs(db: str, greet: str, later: Later) -> None:
    async def main() -> None:
        async with pgflow.AsyncClient(db) as client:
            failing = await client.start("greet", {})
            later(0.2, work_once, db, greet, error="KeyError: 'name'")
            with pytest.raises(RunFailed) as caught:
                await failing
            assert (caught.value.step_slug, caught.value.error_message) == (
                "hello",
                "KeyError: 'name'",
            )

            slow = await client.start("greet", {})
            with pytest.raises(RunTimeoutError, match=r"is still started after 0\.2 s"):
                await slow.result(timeout=0.2)
            assert (await slow.cancel()).run["status"] == "cancelled"
            with pytest.raises(RunCancelled):
                await slow.result(timeout=5)

    asyncio.run(main())


def test_typed_errors_and_operations(db: str, greet: str, later: Later) -> None:
    unknown = uuid.uuid4()

    async def main() -> None:
        client = pgflow.AsyncClient(db)  # without `async with`
        try:
            with pytest.raises(FlowNotFound):
                await client.start("nope", {})
            with pytest.raises(RunNotFound):
                await client.handle(unknown).wait(timeout=1)
            with pytest.raises(RunNotFound):
                await client.handle(unknown).get()
            with pytest.raises(RunNotFound):
                await client.cancel(unknown)
            with pytest.raises(InvalidArgument):
                await client.get_run("not-a-uuid")
            assert await client.get_run(unknown) is None

            first = await client.start("greet", {"n": 1}, run_id=unknown)
            assert first.run_id == unknown
            assert (await client.start("greet", {"n": 2}, run_id=unknown)).run_id == unknown
            with pytest.raises(InvalidState):
                await client.retry(first.run_id)
            assert [r["run_id"] for r in await client.list_runs("greet")] == [str(unknown)]
            assert (await client.cancel(unknown)).already_finished is False
            resumed = await client.retry(unknown)
            later(0.2, work_once, db, greet, output=2)
            assert await resumed.result(timeout=30) == {"hello": 2}
            found = await client.stats(pgflow.Flow("greet"))
            assert [(r["flow_slug"], r["completed"]) for r in found.runs] == [("greet", 1)]
            assert await client.prune(timedelta(0)) == 1
            assert await client.list_runs() == []
        finally:
            await client.close()
        with pytest.raises(PgflowError, match="closed"):
            await client.list_runs()

    asyncio.run(main())


def test_a_run_started_in_a_rolled_back_transaction_does_not_exist(
    db: str, greet: str, conn: Conn
) -> None:
    async def main() -> tuple[uuid.UUID, uuid.UUID]:
        async with await psycopg.AsyncConnection.connect(db) as app:
            client = pgflow.AsyncClient(app)
            with pytest.raises(RuntimeError):
                async with app.transaction():
                    dropped = await client.start("greet", {})
                    raise RuntimeError("the request failed")
            async with app.transaction():
                kept = await client.start("greet", {})
            return dropped.run_id, kept.run_id

    dropped, kept = asyncio.run(main())
    assert not run_exists(conn, dropped)
    assert run_exists(conn, kept)


def test_over_an_async_pool_with_events(db: str, greet: str, later: Later) -> None:
    async def main() -> list[pgflow.Event]:
        async with AsyncConnectionPool(db, min_size=1, max_size=2, open=False) as pool:
            client = pgflow.AsyncClient(pool)
            seen: list[pgflow.Event] = []
            async with client.events(flow=greet, timeout=30) as events:
                handle = await client.start(pgflow.Flow("greet"), {})
                later(0.2, work_once, db, greet, output=1)
                async for event in events:
                    seen.append(event)
                    if event.event == "run:completed":
                        break
            assert await handle.result(timeout=5) == {"hello": 1}
            async with pool.connection() as conn:
                assert conn.autocommit is False, "autocommit is given back as it was"
                cur = await conn.execute("SELECT pg_listening_channels()")
                assert await cur.fetchall() == []
            async with pool.connection() as conn:
                with pytest.raises(PgflowError, match="inside a transaction"):
                    async with conn.transaction():
                        started = await pgflow.AsyncClient(conn).start("greet", {})
                        await started.wait(timeout=1)
            return seen

    seen = asyncio.run(main())
    assert [e.event for e in seen] == ["run:started", "run:completed"]


def test_an_async_event_stream_ends_after_its_timeout(db: str, greet: str) -> None:
    async def main() -> list[pgflow.Event]:
        async with pgflow.AsyncClient(db) as client:
            return [event async for event in client.events(timeout=0.3)]

    assert asyncio.run(main()) == []


def test_the_sync_and_async_clients_refuse_each_others_connections(db: str) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(db) as aconn:
            with pytest.raises(TypeError, match=r"use pgflow\.AsyncClient"):
                pgflow.Client(aconn)  # type: ignore[arg-type]

    asyncio.run(main())
    with psycopg.connect(db) as conn, pytest.raises(TypeError, match=r"use pgflow\.Client"):
        pgflow.AsyncClient(conn)  # type: ignore[arg-type]
