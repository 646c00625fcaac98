"""The spec model and every validation error, with exact messages (YAML front end)."""

from __future__ import annotations

import textwrap

import pytest

from pgflow.errors import SpecError
from pgflow.spec.model import FlowSpec, Origin, StepSpec, slug_problem
from pgflow.spec.yaml_loader import load_yaml

ORIGIN = Origin("flows/order.yaml", "0" * 64)


def load(text: str) -> FlowSpec:
    return load_yaml(textwrap.dedent(text), ORIGIN)


def errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load(text)
    return [e.rendered for e in caught.value.errors]


def test_a_minimal_flow_gets_the_defaults() -> None:
    flow = load("""
        flow: hello
        steps:
          - slug: greet
    """)
    assert flow == FlowSpec(slug="hello", steps=(StepSpec(slug="greet"),))
    assert (flow.max_attempts, flow.base_delay, flow.timeout, flow.step_events) == (3, 1, 60, False)
    step = flow.steps[0]
    assert (step.max_attempts, step.base_delay, step.timeout, step.start_delay) == (None,) * 4
    assert (step.step_type, step.when_unmet, step.when_exhausted) == ("single", "skip", "fail")
    assert (step.if_, step.if_not, step.handler, step.conditional) == (None, None, None, False)
    assert flow.origin == ORIGIN
    assert flow.line == 2
    assert step.line == 4


def test_every_key_is_read() -> None:
    flow = load("""
        flow: full
        max_attempts: 7
        base_delay: 2
        timeout: 90
        step_events: true
        steps:
          - slug: source
            handler: app.handlers:source
          - slug: each
            depends_on: [source]
            map: true
            max_attempts: 1
            base_delay: 5
            timeout: 3
            start_delay: 0
            if: {run: {kind: "a"}}
            if_not: {run: {skip: true}}
            when_unmet: skip-cascade
            when_exhausted: skip
    """)
    assert (flow.max_attempts, flow.base_delay, flow.timeout, flow.step_events) == (7, 2, 90, True)
    each = flow.step("each")
    assert each == StepSpec(
        slug="each",
        depends_on=("source",),
        max_attempts=1,
        base_delay=5,
        timeout=3,
        start_delay=0,
        map=True,
        required_input_pattern='{"run": {"kind": "a"}}',
        forbidden_input_pattern='{"run": {"skip": true}}',
        when_unmet="skip-cascade",
        when_exhausted="skip",
    )
    assert each.if_ == {"run": {"kind": "a"}}
    assert each.if_not == {"run": {"skip": True}}
    assert each.step_type == "map"
    assert flow.step("source").handler == "app.handlers:source"
    assert flow.handlers == {"source": "app.handlers:source"}


def test_the_model_is_frozen_and_hashable() -> None:
    flow = load("flow: f\nsteps: [{slug: a}]\n")
    with pytest.raises(AttributeError):
        flow.slug = "g"  # type: ignore[misc]
    assert hash(flow) == hash(load("flow: f\nsteps: [{slug: a}]\n"))


def test_patterns_are_canonical_json_with_sorted_keys() -> None:
    flow = load("""
        flow: f
        steps:
          - slug: a
            if: {z: 1, a: {y: [1, "é"], b: null}}
    """)
    assert flow.steps[0].required_input_pattern == '{"a": {"b": null, "y": [1, "é"]}, "z": 1}'


def test_steps_are_ordered_topologically_and_ties_keep_spec_order() -> None:
    flow = load("""
        flow: f
        steps:
          - {slug: d, depends_on: [b, c]}
          - {slug: c, depends_on: [a]}
          - {slug: b, depends_on: [a]}
          - {slug: a}
          - {slug: e}
    """)
    # Kahn's algorithm: of the steps whose dependencies are placed, the one
    # listed first in the spec goes next
    assert [s.slug for s in flow.steps] == ["a", "c", "b", "d", "e"]


