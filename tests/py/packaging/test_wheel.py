"""The distribution as a user gets it: sdist, wheels, a fresh venv at the dependency floors.

What the module fixture does, once (20 s with a warm pip cache, most of it pip):

1. copies the working tree as a fresh clone would have it (packaging_helpers.
   working_tree_copy: tracked and new files as on disk, nothing git ignores,
   so no tools/pgflow/sql/ or extension/build/ from a local `make build`);
2. builds the sdist and a wheel from the sdist (``python -m build``), and a
   wheel straight from the tree (``pip wheel --no-deps``, what ``pip install
   .`` does);
3. creates a venv and installs the sdist's wheel with the ``binary`` extra
   under a constraints file that pins every dependency at the floor
   pyproject.toml declares (``--only-binary :all:``: the floors must have
   wheels for this Python).

The tests then check the sdist's files, that both wheels carry pgflow/sql/
with exactly the bytes of ``make -C extension`` and extension/sql/, the
installed commands, and ``pgflow install --method plain`` / ``pgflow upgrade``
run from the venv against throwaway databases.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from packaging_helpers import make_extension, run, working_tree_copy

from pgflow.compiler.migration import same_body
from pgflow.db import _scripts
from pgflow.db import install as installer
from pgflow.testing import Server, catalog, create_database, drop_database

pytestmark = pytest.mark.db


@dataclass(frozen=True)
class Built:
    tree: Path  # the working-tree copy the distributions were built from
    sdist: Path
    wheel_from_sdist: Path
    wheel_from_tree: Path
    venv: Path
    pins: dict[str, str]  # distribution -> pinned version

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name


def floors(pyproject: dict[str, object]) -> dict[str, str]:
    """Distribution -> the lower bound pyproject.toml declares (extra ``binary`` included)."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    requirements = [*project["dependencies"], *project["optional-dependencies"]["binary"]]
    out: dict[str, str] = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[([a-z,]+)\])?>=([0-9.]+)", requirement)
        assert match, f"not name[extras]>=version: {requirement!r}"
        name, extras, version = match.groups()
        out[name.lower().replace("_", "-")] = version
        if extras == "binary" and name == "psycopg":
            out["psycopg-binary"] = version  # psycopg[binary] pins psycopg-binary to psycopg
    return out


def _release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("wheel")
    tree = working_tree_copy(base / "tree")
    dist = base / "dist"
    has_build = subprocess.run(
        [sys.executable, "-m", "build", "--version"], capture_output=True, check=False
    )
    if has_build.returncode != 0:
        pytest.fail("`python -m build` is missing: pip install --group dev", pytrace=False)
    run([sys.executable, "-m", "build", "-q", "--outdir", dist / "sdist", tree])
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist / "tree", tree])
    (sdist,) = (dist / "sdist").glob("*.tar.gz")
    (wheel_from_sdist,) = (dist / "sdist").glob("*.whl")
    (wheel_from_tree,) = (dist / "tree").glob("*.whl")

    pins = floors(tomllib.loads((tree / "pyproject.toml").read_text()))
    constraints = base / "floors.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    venv = base / "venv"
    run([sys.executable, "-m", "venv", venv])
    run(
        [
            venv / "bin" / "python",
            "-m",
            "pip",
            "install",
            "-q",
            "--only-binary",
            ":all:",
            "--constraint",
            constraints,
            f"{wheel_from_sdist}[binary]",
        ]
    )
    return Built(tree, sdist, wheel_from_sdist, wheel_from_tree, venv, pins)


def _wheel_files(wheel: Path) -> dict[str, bytes]:
    """The files of a wheel, without its dist-info (RECORD names build paths and dates)."""
    with zipfile.ZipFile(wheel) as zf:
        return {n: zf.read(n) for n in zf.namelist() if ".dist-info/" not in n}


