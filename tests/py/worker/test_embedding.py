"""The worker inside an application process: run_async, stop, and its failure log lines."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

import pgflow
from pgflow.spec.loader import flow_of
from pgflow.testing.flows import install_flow

pytestmark = pytest.mark.db

flow = pgflow.Flow("emb_flow", max_attempts=2, base_delay=1)
calls: list[int] = []


@flow.step
def flaky(run: dict[str, Any], ctx: pgflow.Context) -> dict[str, int]:
    calls.append(ctx.attempt)
    if run.get("fail"):
        raise ValueError(f"boom on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


def test_run_async_serves_until_stopped_and_logs_each_failure_once(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    install_flow(db, flow_of(flow))

    async def main() -> tuple[int, dict[str, Any], dict[str, Any]]:
        worker = pgflow.Worker([flow], db, poll_interval=0.1, grace=5)
        running = asyncio.create_task(worker.run_async())
        async with pgflow.AsyncClient(db) as client:
            ok = await (await client.start("emb_flow", {})).wait(30)
            bad = await (await client.start("emb_flow", {"fail": True})).wait(30)
        worker.stop()
        return await running, ok, bad

    with caplog.at_level(logging.INFO, logger="pgflow.worker"):
        started = time.monotonic()
        status, ok, bad = asyncio.run(main())
    assert time.monotonic() - started < 30
    assert status == 0
    assert ok["status"] == "completed"
    assert bad["status"] == "failed"
    failures = [
        (r.levelname, r.__dict__.get("attempt"))
        for r in caplog.records
        if r.name == "pgflow.worker" and r.levelno >= logging.WARNING and "failed" in r.msg
    ]
    assert failures == [("WARNING", 1), ("ERROR", 2)]
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.INFO)


def test_cancelling_run_async_stops_the_worker(db: str) -> None:
    install_flow(db, flow_of(flow))

    async def main() -> pgflow.Worker:
        worker = pgflow.Worker([flow], db, poll_interval=0.1, grace=1)
        running = asyncio.create_task(worker.run_async())
        await asyncio.sleep(1.0)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        return worker

    worker = asyncio.run(main())
    assert worker._stopping.is_set()
