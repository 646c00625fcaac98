"""The shipped scripts: frozen ones unchanged, a path to the default version, one version.

* extension/sql/SHA256SUMS pins every frozen script: the full script of each
  released version and every upgrade script that ends at a released version.
  Nobody edits those files again.
* The only unpinned scripts are the upgrade scripts into the version in
  development (the default version), whose full script is built from
  extension/src/ and is never in extension/sql/, and the downgrade scripts
  out of it (pgflow--DEFAULT--P.sql, P older).
* The package copy in tools/pgflow/sql/ (made by `make build`) is identical.
* pgflow.control, pyproject.toml and pgflow.__version__ name the same version.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib

import pytest
from upgrade_helpers import DEFAULT, EXTENSION, RELEASED, ROOT, SQL

import pgflow
from pgflow.db import install as installer

SUMS = SQL / "SHA256SUMS"


def _sums() -> dict[str, str]:
    if not SUMS.exists():
        return {}
    out = {}
    for line in SUMS.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        out[name.lstrip("*")] = digest
    return out


def test_every_frozen_script_has_its_recorded_checksum() -> None:
    for name, digest in _sums().items():
        path = SQL / name
        assert path.is_file(), f"SHA256SUMS lists {name}, which is missing"
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        assert actual == digest, (
            f"{name} changed after its release: frozen scripts are never edited "
            "(put changes in the upgrade script of the version in development)"
        )


def test_only_the_scripts_of_the_version_in_development_are_unpinned() -> None:
    sums = _sums()
    for path in sorted(SQL.glob("pgflow--*.sql")):
        match = installer.SCRIPT_RE.match(path.name)
        assert match, f"{path.name}: not pgflow--X.Y.Z.sql nor pgflow--X.Y.Z--X.Y.Z.sql"
        if path.name in sums:
            continue
        way_back = match["a"] == DEFAULT and match["b"] is not None
        assert match["b"] == DEFAULT or way_back, (
            f"{path.name} is not in SHA256SUMS: only upgrade scripts into {DEFAULT} "
            "(in development) and downgrade scripts out of it may change"
        )
    assert not (SQL / f"pgflow--{DEFAULT}.sql").exists(), (
        f"the full script of {DEFAULT} is built from extension/src/, not kept in extension/sql/"
    )
    assert set(sums) <= {p.name for p in SQL.glob("pgflow--*.sql")}
    assert {f"pgflow--{v}.sql" for v in RELEASED} <= set(sums)


def test_every_released_version_has_an_update_path_to_the_default() -> None:
    scripts = installer.collect(DEFAULT, SQL.glob("pgflow--*.sql"))
    for version in RELEASED:
        assert installer.version_key(version) < installer.version_key(DEFAULT)
        assert scripts.update_path(version, DEFAULT), version


def test_upgrade_scripts_keep_the_extension_guard() -> None:
    for path in SQL.glob("pgflow--*.sql"):
        text = path.read_text()
        assert re.search(r"^\\echo .*\\quit$", text, re.M), f"{path.name}: no \\echo ... \\quit"
        assert "@extschema@" not in text, f"{path.name}: the schema is fixed (pgflow)"


def test_the_extension_and_the_package_have_one_version() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["dynamic"] == ["version"], "pyproject takes pgflow.__version__"
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "pgflow.__version__"}
    assert pgflow.__version__ == DEFAULT


def test_the_package_ships_the_same_scripts() -> None:
    if not (installer.PACKAGE_SQL / "pgflow.control").exists():
        if os.environ.get("CI") or os.environ.get("PGFLOW_REQUIRE_DB"):
            pytest.fail(f"{installer.PACKAGE_SQL} is missing: run `make build`")
        pytest.skip("no package copy of the scripts: run `make build`")
    shipped = {p.name: p.read_bytes() for p in installer.PACKAGE_SQL.iterdir()}
    expected = {p.name: p.read_bytes() for p in SQL.glob("pgflow--*.sql")}
    expected["pgflow.control"] = (EXTENSION / "pgflow.control").read_bytes()
    built = EXTENSION / "build" / f"pgflow--{DEFAULT}.sql"
    expected[built.name] = built.read_bytes()
    assert sorted(shipped) == sorted(expected), "run `make build`"
    for name, data in expected.items():
        assert shipped[name] == data, f"tools/pgflow/sql/{name} differs: run `make build`"
    scripts = installer.find_scripts()
    assert scripts.default == DEFAULT
    assert sorted(scripts.full) == sorted([*RELEASED, DEFAULT], key=installer.version_key)
