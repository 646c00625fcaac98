"""pgflow.options is the one list of flow and step options, and everything agrees with it.

Held against: ``create_flow``'s and ``add_step``'s real arguments, defaults and
minimums (in the catalog of a database with the extension), the spec model's
defaults, the Python DSL's signatures, the YAML keys, the template (what
``pgflow-build`` renders) and the keys of ``flow_shape`` the worker compares.
Adding an option without one of those fails here, naming what is missing.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any

import psycopg
import pytest

from pgflow.compiler.migration import render_body
from pgflow.options import (
    FLOW_OPTIONS,
    SHAPE_KEYS,
    STEP_OPTIONS,
    WAIT_STEP_ARGUMENTS,
    Option,
    sql_arguments,
)
from pgflow.spec.dsl import Flow
from pgflow.spec.model import FlowSpec, Origin, StepSpec
from pgflow.spec.yaml_loader import load_yaml

Conn = psycopg.Connection[Any]


def function_arguments(conn: Conn, signature: str) -> list[tuple[str, Any]]:
    """(name, evaluated default) of a function's arguments; a missing default is ``...``."""
    row = conn.execute(
        "SELECT proargnames, pronargs, pronargdefaults, pg_get_expr(proargdefaults, 0)"
        " FROM pg_proc WHERE oid = %s::regprocedure",
        (signature,),
    ).fetchone()
    assert row is not None, signature
    names, nargs, ndefaults, defaults_text = row
    defaults: list[Any] = []
    if ndefaults:
        # the expressions come as one comma-separated list; evaluate them together
        values = conn.execute(f"SELECT {defaults_text}").fetchone()
        assert values is not None
        defaults = list(values)
    padded = [...] * (nargs - ndefaults) + defaults
    return list(zip(names[:nargs], padded, strict=True))


def sql_defaults(options: tuple[Option, ...]) -> list[tuple[str, Any]]:
    """The SQL arguments the options set, in order, with the defaults SQL should have
    (an option whose YAML key sets several, like concurrency, gives each)."""
    return [
        (name, list(default) if isinstance(default, tuple) else default)
        for option in options
        for name, default in sql_arguments(option, option.default).items()
    ]


def only_signature(conn: Conn, name: str) -> str:
    """The one signature of pgflow.<name> (found by name, not spelled out here)."""
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc AS p"
        " JOIN pg_namespace AS n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'pgflow' AND p.proname = %s",
        (name,),
    ).fetchall()
    assert len(rows) == 1, f"one {name}"
    return str(rows[0][0])


@pytest.mark.db
def test_create_flow_takes_the_flow_options_in_order_with_their_defaults(conn: Conn) -> None:
    args = function_arguments(conn, only_signature(conn, "create_flow"))
    assert args[0] == ("flow_slug", ...)
    assert args[1:] == sql_defaults(FLOW_OPTIONS)


@pytest.mark.db
def test_add_step_takes_the_step_options_in_order_with_their_defaults(conn: Conn) -> None:
    args = function_arguments(conn, only_signature(conn, "add_step"))
    assert [name for name, _ in args[:2]] == ["flow_slug", "step_slug"]
    options = [(name, default) for name, default in args[2:] if name not in WAIT_STEP_ARGUMENTS]
    assert options == sql_defaults(STEP_OPTIONS)
    # the wait step's arguments, NULL unless the step waits
    assert [(n, d) for n, d in args if n in WAIT_STEP_ARGUMENTS] == [
        (n, None) for n in WAIT_STEP_ARGUMENTS
    ]


