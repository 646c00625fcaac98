"""The package's SQL scripts: built as extension/Makefile builds them, found in a bare checkout.

pgflow.db._scripts concatenates extension/src/ for the wheel (setup.py) and
for a checkout where ``make build`` never ran (find_scripts); both must give
exactly the bytes of ``make -C extension``.  The version is written in two
places, extension/pgflow.control and pgflow.__version__, and pyproject.toml
reads the latter.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest
from packaging_helpers import EXTENSION, ROOT, make_extension

import pgflow
from pgflow.db import _scripts
from pgflow.db import install as installer
from pgflow.errors import InstallError

DEFAULT = _scripts.default_version(EXTENSION)


def test_the_install_script_is_built_as_make_builds_it(tmp_path: Path) -> None:
    built = make_extension(EXTENSION, tmp_path) / "build" / f"pgflow--{DEFAULT}.sql"
    assert _scripts.install_script(EXTENSION) == built.read_bytes()


def test_the_builder_follows_make_on_awkward_sources(tmp_path: Path) -> None:
    ext = tmp_path / "awkward"
    (ext / "src").mkdir(parents=True)
    shutil.copy(EXTENSION / "Makefile", ext)
    (ext / "pgflow.control").write_text("default_version = '9.8.7'\nschema = pgflow\n")
    (ext / "sql").mkdir()
    sources = {
        "b.sql": b"-- no newline at the end",
        "a.sql": b"SELECT 1;\n\n\n",
        "A.sql": b"-- upper case sorts first (byte order)\n",
        "10_x.sql": b"-- before 9_x.sql\n",
        "9_x.sql": "-- caf\u00e9 \\n \\t $$ '\n".encode(),
        "latin1.sql": b"-- \xe9t\xe9\r\n",
        "empty.sql": b"",
        ".hidden.sql": b"-- make's wildcard does not see it\n",
        "notes.txt": b"not SQL\n",
    }
    for name, data in sources.items():
        (ext / "src" / name).write_bytes(data)
    built = make_extension(ext, tmp_path / "made") / "build" / "pgflow--9.8.7.sql"
    ours = _scripts.install_script(ext)
    assert ours == built.read_bytes()
    assert b".hidden" not in ours
    assert b"notes.txt" not in ours


def test_package_files_are_what_make_build_copies(tmp_path: Path) -> None:
    files = _scripts.package_files(EXTENSION)
    expected = {p.name for p in (EXTENSION / "sql").glob("pgflow--*.sql")}
    assert sorted(files) == sorted({*expected, "pgflow.control", f"pgflow--{DEFAULT}.sql"})
    assert files["pgflow.control"] == (EXTENSION / "pgflow.control").read_bytes()
    for name in expected:
        assert files[name] == (EXTENSION / "sql" / name).read_bytes(), name
    if (installer.PACKAGE_SQL / "pgflow.control").is_file():  # `make build` ran here
        shipped = {p.name: p.read_bytes() for p in installer.PACKAGE_SQL.iterdir()}
        assert shipped == files, "tools/pgflow/sql/ is stale: run `make build`"


def test_a_checkout_where_make_never_ran_builds_the_script_from_src(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = tmp_path / "extension"
    shutil.copytree(EXTENSION, checkout, ignore=shutil.ignore_patterns("build"))
    monkeypatch.setattr(installer, "PACKAGE_SQL", tmp_path / "no-package-copy")
    monkeypatch.setattr(installer, "CHECKOUT_EXTENSION", checkout)
    scripts = installer.find_scripts()
    assert scripts.default == DEFAULT
    released = [
        m["a"]
        for p in (checkout / "sql").glob("pgflow--*.sql")
        if (m := installer.SCRIPT_RE.match(p.name)) and not m["b"]
    ]
    assert scripts.versions == sorted([*released, DEFAULT], key=installer.version_key)
    assert scripts.full[DEFAULT].read_bytes() == _scripts.install_script(checkout)
    assert scripts.full[DEFAULT].name == f"pgflow--{DEFAULT}.sql"
    # a change of src/ is seen by the next call
    (checkout / "src" / "999_more.sql").write_text("-- more\n")
    again = installer.find_scripts()
    assert again.full[DEFAULT].read_bytes().endswith(b"\n-- ---- src/999_more.sql\n-- more\n")
    assert scripts.full[DEFAULT].read_bytes() != again.full[DEFAULT].read_bytes()


def test_a_checkout_without_sources_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = tmp_path / "extension"
    checkout.mkdir()
    shutil.copy(EXTENSION / "pgflow.control", checkout)
    monkeypatch.setattr(installer, "PACKAGE_SQL", tmp_path / "no-package-copy")
    monkeypatch.setattr(installer, "CHECKOUT_EXTENSION", checkout)
    with pytest.raises(InstallError, match=r"cannot build the install script from"):
        installer.find_scripts()


def test_the_version_is_written_in_two_places_that_agree() -> None:
    assert pgflow.__version__ == DEFAULT
    control = (EXTENSION / "pgflow.control").read_text()
    assert re.findall(r"^default_version\s*=\s*'([^']+)'", control, re.M) == [pgflow.__version__]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    version = project["tool"]["setuptools"]["dynamic"]["version"]
    assert version == {"attr": "pgflow.__version__"}
