"""The concurrency option in specs: both forms, YAML and Python alike, and its errors."""

from __future__ import annotations

import textwrap

import pytest

from pgflow import Concurrency, Flow
from pgflow.errors import SpecError
from pgflow.spec.model import FlowSpec, Origin
from pgflow.spec.yaml_loader import load_yaml

ORIGIN = Origin("flows/t.yaml", "0" * 64)


def load(text: str) -> FlowSpec:
    return load_yaml(textwrap.dedent(text), ORIGIN)


def errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load(text)
    return [e.rendered for e in caught.value.errors]


def test_both_forms_are_read_and_python_means_the_same() -> None:
    spec = load("""\
        flow: t
        concurrency: {limit: 20, key: run.tenant}
        steps:
          - slug: a
            concurrency: 3
          - slug: b
            depends_on: [a]
            map: true
            concurrency: {limit: 2, key: item}
          - slug: c
            depends_on: [a]
            concurrency: {limit: 1, key: a.bucket}
        """)
    assert spec.concurrency == Concurrency(20, "run.tenant")
    assert [s.concurrency for s in spec.steps] == [
        Concurrency(3),
        Concurrency(2, "item"),
        Concurrency(1, "a.bucket"),
    ]
    flow = Flow("t", concurrency=Concurrency(20, key="run.tenant"))

    @flow.step(concurrency=3)
    def a(input: object) -> None: ...

    @flow.map(depends_on=[a], concurrency={"limit": 2, "key": "item"})
    def b(item: object) -> None: ...

    @flow.step(depends_on=[a], concurrency=Concurrency(1, key="a.bucket"))
    def c(input: object) -> None: ...

    assert flow.spec() == spec


def test_a_limit_without_a_key_is_the_same_in_both_forms() -> None:
    short = load("flow: t\nsteps:\n  - slug: a\n    concurrency: 4\n")
    long = load("flow: t\nsteps:\n  - slug: a\n    concurrency: {limit: 4}\n")
    assert short == long


def test_bad_limits_and_mappings_are_refused_with_what_to_write() -> None:
    assert errors("""\
        flow: t
        concurrency: 0
        steps:
          - slug: a
            concurrency: "3"
          - slug: b
            concurrency: {limit: 2, keys: run.x}
          - slug: c
            concurrency: {key: run.x}
          - slug: d
            concurrency: true
          - slug: e
            concurrency: {limit: 2.5}
        """) == [
        "flows/t.yaml:2: concurrency: the limit must be between 1 and 2147483647, got 0"
        " (leave concurrency out for no limit)",
        "flows/t.yaml:5: steps[0].concurrency: must be a limit or a mapping {limit, key}, got"
        ' string "3" (write concurrency: 3 or concurrency: {limit: 3, key: run.tenant})',
        'flows/t.yaml:7: steps[1].concurrency.keys: unknown key (did you mean "key"?)',
        "flows/t.yaml:9: steps[2].concurrency.limit: missing: how many tasks may run at once,"
        " e.g. concurrency: 3 or concurrency: {limit: 3, key: run.tenant}",
        "flows/t.yaml:11: steps[3].concurrency: must be a limit or a mapping {limit, key}, got"
        " boolean true (write concurrency: 3 or concurrency: {limit: 3, key: run.tenant})",
        "flows/t.yaml:13: steps[4].concurrency: the limit must be an integer >= 1, got number 2.5"
        " (leave concurrency out for no limit)",
    ]


def test_key_paths_must_start_where_the_task_input_has_something() -> None:
    found = errors("""\
        flow: t
        concurrency: {limit: 5, key: fetch.tenant}
        steps:
          - slug: fetch
          - slug: a
            depends_on: [fetch]
            concurrency: {limit: 2, key: item.tenant}
          - slug: b
            concurrency: {limit: 2, key: fetch.tenant}
          - slug: c
            concurrency: {limit: 2, key: run}
        """)
    assert [line.split(": ", 2)[1] for line in found] == [
        "concurrency.key",
        "steps[1].concurrency.key",
        "steps[2].concurrency.key",
        "steps[3].concurrency.key",
    ]
    assert 'key path "fetch.tenant" starts with "fetch"' in found[0]
    assert "(use one of: run)" in found[0]
    assert "(item: map steps only) (use one of: run, fetch)" in found[1]
    assert "(use one of: run)" in found[2]  # b does not depend on fetch
    assert 'invalid key path "run"' in found[3]


def test_wait_and_sub_flow_steps_refuse_it() -> None:
    assert errors("""\
        flow: t
        steps:
          - slug: w
            wait_for: {event: approval, key: run.id}
            concurrency: 2
          - slug: s
            flow: other
            concurrency: 2
        """) == [
        "flows/t.yaml:5: steps[0].concurrency: does not apply to a wait step (it has no task)"
        " (limit the steps that depend on it instead)",
        "flows/t.yaml:8: steps[1].concurrency: does not apply to a sub-flow step (its child"
        " run's steps have their own): set concurrency on the child flow or its steps",
    ]


def test_python_errors_name_the_keyword() -> None:
    flow = Flow("t", concurrency=-1)

    @flow.step(concurrency=Concurrency(2, key="nothing.here"))
    def a(input: object) -> None: ...

    with pytest.raises(SpecError) as caught:
        flow.spec()
    keys = [e.key for e in caught.value.errors]
    assert keys == ["Flow.concurrency", "a.concurrency.key"]
