"""The flow model and its validation.

Both front ends (YAML in :mod:`pgflow.yaml_loader`, Python in :mod:`pgflow.dsl`)
describe a flow as a :class:`RawFlow`: the keys the user wrote, each with the
line and key path it came from.  :func:`validate` checks a raw flow against the
rules of the SQL API (the same rules, the same limits) and returns a frozen
:class:`FlowSpec` whose steps are in topological order, or raises one
:class:`~pgflow.errors.SpecError` listing every problem it found.
"""

from __future__ import annotations

import difflib
import heapq
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pgflow.errors import SpecError

SLUG_RE: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*")
SLUG_MAX_LEN: Final = 128
RESERVED_SLUGS: Final = frozenset({"run"})
HANDLER_RE: Final = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
)

#: Flow defaults, as in ``pgflow.create_flow``.
FLOW_DEFAULTS: Final[Mapping[str, int | bool]] = {
    "max_attempts": 3,
    "base_delay": 1,
    "timeout": 60,
    "step_events": False,
}
#: Smallest allowed value of each integer option (seconds for delays and timeouts).
OPTION_MINIMUMS: Final[Mapping[str, int]] = {
    "max_attempts": 1,
    "base_delay": 1,
    "timeout": 3,
    "start_delay": 0,
}
#: Largest value of any integer option: PostgreSQL's integer.
OPTION_MAXIMUM: Final = 2**31 - 1
WHEN_UNMET: Final = ("skip", "skip-cascade", "fail")
WHEN_EXHAUSTED: Final = ("fail", "skip", "skip-cascade")
DEFAULT_WHEN_UNMET: Final = "skip"
DEFAULT_WHEN_EXHAUSTED: Final = "fail"

#: Keys of a flow (YAML spelling).
FLOW_KEYS: Final = ("flow", "max_attempts", "base_delay", "timeout", "step_events", "steps")
#: Keys of a step (YAML spelling).
STEP_KEYS: Final = (
    "slug",
    "depends_on",
    "max_attempts",
    "base_delay",
    "timeout",
    "start_delay",
    "map",
    "if",
    "if_not",
    "when_unmet",
    "when_exhausted",
    "handler",
)
#: Deepest nesting accepted in a condition pattern.
PATTERN_MAX_DEPTH: Final = 64


@dataclass(frozen=True)
class Origin:
    """Where a flow was defined: the spec file as the user named it, and its SHA-256."""

    file: str
    sha256: str


@dataclass(frozen=True)
class StepSpec:
    """One validated step.

    Options left ``None`` inherit the flow's.  Condition patterns are kept as
    canonical JSON text (sorted keys) so the model is immutable and hashable;
    :attr:`if_` / :attr:`if_not` give them back as objects.  ``handler`` is a
    ``"module:function"`` reference (YAML) or the decorated function's
    (Python); it does not take part in equality, like the source location.
    """

    slug: str
    depends_on: tuple[str, ...] = ()
    max_attempts: int | None = None
    base_delay: int | None = None
    timeout: int | None = None
    start_delay: int | None = None
    map: bool = False
    required_input_pattern: str | None = None
    forbidden_input_pattern: str | None = None
    when_unmet: str = DEFAULT_WHEN_UNMET
    when_exhausted: str = DEFAULT_WHEN_EXHAUSTED
    handler: str | None = field(default=None, compare=False)
    line: int | None = field(default=None, compare=False)

    @property
    def step_type(self) -> str:
        """``'map'`` or ``'single'``, as ``pgflow.add_step`` names it."""
        return "map" if self.map else "single"

    @property
    def if_(self) -> dict[str, Any] | None:
        """The ``if`` pattern as an object (``None`` when unset)."""
        return _loads(self.required_input_pattern)

    @property
    def if_not(self) -> dict[str, Any] | None:
        """The ``if_not`` pattern as an object (``None`` when unset)."""
        return _loads(self.forbidden_input_pattern)

    @property
    def conditional(self) -> bool:
        """Whether the step has a condition."""
        return self.required_input_pattern is not None or self.forbidden_input_pattern is not None


