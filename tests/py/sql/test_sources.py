"""Checks on the extension's SQL sources themselves (no database needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pglast
import pytest
from pglast import ast

SRC = Path(__file__).resolve().parents[3] / "extension" / "src"
FILES = sorted(SRC.glob("*.sql"))


def _statements(path: Path) -> list[ast.Node]:
    return [raw.stmt for raw in pglast.parse_sql(path.read_text())]


def _functions() -> list[tuple[Path, ast.CreateFunctionStmt]]:
    return [
        (path, stmt)
        for path in FILES
        for stmt in _statements(path)
        if isinstance(stmt, ast.CreateFunctionStmt)
    ]


def _name(stmt: ast.CreateFunctionStmt) -> str:
    return ".".join(part.sval for part in stmt.funcname)


def _options(stmt: ast.CreateFunctionStmt) -> dict[str, ast.Node]:
    """A function's options by name; of several SET clauses, the first."""
    options: dict[str, ast.Node] = {}
    for opt in stmt.options or ():
        options.setdefault(opt.defname, opt.arg)
    return options


def test_there_are_sources() -> None:
    assert len(FILES) >= 5
    assert all(re.fullmatch(r"\d{3}_[a-z0-9_]+\.sql", f.name) for f in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_source_file_parses(path: Path) -> None:
    assert _statements(path), f"{path.name} has no statement"


@pytest.mark.parametrize("path,stmt", _functions(), ids=lambda v: getattr(v, "name", ""))
def test_every_function_pins_search_path_and_volatility(
    path: Path, stmt: ast.CreateFunctionStmt
) -> None:
    options = _options(stmt)
    setting = options.get("set")
    assert isinstance(setting, ast.VariableSetStmt), f"{_name(stmt)} in {path.name}: no SET"
    assert setting.name == "search_path"
    values = [arg.val.sval for arg in setting.args]
    assert values == ["pg_catalog", "pg_temp"], f"{_name(stmt)}: search_path is {values}"
    assert "volatility" in options, f"{_name(stmt)} in {path.name} does not declare volatility"
    assert _name(stmt).startswith("pgflow."), f"{_name(stmt)} is not schema-qualified"


def test_every_function_has_a_comment() -> None:
    created = {_name(stmt) for _, stmt in _functions()}
    commented = {
        ".".join(part.sval for part in stmt.object.objname)
        for path in FILES
        for stmt in _statements(path)
        if isinstance(stmt, ast.CommentStmt) and isinstance(stmt.object, ast.ObjectWithArgs)
    }
    assert created - commented == set()


def test_security_definer_only_for_the_granted_api() -> None:
    """A SECURITY DEFINER function is a door: it must be in the grant lists."""
    definers = {
        _name(stmt)
        for _, stmt in _functions()
        if getattr(_options(stmt).get("security"), "boolval", False)
    }
    grants = (SRC / "800_grants.sql").read_text()
    granted = set(re.findall(r"'(pgflow\.[a-z_]+)\(", grants))
    assert definers, "the protocol functions run as the owner"
    assert definers == granted
    assert not any(name.startswith("pgflow._") for name in definers)


def test_no_create_role_in_the_extension() -> None:
    for path in FILES:
        for stmt in _statements(path):
            assert not isinstance(stmt, ast.CreateRoleStmt), f"{path.name} creates a role"
