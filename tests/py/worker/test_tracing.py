"""OpenTelemetry spans of task attempts (the ``otel`` extra): one per attempt, with the
run's trace context as parent; the worker without opentelemetry installed."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgflow
from pgflow.errors import InvalidArgument
from pgflow.spec.loader import flow_of
from pgflow.testing.flows import install_flow

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.util._once import Once  # noqa: E402

flow = pgflow.Flow("otel_flow", max_attempts=3, base_delay=1, timeout=10)
#: (run_id, attempt) -> the span id current inside the handler (hex)
inside: dict[tuple[str, int], str] = {}


@flow.step
def first(run: dict[str, Any], ctx: pgflow.Context) -> dict[str, str]:
    inside[(ctx.run_id, ctx.attempt)] = format(
        trace.get_current_span().get_span_context().span_id, "016x"
    )
    return {"ok": "yes"}


@flow.step(depends_on=[first])
async def flaky(inp: dict[str, Any], ctx: pgflow.Context) -> int:
    if ctx.attempt == 1:
        raise ValueError("boom on attempt 1")
    return ctx.attempt


slow = pgflow.Flow("otel_slow", max_attempts=1, timeout=3)


@slow.step
async def dawdle(run: dict[str, Any]) -> None:
    await asyncio.sleep(8)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A configured tracer provider exporting to memory (the global one reset afterwards)."""
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None


def run_flow(db: str, starts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Start runs (keyword arguments of AsyncClient.start) and serve them with a worker."""
    install_flow(db, flow_of(flow))

    async def main() -> list[dict[str, Any]]:
        worker = pgflow.Worker([flow], db, poll_interval=0.1, grace=5)
        running = asyncio.create_task(worker.run_async())
        async with pgflow.AsyncClient(db) as client:
            handles = [await client.start("otel_flow", {}, **kw) for kw in starts]
            runs = [await h.wait(30) for h in handles]
        worker.stop()
        assert await running == 0
        return runs

    return asyncio.run(main())


def task_spans(exporter: InMemorySpanExporter, run_id: str) -> list[Any]:
    found = [
        s
        for s in exporter.get_finished_spans()
        if s.attributes is not None and s.attributes.get("pgflow.run_id") == run_id
    ]
    return sorted(found, key=lambda s: (s.start_time, s.attributes["pgflow.attempt"]))


pytestmark = pytest.mark.db


def test_one_span_per_attempt_with_attributes_and_outcome(
    db: str, spans: InMemorySpanExporter
) -> None:
    (run,) = run_flow(db, [{}])
    assert run["status"] == "completed"
    rid = str(run["run_id"])
    got = task_spans(spans, rid)
    assert [(s.name, s.attributes["pgflow.step"], s.attributes["pgflow.attempt"]) for s in got] == [
        ("pgflow.task otel_flow.first", "first", 1),
        ("pgflow.task otel_flow.flaky", "flaky", 1),
        ("pgflow.task otel_flow.flaky", "flaky", 2),
    ]
    for s in got:
        assert s.kind == trace.SpanKind.CONSUMER
        assert s.attributes["pgflow.flow"] == "otel_flow"
        assert s.attributes["pgflow.task_index"] == 0
        assert s.parent is None  # started without a trace context
    ok, failed, retried = got
    assert ok.attributes["pgflow.outcome"] == "completed"
    assert ok.status.status_code == trace.StatusCode.UNSET
    assert failed.attributes["pgflow.outcome"] == "failed"
    assert failed.attributes["pgflow.will_retry"] is True
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert "boom on attempt 1" in (failed.status.description or "")
    (event,) = failed.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    assert retried.attributes["pgflow.outcome"] == "completed"
    # the handler ran with its attempt's span current
    assert inside[(rid, 1)] == format(ok.context.span_id, "016x")


def test_a_run_started_with_a_trace_context_parents_its_task_spans(
    db: str, spans: InMemorySpanExporter
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    given = f"00-{trace_id}-{parent_id}-01"
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("caller") as caller:
        explicit, implicit = run_flow(db, [{"trace_context": given}, {}])
    for s in task_spans(spans, str(explicit["run_id"])):
        assert format(s.context.trace_id, "032x") == trace_id
        assert s.parent is not None
        assert format(s.parent.span_id, "016x") == parent_id
    implicit_spans = task_spans(spans, str(implicit["run_id"]))
    assert len(implicit_spans) == 3
    for s in implicit_spans:  # the default: the current span's context at start
        assert s.context.trace_id == caller.get_span_context().trace_id
        assert s.parent is not None
        assert s.parent.span_id == caller.get_span_context().span_id
    with psycopg.connect(db) as conn:
        stored = conn.execute(
            "SELECT trace_context FROM pgflow.runs WHERE run_id = %s", (explicit["run_id"],)
        ).fetchone()
    assert stored == (given,)


def test_a_timed_out_attempt_has_its_outcome_and_the_error_status(
    db: str, spans: InMemorySpanExporter
) -> None:
    install_flow(db, flow_of(slow))

    async def main() -> dict[str, Any]:
        worker = pgflow.Worker([slow], db, poll_interval=0.1, grace=5)
        running = asyncio.create_task(worker.run_async())
        async with pgflow.AsyncClient(db) as client:
            run = await (await client.start("otel_slow", {})).wait(30)
        worker.stop()
        await running
        return run

    run = asyncio.run(main())
    assert run["status"] == "failed"
    (span,) = task_spans(spans, str(run["run_id"]))
    assert span.attributes["pgflow.outcome"] == "timed out"
    assert span.attributes["pgflow.will_retry"] is False
    assert span.status.status_code == trace.StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_start_refuses_a_trace_context_that_is_not_a_traceparent(db: str) -> None:
    install_flow(db, flow_of(flow))
    with pgflow.Client(db) as client:
        with pytest.raises(InvalidArgument, match="not a W3C traceparent"):
            client.start("otel_flow", {}, trace_context="00-not-a-trace")
        assert client.list_runs("otel_flow") == []


ABSENT = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    class NoOtel(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError(f"No module named {name!r} (simulated)")
            return None

    sys.meta_path.insert(0, NoOtel())
    import pgflow
    from pgflow.db.client import current_traceparent
    from pgflow.worker import _tracing
    sys.path.insert(0, sys.argv[2])
    from test_tracing_absent_flow import flow

    assert not _tracing.available() and not _tracing.enabled()
    assert current_traceparent() is None
    with pgflow.Client(sys.argv[1]) as client, pgflow.Worker([flow], sys.argv[1]) as worker:
        handle = client.start("otel_absent", {"n": 2})
        while worker.run_once():
            pass
        run = handle.wait(10)
    assert worker.loop.tracer is None
    assert "opentelemetry" not in sys.modules
    print(run["status"], run["output"])
    """
)

ABSENT_FLOW = textwrap.dedent(
    """
    import pgflow

    flow = pgflow.Flow("otel_absent")

    @flow.step
    def double(run):
        return run["n"] * 2
    """
)


def test_the_worker_runs_without_opentelemetry(db: str, tmp_path: Any) -> None:
    (tmp_path / "test_tracing_absent_flow.py").write_text(ABSENT_FLOW)
    sys.path.insert(0, str(tmp_path))
    try:
        absent = importlib.import_module("test_tracing_absent_flow").flow
        install_flow(db, flow_of(absent))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("test_tracing_absent_flow", None)
    done = subprocess.run(
        [sys.executable, "-c", ABSENT, db, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["completed", "{'double':", "4}"]
