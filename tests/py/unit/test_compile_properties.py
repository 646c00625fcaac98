"""Properties: valid specs compile to SQL whose literals round-trip; YAML ≡ Python;
arbitrary YAML never raises anything but SpecError."""

from __future__ import annotations

import json
from typing import Any

import pglast
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pglast import ast

from pgflow import Flow
from pgflow.compiler.migration import render_body
from pgflow.errors import SpecError
from pgflow.options import OPTION_MINIMUMS, STEP_OPTIONS
from pgflow.spec.model import (
    FLOW_DEFAULTS,
    WHEN_EXHAUSTED,
    WHEN_UNMET,
    Origin,
    definition_slug,
)
from pgflow.spec.yaml_loader import SpecLoader, load_yaml

ORIGIN = Origin("prop.yaml", "")
PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

slugs = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,30}", fullmatch=True).filter(lambda s: s != "run")
nasty_bits = st.sampled_from(
    ["'", "''", "\\", "\\'", '"', "$$", "$x$", "';--", "*/", "\n", "\u2028", "é", "✓", "\U0001f600",
     "\\u0000", "E'", "%s", "{}", "\t", "\r\n"]
)  # fmt: skip
hostile_text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20),
    st.lists(nasty_bits, max_size=6).map("".join),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | hostile_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=8,
)
patterns = st.dictionaries(hostile_text, json_values, max_size=4)
options = {name: st.none() | st.integers(low, 2**31 - 1) for name, low in OPTION_MINIMUMS.items()}
#: the integer options of a step (the flow's own, like version, are drawn for the flow)
STEP_INTEGERS = [o.name for o in STEP_OPTIONS if o.kind == "integer"]