def _refused(conn: Conn, statement: str, params: tuple[Any, ...]) -> str | None:
    """The SQLSTATE a statement fails with (rolled back either way), or None."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement, params)
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


@pytest.mark.db
@pytest.mark.parametrize(
    "option", [o for o in (*FLOW_OPTIONS, *STEP_OPTIONS) if o.minimum is not None], ids=str
)
def test_the_sql_functions_refuse_values_below_the_minimum_and_take_it(
    conn: Conn, option: Option
) -> None:
    assert option.minimum is not None
    if option in FLOW_OPTIONS:
        statement = f"SELECT pgflow.create_flow('minimums', {option.sql} => %s)"
    else:
        conn.execute("SELECT pgflow.create_flow('minimums')")
        statement = f"SELECT pgflow.add_step('minimums', 's', {option.sql} => %s)"
    assert _refused(conn, statement, (option.minimum - 1,)) == "22023"
    assert _refused(conn, statement, (option.minimum,)) is None


def test_the_model_defaults_are_the_options_defaults() -> None:
    flow_fields = {f.name: f.default for f in dataclasses.fields(FlowSpec)}
    step_fields = {f.name: f.default for f in dataclasses.fields(StepSpec)}
    for option in FLOW_OPTIONS:
        assert flow_fields[option.name] == option.default, f"FlowSpec.{option.name}"
    for option in STEP_OPTIONS:
        assert step_fields[option.name] == option.default, f"StepSpec.{option.name}"


def test_the_dsl_takes_every_option_as_a_keyword_with_its_default() -> None:
    flow_params = inspect.signature(Flow.__init__).parameters
    assert [p for p in flow_params if p not in ("self", "slug")] == [
        o.keyword for o in FLOW_OPTIONS
    ]
    for option in FLOW_OPTIONS:
        assert flow_params[option.keyword].default == option.default, option.keyword
    for method, implied in ((Flow.step, {"map"}), (Flow.map, {"map"})):
        params = inspect.signature(method).parameters
        keywords = [p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY]
        expected = ["slug"] + [o.keyword for o in STEP_OPTIONS if o.name not in implied]
        assert keywords == expected, method.__name__
        for option in STEP_OPTIONS:
            if option.name not in implied:
                assert params[option.keyword].default == option.default, option.keyword


#: A value other than the default for each option (by kind).
NON_DEFAULT = {
    "integer": 7,
    "boolean": True,
    "map": True,
    "pattern": {"run": {"go": True}},
    "deps": ["first"],
    "concurrency": {"limit": 7, "key": "run.tenant"},
}


def _yaml_value(option: Option) -> Any:
    if option.kind == "choice":
        return next(c for c in option.choices if c != option.default)
    return NON_DEFAULT[option.kind]


def test_every_option_is_read_from_yaml_and_rendered_by_the_template() -> None:
    flow = {"flow": "every", **{o.yaml: _yaml_value(o) for o in FLOW_OPTIONS}}
    step = {"slug": "second", **{o.yaml: _yaml_value(o) for o in STEP_OPTIONS}}
    flow["steps"] = [{"slug": "first"}, step]
    spec = load_yaml(json.dumps(flow), Origin("every.yaml", ""))
    for option in FLOW_OPTIONS:
        assert getattr(spec, option.name) != option.default, f"YAML {option.yaml} was not read"
    for option in STEP_OPTIONS:
        value = getattr(spec.step("second"), option.name)
        assert value != option.default, f"YAML {option.yaml} was not read"
    body = render_body(spec)
    create_flow, _, add_steps = body.partition("pgflow.add_step")
    for name, _ in sql_defaults(FLOW_OPTIONS):
        assert f"{name} =>" in create_flow, f"the template leaves out {name}"
    second = add_steps.split("pgflow.add_step")[-1]
    for name, _ in sql_defaults(STEP_OPTIONS):
        assert f"{name} =>" in second, f"the template leaves out {name}"


@pytest.mark.db
def test_the_worker_compares_the_structural_options_flow_shape_has(conn: Conn) -> None:
    assert set(SHAPE_KEYS) == {o.shape_key for o in STEP_OPTIONS if o.structural}
    conn.execute("SELECT pgflow.create_flow('shaped')")
    conn.execute("SELECT pgflow.add_step('shaped', 'a')")
    row = conn.execute("SELECT pgflow.flow_shape('shaped')").fetchone()
    assert row is not None
    step = row[0]["steps"][0]
    for key in SHAPE_KEYS:
        assert key in step, f"flow_shape has no {key}"
    for option in STEP_OPTIONS:
        if option.tunable and not option.engine_only:
            assert option.name in step, f"flow_shape has no tunable {option.name}"
        if option.engine_only:  # the database applies it; the worker never reads it
            assert option.tunable, option.name