@dataclass(frozen=True)
class FlowSpec:
    """One validated flow; ``steps`` are in topological order (ties keep spec order)."""

    slug: str
    steps: tuple[StepSpec, ...]
    max_attempts: int = 3
    base_delay: int = 1
    timeout: int = 60
    step_events: bool = False
    origin: Origin = field(default=Origin("<memory>", ""), compare=False)
    line: int | None = field(default=None, compare=False)

    def step(self, slug: str) -> StepSpec:
        """The step named ``slug`` (``KeyError`` if there is none)."""
        for step in self.steps:
            if step.slug == slug:
                return step
        raise KeyError(slug)

    @property
    def handlers(self) -> Mapping[str, str]:
        """Step slug to ``"module:function"`` for the steps that name a handler."""
        return {s.slug: s.handler for s in self.steps if s.handler is not None}


# --------------------------------------------------------------------------- raw input


@dataclass(frozen=True)
class Value:
    """A value as written, with the line and key path it came from.

    ``items`` locates the elements of a list value (empty when unknown).
    """

    value: object
    line: int | None
    key: str
    items: tuple[Value, ...] = ()


@dataclass(frozen=True)
class RawStep:
    """A step as written: its keys (YAML spelling) with their locations.

    ``key`` is the path that prefixes its keys in messages (``steps[2]`` in
    YAML, the function name in Python).  ``handler`` is set by the Python front
    end (the decorated function); YAML uses the ``handler`` key instead.
    """

    key: str
    line: int | None
    fields: Mapping[str, Value]
    handler: str | None = None


@dataclass(frozen=True)
class RawFlow:
    """A flow as written, before validation.

    ``steps`` is ``None`` when the spec has no steps at all; ``steps_value``
    locates the ``steps`` key when there is one; ``key_prefix`` prefixes the
    flow's own keys in messages (``Flow.`` for Python specs).
    """

    origin: Origin
    line: int | None
    fields: Mapping[str, Value]
    steps: Sequence[RawStep] | None
    steps_value: Value | None = None
    key_prefix: str = ""


# --------------------------------------------------------------------------- helpers


