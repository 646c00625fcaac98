"""YAML specifics: syntax errors, documents, duplicate and merge keys, hostile input."""

from __future__ import annotations

import textwrap

import pytest

from pgflow.errors import SpecError
from pgflow.spec.model import FlowSpec, Origin
from pgflow.spec.yaml_loader import load_yaml

ORIGIN = Origin("f.yaml", "")


def load(text: str) -> FlowSpec:
    return load_yaml(textwrap.dedent(text), ORIGIN)


def error(text: str) -> str:
    with pytest.raises(SpecError) as caught:
        load(text)
    assert caught.value.more == ()
    return caught.value.rendered


def test_syntax_error_names_the_line() -> None:
    assert error("flow: f\nsteps:\n  - slug: a\n    if: [1, 2\n") == (
        "f.yaml:5: invalid YAML: expected ',' or ']', but got '<stream end>'"
    )


def test_tabs_are_a_syntax_error() -> None:
    assert error("flow: f\nsteps:\n\t- slug: a\n") == (
        "f.yaml:3: invalid YAML: found character '\\t' that cannot start any token"
    )


@pytest.mark.parametrize("text", ["", "# nothing\n", "---\n", "null\n"])
def test_empty_documents(text: str) -> None:
    assert error(text) == "f.yaml:1: empty spec: expected a mapping with flow: and steps:"


def test_one_flow_per_file() -> None:
    assert error("flow: a\nsteps: [{slug: x}]\n---\nflow: b\nsteps: [{slug: y}]\n") == (
        "f.yaml:4: a spec file holds one flow: remove the second document"
    )


TOP = "the top level must be a mapping with flow: and steps:"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- flow: f\n", f"f.yaml:1: {TOP}, got list"),
        ("hello\n", f'f.yaml:1: {TOP}, got string "hello"'),
        ("flow: f\nsteps: {slug: a}\n", "f.yaml:2: steps: must be a list of steps, got mapping"),
        ("flow: f\nsteps:\n", "f.yaml:2: steps: must be a list of steps, got null"),
        (
            "flow: f\nsteps: [fetch]\n",
            'f.yaml:2: steps[0]: must be a mapping with a slug, got string "fetch"'
            " (write - slug: fetch)",
        ),
        ("flow: f\nsteps: [[a]]\n", "f.yaml:2: steps[0]: must be a mapping with a slug, got list"),
        ("flow: f\n1: x\nsteps: [{slug: a}]\n", "f.yaml:2: keys must be strings, got integer 1"),
        (
            "flow: f\n[a]: x\nsteps: [{slug: a}]\n",
            "f.yaml:2: keys must be strings, got a collection",
        ),
    ],
)
def test_structure_errors(text: str, message: str) -> None:
    assert error(text) == message


def test_duplicate_keys_are_refused() -> None:
    assert error("flow: f\nsteps:\n  - slug: a\n    timeout: 5\n    timeout: 6\n") == (
        "f.yaml:5: steps[0].timeout: duplicate key (first given at line 4)"
    )
    assert error("flow: f\nflow: g\nsteps: [{slug: a}]\n") == (
        "f.yaml:2: flow: duplicate key (first given at line 1)"
    )


def test_merge_keys_and_extension_keys() -> None:
    flow = load("""
        x-retry: &retry
          max_attempts: 9
          timeout: 30
        flow: f
        steps:
          - <<: *retry
            slug: a
          - <<: *retry
            slug: b
            timeout: 10
    """)
    assert [(s.max_attempts, s.timeout) for s in flow.steps] == [(9, 30), (9, 10)]


def test_scalars_follow_the_yaml_1_2_core_schema() -> None:
    assert error("flow: f\nsteps: [{slug: a, map: yes}]\n") == (
        'f.yaml:2: steps[0].map: must be true or false, got string "yes"'
    )
    assert error("flow: f\nsteps: [{slug: a, timeout: 1:30}]\n") == (
        'f.yaml:2: steps[0].timeout: must be an integer >= 3, got string "1:30"'
    )
    flow = load("""
        flow: f
        max_attempts: 010
        steps:
          - slug: a
            if: {answer: no, on: off, day: 2024-01-01, n: 1e3, none: ~, t: True}
    """)
    assert flow.max_attempts == 10
    assert flow.steps[0].if_ == {
        "answer": "no",
        "on": "off",
        "day": "2024-01-01",
        "n": 1000.0,
        "none": None,
        "t": True,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flow: !!python/name:os.system x\nsteps: [{slug: a}]\n",
         "f.yaml:1: flow: invalid value: could not determine a constructor for the tag"
         " 'tag:yaml.org,2002:python/name:os.system'"),
        ("flow: !custom x\nsteps: [{slug: a}]\n",
         "f.yaml:1: flow: invalid value: could not determine a constructor for the tag '!custom'"),
        ("flow: f\nsteps: [{slug: a, timeout: !!int x}]\n",
         "f.yaml:2: steps[0].timeout: invalid value: invalid literal for int() with base 10: 'x'"),
    ],
)  # fmt: skip
def test_unsafe_and_unknown_tags_are_errors(text: str, message: str) -> None:
    assert error(text) == message


def test_alias_bombs_stop_at_the_node_budget() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    text = "flow: f\nsteps:\n  - slug: a\n    if:\n" + "".join(f"      {x}\n" for x in lines)
    assert error(text) == "f.yaml:5: steps[0].if: the document expands to more than 100000 values"


def test_recursive_aliases_stop_at_the_depth_limit() -> None:
    assert error("flow: f\nsteps:\n  - slug: a\n    if: &r {x: *r}\n") == (
        "f.yaml:4: steps[0].if: nested more than 100 levels deep"
    )


def test_deep_flow_sequences_do_not_crash() -> None:
    text = "flow: f\nsteps: [{slug: a, if: {x: " + "[" * 2000 + "]" * 2000 + "}}]\n"
    with pytest.raises(SpecError):
        load(text)
