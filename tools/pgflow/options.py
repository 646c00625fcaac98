"""The one table of flow and step options.

Every option a flow or step can carry is one :class:`Option` row below: how it
is spelled in YAML, as a keyword of the Python DSL, as an argument of
``pgflow.create_flow`` / ``pgflow.add_step`` and as a key of
``pgflow.flow_shape``; its default, its smallest value, and whether it is part
of the flow's *structure* (immutable once defined) or a *tunable* (updated in
place).  The validator, the DSL, the compiler's template, the worker's shape
check and the docs read this table; ``tests/py/unit/test_options_table.py``
holds it against the SQL functions' real argument defaults in the catalog, the
DSL signatures, the YAML keys and the template.

Adding an option: a row here, the argument in ``extension/src`` (and the
upgrade script), and a keyword in :mod:`pgflow.spec.dsl` -- the test names
whatever else is missing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

Kind = Literal["integer", "boolean", "choice", "pattern", "deps", "map", "concurrency"]

#: Largest value of any integer option: PostgreSQL's ``integer``.
INTEGER_MAXIMUM: Final = 2**31 - 1

WHEN_UNMET: Final = ("skip", "skip-cascade", "fail")
WHEN_EXHAUSTED: Final = ("fail", "skip", "skip-cascade")


@dataclass(frozen=True)
class Concurrency:
    """A concurrency limit: at most ``limit`` tasks hold a slot at once, per distinct
    value of ``key`` (a dotted path into the task's input, e.g. ``run.tenant``;
    ``None``: one limit for all).  YAML ``concurrency: 3`` or
    ``concurrency: {limit: 3, key: run.tenant}``; Python ``concurrency=3`` or
    ``concurrency=Concurrency(3, key="run.tenant")``."""

    limit: int
    key: str | None = None


@dataclass(frozen=True)
class Option:
    """One flow or step option.

    ``name`` is the attribute of :class:`~pgflow.spec.model.FlowSpec` /
    :class:`~pgflow.spec.model.StepSpec`.  ``default`` is the value SQL uses
    when the argument is left out (for step tunables ``None``: inherit the
    flow's).  ``shape_key`` names the option in ``pgflow.flow_shape``'s step
    objects when the worker compares it (structural options only).
    ``extra_sql`` names further SQL arguments the one YAML key sets, after ``sql``
    (``concurrency`` sets ``concurrency`` and ``concurrency_key``; see
    :func:`sql_arguments`).  ``engine_only``: a tunable the database applies by
    itself, which the worker never reads (``flow_shape`` leaves it out).
    """

    name: str
    yaml: str
    keyword: str
    sql: str
    kind: Kind
    default: object
    structural: bool
    minimum: int | None = None
    choices: tuple[str, ...] = ()
    shape_key: str | None = None
    doc: str = ""
    extra_sql: tuple[str, ...] = ()
    engine_only: bool = False

    @property
    def tunable(self) -> bool:
        """Changeable in place (``not structural``)."""
        return not self.structural


FLOW_OPTIONS: Final[tuple[Option, ...]] = (
    Option(
        "max_attempts", "max_attempts", "max_attempts", "max_attempts", "integer", 3, False, 1,
        doc="attempts per task, the first included",
    ),
    Option(
        "base_delay", "base_delay", "base_delay", "base_delay", "integer", 1, False, 1,
        doc="seconds before the first retry; doubles with each further attempt",
    ),
    Option(
        "timeout", "timeout", "timeout", "timeout", "integer", 60, False, 3,
        doc="seconds one attempt may run",
    ),
    Option(
        "step_events", "step_events", "step_events", "step_events", "boolean", False, False,
        doc="also NOTIFY step:<slug>:<status> events on pgflow_events",
    ),
    Option(
        "heartbeat", "heartbeat", "heartbeat", "heartbeat", "integer", None, False, 1,
        doc="seconds of a renewable lease: a dead worker is noticed within about twice this",
    ),
    Option(
        "max_delay", "max_delay", "max_delay", "max_delay", "integer", None, False, 1,
        doc="longest pause before a retry, in seconds",
    ),
    Option(
        "jitter", "jitter", "jitter", "jitter", "boolean", False, False,
        doc="wait a random time between 0 and the backoff before a retry",
    ),
    Option(
        "version", "version", "version", "version", "integer", None, True, 1,
        doc="the version of the flow this spec defines (each version is its own definition)",
    ),
    Option(
        "concurrency", "concurrency", "concurrency", "concurrency", "concurrency", None, False, 1,
        extra_sql=("concurrency_key",), engine_only=True,
        doc="at most this many tasks of the flow at once (per value of a key: run.<field>)",
    ),
)  # fmt: skip
"""Options of ``create_flow``, in its argument order."""

STEP_OPTIONS: Final[tuple[Option, ...]] = (
    Option(
        "depends_on", "depends_on", "depends_on", "deps_slugs", "deps", (), True,
        shape_key="deps", doc="the steps whose outputs this step needs",
    ),
    Option(
        "max_attempts", "max_attempts", "max_attempts", "max_attempts", "integer", None, False, 1,
        doc="attempts per task (default: the flow's)",
    ),
    Option(
        "base_delay", "base_delay", "base_delay", "base_delay", "integer", None, False, 1,
        doc="seconds before the first retry (default: the flow's)",
    ),
    Option(
        "timeout", "timeout", "timeout", "timeout", "integer", None, False, 3,
        doc="seconds one attempt may run (default: the flow's)",
    ),
    Option(
        "start_delay", "start_delay", "start_delay", "start_delay", "integer", None, False, 0,
        doc="seconds to wait before the step's tasks become claimable",
    ),
    Option(
        "map", "map", "map", "step_type", "map", False, True,
        shape_key="step_type", doc="one task per element of the source array",
    ),
    Option(
        "required_input_pattern", "if", "if_", "required_input_pattern", "pattern", None, True,
        shape_key="required_input_pattern", doc="run only if the input contains this",
    ),
    Option(
        "forbidden_input_pattern", "if_not", "if_not", "forbidden_input_pattern", "pattern",
        None, True, shape_key="forbidden_input_pattern",
        doc="run only if the input does not contain this",
    ),
    Option(
        "when_unmet", "when_unmet", "when_unmet", "when_unmet", "choice", "skip", True,
        choices=WHEN_UNMET, shape_key="when_unmet", doc="what an unmet condition does",
    ),
    Option(
        "when_exhausted", "when_exhausted", "when_exhausted", "when_exhausted", "choice", "fail",
        True, choices=WHEN_EXHAUSTED, shape_key="when_exhausted",
        doc="what a task out of attempts does",
    ),
    Option(
        "heartbeat", "heartbeat", "heartbeat", "heartbeat", "integer", None, False, 1,
        doc="seconds of a renewable lease (default: the flow's)",
    ),
    Option(
        "max_delay", "max_delay", "max_delay", "max_delay", "integer", None, False, 1,
        doc="longest pause before a retry (default: the flow's)",
    ),
    Option(
        "jitter", "jitter", "jitter", "jitter", "boolean", None, False,
        doc="jittered retry pauses (default: the flow's)",
    ),
    Option(
        "concurrency", "concurrency", "concurrency", "concurrency", "concurrency", None, False, 1,
        extra_sql=("concurrency_key",), engine_only=True,
        doc="at most this many of the step's tasks at once, per value of a key (replaces the"
        " flow's limit)",
    ),
)  # fmt: skip
"""Options of ``add_step`` after ``flow_slug`` and ``step_slug``, in its argument order
(the wait step's arguments, :data:`WAIT_STEP_ARGUMENTS`, left out)."""

#: Arguments of ``add_step`` that only wait steps (``step_type => 'wait'``) take;
#: a spec sets them with a step's ``wait_for`` (not an option row: they make a
#: step a wait step rather than tune one).
WAIT_STEP_ARGUMENTS: Final = ("wait_event", "wait_key")

#: ``step_type`` values by the ``map`` flag.
STEP_TYPES: Final[Mapping[bool, str]] = {False: "single", True: "map"}


def flow_option(name: str) -> Option:
    """The flow option called ``name`` (``KeyError`` if there is none)."""
    return _FLOW[name]


def step_option(name: str) -> Option:
    """The step option called ``name`` (``KeyError`` if there is none)."""
    return _STEP[name]


_FLOW: Final = {o.name: o for o in FLOW_OPTIONS}
_STEP: Final = {o.name: o for o in STEP_OPTIONS}

#: Flow defaults by option name, as ``pgflow.create_flow`` has them.
FLOW_DEFAULTS: Final[Mapping[str, object]] = {o.name: o.default for o in FLOW_OPTIONS}
#: Smallest allowed value of each integer option (seconds for delays and timeouts).
OPTION_MINIMUMS: Final[Mapping[str, int]] = {
    o.name: o.minimum
    for o in (*FLOW_OPTIONS, *STEP_OPTIONS)
    if o.kind == "integer" and o.minimum is not None
}
#: The first segments a flow's concurrency key may have (a flow's tasks share only the run).
FLOW_CONCURRENCY_KEY_FIRSTS: Final = ("run",)
#: Keys of a flow in YAML, ``flow`` and ``steps`` included.
FLOW_KEYS: Final = ("flow", *(o.yaml for o in FLOW_OPTIONS), "steps")
#: Keys of a step in YAML, ``slug`` and ``handler`` included.
STEP_KEYS: Final = ("slug", *(o.yaml for o in STEP_OPTIONS), "handler", "wait_for", "flow")
#: The step options a sub-flow step (``flow: <name>``) takes: the others tune
#: tasks that run a handler (``pgflow.add_subflow_step`` has no argument for them).
SUBFLOW_STEP_OPTIONS: Final = (
    "depends_on", "max_attempts", "map", "required_input_pattern", "forbidden_input_pattern",
    "when_unmet", "when_exhausted",
)  # fmt: skip
#: The keys of ``flow_shape`` step objects that make up a step's structure.
SHAPE_KEYS: Final = tuple(o.shape_key for o in STEP_OPTIONS if o.shape_key is not None)


def sql_value(option: Option, value: Any) -> Any:
    """A model value of ``option`` as the database holds it, canonical for comparison
    (``flow_shape`` and the whole-definition check of ``pgflow-build`` both use it)."""
    if option.kind == "deps":
        return sorted(value)
    if option.kind == "map":
        return STEP_TYPES[bool(value)]
    if option.kind == "pattern":
        return None if value is None else json.loads(value)
    if option.kind == "concurrency":
        return None if value is None else {"limit": value.limit, "key": value.key}
    return value


def sql_names(option: Option) -> tuple[str, ...]:
    """The SQL arguments ``option`` sets, in the function's order."""
    return (option.sql, *option.extra_sql)


def sql_arguments(option: Option, value: Any) -> dict[str, Any]:
    """A model value of ``option`` as its SQL arguments (name to canonical value), one
    per :func:`sql_names`; the template renders them and ``pgflow-build`` compares them."""
    if option.kind == "concurrency":
        if value is None:
            return {"concurrency": None, "concurrency_key": None}
        return {"concurrency": value.limit, "concurrency_key": value.key}
    return {option.sql: sql_value(option, value)}
