"""The package's layers: imports point down (docs/design/architecture.md, "Import rules").

``errors <- options <- spec <- compiler``, ``spec <- db <- worker``, ``db <- ui``,
everything ``<- cli``; nothing imports ``cli`` or ``testing``.  Every import of a
``pgflow`` module counts, also one inside a function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "tools" / "pgflow"

#: Layer -> the layers its modules may import (besides itself and the package face).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "options": {"errors"},
    "spec": {"errors", "options"},
    "compiler": {"errors", "options", "spec"},
    "db": {"errors", "options", "spec"},
    "worker": {"errors", "options", "spec", "db"},
    "ui": {"errors", "options", "spec", "db"},
    "testing": {"errors", "options", "spec", "compiler", "db", "worker"},
    "cli": {"errors", "options", "spec", "compiler", "db", "worker", "ui"},
    "__main__": {"cli"},
}


def layer_of(module: str) -> str:
    """``pgflow.db.client`` -> ``db``; ``pgflow`` -> ``pgflow`` (the face)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "pgflow"


def module_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_blocks(tree: ast.Module) -> set[ast.AST]:
    """The nodes under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    inside: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            for child in node.body:
                inside.update(ast.walk(child))
    return inside


def imports_of(path: Path, module: str, *, runtime_only: bool = False) -> Iterator[tuple[int, str]]:
    """(line, imported pgflow module) for every import in a file, relative ones resolved.

    ``runtime_only`` leaves out imports under ``if TYPE_CHECKING:``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skipped = _type_checking_blocks(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pgflow":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "pgflow":
                continue
            if target == "pgflow":
                # `from pgflow import x`: x is a module of the package or a name of its face
                for alias in node.names:
                    candidate = f"pgflow.{alias.name}"
                    is_module = (PACKAGE / alias.name).is_dir() or (
                        PACKAGE / f"{alias.name}.py"
                    ).is_file()
                    yield node.lineno, candidate if is_module else "pgflow"
            else:
                yield node.lineno, target


def violations(root: Path) -> list[str]:
    """Every import that breaks the rules, as ``file:line: a imports b``."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        here = layer_of(module)
        # the face names everything for type checkers, and loads it lazily at run time
        for line, target in imports_of(path, module, runtime_only=here == "pgflow"):
            there = layer_of(target)
            if there in (here, "pgflow"):
                continue  # its own layer, or __version__ from the face
            if here == "pgflow":
                found.append(f"{path}:{line}: the package face imports {target} (load it lazily)")
                continue
            allowed = ALLOWED.get(here)
            if allowed is None:
                found.append(f"{path}:{line}: {module} is in no layer (add it to ALLOWED)")
            elif there not in allowed:
                found.append(f"{path}:{line}: {module} ({here}) imports {target} ({there})")
    return found


def test_the_package_keeps_its_layers() -> None:
    assert violations(PACKAGE) == []


def test_every_subpackage_is_a_known_layer() -> None:
    layers = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    layers |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert layers <= set(ALLOWED), f"layers without rules: {sorted(layers - set(ALLOWED))}"


def test_a_forbidden_import_is_reported(tmp_path: Path) -> None:
    """The checker fails on what the rules forbid (here: the worker imports the CLI)."""
    root = tmp_path / "pgflow"
    for sub in ("worker", "cli", "spec"):
        (root / sub).mkdir(parents=True)
        (root / sub / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "errors.py").write_text("")
    (root / "worker" / "loop.py").write_text(
        "from pgflow.errors import PgflowError\n"
        "def f():\n    from pgflow.cli import main\n    return main\n"
    )
    (root / "spec" / "model.py").write_text("from . import dsl\nfrom ..testing import plugin\n")
    found = violations(root)
    assert any("pgflow.worker.loop (worker) imports pgflow.cli (cli)" in v for v in found), found
    assert any("pgflow.spec.model (spec) imports pgflow.testing (testing)" in v for v in found), (
        found
    )
    assert not any("errors" in v for v in found), "an allowed import is not reported"


SPEC = textwrap.dedent(
    """\
    flow: lean
    steps:
      - slug: a
      - slug: b
        depends_on: [a]
    """
)

HEAVY = ("psycopg", "asyncio", "pgflow.worker", "pgflow.db")


@pytest.mark.parametrize(
    "code",
    [
        "from pgflow.cli import build_main; build_main([SPEC, '--dry-run'])",
        "from pgflow.cli import main; main(['graph', SPEC])",
        "from pgflow.cli import main; main(['new', 'fresh', '--dir', DIR])",
        "import pgflow; pgflow.Flow('x')",
    ],
    ids=["pgflow-build", "pgflow graph", "pgflow new", "import pgflow"],
)
def test_definition_commands_do_not_load_the_database_driver(tmp_path: Path, code: str) -> None:
    spec = tmp_path / "lean.yaml"
    spec.write_text(SPEC)
    program = textwrap.dedent(
        f"""\
        import json, sys
        SPEC, DIR = {str(spec)!r}, "new"
        try:
            {code}
        except SystemExit as exc:
            assert not exc.code, exc.code
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "psycopg"
                        or m == "asyncio" or m.startswith(("pgflow.worker", "pgflow.db")))
        print(json.dumps(loaded), file=sys.stderr)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stderr.strip().splitlines()[-1])
    assert loaded == [], f"{code} loaded {loaded}"
    assert all(not m.startswith(HEAVY) for m in loaded)
