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
with the same rules and messages as YAML; errors point at the line of the
decorated function.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from pgflow.spec.model import (
    DEFAULT_WHEN_EXHAUSTED,
    DEFAULT_WHEN_UNMET,
    HANDLER_RE,
    FlowSpec,
    Origin,
    RawFlow,
    RawStep,
    Value,
)
from pgflow.spec.validate import validate

F = TypeVar("F", bound=Callable[..., Any])

#: A dependency: a step slug or a function already decorated as a step of the flow.
Dependency = str | Callable[..., Any]


@dataclass(frozen=True)
class _StepDef:
    fn: Callable[..., Any]
    slug: str
    line: int | None
    options: Mapping[str, object]
    depends_on: tuple[object, ...] | object


def display_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it."""
    if not os.path.isabs(path):
        return path
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith(os.pardir) else relative


def _caller_line() -> int | None:
    """The line in user code that called ``Flow.step`` / ``Flow.map``."""
    frame = inspect.currentframe()
    for _ in range(2):
        frame = frame.f_back if frame is not None else None
    return frame.f_lineno if frame is not None else None


class Flow:
    """A flow defined in Python: create it, then decorate its step functions."""

    def __init__(
        self,
        slug: str,
        *,
        max_attempts: int = 3,
        base_delay: int = 1,
        timeout: int = 60,
        step_events: bool = False,
    ) -> None:
        self.slug = slug
        self._options: dict[str, object] = {
            "max_attempts": max_attempts,
            "base_delay": base_delay,
            "timeout": timeout,
            "step_events": step_events,
        }
        self._steps: list[_StepDef] = []
        self._slugs: dict[Callable[..., Any], str] = {}
        caller = inspect.currentframe()
        caller = caller.f_back if caller is not None else None
        self.file = display_path(caller.f_code.co_filename) if caller else "<unknown>"
        self.line: int | None = caller.f_lineno if caller else None

    def __repr__(self) -> str:
        return f"Flow({self.slug!r}, steps={[s.slug for s in self._steps]!r})"

    @property
    def handlers(self) -> Mapping[str, Callable[..., Any]]:
        """Step slug to handler function, in definition order."""
        return {step.slug: step.fn for step in self._steps}

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
        }
        decorator = self._decorator(slug, depends_on, options, _caller_line())
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
        }
        decorator = self._decorator(slug, depends_on, options, _caller_line())
        return decorator(fn) if fn is not None else decorator

    def _decorator(
        self,
        slug: str | None,
        depends_on: object,
        options: Mapping[str, object],
        call_line: int | None,
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
            self._steps.append(_StepDef(fn, step_slug, line, given, deps))
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
            handler = ref if HANDLER_RE.fullmatch(ref) else None
            steps.append(RawStep(key=key, line=step.line, fields=fields, handler=handler))
        flow_fields = {"flow": Value(self.slug, self.line, "Flow.slug")}
        for name, option in self._options.items():
            flow_fields[name] = Value(option, self.line, f"Flow.{name}")
        return RawFlow(
            origin=origin, line=self.line, fields=flow_fields, steps=steps, key_prefix="Flow."
        )

    def spec(self, origin: Origin | None = None) -> FlowSpec:
        """The validated model (raises :class:`~pgflow.errors.SpecError`)."""
        return validate(self.raw(origin))
