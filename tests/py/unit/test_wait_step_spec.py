"""Wait steps in specs: YAML wait_for and Flow.wait_for, their validation, the graph."""

from __future__ import annotations

import pytest

from pgflow.compiler.mermaid import mermaid
from pgflow.db.shape import expected_shape, shape_differences
from pgflow.errors import SpecError
from pgflow.spec.dsl import Flow
from pgflow.spec.model import Origin
from pgflow.spec.yaml_loader import load_yaml

YAML = """\
flow: approval
steps:
  - slug: order
  - slug: approved
    depends_on: [order]
    wait_for: {event: approval, key: run.order_id, timeout: 86400}
    when_exhausted: skip
  - slug: ship
    depends_on: [approved]
"""


def errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_yaml(text, Origin("w.yaml", ""))
    return [f"{e.line}: {e.key}: {e.message}" for e in caught.value.errors]


def test_yaml_and_python_describe_the_same_wait_step() -> None:
    spec = load_yaml(YAML, Origin("w.yaml", ""))
    flow = Flow("approval")

    @flow.step
    def order(input: object) -> None: ...

    approved = flow.wait_for(
        "approved", event="approval", key="run.order_id", depends_on=[order],
        timeout=86400, when_exhausted="skip",
    )  # fmt: skip

    @flow.step(depends_on=[approved])
    def ship(input: object) -> None: ...

    assert approved == "approved"
    assert flow.spec() == spec
    step = spec.step("approved")
    assert (step.step_type, step.wait_event, step.wait_key, step.timeout, step.handler) == (
        "wait", "approval", "run.order_id", 86400, None,
    )  # fmt: skip
    assert "approved" not in flow.handlers


def test_wait_for_problems_are_reported_with_their_place() -> None:
    text = """\
flow: bad
steps:
  - slug: a
  - slug: w
    depends_on: [a]
    handler: x:y
    max_attempts: 2
    timeout: 10
    wait_for: {event: "no spaces", key: b.id, timeout: 1, until: 3}
  - slug: v
    wait_for: run.id
  - slug: u
    wait_for: {key: run}
"""
    assert errors(text) == [
        "6: steps[1].handler: a wait step has no handler: emit_event completes it",
        "7: steps[1].max_attempts: does not apply to a wait step (it has no task)",
        "8: steps[1].timeout: does not apply to a wait step (it has no task)"
        " (write it as wait_for.timeout)",
        "9: steps[1].wait_for.until: unknown key (allowed: event, key, timeout)",
        '9: steps[1].wait_for.event: invalid event name "no spaces": a letter, then letters,'
        " digits, _ . : or - (at most 128)",
        '9: steps[1].wait_for.key: key path "b.id" starts with "b", which is neither run nor a'
        " dependency (use one of: run, a)",
        "9: steps[1].wait_for.timeout: must be an integer of seconds between 3 and 2147483647,"
        " got integer 1",
        "11: steps[2].wait_for: must be a mapping {event: ..., key: run.<field>, timeout:"
        ' <seconds>}, got string "run.id"',
        "13: steps[3].wait_for.event: missing: the event it waits for, e.g. event: approval",
        '13: steps[3].wait_for.key: invalid key path "run": a dotted path into the step input,'
        " e.g. run.order_id or <dependency>.id",
    ]


def test_the_graph_draws_wait_steps() -> None:
    text = mermaid(load_yaml(YAML, Origin("w.yaml", "")))
    assert (
        's_approved(["approved<br/><i>waits for approval by run.order_id,'
        ' timeout 86400 s, then skip</i>"])'
    ) in text
    assert "class s_approved wait" in text


def test_the_worker_shape_check_compares_what_a_step_waits_for() -> None:
    spec = load_yaml(YAML, Origin("w.yaml", ""))
    steps = expected_shape(spec)
    assert steps[1]["step_type"] == "wait"
    assert steps[1]["wait"] == {"event": "approval", "key": "run.order_id"}
    shape = {"steps": [dict(s) for s in steps]}
    assert shape_differences(spec, shape) == []
    shape["steps"][1]["wait"] = {"event": "approval", "key": "run.id"}
    assert shape_differences(spec, shape) == [
        'step "approved": wait is {"event": "approval", "key": "run.id"} in the database,'
        ' {"event": "approval", "key": "run.order_id"} in the spec'
    ]