def test_the_sdist_carries_what_pgflow_sql_is_built_from(built: Built) -> None:
    with tarfile.open(built.sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    ext = built.tree / "extension"
    expected = {
        "setup.py",
        "pyproject.toml",
        "MANIFEST.in",
        "tools/pgflow/db/_scripts.py",
        "extension/Makefile",
        "extension/pgflow.control",
        *(f"extension/sql/{p.name}" for p in (ext / "sql").iterdir()),
        *(f"extension/src/{p.name}" for p in (ext / "src").glob("*.sql")),
    }
    assert expected <= names, sorted(expected - names)
    assert not [n for n in names if n.startswith(("extension/build/", "tools/pgflow/sql/"))]


def test_both_wheels_ship_pgflow_sql_as_make_builds_it(built: Built, tmp_path: Path) -> None:
    from_sdist = _wheel_files(built.wheel_from_sdist)
    from_tree = _wheel_files(built.wheel_from_tree)
    assert from_sdist == from_tree
    shipped = {n.removeprefix("pgflow/sql/"): d for n, d in from_sdist.items() if "/sql/" in n}
    ext = built.tree / "extension"
    version = _scripts.default_version(ext)
    made = make_extension(ext, tmp_path)
    expected = {p.name: p.read_bytes() for p in (ext / "sql").glob("pgflow--*.sql")}
    expected["pgflow.control"] = (ext / "pgflow.control").read_bytes()
    expected[f"pgflow--{version}.sql"] = (made / "build" / f"pgflow--{version}.sql").read_bytes()
    assert sorted(shipped) == sorted(expected)
    for name, data in expected.items():
        assert shipped[name] == data, f"pgflow/sql/{name} differs from make's"
    assert _scripts.package_files(ext) == expected
    for data_file in (
        "pgflow/py.typed",
        "pgflow/db/queries.sql",
        "pgflow/compiler/templates/flow.sql.j2",
        "pgflow/compiler/templates/header.sql.j2",
        "pgflow/ui/templates/base.html",
        "pgflow/ui/templates/run.html",
        "pgflow/ui/static/dashboard.js",
        "pgflow/ui/static/mermaid.min.js",
        "pgflow/ui/static/mermaid.LICENSE",
        "pgflow/ui/static/VENDOR.md",
    ):
        assert data_file in from_sdist, data_file


def test_the_venv_has_the_floor_versions(built: Built) -> None:
    listed = run([built.bin("python"), "-m", "pip", "list", "--format", "freeze"]).stdout
    have = {
        name.replace("_", "-"): version
        for name, _, version in (line.lower().partition("==") for line in listed.split())
    }
    for name, floor in built.pins.items():
        assert name in have, f"{name} is not installed"
        assert _release(have[name]) == _release(floor), f"{name} {have[name]}, not {floor}"
    run([built.bin("python"), "-m", "pip", "check"])
    where = run(
        [built.bin("python"), "-c", "import pgflow; print(pgflow.__file__)"], cwd=built.venv
    )
    assert where.stdout.startswith(str(built.venv)), "pgflow was imported from outside the venv"


def test_the_installed_commands_start(built: Built, tmp_path: Path) -> None:
    version = _scripts.default_version(built.tree / "extension")
    commands: list[list[str | Path]] = [
        [built.bin("pgflow"), "--help"],
        [built.bin("pgflow-build"), "--help"],
        [built.bin("python"), "-m", "pgflow", "--help"],
        [built.bin("pgflow"), "install", "--help"],
    ]
    for args in commands:
        done = run(args, cwd=tmp_path)
        assert done.stdout.startswith("Usage: "), done.stdout
    done = run([built.bin("pgflow"), "--version"], cwd=tmp_path)
    assert done.stdout == f"pgflow, version {version}\n"


def test_pgflow_build_check_accepts_a_migration_printed_by_another_pglast(
    built: Built, tmp_path: Path
) -> None:
    # expected.sql is printed by the development pglast; the venv has the floor
    golden = built.tree / "tests" / "py" / "golden" / "minimal"
    (tmp_path / "flow.yaml").write_bytes((golden / "flow.yaml").read_bytes())
    (tmp_path / "migrations").mkdir()
    migration = tmp_path / "migrations" / "20000101000000_create_hello_flow.sql"
    migration.write_bytes((golden / "expected.sql").read_bytes())
    done = run([built.bin("pgflow-build"), "--check", "flow.yaml"], cwd=tmp_path)
    assert "hello: up to date" in done.stdout
    printed = run([built.bin("pgflow-build"), "--dry-run", "flow.yaml"], cwd=tmp_path).stdout
    assert same_body(printed, migration.read_text())


@pytest.fixture
def databases(pg_server: Server) -> Iterator[list[str]]:
    """Two empty databases (no pgflow), dropped after the test."""
    names = [f"pgflow_wheel_{os.getpid()}_{label}" for label in ("fresh", "upgraded")]
    for name in names:
        drop_database(pg_server, name)
    try:
        yield [create_database(pg_server, name) for name in names]
    finally:
        for name in names:
            drop_database(pg_server, name)


def _pgflow(built: Built, *args: str) -> subprocess.CompletedProcess[str]:
    return run([built.bin("pgflow"), *args], cwd=built.venv)


def test_the_installed_tools_install_plain_and_upgrade(
    built: Built, databases: list[str], db: str
) -> None:
    fresh, upgraded = databases
    version = _scripts.default_version(built.tree / "extension")
    scripts = installer.collect(version, (built.tree / "extension" / "sql").glob("pgflow--*.sql"))
    oldest = scripts.versions[0]
    assert installer.version_key(oldest) < installer.version_key(version)

    done = _pgflow(built, "install", "--method", "plain", "--dsn", fresh)
    assert done.stdout.endswith(f"installed pgflow {version}\n"), done.stdout
    again = _pgflow(built, "install", "--method", "plain", "--dsn", fresh)
    assert again.stdout == f"pgflow {version} is already installed\n"

    done = _pgflow(built, "install", "--method", "plain", "--version", oldest, "--dsn", upgraded)
    assert done.stdout.endswith(f"installed pgflow {oldest}\n"), done.stdout
    done = _pgflow(built, "upgrade", "--dsn", upgraded)
    assert done.stdout.endswith(f"upgraded pgflow {oldest} to {version}\n"), done.stdout
    done = _pgflow(built, "upgrade", "--dsn", upgraded)
    assert done.stdout == f"pgflow {version} is installed: nothing to upgrade\n"

    fingerprints = []
    for dsn in (fresh, upgraded):
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert installer.installed(conn) == installer.Installed(version, "plain")
            fingerprint = catalog.fingerprint(conn, extension=None, ignore=["schema_version"])
            fingerprints.append(fingerprint)
    with psycopg.connect(db, autocommit=True) as conn:  # CREATE EXTENSION pgflow
        extension = catalog.fingerprint(conn, extension=None)
    assert fingerprints[0] == extension, catalog.diff(extension, fingerprints[0])
    assert fingerprints[1] == extension, catalog.diff(extension, fingerprints[1])
