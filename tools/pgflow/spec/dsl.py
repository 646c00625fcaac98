"""The Python front end: a :class:`Flow` and decorators for its steps.

::

    from pgflow import Flow

    flow = Flow("order", max_attempts=5)

    @flow.step()
    def fetch(input): ...

    @flow.map(depends_on=[fetch])
    def check_item(item): ...

    @flow.step(depends_on=[check_item], if_={"run": {"priority": "high"}})
    def notify(input): ...

Decorators return the function unchanged, so handlers stay plain functions
(easy to unit-test); the flow keeps them in :attr:`Flow.handlers` for a worker.
Arguments are checked when the flow is turned into a model (:meth:`Flow.spec`),
with the same rules and messages as YAML, every problem at once in line order;
errors point at the line of the decorated function.  An unknown keyword
(``@flow.step(retries=3)``) is one of those problems rather than a
``TypeError``, while type checkers still see the exact keywords.

``flow.start(client, input)`` starts a run through anything with a
``start(flow_slug, input, run_id)`` method (a :class:`pgflow.Client`, whose
handle it returns, or a :class:`pgflow.AsyncClient`, to be awaited): this
layer knows nothing of databases.
"""

from __future__ import annotations

import functools
import inspect
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from pgflow.errors import SpecError
from pgflow.options import FLOW_OPTIONS, STEP_OPTIONS, Concurrency
from pgflow.spec.model import (
    DEFAULT_WHEN_EXHAUSTED,
    DEFAULT_WHEN_UNMET,
    HANDLER_RE,
    FlowSpec,
    Origin,
    RawFlow,
    RawStep,
    Value,
    did_you_mean,
    show,
)
from pgflow.spec.signatures import handler_problem
from pgflow.spec.validate import in_line_order, validate

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
H_co = TypeVar("H_co", covariant=True)

__all__ = ["Concurrency", "Flow"]

#: A concurrency limit as the DSL takes it: a limit (``3``), a
#: :class:`~pgflow.options.Concurrency` (``Concurrency(3, key="run.tenant")``) or a
#: mapping like YAML's (``{"limit": 3, "key": "run.tenant"}``).
ConcurrencyLimit = int | Concurrency | Mapping[str, Any]

#: A dependency: a step slug or a function already decorated as a step of the flow.
Dependency = str | Callable[..., Any]

#: The keywords of ``Flow()``, ``flow.step()`` and ``flow.map()``, from the options table.
FLOW_KEYWORDS: tuple[str, ...] = tuple(o.keyword for o in FLOW_OPTIONS)
STEP_KEYWORDS: tuple[str, ...] = ("slug", *(o.keyword for o in STEP_OPTIONS if o.name != "map"))


class RunStarter(Protocol[H_co]):
    """What starts runs by flow slug (:class:`pgflow.Client`, :class:`pgflow.AsyncClient`)."""

    def start(self, flow: str, input: Any, run_id: uuid.UUID | str | None = None) -> H_co: ...


@dataclass(frozen=True)
class _StepDef:
    fn: Callable[..., Any] | None  # None: a wait step (no handler)
    slug: str
    line: int | None
    options: Mapping[str, object]
    depends_on: tuple[object, ...] | object
    unknown: Mapping[str, object] = field(default_factory=dict)


