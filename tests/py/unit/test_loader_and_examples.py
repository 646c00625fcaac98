"""SPEC resolution (.yaml, .py, module[:attr]), handlers, and the example flows."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgflow.compiler.migration import render_body
from pgflow.errors import HandlerError, LoadError, SpecError
from pgflow.spec.loader import LoadedFlow, load, resolve_handler
from pgflow.spec.model import FlowSpec

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


PY_FLOWS = """
    from pgflow import Flow

    first = Flow("first")
    second = Flow("second", timeout=9)
    alias = first

    @first.step
    def a(input):
        return input["run"] * 2

    @second.step
    def b(input):
        return "b"
"""


def test_a_python_file_gives_every_top_level_flow(in_tmp: Path) -> None:
    write(in_tmp / "flows" / "many.py", PY_FLOWS)
    flows = load("flows/many.py")
    assert [f.spec.slug for f in flows] == ["first", "second"]
    first = flows[0]
    assert first.spec.origin.file == "flows/many.py"
    assert len(first.spec.origin.sha256) == 64
    assert first.handler("a")({"run": 21}) == 42
    assert first.spec.step("a").handler == "flows.many:a"
    assert resolve_handler("flows.many:a") is first.handler("a")


def test_module_and_attribute_specs(in_tmp: Path) -> None:
    write(in_tmp / "pkg" / "__init__.py", "")
    write(in_tmp / "pkg" / "defs.py", textwrap.dedent(PY_FLOWS) + "\nboth = [first, second]\n")
    assert [f.spec.slug for f in load("pkg.defs")] == ["first", "second"]
    assert [f.spec.slug for f in load("pkg.defs:second")] == ["second"]
    assert [f.spec.slug for f in load("pkg.defs:both")] == ["first", "second"]
    with pytest.raises(LoadError, match=re.escape("pkg.defs:a: is a function, not a pgflow.Flow")):
        load("pkg.defs:a")
    with pytest.raises(LoadError, match=re.escape("pkg.defs has no attribute 'nope'")):
        load("pkg.defs:nope")


def test_yaml_flows_resolve_handlers_lazily(in_tmp: Path) -> None:
    write(in_tmp / "h.py", "def go(input):\n    return 'went'\n")
    write(
        in_tmp / "f.yml",
        "flow: f\nsteps:\n  - slug: go\n    handler: h:go\n  - slug: other\n"
        "  - slug: broken\n    handler: h:missing\n",
    )
    (flow,) = load("f.yml")
    assert flow.handler("go")({}) == "went"
    with pytest.raises(HandlerError, match='step "other" of flow "f" names no handler'):
        flow.handler("other")
    with pytest.raises(HandlerError, match="handler 'h:missing': h has no 'missing'"):
        flow.handler("broken")
    with pytest.raises(HandlerError, match='flow "f" has no step "zzz"'):
        flow.handler("zzz")
    with pytest.raises(HandlerError, match="handler 'nope:x': no module named 'nope'"):
        resolve_handler("nope:x")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.yaml", "missing.yaml: no such file"),
        ("missing.py", "missing.py: no such file"),
        ("no_such_module_xyz", "no module named 'no_such_module_xyz'"),
        ("flows/order.txt", "cannot load 'flows/order.txt': a SPEC is a .yaml/.yml file"),
        ("empty_mod", "empty_mod: defines no pgflow.Flow at its top level"),
    ],
)
def test_load_errors(in_tmp: Path, spec: str, message: str) -> None:
    write(in_tmp / "empty_mod.py", "X = 1\n")
    with pytest.raises(LoadError) as caught:
        load(spec)
    assert message in str(caught.value)


def test_a_spec_module_that_raises_points_at_its_line(in_tmp: Path) -> None:
    write(in_tmp / "boom.py", "from pgflow import Flow\n\nflow = Flow('f')\n1 / 0\n")
    with pytest.raises(SpecError) as caught:
        load("boom.py")
    assert caught.value.rendered == "boom.py:4: import: ZeroDivisionError: division by zero"
    write(in_tmp / "syntax.py", "def f(:\n")
    with pytest.raises(SpecError) as caught:
        load("syntax.py")
    assert caught.value.rendered.startswith("syntax.py:1: import: SyntaxError: ")


def test_unknown_decorator_arguments_are_spec_errors_at_their_line(in_tmp: Path) -> None:
    write(
        in_tmp / "typo.py",
        """
        from pgflow import Flow

        flow = Flow("f")

        @flow.step(depnds_on=[])
        def a(input):
            return 1
        """,
    )
    with pytest.raises(SpecError) as caught:
        load("typo.py")
    assert caught.value.rendered.startswith(
        'typo.py:6: a.depnds_on: unknown option "depnds_on" (did you mean "depends_on"?'
        " allowed: slug, depends_on, max_attempts, "
    )


def test_not_utf8(in_tmp: Path) -> None:
    (in_tmp / "bad.yaml").write_bytes(b"flow: f\nsteps: [{slug: \xff}]\n")
    with pytest.raises(SpecError) as caught:
        load("bad.yaml")
    assert caught.value.rendered == "bad.yaml:2: not UTF-8 text"


# ---------------------------------------------------------------------- the example flows


def contains(value: Any, pattern: Any) -> bool:
    """jsonb @> for JSON values."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and contains(value[k], v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(contains(v, p) for v in value) for p in pattern)
    return type(value) is type(pattern) and value == pattern


