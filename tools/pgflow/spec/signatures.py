"""Which handler signatures the worker can call, checked before any task runs.

A handler is called in one of three ways (docs/howto/typed-handlers.md):

* ``input`` -- one positional parameter: the step's input (``{"run": ...,
  "<dependency>": ...}`` for a single step, one element for a map step);
* ``input+context`` -- two positional parameters: the input and the
  :class:`pgflow.Context`;
* ``keywords`` (single steps only) -- every parameter is named ``run`` or
  after a dependency slug and receives that part of the input; one more
  parameter named ``ctx`` / ``context`` (or annotated ``Context``) receives the
  Context.

:func:`handler_problem` says what is wrong with a handler that fits none
(``def f()``, ``def f(a, b, c)``, ``def f(input, retries=3)``), and
:func:`classify` which way a fitting one is called.  ``pgflow-build`` checks
the handlers of Python specs, the worker every handler at start.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pgflow.errors import SpecError

CONTEXT_NAMES: Final = ("ctx", "context")

Form = Literal["input", "input+context", "keywords"]


@dataclass(frozen=True)
class Shape:
    """How a handler is called: its form and, for ``keywords``, which names it takes.

    ``names`` are the input keys passed by name (``run`` and dependency slugs);
    ``context`` the parameter name that receives the Context (``None``: none);
    ``rest`` whether a ``**kwargs`` parameter takes the keys not named.
    """

    form: Form
    names: tuple[str, ...] = ()
    context: str | None = None
    rest: bool = False


def is_context_parameter(param: inspect.Parameter) -> bool:
    """A parameter meant for the Context: named ``ctx``/``context`` or annotated ``Context``."""
    annotation = param.annotation
    shown = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return param.name in CONTEXT_NAMES or shown.rsplit(".", 1)[-1] == "Context"


def _allowed(name: str, *, is_map: bool, deps: Sequence[str]) -> str:
    forms = f"def {name}(input) or def {name}(input, ctx)"
    if is_map:
        return f"a map step's handler takes one element: {forms}"
    keys = ", ".join(["run", *deps])
    return f"a step handler is {forms}, or takes keyword arguments named {keys} (and ctx)"


def classify(fn: Callable[..., Any], *, is_map: bool, deps: Sequence[str]) -> Shape:
    """How the worker calls ``fn``; :class:`ValueError` saying what is allowed if it cannot."""
    name = getattr(fn, "__name__", "handler")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return Shape("input")  # a builtin or C callable: trust it, as before
    allowed = _allowed(name, is_map=is_map, deps=deps)
    keys = ("run", *deps)
    var_positional = any(p.kind is p.VAR_POSITIONAL for p in params)
    var_keyword = any(p.kind is p.VAR_KEYWORD for p in params)
    named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    if not is_map and named and not var_positional:
        data = [p for p in named if not is_context_parameter(p)]
        contexts = [p for p in named if is_context_parameter(p)]
        if (
            data
            and all(p.name in keys for p in data)
            and all(p.kind is not p.POSITIONAL_ONLY for p in named)
            and len(contexts) <= 1
        ):
            return Shape(
                "keywords",
                names=tuple(p.name for p in data),
                context=contexts[0].name if contexts else None,
                rest=var_keyword,
            )

    positional = [p for p in named if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required_kw = [p for p in named if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if required_kw:
        raise ValueError(
            f"{name}() has a required keyword-only parameter {required_kw[0].name!r}"
            f" the worker does not pass; {allowed}"
        )
    if not positional:
        if var_positional:
            return Shape("input+context")
        raise ValueError(f"{name}() takes no parameters; {allowed}")
    if len(positional) > 2:
        extra = ", ".join(p.name for p in positional[2:])
        raise ValueError(
            f"{name}() takes {len(positional)} positional parameters; the worker passes at most"
            f" two (the input and the Context), not {extra}; {allowed}"
        )
    if len(positional) == 2:
        second = positional[1]
        if second.default is not second.empty and not is_context_parameter(second):
            raise ValueError(
                f"{name}() has a second parameter {second.name!r} with a default: the worker"
                f" would pass the Context as {second.name!r}; make it keyword-only"
                f" (def {name}(input, *, {second.name}=...)) or name it ctx; {allowed}"
            )
        return Shape("input+context", context=second.name)
    if var_positional:
        return Shape("input+context")
    return Shape("input")


def handler_problem(fn: Callable[..., Any], *, is_map: bool, deps: Sequence[str]) -> str | None:
    """What is wrong with ``fn`` as a handler (``None``: the worker can call it)."""
    try:
        classify(fn, is_map=is_map, deps=deps)
    except ValueError as exc:
        return str(exc)
    return None


def where_defined(fn: Callable[..., Any]) -> tuple[str, int | None]:
    """The file and line a handler function is defined at (``<unknown>`` if it has none)."""
    target = inspect.unwrap(fn)
    code = getattr(target, "__code__", None)
    if code is None:
        return getattr(fn, "__module__", None) or "<unknown>", None
    return code.co_filename, code.co_firstlineno


def check_handlers(
    handlers: Sequence[tuple[str, Callable[..., Any], bool, Sequence[str]]],
    display: Callable[[str], str] = lambda path: path,
) -> None:
    """Raise one :class:`SpecError` for every ``(step, fn, is_map, deps)`` that cannot be called."""
    problems: list[SpecError] = []
    for step, fn, is_map, deps in handlers:
        problem = handler_problem(fn, is_map=is_map, deps=deps)
        if problem is not None:
            file, line = where_defined(fn)
            problems.append(SpecError(display(file), line, f"{step}.handler", problem))
    if problems:
        raise SpecError.collect(problems)
