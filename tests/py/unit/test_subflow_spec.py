"""Sub-flow steps in specs: YAML ``flow:`` and Flow.subflow, their validation,
cycles across the flows of one build, the migration and its read-back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pgflow.compiler.definition import differences, of_migration, of_spec
from pgflow.compiler.mermaid import mermaid
from pgflow.compiler.migration import compile_flow
from pgflow.db.shape import expected_shape, shape_differences
from pgflow.errors import SpecError
from pgflow.spec.dsl import Flow
from pgflow.spec.model import Origin
from pgflow.spec.validate import subflow_problems
from pgflow.spec.yaml_loader import load_yaml

YAML = """\
flow: batch
steps:
  - slug: list_docs
  - slug: each_doc
    depends_on: [list_docs]
    flow: ingest
    map: true
    max_attempts: 2
"""


def errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_yaml(text, Origin("s.yaml", ""))
    return [f"{e.line}: {e.key}: {e.message}" for e in caught.value.errors]


def test_yaml_and_python_describe_the_same_subflow_step() -> None:
    spec = load_yaml(YAML, Origin("s.yaml", ""))
    flow = Flow("batch")

    @flow.step
    def list_docs(input: object) -> None: ...

    each = flow.subflow("each_doc", flow="ingest", map=True, depends_on=[list_docs], max_attempts=2)
    assert each == "each_doc"
    assert flow.spec() == spec
    step = spec.step("each_doc")
    assert (step.subflow, step.step_type, step.max_attempts, step.handler, step.runs_subflow) == (
        "ingest", "map", 2, None, True,
    )  # fmt: skip
    assert "each_doc" not in flow.handlers
    assert "runs flow ingest" in mermaid(spec)


def test_subflow_problems_are_reported_with_their_place() -> None:
    text = """\
flow: bad
steps:
  - slug: a
    flow: 12
  - slug: b
    flow: other
    handler: m:f
    timeout: 30
    heartbeat: 5
  - slug: c
    flow: x@0
  - slug: d
    flow: other
    wait_for: {event: e, key: run.id}
"""
    found = errors(text)
    assert "4: steps[0].flow: invalid flow integer 12: the name of another flow" in found[0]
    assert any(
        "7: steps[1].handler: a sub-flow step has no handler: its tasks are runs of flow" in e
        for e in found
    )
    assert any(
        e.startswith("8: steps[1].timeout: does not apply to a sub-flow step") for e in found
    )
    assert any(
        e.startswith("9: steps[1].heartbeat: does not apply to a sub-flow step") for e in found
    )
    assert any(e.startswith('11: steps[2].flow: invalid flow "x@0"') for e in found)
    assert any("a step either waits for an event or runs a flow" in e for e in found)


def _flow(name: str, *children: str) -> Flow:
    flow = Flow(name)
    for i, child in enumerate(children):
        flow.subflow(f"s{i}", flow=child)
    if not children:

        @flow.step
        def leaf(input: object) -> None: ...

    return flow


def test_cycles_across_the_flows_of_a_build_are_refused_with_the_cycle() -> None:
    a, b, c = _flow("a", "b"), _flow("b", "c@2"), _flow("c", "a")
    problems = subflow_problems([a.spec(), b.spec(), c.spec()])
    assert len(problems) == 1
    assert "closes a cycle of sub-flows: a -> b -> c -> a" in problems[0]
    assert subflow_problems([_flow("a", "a").spec()])[0].endswith(
        "a -> a (a flow cannot run itself, directly or through other flows)"
    )
    assert subflow_problems([a.spec(), b.spec(), _flow("c").spec()]) == []


def test_the_migration_reads_back_as_the_spec() -> None:
    spec = load_yaml(YAML, Origin("s.yaml", ""))
    text = compile_flow(spec, generated_at=datetime(2000, 1, 1, tzinfo=UTC))
    assert "pgflow.add_subflow_step(" in text
    back = of_migration(text)
    assert back is not None
    assert differences(back, of_spec(spec)) == ([], [])
    other = load_yaml(YAML.replace("flow: ingest", "flow: ingest@2"), Origin("s.yaml", ""))
    structural, _ = differences(back, of_spec(other))
    assert structural == [
        'step "each_doc": subflow is "ingest" in the migration, "ingest@2" in the spec'
    ]


def test_the_worker_shape_check_compares_the_flow_a_step_runs() -> None:
    spec = load_yaml(YAML, Origin("s.yaml", ""))
    steps = expected_shape(spec)
    assert [s["subflow"] for s in steps] == [None, "ingest"]
    shape = {"steps": [dict(s) for s in steps]}
    assert shape_differences(spec, shape) == []
    shape["steps"][1]["subflow"] = "ingest@2"
    assert shape_differences(spec, shape) == [
        'step "each_doc": subflow is "ingest@2" in the database, "ingest" in the spec'
    ]
    # a task step in the database where the spec has a sub-flow step
    del shape["steps"][1]["subflow"]
    assert shape_differences(spec, shape) == [
        'step "each_doc": subflow is null in the database, "ingest" in the spec'
    ]