@st.composite
def flow_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid flow as the mapping a YAML spec holds, steps in a random order."""
    count = draw(st.integers(1, 7))
    names = draw(st.lists(slugs, min_size=count, max_size=count, unique=True))
    steps: list[dict[str, Any]] = []
    for index, slug in enumerate(names):
        step: dict[str, Any] = {"slug": slug}
        is_map = draw(st.booleans())
        deps: list[str] = []
        if index:
            earlier = st.sampled_from(names[:index])
            deps = draw(st.lists(earlier, max_size=1 if is_map else 3, unique=True))
        if deps:
            step["depends_on"] = deps
        if is_map:
            step["map"] = True
        for name in STEP_INTEGERS:
            value = draw(options[name])
            if value is not None:
                step[name] = value
        for key in ("if", "if_not"):
            pattern = draw(st.none() | patterns)
            if pattern is not None:
                step[key] = pattern
        for key, modes in (("when_unmet", WHEN_UNMET), ("when_exhausted", WHEN_EXHAUSTED)):
            mode = draw(st.none() | st.sampled_from(modes))
            if mode is not None:
                step[key] = mode
        steps.append(step)
    document: dict[str, Any] = {"flow": draw(slugs)}
    for name in ("max_attempts", "base_delay", "timeout", "heartbeat", "max_delay", "version"):
        value = draw(options[name] if name != "version" else st.none() | st.integers(1, 50))
        if value is not None:
            document[name] = value
    if draw(st.booleans()):
        document["step_events"] = draw(st.booleans())
    document["steps"] = draw(st.permutations(steps))
    return document


class SpecDumper(yaml.SafeDumper):
    """Dumps with the resolvers the spec loader reads with, so strings stay strings."""


SpecDumper.yaml_implicit_resolvers = SpecLoader.yaml_implicit_resolvers


def to_yaml(document: dict[str, Any]) -> str:
    # allow_unicode=False: PyYAML would write some line-break characters (U+0085)
    # raw into plain scalars, where YAML folds them into spaces
    return yaml.dump(document, Dumper=SpecDumper, allow_unicode=False, sort_keys=False)


def to_python(document: dict[str, Any]) -> Flow:
    flow_options = {k: v for k, v in document.items() if k not in ("flow", "steps")}
    flow = Flow(document["flow"], **flow_options)
    for step in document["steps"]:
        kwargs = {k: v for k, v in step.items() if k not in ("map", "if")}
        if "if" in step:
            kwargs["if_"] = step["if"]
        register = flow.map if step.get("map") else flow.step
        register(**kwargs)(lambda input: input)
    return flow


def value_of(node: ast.Node) -> Any:
    """The Python value of a literal argument as PostgreSQL will read it."""
    if isinstance(node, ast.TypeCast):
        cast = ".".join(n.sval for n in node.typeName.names)
        if cast == "jsonb":
            return ("jsonb", json.loads(value_of(node.arg)))
        if cast == "text" and node.typeName.arrayBounds:
            return tuple(value_of(e) for e in node.arg.elements)
        raise AssertionError(f"unexpected cast to {cast}")
    assert isinstance(node, ast.A_Const), node
    val = node.val
    if isinstance(val, ast.String):
        return val.sval
    if isinstance(val, ast.Integer):
        return val.ival
    if isinstance(val, ast.Boolean):
        return val.boolval
    raise AssertionError(f"unexpected constant {val!r}")


def calls(sql: str) -> list[tuple[str, dict[str, Any]]]:
    """(function, {argument: value}) for each SELECT of the migration body."""
    result: list[tuple[str, dict[str, Any]]] = []
    statements = pglast.parse_sql(sql)
    assert isinstance(statements[0].stmt, ast.TransactionStmt)
    assert isinstance(statements[-1].stmt, ast.TransactionStmt)
    for raw in statements[1:-1]:
        if isinstance(raw.stmt, ast.VariableSetStmt):  # the pinned session settings
            continue
        (target,) = raw.stmt.targetList
        call = target.val
        assert isinstance(call, ast.FuncCall)
        name = ".".join(n.sval for n in call.funcname)
        args = {arg.name: value_of(arg.arg) for arg in call.args}
        assert all(isinstance(arg, ast.NamedArgExpr) for arg in call.args)
        result.append((name, args))
    return result


def expected_calls(document: dict[str, Any], order: list[str]) -> list[tuple[str, dict[str, Any]]]:
    slug = document["flow"]
    definition = definition_slug(slug, document.get("version"))
    flow_args: dict[str, Any] = {"flow_slug": slug}
    for name, default in FLOW_DEFAULTS.items():
        if document.get(name, default) != default:
            flow_args[name] = document[name]
    result: list[tuple[str, dict[str, Any]]] = [("pgflow.create_flow", flow_args)]
    by_slug = {s["slug"]: s for s in document["steps"]}
    for step_slug in order:
        step = by_slug[step_slug]
        args: dict[str, Any] = {"flow_slug": definition, "step_slug": step_slug}
        if step.get("depends_on"):
            args["deps_slugs"] = tuple(step["depends_on"])
        for name in STEP_INTEGERS:
            if name in step:
                args[name] = step[name]
        if step.get("map"):
            args["step_type"] = "map"
        if "if" in step:
            args["required_input_pattern"] = ("jsonb", step["if"])
        if "if_not" in step:
            args["forbidden_input_pattern"] = ("jsonb", step["if_not"])
        if step.get("when_unmet", "skip") != "skip":
            args["when_unmet"] = step["when_unmet"]
        if step.get("when_exhausted", "fail") != "fail":
            args["when_exhausted"] = step["when_exhausted"]
        result.append(("pgflow.add_step", args))
    result.append(
        ("pgflow.check_flow_steps", {"flow_slug": definition, "step_slugs": tuple(order)})
    )
    return result


@PROPS
@given(flow_documents())
def test_valid_specs_compile_to_sql_whose_literals_round_trip(document: dict[str, Any]) -> None:
    flow = load_yaml(to_yaml(document), ORIGIN)
    order = [s.slug for s in flow.steps]
    position = {slug: i for i, slug in enumerate(order)}
    for step in flow.steps:
        assert all(position[dep] < position[step.slug] for dep in step.depends_on)
    assert calls(render_body(flow)) == expected_calls(document, order)


@PROPS
@given(flow_documents())
def test_yaml_and_python_specs_compile_to_the_same_sql(document: dict[str, Any]) -> None:
    from_yaml = load_yaml(to_yaml(document), ORIGIN)
    from_python = to_python(document).spec()
    assert from_yaml == from_python
    assert render_body(from_yaml) == render_body(from_python)


# ---------------------------------------------------------------------- fuzzing the YAML loader

vocabulary = st.sampled_from(
    ["flow", "steps", "slug", "depends_on", "map", "if", "if_not", "max_attempts", "timeout",
     "base_delay", "start_delay", "when_unmet", "when_exhausted", "handler", "step_events", "run",
     "x-anchor", "<<", "a", "b"]
)  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats()
    | hostile_text
    | vocabulary
)
structures = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(vocabulary | hostile_text | st.integers(), inner, max_size=5)
    ),
    max_leaves=20,
)
yaml_noise = st.sampled_from(
    ["&a ", "*a", "*b", "<<: *a\n", "!!binary ", "!!python/object:os.system ", "!t ", "? ",
     "[", "]", "{", "}", "- ", ": ", "\n  ", "\t", "---\n", "...\n", "%YAML 1.1\n", "'", '"',
     "|\n  x\n", "#", "\x00", "\ufeff", "\x85"]
)  # fmt: skip


def loads_or_spec_error(text: str) -> None:
    try:
        flow = load_yaml(text, ORIGIN)
    except SpecError as exc:
        assert "\n" not in exc.rendered
        return
    render_body(flow)


@PROPS
@given(st.text(max_size=300))
def test_arbitrary_text_only_raises_spec_error(text: str) -> None:
    loads_or_spec_error(text)


@PROPS
@given(structures)
def test_arbitrary_documents_only_raise_spec_error(document: Any) -> None:
    loads_or_spec_error(yaml.safe_dump(document, allow_unicode=True))


@PROPS
@given(flow_documents(), st.lists(st.tuples(st.integers(0, 10_000), yaml_noise), max_size=4))
def test_damaged_specs_only_raise_spec_error(
    document: dict[str, Any], damage: list[tuple[int, str]]
) -> None:
    text = to_yaml(document)
    for position, noise in damage:
        at = position % (len(text) + 1)
        text = text[:at] + noise + text[at:]
    loads_or_spec_error(text)


@PROPS
@given(
    st.dictionaries(vocabulary, structures, max_size=6),
    st.lists(st.dictionaries(vocabulary, structures, max_size=6), max_size=4),
)
def test_wrongly_typed_specs_only_raise_spec_error(top: dict[str, Any], steps: list[Any]) -> None:
    loads_or_spec_error(yaml.safe_dump(top | {"steps": steps}, allow_unicode=True))
