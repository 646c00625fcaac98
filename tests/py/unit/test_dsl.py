"""The Python front end: Flow, @flow.step / @flow.map, errors at the decorated line."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from pgflow import Flow
from pgflow.errors import SpecError
from pgflow.spec.dsl import display_path
from pgflow.spec.model import FlowSpec, StepSpec

HERE = display_path(__file__)


def line_of(fn: Any) -> int:
    return int(fn.__code__.co_firstlineno)


def spec_errors(flow: Flow) -> list[str]:
    with pytest.raises(SpecError) as caught:
        flow.spec()
    return [e.rendered for e in caught.value.errors]


def test_decorators_build_the_model_and_keep_the_functions() -> None:
    flow = Flow("order", max_attempts=5, timeout=30, step_events=True)

    @flow.step
    def fetch(input: dict[str, Any]) -> list[int]:
        return [1, 2]

    @flow.map(depends_on=[fetch], slug="double_it", base_delay=2)
    def double(item: int) -> int:
        return item * 2

    @flow.step(depends_on=["double_it", fetch], if_={"run": {"x": 1}}, when_unmet="fail")
    def join(input: dict[str, Any]) -> int:
        return sum(input["double_it"])

    assert double(4) == 8  # decorators return the function unchanged
    spec = flow.spec()
    assert spec == FlowSpec(
        slug="order",
        max_attempts=5,
        timeout=30,
        step_events=True,
        steps=(
            StepSpec(slug="fetch"),
            StepSpec(slug="double_it", depends_on=("fetch",), base_delay=2, map=True),
            StepSpec(
                slug="join",
                depends_on=("double_it", "fetch"),
                required_input_pattern='{"run": {"x": 1}}',
                when_unmet="fail",
            ),
        ),
    )
    assert flow.handlers == {"fetch": fetch, "double_it": double, "join": join}
    qualname = f"{__name__}:test_decorators_build_the_model_and_keep_the_functions.<locals>"
    assert spec.step("fetch").handler is None  # <locals> cannot be imported by reference
    assert qualname not in str(spec.handlers)
    assert spec.step("join").line == line_of(join)
    assert spec.origin.file == HERE
    assert spec.line is not None


def test_module_level_functions_get_a_handler_reference() -> None:
    flow = Flow("ref")
    flow.step(display_path)
    assert flow.spec().step("display_path").handler == "pgflow.spec.dsl:display_path"


def test_errors_point_at_the_decorated_function() -> None:
    flow = Flow("f", max_attempts=0)

    @flow.step(timeout=2)
    def first(input: dict[str, Any]) -> None: ...

    @flow.map(depends_on=[first, "missing_step"], if_not=[1])  # type: ignore[arg-type]
    def second(item: object) -> None: ...

    flow_line = flow.line
    # value errors and graph errors together, in line order
    assert spec_errors(flow) == [
        f"{HERE}:{flow_line}: Flow.max_attempts: must be >= 1, got 0",
        f"{HERE}:{line_of(first)}: first.timeout: must be >= 3, got 2",
        f"{HERE}:{line_of(second)}: second.if_not: must be a mapping (a JSON object), got list",
        f'{HERE}:{line_of(second)}: second.depends_on: unknown step "missing_step"',
        f"{HERE}:{line_of(second)}: second.depends_on: a map step takes its array from at most"
        " one dependency, got 2 (first, missing_step)",
    ]


def test_graph_errors_name_the_function() -> None:
    flow = Flow("f")

    @flow.step
    def first(input: dict[str, Any]) -> None: ...

    @flow.map(depends_on=[first, "frist"])
    def second(item: object) -> None: ...

    assert spec_errors(flow) == [
        f'{HERE}:{line_of(second)}: second.depends_on: unknown step "frist"'
        ' (did you mean "first"?)',
        f"{HERE}:{line_of(second)}: second.depends_on: a map step takes its array from at most"
        " one dependency, got 2 (first, frist)",
    ]


def test_a_cycle_through_slugs() -> None:
    flow = Flow("f")

    @flow.step(depends_on=["b"])
    def a(input: object) -> None: ...

    @flow.step(depends_on=[a])
    def b(input: object) -> None: ...

    assert spec_errors(flow) == [
        f"{HERE}:{line_of(a)}: a.depends_on: dependency cycle: a -> b -> a"
    ]


def test_wrong_types_are_spec_errors_not_type_errors() -> None:
    flow = Flow(3)  # type: ignore[arg-type]
    flow.step(max_attempts="3", when_exhausted=None)(lambda x: x)  # type: ignore[arg-type]
    lam_line = inspect.currentframe().f_lineno - 1  # type: ignore[union-attr]
    assert spec_errors(flow) == [
        f"{HERE}:{flow.line}: Flow.slug: must be a string, got integer 3",
        f'{HERE}:{lam_line}: <lambda>.slug: invalid slug "<lambda>": it must start with a letter',
        f'{HERE}:{lam_line}: <lambda>.max_attempts: must be an integer >= 1, got string "3"',
    ]


def test_a_function_from_another_flow_is_not_a_dependency() -> None:
    other = Flow("other")

    @other.step
    def elsewhere(input: object) -> None: ...

    flow = Flow("f")

    @flow.step(depends_on=[elsewhere])
    def here(input: object) -> None: ...

    assert spec_errors(flow) == [
        f"{HERE}:{line_of(here)}: here.depends_on: must list step slugs, got function"
    ]


def test_duplicate_slugs() -> None:
    flow = Flow("f")

    @flow.step
    def a(input: object) -> None: ...

    @flow.step(slug="a")
    def b(input: object) -> None: ...

    assert spec_errors(flow) == [
        f'{HERE}:{line_of(b)}: b.slug: duplicate step slug "a" (first defined at line {line_of(a)})'
    ]


def test_a_flow_without_steps() -> None:
    flow = Flow("empty")
    assert spec_errors(flow) == [
        f"{HERE}:{flow.line}: Flow.steps: is empty: a flow needs at least one step"
    ]
