"""OpenTelemetry spans of task attempts (the optional ``otel`` extra).

One span per attempt a worker runs: ``pgflow.task <flow>.<step>``, kind
CONSUMER, started at the claim, ended when the attempt's outcome is handed to
the reporter, with the attributes ``pgflow.flow``, ``pgflow.step``,
``pgflow.run_id``, ``pgflow.task_index``, ``pgflow.attempt`` and
``pgflow.outcome`` (``completed``, ``failed``, ``timed out`` or
``abandoned``).  A failed or timed-out attempt gets the error status and an
``exception`` event.  A run started with a trace context (a W3C
``traceparent``) gives its tasks' spans that parent; the worker reads the
contexts once per claimed batch (``pgflow.trace_contexts``), caching them per
run.

Tracing is on when ``opentelemetry-api`` is importable and the application
configured a tracer provider (``opentelemetry.trace.set_tracer_provider``);
with the API's default (proxy) provider, or without the package, nothing is
done beyond one ``isinstance`` check per claimed batch.  This is the only
module of the worker that imports ``opentelemetry``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

try:  # the optional extra; absent, every function below is a cheap no-op
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised by test_tracing's simulated absence
    _trace = None  # type: ignore[assignment]
    TraceContextTextMapPropagator = None  # type: ignore[assignment,misc]

T = TypeVar("T")

#: How many runs' trace contexts a worker remembers (least recently used dropped).
CACHE_SIZE = 10_000

_TIMEOUT_PREFIX = "timeout:"


def available() -> bool:
    """Whether ``opentelemetry-api`` could be imported."""
    return _trace is not None


def enabled() -> bool:
    """Whether spans are made: the API is installed and a tracer provider was configured."""
    if _trace is None:
        return False
    return not isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider)


class Tracer:
    """Starts and ends the spans of task attempts; remembers runs' trace contexts.

    ``fetch`` reads the trace contexts of run ids (``pgflow.trace_contexts``);
    it is called once per claimed batch for the runs not yet cached, and only
    while :func:`enabled`.
    """

    def __init__(self, fetch: Callable[[list[str]], Mapping[str, str]]) -> None:
        self._fetch = fetch
        self._contexts: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._propagator = (
            None if TraceContextTextMapPropagator is None else (TraceContextTextMapPropagator())
        )

    def active(self) -> bool:
        return enabled()

    def parents(self, run_ids: Iterable[str]) -> dict[str, Any]:
        """Run id -> the OpenTelemetry context its task spans are children of (``None``: none)."""
        wanted = set(run_ids)
        found: dict[str, Any] = {}
        with self._lock:
            for rid in wanted:
                if rid in self._contexts:
                    self._contexts.move_to_end(rid)
                    found[rid] = self._contexts[rid]
        missing = sorted(wanted - found.keys())
        if missing:
            texts = self._fetch(missing)
            with self._lock:
                for rid in missing:
                    ctx = self._extract(texts.get(rid))
                    found[rid] = ctx
                    self._contexts[rid] = ctx
                while len(self._contexts) > CACHE_SIZE:
                    self._contexts.popitem(last=False)
        return found

    def _extract(self, traceparent: str | None) -> Any:
        if traceparent is None or self._propagator is None:
            return None
        ctx = self._propagator.extract({"traceparent": traceparent})
        span = _trace.get_current_span(ctx)
        return ctx if span.get_span_context().is_valid else None

    def start(
        self,
        flow: str,
        step: str,
        run_id: str,
        task_index: int,
        attempt: int,
        parent: Any = None,
    ) -> Any:
        """A started span for one attempt (end it with :func:`finish`)."""
        tracer = _trace.get_tracer("pgflow.worker")
        return tracer.start_span(
            f"pgflow.task {flow}.{step}",
            context=parent,
            kind=_trace.SpanKind.CONSUMER,
            attributes={
                "pgflow.flow": flow,
                "pgflow.step": step,
                "pgflow.run_id": run_id,
                "pgflow.task_index": task_index,
                "pgflow.attempt": attempt,
            },
        )


def outcome_of(error: str | None) -> str:
    """``completed``, ``timed out`` or ``failed`` for an attempt's error message (or none)."""
    if error is None:
        return "completed"
    return "timed out" if error.startswith(_TIMEOUT_PREFIX) else "failed"


def finish(
    span: Any,
    outcome: str,
    error: str | None = None,
    exc: BaseException | None = None,
    *,
    will_retry: bool | None = None,
) -> None:
    """End an attempt's span with its outcome (error status and an exception event on errors)."""
    span.set_attribute("pgflow.outcome", outcome)
    if will_retry is not None:
        span.set_attribute("pgflow.will_retry", will_retry)
    if outcome in ("failed", "timed out"):
        if exc is not None:
            span.record_exception(exc)
        else:
            span.add_event(
                "exception",
                {"exception.type": "pgflow.TaskError", "exception.message": error or outcome},
                timestamp=time.time_ns(),
            )
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, error or outcome))
    span.end()


def in_span(span: Any, call: Callable[..., T]) -> Callable[..., T]:
    """``call`` made to run with ``span`` current (spans the handler makes are its children)."""

    def traced(*args: Any) -> T:
        with _trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            return call(*args)

    return traced


async def awaited_in_span(span: Any, coroutine: Awaitable[T]) -> T:
    """Await a handler's coroutine with ``span`` current."""
    with _trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    ):
        return await coroutine