def test_dependency_order_within_a_step_is_kept() -> None:
    flow = load("flow: f\nsteps: [{slug: a}, {slug: b}, {slug: c, depends_on: [b, a]}]\n")
    assert flow.step("c").depends_on == ("b", "a")


# ---------------------------------------------------------------------- slug rules


@pytest.mark.parametrize(
    ("slug", "problem"),
    [
        ("", "it is empty"),
        ("a" * 129, "it is 129 characters long (at most 128)"),
        ("run", '"run" is reserved (it names the flow input in step inputs)'),
        ("9lives", "it must start with a letter"),
        ("_private", "it must start with a letter"),
        ("with space", 'character " " is not allowed'),
        ("dash-ed", 'character "-" is not allowed'),
        ("café", 'character "é" is not allowed'),
        ("ǅungla", "it must start with a letter"),
    ],
)
def test_slug_problems(slug: str, problem: str) -> None:
    assert slug_problem(slug) == problem


@pytest.mark.parametrize("slug", ["a", "A", "a" * 128, "runner", "Run", "x_1", "a_"])
def test_valid_slugs(slug: str) -> None:
    assert slug_problem(slug) is None


def test_invalid_flow_and_step_slugs() -> None:
    assert errors("""
        flow: 9order
        steps:
          - slug: run
          - slug: "has space"
    """) == [
        'flows/order.yaml:2: flow: invalid slug "9order": it must start with a letter',
        'flows/order.yaml:4: steps[0].slug: invalid slug "run": "run" is reserved'
        " (it names the flow input in step inputs)",
        'flows/order.yaml:5: steps[1].slug: invalid slug "has space": character " " is not allowed',
    ]


def test_slug_must_be_a_string() -> None:
    assert errors("flow: 12\nsteps: [{slug: true}]\n") == [
        "flows/order.yaml:1: flow: must be a string, got integer 12",
        "flows/order.yaml:2: steps[0].slug: must be a string, got boolean true",
    ]


def test_missing_flow_slug_steps_and_step_slug() -> None:
    assert errors("max_attempts: 2\n") == [
        "flows/order.yaml:1: flow: missing: name the flow, e.g. flow: my_flow",
        "flows/order.yaml:1: steps: missing: a flow needs at least one step",
    ]
    assert errors("flow: f\nsteps: []\n") == [
        "flows/order.yaml:2: steps: is empty: a flow needs at least one step"
    ]
    assert errors("flow: f\nsteps:\n  - depends_on: []\n") == [
        "flows/order.yaml:3: steps[0].slug: missing: every step needs a slug"
    ]


# ---------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("max_attempts", "0", "must be >= 1, got 0"),
        ("base_delay", "0", "must be >= 1, got 0"),
        ("timeout", "2", "must be >= 3, got 2"),
        ("max_attempts", '"3"', 'must be an integer >= 1, got string "3"'),
        ("timeout", "true", "must be an integer >= 3, got boolean true"),
        ("base_delay", "1.5", "must be an integer >= 1, got number 1.5"),
        ("max_attempts", "null", "must be an integer >= 1, got null"),
        ("timeout", "[60]", "must be an integer >= 3, got list"),
        ("timeout", "2147483648", "must be <= 2147483647, got 2147483648"),
    ],
)
def test_flow_option_errors(option: str, value: str, message: str) -> None:
    assert errors(f"flow: f\n{option}: {value}\nsteps: [{{slug: a}}]\n") == [
        f"flows/order.yaml:2: {option}: {message}"
    ]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("max_attempts", "0", "must be >= 1, got 0"),
        ("base_delay", "-1", "must be >= 1, got -1"),
        ("timeout", "1", "must be >= 3, got 1"),
        ("start_delay", "-1", "must be >= 0, got -1"),
        ("start_delay", "'5'", 'must be an integer >= 0, got string "5"'),
        ("max_attempts", "false", "must be an integer >= 1, got boolean false"),
    ],
)
def test_step_option_errors(option: str, value: str, message: str) -> None:
    assert errors(f"flow: f\nsteps:\n  - slug: a\n    {option}: {value}\n") == [
        f"flows/order.yaml:4: steps[0].{option}: {message}"
    ]