def _loads(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


def show(value: object, limit: int = 60) -> str:
    """A value as it appears in a message: one line, JSON-like, shortened when long."""
    if isinstance(value, str):
        text = value if len(value) <= limit else value[:limit] + "…"
        rendered = json.dumps(text, ensure_ascii=False)
        return rendered.encode("utf-8", "backslashreplace").decode("utf-8")
    return describe(value)


def describe(value: object) -> str:
    """Name the type of a value the way a YAML or JSON user thinks of it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {show(value)}"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean "x"?)`` for the closest choice, or an empty string."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {show(matches[0])}?)" if matches else ""


def slug_problem(slug: str) -> str | None:
    """Why ``slug`` is not a valid flow or step slug, or ``None`` if it is valid."""
    if slug == "":
        return "it is empty"
    if len(slug) > SLUG_MAX_LEN:
        return f"it is {len(slug)} characters long (at most {SLUG_MAX_LEN})"
    if slug in RESERVED_SLUGS:
        return f"{show(slug)} is reserved (it names the flow input in step inputs)"
    if not ("a" <= slug[0].lower() <= "z"):
        return "it must start with a letter"
    bad = next((c for c in slug if not (c.isascii() and (c.isalnum() or c == "_"))), None)
    if bad is not None:
        return f"character {show(bad)} is not allowed"
    return None


def pattern_problem(value: object) -> str | None:
    """Why ``value`` cannot be a condition pattern (a JSON object), or ``None``."""
    if not isinstance(value, Mapping):
        return f"must be a mapping (a JSON object), got {describe(value)}"
    return _json_problem(value, 0)


def _json_problem(value: object, depth: int) -> str | None:
    if depth > PATTERN_MAX_DEPTH:
        return f"is nested more than {PATTERN_MAX_DEPTH} levels deep"
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"contains {value!r}, which JSON cannot represent"
    if isinstance(value, str):
        return _text_problem(value)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"has a key that is not a string: {describe(key)}"
            problem = _text_problem(key) or _json_problem(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        for item in value:
            problem = _json_problem(item, depth + 1)
            if problem:
                return problem
        return None
    return f"contains a {describe(value)}, which JSON cannot represent"


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains the NUL character, which PostgreSQL cannot store"
    if any("\ud800" <= c <= "\udfff" for c in text):
        return "contains a lone surrogate, which is not valid Unicode"
    return None


def canonical_json(value: object) -> str:
    """Deterministic JSON text of a pattern: sorted keys, readable UTF-8.

    Characters that do not print (line and paragraph separators, format
    characters, non-ASCII spaces) are written as ``\\uXXXX`` escapes, so the
    generated SQL holds no invisible characters and no line breaks in literals.
    """
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))
    return "".join(c if c.isprintable() else _json_escape(c) for c in text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


# --------------------------------------------------------------------------- validation


class _Checker:
    """Collects the problems of one raw flow."""

    def __init__(self, raw: RawFlow) -> None:
        self.raw = raw
        self.errors: list[SpecError] = []

    def error(self, line: int | None, key: str, message: str) -> None:
        self.errors.append(SpecError(self.raw.origin.file, line, key, message))

    def unknown_keys(self, fields: Mapping[str, Value], allowed: Sequence[str]) -> None:
        for name, value in fields.items():
            if name not in allowed:
                hint = did_you_mean(name, allowed) or f" (allowed: {', '.join(allowed)})"
                self.error(value.line, value.key, f"unknown key{hint}")

    def slug(self, value: Value) -> str | None:
        if not isinstance(value.value, str):
            self.error(value.line, value.key, f"must be a string, got {describe(value.value)}")
            return None
        problem = slug_problem(value.value)
        if problem:
            self.error(value.line, value.key, f"invalid slug {show(value.value)}: {problem}")
            return None
        return value.value

    def option(self, fields: Mapping[str, Value], name: str) -> int | None:
        value = fields.get(name)
        if value is None:
            return None
        minimum = OPTION_MINIMUMS[name]
        if not isinstance(value.value, int) or isinstance(value.value, bool):
            self.error(
                value.line,
                value.key,
                f"must be an integer >= {minimum}, got {describe(value.value)}",
            )
            return None
        if value.value < minimum:
            self.error(value.line, value.key, f"must be >= {minimum}, got {value.value}")
            return None
        if value.value > OPTION_MAXIMUM:
            self.error(value.line, value.key, f"must be <= {OPTION_MAXIMUM}, got {value.value}")
            return None
        return value.value

    def boolean(self, fields: Mapping[str, Value], name: str) -> bool | None:
        value = fields.get(name)
        if value is None:
            return None
        if not isinstance(value.value, bool):
            self.error(value.line, value.key, f"must be true or false, got {describe(value.value)}")
            return None
        return value.value

    def choice(self, fields: Mapping[str, Value], name: str, choices: Sequence[str]) -> str | None:
        value = fields.get(name)
        if value is None:
            return None
        allowed = ", ".join(choices)
        if not isinstance(value.value, str):
            self.error(
                value.line, value.key, f"must be one of {allowed}, got {describe(value.value)}"
            )
            return None
        if value.value not in choices:
            hint = did_you_mean(value.value, choices)
            self.error(
                value.line,
                value.key,
                f"invalid mode {show(value.value)}{hint}; use one of {allowed}",
            )
            return None
        return value.value

    def pattern(self, fields: Mapping[str, Value], name: str) -> str | None:
        value = fields.get(name)
        if value is None:
            return None
        problem = pattern_problem(value.value)
        if problem:
            self.error(value.line, value.key, problem)
            return None
        return canonical_json(value.value)

    def handler(self, fields: Mapping[str, Value]) -> str | None:
        value = fields.get("handler")
        if value is None:
            return None
        if not isinstance(value.value, str) or not HANDLER_RE.fullmatch(value.value):
            self.error(
                value.line,
                value.key,
                f'must look like "package.module:function", got {describe(value.value)}',
            )
            return None
        return value.value

    def depends_on(self, fields: Mapping[str, Value]) -> list[tuple[str, Value]]:
        value = fields.get("depends_on")
        if value is None:
            return []
        if not isinstance(value.value, list | tuple):
            hint = (
                f" (write [{value.value}])" if isinstance(value.value, str) and value.value else ""
            )
            self.error(
                value.line,
                value.key,
                f"must be a list of step slugs, got {describe(value.value)}{hint}",
            )
            return []
        deps: list[tuple[str, Value]] = []
        for index, item in enumerate(value.value):
            where = value.items[index] if index < len(value.items) else value
            if not isinstance(item, str):
                self.error(where.line, value.key, f"must list step slugs, got {describe(item)}")
                continue
            deps.append((item, where))
        return deps


@dataclass
class _Draft:
    raw: RawStep
    index: int
    slug: str | None
    deps: list[tuple[str, Value]]
    step: dict[str, Any]


def validate(raw: RawFlow) -> FlowSpec:
    """Check a raw flow and build its model; raise one SpecError listing every problem."""
    check = _Checker(raw)
    prefix = raw.key_prefix
    check.unknown_keys(raw.fields, FLOW_KEYS)

    flow_slug: str | None = None
    slug_value = raw.fields.get("flow")
    if slug_value is None:
        check.error(raw.line, f"{prefix}flow", "missing: name the flow, e.g. flow: my_flow")
    else:
        flow_slug = check.slug(slug_value)
    flow_opts: dict[str, Any] = {}
    for name in ("max_attempts", "base_delay", "timeout"):
        number = check.option(raw.fields, name)
        if number is not None:
            flow_opts[name] = number
    step_events = check.boolean(raw.fields, "step_events")
    if step_events is not None:
        flow_opts["step_events"] = step_events

    if raw.steps is None:
        check.error(raw.line, f"{prefix}steps", "missing: a flow needs at least one step")
    elif not raw.steps:
        line = raw.steps_value.line if raw.steps_value else raw.line
        check.error(line, f"{prefix}steps", "is empty: a flow needs at least one step")

    drafts: list[_Draft] = []
    for index, raw_step in enumerate(raw.steps or ()):
        drafts.append(_check_step(check, raw_step, index))

    if check.errors:
        raise SpecError.collect(check.errors)
    ordered = _check_graph(check, drafts)
    if check.errors:
        raise SpecError.collect(check.errors)

    assert flow_slug is not None
    steps = tuple(StepSpec(**drafts[i].step) for i in ordered)
    return FlowSpec(slug=flow_slug, steps=steps, origin=raw.origin, line=raw.line, **flow_opts)


def _check_step(check: _Checker, raw: RawStep, index: int) -> _Draft:
    fields = raw.fields
    check.unknown_keys(fields, STEP_KEYS)
    slug: str | None = None
    if "slug" not in fields:
        check.error(raw.line, f"{raw.key}.slug", "missing: every step needs a slug")
    else:
        slug = check.slug(fields["slug"])
    step: dict[str, Any] = {"slug": slug, "line": raw.line}
    for name in ("max_attempts", "base_delay", "timeout", "start_delay"):
        step[name] = check.option(fields, name)
    step["map"] = bool(check.boolean(fields, "map"))
    step["required_input_pattern"] = check.pattern(fields, "if")
    step["forbidden_input_pattern"] = check.pattern(fields, "if_not")
    step["when_unmet"] = check.choice(fields, "when_unmet", WHEN_UNMET) or DEFAULT_WHEN_UNMET
    step["when_exhausted"] = (
        check.choice(fields, "when_exhausted", WHEN_EXHAUSTED) or DEFAULT_WHEN_EXHAUSTED
    )
    step["handler"] = raw.handler if raw.handler is not None else check.handler(fields)
    deps = check.depends_on(fields)
    return _Draft(raw=raw, index=index, slug=slug, deps=deps, step=step)


def _check_graph(check: _Checker, drafts: list[_Draft]) -> list[int]:
    """Duplicates, dependencies, map arity and cycles; the topological order of drafts."""
    by_slug: dict[str, _Draft] = {}
    for draft in drafts:
        assert draft.slug is not None
        first = by_slug.get(draft.slug)
        if first is not None:
            slug_value = draft.raw.fields["slug"]
            at = f" (first defined at line {first.raw.line})" if first.raw.line else ""
            check.error(
                slug_value.line, slug_value.key, f"duplicate step slug {show(draft.slug)}{at}"
            )
            continue
        by_slug[draft.slug] = draft

    for draft in drafts:
        seen: set[str] = set()
        deps_value = draft.raw.fields.get("depends_on")
        for dep, where in draft.deps:
            key = deps_value.key if deps_value else f"{draft.raw.key}.depends_on"
            if dep in seen:
                check.error(where.line, key, f"lists {show(dep)} more than once")
            elif dep == draft.slug:
                check.error(where.line, key, f"step {show(dep)} cannot depend on itself")
            elif dep not in by_slug:
                hint = did_you_mean(dep, [s for s in by_slug if s != draft.slug])
                check.error(where.line, key, f"unknown step {show(dep)}{hint}")
            seen.add(dep)
        if draft.step["map"] and len(draft.deps) > 1:
            assert deps_value is not None
            names = ", ".join(dep for dep, _ in draft.deps)
            check.error(
                deps_value.line,
                deps_value.key,
                f"a map step takes its array from at most one dependency, got {len(draft.deps)}"
                f" ({names})",
            )
        draft.step["depends_on"] = tuple(dep for dep, _ in draft.deps)
    if check.errors:
        return []

    cycle = _find_cycle(drafts, by_slug)
    if cycle:
        start = by_slug[cycle[0]]
        deps_value = start.raw.fields.get("depends_on")
        line = deps_value.line if deps_value else start.raw.line
        key = deps_value.key if deps_value else f"{start.raw.key}.depends_on"
        check.error(line, key, "dependency cycle: " + " -> ".join(cycle))
        return []
    return _topological_order(drafts, by_slug)


def _find_cycle(drafts: list[_Draft], by_slug: Mapping[str, _Draft]) -> list[str] | None:
    """The first cycle met walking the steps in spec order, as slugs ending where it starts."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(by_slug, white)
    for root in drafts:
        assert root.slug is not None
        if colour[root.slug] != white:
            continue
        path: list[str] = [root.slug]
        stack = [iter(root.step["depends_on"])]
        colour[root.slug] = grey
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                colour[path.pop()] = black
                stack.pop()
            elif colour[dep] == grey:
                cycle = path[path.index(dep) :]
                # read "a -> b" as "b depends on a" (the order steps would run in,
                # the direction of `pgflow graph` arrows); start at the step
                # listed first in the spec so the message is stable
                cycle.reverse()
                first = min(range(len(cycle)), key=lambda i: by_slug[cycle[i]].index)
                cycle = cycle[first:] + cycle[:first]
                return [*cycle, cycle[0]]
            elif colour[dep] == white:
                colour[dep] = grey
                path.append(dep)
                stack.append(iter(by_slug[dep].step["depends_on"]))
    return None


def _topological_order(drafts: list[_Draft], by_slug: Mapping[str, _Draft]) -> list[int]:
    """Kahn's algorithm; among ready steps the earliest in the spec goes first."""
    waiting = {d.index: len(d.step["depends_on"]) for d in drafts}
    dependents: dict[str, list[int]] = {slug: [] for slug in by_slug}
    for draft in drafts:
        for dep in draft.step["depends_on"]:
            dependents[dep].append(draft.index)
    ready = [index for index, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        slug = drafts[index].slug
        assert slug is not None
        for dependent in dependents[slug]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, dependent)
    return order
