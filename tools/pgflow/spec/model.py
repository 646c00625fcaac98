"""The flow model: validated specs, the raw input they come from, and helpers.

Both front ends (YAML in :mod:`pgflow.spec.yaml_loader`, Python in
:mod:`pgflow.spec.dsl`) describe a flow as a :class:`RawFlow`: the keys the
user wrote, each with the line and key path it came from.
:func:`pgflow.spec.validate.validate` checks a raw flow against the rules of
the SQL API (the same rules, the same limits) and returns a frozen
:class:`FlowSpec` whose steps are in topological order.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pgflow.options import (
    FLOW_DEFAULTS,
    FLOW_KEYS,
    INTEGER_MAXIMUM,
    OPTION_MINIMUMS,
    STEP_KEYS,
    WHEN_EXHAUSTED,
    WHEN_UNMET,
    Concurrency,
    step_option,
)

__all__ = [
    "FLOW_DEFAULTS",
    "FLOW_KEYS",
    "OPTION_MINIMUMS",
    "STEP_KEYS",
    "WHEN_EXHAUSTED",
    "WHEN_UNMET",
    "Concurrency",
    "FlowSpec",
    "Origin",
    "RawFlow",
    "RawStep",
    "StepSpec",
    "Value",
]

SLUG_RE: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*")
SLUG_MAX_LEN: Final = 128
RESERVED_SLUGS: Final = frozenset({"run"})
HANDLER_RE: Final = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
)

#: Largest value of any integer option: PostgreSQL's integer.
OPTION_MAXIMUM: Final = INTEGER_MAXIMUM
DEFAULT_WHEN_UNMET: Final = str(step_option("when_unmet").default)
DEFAULT_WHEN_EXHAUSTED: Final = str(step_option("when_exhausted").default)
#: Deepest nesting accepted in a condition pattern.
PATTERN_MAX_DEPTH: Final = 64


def definition_slug(name: str, version: int | None) -> str:
    """``order`` (version 1 or none) or ``order@3``: how the database names a definition."""
    return name if version is None or version == 1 else f"{name}@{version}"


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
    heartbeat: int | None = None
    max_delay: int | None = None
    jitter: bool | None = None
    #: at most this many of the step's tasks at once (replaces the flow's limit)
    concurrency: Concurrency | None = None
    #: a wait step (YAML ``wait_for``, :meth:`Flow.wait_for`): the event it waits
    #: for and the dotted path of its key in the step input (``run.order_id``)
    wait_event: str | None = None
    wait_key: str | None = None
    #: a sub-flow step (YAML ``flow``, :meth:`Flow.subflow`): the flow each of
    #: its tasks runs (a name, or a definition slug such as ``ingest@2``)
    subflow: str | None = None
    handler: str | None = field(default=None, compare=False)
    line: int | None = field(default=None, compare=False)

    @property
    def step_type(self) -> str:
        """``'map'``, ``'single'`` or ``'wait'``, as ``pgflow.add_step`` names it."""
        if self.wait_event is not None:
            return "wait"
        return "map" if self.map else "single"

    @property
    def waits(self) -> bool:
        """Whether this is a wait step (no handler; completed by ``emit_event``)."""
        return self.wait_event is not None

    @property
    def runs_subflow(self) -> bool:
        """Whether this is a sub-flow step (no handler; each task is a child run)."""
        return self.subflow is not None

    @property
    def subflow_name(self) -> str | None:
        """The name of the flow a sub-flow step runs, without a version (``ingest``
        for ``ingest@2``); ``None`` for other steps."""
        return None if self.subflow is None else self.subflow.split("@")[0]

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
    heartbeat: int | None = None
    max_delay: int | None = None
    jitter: bool = False
    version: int | None = None
    #: at most this many tasks of the flow at once (per value of a run.<field> key)
    concurrency: Concurrency | None = None
    origin: Origin = field(default=Origin("<memory>", ""), compare=False)
    line: int | None = field(default=None, compare=False)

    @property
    def definition_slug(self) -> str:
        """The slug of this definition in the database: the name for version 1
        (or none), ``<name>@N`` for version N >= 2."""
        return definition_slug(self.slug, self.version)

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
