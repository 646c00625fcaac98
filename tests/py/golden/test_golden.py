"""Golden files: each case's flow.yaml compiles to expected.sql exactly, and its
flow.py (the same flow in Python) to the same SQL below the header.

Regenerate after an intended change with
``PGFLOW_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/py/golden`` and review the diff.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pgflow.compiler.migration import compile_flow, split_header
from pgflow.spec.loader import load

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CASES = sorted(p.name for p in HERE.iterdir() if (p / "flow.yaml").is_file())
GENERATED_AT = datetime(2000, 1, 1, tzinfo=UTC)
UPDATE = os.environ.get("PGFLOW_UPDATE_GOLDEN") == "1"


@pytest.fixture(autouse=True)
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # spec paths in headers are relative to the repository


def test_there_are_cases() -> None:
    assert {"minimal", "order", "all_options", "unordered", "hostile_patterns"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_yaml_compiles_to_the_golden_file(case: str) -> None:
    (flow,) = load(str((HERE / case / "flow.yaml").relative_to(REPO)))
    text = compile_flow(flow.spec, generated_at=GENERATED_AT)
    expected_path = HERE / case / "expected.sql"
    if UPDATE:
        expected_path.write_text(text, encoding="utf-8")
    assert expected_path.is_file(), f"no {expected_path}: run with PGFLOW_UPDATE_GOLDEN=1"
    assert text == expected_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", [c for c in CASES if (HERE / c / "flow.py").is_file()])
def test_python_compiles_to_the_same_sql_below_the_header(case: str) -> None:
    (yaml_flow,) = load(str((HERE / case / "flow.yaml").relative_to(REPO)))
    (py_flow,) = load(str((HERE / case / "flow.py").relative_to(REPO)))
    assert py_flow.spec == yaml_flow.spec
    expected = (HERE / case / "expected.sql").read_text(encoding="utf-8")
    header, body = split_header(compile_flow(py_flow.spec, generated_at=GENERATED_AT))
    assert body == split_header(expected)[1]
    assert f"-- spec: tests/py/golden/{case}/flow.py\n" in header