def test_booleans_must_be_booleans() -> None:
    assert errors('flow: f\nstep_events: "yes"\nsteps: [{slug: a, map: 1}]\n') == [
        'flows/order.yaml:2: step_events: must be true or false, got string "yes"',
        "flows/order.yaml:3: steps[0].map: must be true or false, got integer 1",
    ]


def test_invalid_modes() -> None:
    assert errors("""
        flow: f
        steps:
          - slug: a
            when_unmet: skip_cascade
            when_exhausted: retry
          - slug: b
            when_unmet: 3
    """) == [
        'flows/order.yaml:5: steps[0].when_unmet: invalid mode "skip_cascade"'
        ' (did you mean "skip-cascade"?); use one of skip, skip-cascade, fail',
        'flows/order.yaml:6: steps[0].when_exhausted: invalid mode "retry";'
        " use one of fail, skip, skip-cascade",
        "flows/order.yaml:8: steps[1].when_unmet: must be one of skip, skip-cascade, fail,"
        " got integer 3",
    ]


def test_patterns_must_be_json_objects() -> None:
    assert errors("""
        flow: f
        steps:
          - slug: a
            if: [1, 2]
          - slug: b
            if_not: "x"
          - slug: c
            if: {1: a}
          - slug: d
            if: {blob: !!binary aGk=}
          - slug: e
            if: {x: .nan}
          - slug: f
            if: {x: "a\\0b"}
    """) == [
        "flows/order.yaml:5: steps[0].if: must be a mapping (a JSON object), got list",
        'flows/order.yaml:7: steps[1].if_not: must be a mapping (a JSON object), got string "x"',
        "flows/order.yaml:9: steps[2].if: has a key that is not a string: integer 1",
        "flows/order.yaml:11: steps[3].if: contains a bytes, which JSON cannot represent",
        "flows/order.yaml:13: steps[4].if: contains nan, which JSON cannot represent",
        "flows/order.yaml:15: steps[5].if: contains the NUL character,"
        " which PostgreSQL cannot store",
    ]


def test_deeply_nested_patterns_are_refused() -> None:
    deep = "{a: " * 70 + "1" + "}" * 70
    assert errors(f"flow: f\nsteps:\n  - slug: a\n    if: {deep}\n") == [
        "flows/order.yaml:4: steps[0].if: is nested more than 64 levels deep"
    ]


def test_handler_reference_shape() -> None:
    assert errors("flow: f\nsteps:\n  - slug: a\n    handler: app.handlers.a\n") == [
        'flows/order.yaml:4: steps[0].handler: must look like "package.module:function",'
        ' got string "app.handlers.a"'
    ]


# ---------------------------------------------------------------------- unknown keys


def test_unknown_keys_suggest_the_closest() -> None:
    assert errors("""
        flow: f
        max_attempt: 3
        steps:
          - slug: a
            depnds_on: []
            colour: red
    """) == [
        'flows/order.yaml:3: max_attempt: unknown key (did you mean "max_attempts"?)',
        'flows/order.yaml:6: steps[0].depnds_on: unknown key (did you mean "depends_on"?)',
        "flows/order.yaml:7: steps[0].colour: unknown key (allowed: slug, depends_on,"
        " max_attempts, base_delay, timeout, start_delay, map, if, if_not, when_unmet,"
        " when_exhausted, heartbeat, max_delay, jitter, concurrency, handler, wait_for, flow)",
    ]


# ---------------------------------------------------------------------- graph rules


def test_unknown_dependency_names_the_element_line() -> None:
    assert errors("""
        flow: order
        steps:
          - slug: fetch_order
          - slug: b
            depends_on:
              - fetch_order
              - fetch_ordr
    """) == [
        'flows/order.yaml:8: steps[1].depends_on: unknown step "fetch_ordr"'
        ' (did you mean "fetch_order"?)'
    ]