def simulate(flow: LoadedFlow, run: Any) -> dict[str, Any]:
    """Run a flow in memory, as DESIGN.md describes: outputs by step; skipped steps absent."""
    spec: FlowSpec = flow.spec
    outputs: dict[str, Any] = {}
    skipped: set[str] = set()
    for step in spec.steps:
        if any(
            dep in skipped and spec.step(dep).when_unmet == "skip-cascade"
            for dep in step.depends_on
        ):
            skipped.add(step.slug)
            continue
        payload = {"run": run} | {d: outputs[d] for d in step.depends_on if d in outputs}
        met = (step.if_ is None or contains(payload, step.if_)) and (
            step.if_not is None or not contains(payload, step.if_not)
        )
        if step.map and step.depends_on and step.depends_on[0] in skipped:
            met = False
        if not met:
            assert step.when_unmet != "fail", f"run fails: {step.slug} unmet"
            skipped.add(step.slug)
            continue
        handler = flow.handler(step.slug)
        if step.map:
            source = outputs[step.depends_on[0]] if step.depends_on else run
            outputs[step.slug] = [handler(item) for item in source]
        else:
            outputs[step.slug] = handler(payload)
    return outputs


ORDER = {
    "order_id": "A-1001",
    "customer": {"email": "ada@example.com", "tier": "gold"},
    "items": [
        {"sku": "book-1", "qty": 2, "unit_price": "12.50"},
        {"sku": "PEN-7", "qty": 10, "unit_price": "1.99"},
    ],
}


@pytest.mark.parametrize("spec", ["examples/flows/order.yaml", "examples/flows/order.py"])
def test_the_order_example_runs(in_repo: None, spec: str) -> None:
    (flow,) = load(spec)
    out = simulate(flow, ORDER)
    assert out["validate_order"] == [
        {"line": 1, "sku": "BOOK-1", "qty": 2, "unit_cents": 1250},
        {"line": 2, "sku": "PEN-7", "qty": 10, "unit_cents": 199},
    ]
    assert out["total"] == {
        "order_id": "A-1001",
        "lines": 2,
        "discount_cents": 99,
        "net_cents": 4391,
        "tax_cents": 362,
        "total_cents": 4753,
        "warehouses": sorted({r["warehouse"] for r in out["reserve_stock"]}),
    }
    assert out["loyalty_bonus"] == {"points": 47}
    assert out["send_confirmation"]["text"] == (
        "Order A-1001: 2 line(s), total 47.53; you earned 47 loyalty points"
    )
    silver = simulate(flow, ORDER | {"customer": {"tier": "silver"}, "silent": True})
    assert "loyalty_bonus" not in silver
    assert "send_confirmation" not in silver


def test_the_order_example_is_the_same_in_yaml_and_python(in_repo: None) -> None:
    (yaml_flow,) = load("examples/flows/order.yaml")
    (py_flow,) = load("examples/flows/order.py")
    assert yaml_flow.spec == py_flow.spec
    assert yaml_flow.spec.handlers == py_flow.spec.handlers
    assert render_body(yaml_flow.spec) == render_body(py_flow.spec)
    assert {s: yaml_flow.handler(s) for s in py_flow.callables} == dict(py_flow.callables)
    assert yaml_flow.handlers() == py_flow.handlers()


def test_the_order_example_refuses_a_bad_order(in_repo: None) -> None:
    (flow,) = load("examples/flows/order.yaml")
    validate = flow.handler("validate_order")
    with pytest.raises(ValueError, match="order has no items"):
        validate({"run": {"items": []}})
    with pytest.raises(ValueError, match=r"item 1 \(X\) has an invalid quantity: 0"):
        validate({"run": {"items": [{"sku": "x", "qty": 0, "unit_price": "1"}]}})
    with pytest.raises(ValueError, match="invalid unit price 'abc' for x"):
        validate({"run": {"items": [{"sku": "x", "qty": 1, "unit_price": "abc"}]}})
