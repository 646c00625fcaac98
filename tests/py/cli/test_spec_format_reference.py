"""docs/reference/spec-format.md documents every key, and its examples are valid."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from pgflow.spec.dsl import Flow
from pgflow.spec.model import FLOW_DEFAULTS, FLOW_KEYS, STEP_KEYS, Origin
from pgflow.spec.yaml_loader import load_yaml

DOC_PATH = Path(__file__).resolve().parents[3] / "docs" / "reference" / "spec-format.md"
DOC = DOC_PATH.read_text(encoding="utf-8")


def table_keys(heading: str) -> dict[str, str]:
    """key -> default column of the table under a heading."""
    section = DOC.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| [^|]+ \| ([^|]+) \|", section, re.M)
    return {key: default.strip() for key, default in rows}


def test_every_flow_key_is_documented_with_its_default() -> None:
    documented = table_keys("Flow keys")
    assert sorted(documented) == sorted(FLOW_KEYS)
    for key, default in FLOW_DEFAULTS.items():
        if default is None:  # an option that is off unless set
            assert documented[key] == "none", key
            continue
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert documented[key] == f"`{shown}`"


def test_every_step_key_is_documented() -> None:
    assert sorted(table_keys("Step keys")) == sorted(STEP_KEYS)


def yaml_examples() -> list[str]:
    return [b for b in re.findall(r"```yaml\n(.*?)```", DOC, re.S) if b.startswith(("flow:", "x-"))]


@pytest.mark.parametrize("example", yaml_examples())
def test_yaml_examples_are_valid_flows(example: str) -> None:
    load_yaml(example, Origin("doc.yaml", ""))


def test_there_are_yaml_examples() -> None:
    assert len(yaml_examples()) >= 2


def test_the_python_example_is_valid() -> None:
    (code,) = re.findall(r"```python\n(.*?)```", DOC, re.S)
    namespace: dict[str, object] = {}
    exec(compile(textwrap.dedent(code), "spec-format.md", "exec"), namespace)
    flow = namespace["flow"]
    assert isinstance(flow, Flow)
    spec = flow.spec()
    assert [s.slug for s in spec.steps] == [
        "validate_order",
        "price_line",
        "order_total",
        "loyalty_bonus",
    ]