def test_unknown_dependency_without_a_close_match() -> None:
    assert errors("flow: f\nsteps: [{slug: alpha}, {slug: b, depends_on: [zzz]}]\n") == [
        'flows/order.yaml:2: steps[1].depends_on: unknown step "zzz"'
    ]


def test_depends_on_must_be_a_list_of_strings() -> None:
    assert errors("""
        flow: f
        steps:
          - slug: a
          - slug: b
            depends_on: a
          - slug: c
            depends_on: [1]
    """) == [
        'flows/order.yaml:6: steps[1].depends_on: must be a list of step slugs, got string "a"'
        " (write [a])",
        "flows/order.yaml:8: steps[2].depends_on: must list step slugs, got integer 1",
    ]


def test_duplicate_step_slugs() -> None:
    assert errors("flow: f\nsteps:\n  - slug: a\n  - slug: b\n  - slug: a\n") == [
        'flows/order.yaml:5: steps[2].slug: duplicate step slug "a" (first defined at line 3)'
    ]


def test_self_and_repeated_dependencies() -> None:
    assert errors("flow: f\nsteps:\n  - slug: a\n  - slug: b\n    depends_on: [b, a, a]\n") == [
        'flows/order.yaml:5: steps[1].depends_on: step "b" cannot depend on itself',
        'flows/order.yaml:5: steps[1].depends_on: lists "a" more than once',
    ]


def test_map_step_with_two_dependencies() -> None:
    assert errors("""
        flow: f
        steps:
          - slug: a
          - slug: b
          - slug: c
            map: true
            depends_on: [a, b]
    """) == [
        "flows/order.yaml:8: steps[2].depends_on: a map step takes its array from at most one"
        " dependency, got 2 (a, b)"
    ]


def test_a_cycle_is_reported_in_dependency_order() -> None:
    assert errors("""
        flow: f
        steps:
          - slug: a
            depends_on: [c]
          - slug: b
            depends_on: [a]
          - slug: c
            depends_on: [b]
          - slug: d
    """) == ["flows/order.yaml:5: steps[0].depends_on: dependency cycle: a -> b -> c -> a"]


def test_a_cycle_that_does_not_include_the_first_step() -> None:
    assert errors("""
        flow: f
        steps:
          - slug: root
          - slug: x
            depends_on: [root, y]
          - slug: y
            depends_on: [x]
    """) == ["flows/order.yaml:6: steps[1].depends_on: dependency cycle: x -> y -> x"]


def test_graph_errors_wait_for_value_errors() -> None:
    # an unknown dependency is not reported while the flow has other errors:
    # the slugs it would be checked against may be wrong themselves
    assert errors("flow: f\nsteps:\n  - slug: 1a\n  - {slug: b, depends_on: [a]}\n") == [
        'flows/order.yaml:3: steps[0].slug: invalid slug "1a": it must start with a letter'
    ]


def test_spec_error_renders_and_lists() -> None:
    with pytest.raises(SpecError) as caught:
        load("flow: f\nmax_attempts: 0\ntimeout: 0\nsteps: [{slug: a}]\n")
    error = caught.value
    assert str(error) == "flows/order.yaml:2: max_attempts: must be >= 1, got 0"
    assert (error.file, error.line, error.key, error.message) == (
        "flows/order.yaml",
        2,
        "max_attempts",
        "must be >= 1, got 0",
    )
    assert [e.rendered for e in error.more] == ["flows/order.yaml:3: timeout: must be >= 3, got 0"]
    assert SpecError("f.yaml", None, "", "m").rendered == "f.yaml: m"


def test_invisible_characters_in_patterns_are_escaped() -> None:
    flow = load("""
        flow: f
        steps:
          - slug: a
            if: {"x\\u2028": "\\u00a0\\U000e0001 é 😀 \\t"}
    """)
    text = flow.steps[0].required_input_pattern
    assert text == '{"x\\u2028": "\\u00a0\\udb40\\udc01 é 😀 \\t"}'
    assert flow.steps[0].if_ == {"x\u2028": "\u00a0\U000e0001 é 😀 \t"}