def display_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it."""
    if not os.path.isabs(path):
        return path
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith(os.pardir) else relative


def _user_frame() -> FrameType | None:
    """The innermost frame outside this module: the user code that called into it."""
    frame = inspect.currentframe()
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame


def _caller_line() -> int | None:
    """The line in user code that called ``Flow.step`` / ``Flow.map``."""
    frame = _user_frame()
    return frame.f_lineno if frame is not None else None


def _unknown_problem(name: str, allowed: Sequence[str]) -> str:
    close = did_you_mean(name, allowed).strip(" ()")
    return (
        f"unknown option {show(name)} ({close + ' ' if close else ''}allowed: {', '.join(allowed)})"
    )


def _keeps_unknown_keywords(init: Callable[P, None]) -> Callable[P, None]:
    """Let ``Flow()`` take unknown keywords and report them as spec problems.

    Type checkers and :func:`inspect.signature` still see the exact keywords.
    """
    known = set(inspect.signature(init).parameters)

    @functools.wraps(init)
    def init_noting_unknown(*args: P.args, **kwargs: P.kwargs) -> None:
        unknown = {k: kwargs.pop(k) for k in [k for k in kwargs if k not in known]}
        init(*args, **kwargs)
        flow = args[0]
        assert isinstance(flow, Flow)
        flow._unknown = unknown

    return init_noting_unknown


class Flow:
    """A flow defined in Python: create it, then decorate its step functions."""

    @_keeps_unknown_keywords
    def __init__(
        self,
        slug: str,
        *,
        max_attempts: int = 3,
        base_delay: int = 1,
        timeout: int = 60,
        step_events: bool = False,
        heartbeat: int | None = None,
        max_delay: int | None = None,
        jitter: bool = False,
        version: int | None = None,
        concurrency: ConcurrencyLimit | None = None,
    ) -> None:
        self.slug = slug
        self.version = version
        self._options: dict[str, object] = {
            "max_attempts": max_attempts,
            "base_delay": base_delay,
            "timeout": timeout,
            "step_events": step_events,
            "heartbeat": heartbeat,
            "max_delay": max_delay,
            "jitter": jitter,
            "version": version,
            "concurrency": concurrency,
        }
        self._steps: list[_StepDef] = []
        self._slugs: dict[Callable[..., Any], str] = {}
        self._unknown: Mapping[str, object] = {}
        caller = _user_frame()
        self.file = display_path(caller.f_code.co_filename) if caller else "<unknown>"
        self.line: int | None = caller.f_lineno if caller else None

    def __repr__(self) -> str:
        return f"Flow({self.slug!r}, steps={[s.slug for s in self._steps]!r})"

    @property
    def handlers(self) -> Mapping[str, Callable[..., Any]]:
        """Step slug to handler function, in definition order (wait steps have none)."""
        return {step.slug: step.fn for step in self._steps if step.fn is not None}

    @overload
    def step(self, fn: F, /) -> F: ...

    @overload
    def step(
        self,
        fn: None = None,
        /,
        *,
        slug: str | None = None,
        depends_on: Sequence[Dependency] = (),
        max_attempts: int | None = None,
        base_delay: int | None = None,
        timeout: int | None = None,
        start_delay: int | None = None,
        if_: Mapping[str, Any] | None = None,
        if_not: Mapping[str, Any] | None = None,
        when_unmet: str = DEFAULT_WHEN_UNMET,
        when_exhausted: str = DEFAULT_WHEN_EXHAUSTED,
        heartbeat: int | None = None,
        max_delay: int | None = None,
        jitter: bool | None = None,
        concurrency: ConcurrencyLimit | None = None,
    ) -> Callable[[F], F]: ...

    def step(
        self,
        fn: F | None = None,
        /,
        *,
        slug: str | None = None,
        depends_on: Sequence[Dependency] = (),
        max_attempts: int | None = None,
        base_delay: int | None = None,
        timeout: int | None = None,
        start_delay: int | None = None,
        if_: Mapping[str, Any] | None = None,
        if_not: Mapping[str, Any] | None = None,
        when_unmet: str = DEFAULT_WHEN_UNMET,
        when_exhausted: str = DEFAULT_WHEN_EXHAUSTED,
        heartbeat: int | None = None,
        max_delay: int | None = None,
        jitter: bool | None = None,
        concurrency: ConcurrencyLimit | None = None,
        **unknown: Any,
    ) -> F | Callable[[F], F]:
        """Declare a single step; its handler gets ``{"run": ..., "<dep>": ...}``.

        Use as ``@flow.step`` or ``@flow.step(...)``; the slug defaults to the
        function's name.  ``depends_on`` lists slugs or step functions.
        """
        options = {
            "max_attempts": max_attempts,
            "base_delay": base_delay,
            "timeout": timeout,
            "start_delay": start_delay,
            "if": if_,
            "if_not": if_not,
            "when_unmet": when_unmet,
            "when_exhausted": when_exhausted,
            "heartbeat": heartbeat,
            "max_delay": max_delay,
            "jitter": jitter,
            "concurrency": concurrency,
        }
        decorator = self._decorator(slug, depends_on, options, _caller_line(), unknown)
        return decorator(fn) if fn is not None else decorator

    @overload
    def map(self, fn: F, /) -> F: ...

    @overload
    def map(
        self,
        fn: None = None,
        /,
        *,
        slug: str | None = None,
        depends_on: Sequence[Dependency] = (),
        max_attempts: int | None = None,
        base_delay: int | None = None,
        timeout: int | None = None,
        start_delay: int | None = None,
        if_: Mapping[str, Any] | None = None,
        if_not: Mapping[str, Any] | None = None,
        when_unmet: str = DEFAULT_WHEN_UNMET,
        when_exhausted: str = DEFAULT_WHEN_EXHAUSTED,
        heartbeat: int | None = None,
        max_delay: int | None = None,
        jitter: bool | None = None,
        concurrency: ConcurrencyLimit | None = None,
    ) -> Callable[[F], F]: ...

    def map(
        self,
        fn: F | None = None,
        /,
        *,
        slug: str | None = None,
        depends_on: Sequence[Dependency] = (),
        max_attempts: int | None = None,
        base_delay: int | None = None,
        timeout: int | None = None,
        start_delay: int | None = None,
        if_: Mapping[str, Any] | None = None,
        if_not: Mapping[str, Any] | None = None,
        when_unmet: str = DEFAULT_WHEN_UNMET,
        when_exhausted: str = DEFAULT_WHEN_EXHAUSTED,
        heartbeat: int | None = None,
        max_delay: int | None = None,
        jitter: bool | None = None,
        concurrency: ConcurrencyLimit | None = None,
        **unknown: Any,
    ) -> F | Callable[[F], F]:
        """Declare a map step: one task per element of its source array.

        The source is the flow input (no dependency) or the output of its one
        dependency; the handler gets one element.
        """
        options = {
            "max_attempts": max_attempts,
            "base_delay": base_delay,
            "timeout": timeout,
            "start_delay": start_delay,
            "map": True,
            "if": if_,
            "if_not": if_not,
            "when_unmet": when_unmet,
            "when_exhausted": when_exhausted,
            "heartbeat": heartbeat,
            "max_delay": max_delay,
            "jitter": jitter,
            "concurrency": concurrency,
        }
        decorator = self._decorator(slug, depends_on, options, _caller_line(), unknown)
        return decorator(fn) if fn is not None else decorator

    def wait_for(
        self,
        slug: str,
        /,
        *,
        event: str,
        key: str,
        depends_on: Sequence[Dependency] = (),
        timeout: int | None = None,
        if_: Mapping[str, Any] | None = None,
        if_not: Mapping[str, Any] | None = None,
        when_unmet: str = DEFAULT_WHEN_UNMET,
        when_exhausted: str = DEFAULT_WHEN_EXHAUSTED,
    ) -> str:
        """Declare a wait step: no handler; ``emit_event(event, <key value>, payload)``
        completes it, and its output is the payload.

        ``key`` is the dotted path of the key in the step input (``run.order_id``,
        ``<dependency>.id``); ``timeout`` (seconds, default: none) is how long it
        waits before ``when_exhausted`` applies.  Returns ``slug``, for
        ``depends_on`` of later steps.
        """
        wait: dict[str, object] = {"event": event, "key": key}
        if timeout is not None:
            wait["timeout"] = timeout
        options = {
            "if": if_,
            "if_not": if_not,
            "when_unmet": when_unmet,
            "when_exhausted": when_exhausted,
            "wait_for": wait,
        }
        deps = tuple(depends_on) if isinstance(depends_on, list | tuple) else depends_on
        given = {k: v for k, v in options.items() if v is not None}
        self._steps.append(_StepDef(None, slug, _caller_line(), given, deps))
        return slug

    def subflow(
        self,
        slug: str,
        /,
        *,
        flow: str,
        map: bool = False,
        depends_on: Sequence[Dependency] = (),
        max_attempts: int | None = None,
        if_: Mapping[str, Any] | None = None,
        if_not: Mapping[str, Any] | None = None,
        when_unmet: str = DEFAULT_WHEN_UNMET,
        when_exhausted: str = DEFAULT_WHEN_EXHAUSTED,
    ) -> str:
        """Declare a sub-flow step: no handler; each of its tasks is a run of ``flow``
        (a flow name, or a definition such as ``"ingest@2"``).

        Without ``map`` one child run gets the step input and the step's output is
        the child's output; with ``map=True`` one child run starts per element of
        the source array and the output is the children's outputs in element
        order.  ``max_attempts`` is how many child runs one task may use up.
        Returns ``slug``, for ``depends_on`` of later steps.
        """
        options = {
            "flow": flow,
            "map": map or None,
            "max_attempts": max_attempts,
            "if": if_,
            "if_not": if_not,
            "when_unmet": when_unmet,
            "when_exhausted": when_exhausted,
        }
        deps = tuple(depends_on) if isinstance(depends_on, list | tuple) else depends_on
        given = {k: v for k, v in options.items() if v is not None}
        self._steps.append(_StepDef(None, slug, _caller_line(), given, deps))
        return slug

    def _decorator(
        self,
        slug: str | None,
        depends_on: object,
        options: Mapping[str, object],
        call_line: int | None,
        unknown: Mapping[str, object],
    ) -> Callable[[F], F]:
        def register(fn: F) -> F:
            step_slug = slug if slug is not None else getattr(fn, "__name__", repr(fn))
            # the decorated function's line when it is in the flow's file, else
            # the line of the flow.step(...) call (a handler defined elsewhere)
            code = getattr(fn, "__code__", None)
            same_file = code is not None and display_path(code.co_filename) == self.file
            line = code.co_firstlineno if code is not None and same_file else call_line
            deps = tuple(depends_on) if isinstance(depends_on, list | tuple) else depends_on
            given = {k: v for k, v in options.items() if v is not None}
            self._steps.append(_StepDef(fn, step_slug, line, given, deps, dict(unknown)))
            self._slugs.setdefault(fn, step_slug)
            return fn

        return register

    def _dependency(self, dep: object) -> object:
        if callable(dep) and not isinstance(dep, str):
            try:
                return self._slugs.get(dep, dep)
            except TypeError:  # an unhashable callable cannot be a registered step
                return dep
        return dep

    def raw(self, origin: Origin | None = None) -> RawFlow:
        """The flow as written, for :func:`pgflow.spec.validate.validate`."""
        origin = origin or Origin(self.file, "")
        steps: list[RawStep] = []
        for step in self._steps:
            key = getattr(step.fn, "__name__", step.slug)
            fields = {"slug": Value(step.slug, step.line, f"{key}.slug")}
            for name, option in step.options.items():
                shown = "if_" if name == "if" else name
                fields[name] = Value(option, step.line, f"{key}.{shown}")
            if step.depends_on != ():
                deps = step.depends_on
                if isinstance(deps, tuple):
                    deps = [self._dependency(d) for d in deps]
                fields["depends_on"] = Value(deps, step.line, f"{key}.depends_on")
            module = getattr(step.fn, "__module__", None)
            qualname = getattr(step.fn, "__qualname__", None)
            ref = f"{module}:{qualname}"
            handler = ref if step.fn is not None and HANDLER_RE.fullmatch(ref) else None
            steps.append(RawStep(key=key, line=step.line, fields=fields, handler=handler))
        flow_fields = {"flow": Value(self.slug, self.line, "Flow.slug")}
        for name, option in self._options.items():
            if option is not None:  # None: the option is not set (heartbeat, max_delay)
                flow_fields[name] = Value(option, self.line, f"Flow.{name}")
        return RawFlow(
            origin=origin, line=self.line, fields=flow_fields, steps=steps, key_prefix="Flow."
        )

    def spec(self, origin: Origin | None = None) -> FlowSpec:
        """The validated model; raises one :class:`~pgflow.errors.SpecError` listing every
        problem (unknown keywords included), in line order."""
        problems = self._unknown_keywords(origin or Origin(self.file, ""))
        problems.extend(self._signature_problems(origin or Origin(self.file, "")))
        try:
            spec = validate(self.raw(origin))
        except SpecError as exc:
            raise SpecError.collect(in_line_order([*problems, *exc.errors])) from None
        if problems:
            raise SpecError.collect(in_line_order(problems))
        return spec

    def _unknown_keywords(self, origin: Origin) -> list[SpecError]:
        problems = [
            SpecError(origin.file, self.line, f"Flow.{name}", _unknown_problem(name, FLOW_KEYWORDS))
            for name in self._unknown
        ]
        for step in self._steps:
            key = getattr(step.fn, "__name__", step.slug)
            problems.extend(
                SpecError(
                    origin.file, step.line, f"{key}.{name}", _unknown_problem(name, STEP_KEYWORDS)
                )
                for name in step.unknown
            )
        return problems

    def step_dependencies(self, step_slug: str) -> tuple[str, ...]:
        """The slugs a step depends on, as written (functions resolved to their slugs)."""
        for step in self._steps:
            if step.slug == step_slug and isinstance(step.depends_on, tuple):
                deps = (self._dependency(d) for d in step.depends_on)
                return tuple(d for d in deps if isinstance(d, str))
        return ()

    def _signature_problems(self, origin: Origin) -> list[SpecError]:
        """Handlers the worker could not call (wrong arity), at the decorated function's line."""
        problems: list[SpecError] = []
        for step in self._steps:
            if step.fn is None:  # a wait step
                continue
            is_map = step.options.get("map") is True
            deps = self.step_dependencies(step.slug)
            problem = handler_problem(step.fn, is_map=is_map, deps=deps)
            if problem is not None:
                key = getattr(step.fn, "__name__", step.slug)
                problems.append(SpecError(origin.file, step.line, f"{key}.handler", problem))
        return problems

    def start(
        self, client: RunStarter[H_co], input: Any, run_id: uuid.UUID | str | None = None
    ) -> H_co:
        """Start a run of this flow through ``client``: ``client.start(self.slug, input, run_id)``.

        With a :class:`pgflow.Client` this returns its :class:`pgflow.RunHandle`;
        with a :class:`pgflow.AsyncClient`, a coroutine to await for one.
        """
        return client.start(self.slug, input, run_id)
