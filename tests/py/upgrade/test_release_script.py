"""`make release` (tools/scripts/release) on a copy of the repository."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from upgrade_helpers import DEFAULT, ROOT

SCRIPT = ROOT / "tools" / "scripts" / "release"


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "extension").mkdir(parents=True)
    for name in ("Makefile", "pgflow.control"):
        shutil.copy(ROOT / "extension" / name, root / "extension" / name)
    for sub in ("src", "sql"):
        shutil.copytree(ROOT / "extension" / sub, root / "extension" / sub)
    (root / "tools" / "pgflow").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "pgflow" / "__init__.py", root / "tools" / "pgflow")
    shutil.copy(ROOT / "pyproject.toml", root)
    shutil.copy(ROOT / "CHANGELOG.md", root)
    return root


def _release(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), "--date", "2030-01-02", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def _bump(version: str) -> str:
    major, minor, _ = (int(p) for p in version.split("."))
    return f"{major}.{minor + 1}.0"


def _changelog_with(root: Path, heading: str) -> None:
    """The copy's CHANGELOG with `heading` for the version in development."""
    path = root / "CHANGELOG.md"
    text = re.sub(
        rf"^## (Unreleased \({re.escape(DEFAULT)}\)|{re.escape(DEFAULT)} — .*)$",
        heading,
        path.read_text(),
        count=1,
        flags=re.M,
    )
    assert heading in text
    path.write_text(text)


def test_release_freezes_bumps_and_starts_the_upgrade_script(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _changelog_with(root, f"## Unreleased ({DEFAULT})")
    new = _bump(DEFAULT)
    pyproject = (root / "pyproject.toml").read_text()
    done = _release(root)
    assert done.returncode == 0, done.stderr
    sql = root / "extension" / "sql"
    frozen = sql / f"pgflow--{DEFAULT}.sql"
    built = (root / "extension" / "build" / f"pgflow--{DEFAULT}.sql").read_text()
    # the frozen script is the built one, with a header that says it is frozen
    assert frozen.read_text().split("\n", 1)[1] == built.split("\n", 1)[1]
    assert "frozen by `make release`" in frozen.read_text().split("\n", 1)[0]
    sums = (sql / "SHA256SUMS").read_text()
    assert f"{hashlib.sha256(frozen.read_bytes()).hexdigest()}  {frozen.name}\n" in sums
    for upgrade in sql.glob(f"pgflow--*--{DEFAULT}.sql"):  # final now
        if not upgrade.name.startswith(f"pgflow--{new}--"):  # but the new way back
            assert upgrade.name in sums
    assert f"default_version = '{new}'" in (root / "extension" / "pgflow.control").read_text()
    assert f'__version__ = "{new}"' in (root / "tools" / "pgflow" / "__init__.py").read_text()
    # pyproject.toml has no version of its own: it reads pgflow.__version__
    assert (root / "pyproject.toml").read_text() == pyproject
    upgrade = (sql / f"pgflow--{DEFAULT}--{new}.sql").read_text()
    assert f"\\echo Use \"ALTER EXTENSION pgflow UPDATE TO '{new}'\"" in upgrade
    assert "mirror every change of extension/src/" in upgrade
    # the way back from the new version starts too, with nothing to undo yet
    downgrade = (sql / f"pgflow--{new}--{DEFAULT}.sql").read_text()
    assert f"\\echo Use \"ALTER EXTENSION pgflow UPDATE TO '{DEFAULT}'\"" in downgrade
    assert downgrade.rstrip().endswith("do not edit below")
    changelog = (root / "CHANGELOG.md").read_text()
    assert f"## Unreleased ({new})" in changelog
    assert f"## {DEFAULT} — 2030-01-02" in changelog
    assert changelog.index(f"## Unreleased ({new})") < changelog.index(f"## {DEFAULT} — ")
    assert f"main is now {new}" in done.stdout

    # the next release freezes the upgrade script as well
    again = _release(root)
    assert again.returncode == 0, again.stderr
    sums = (sql / "SHA256SUMS").read_text()
    assert f"pgflow--{DEFAULT}--{new}.sql\n" in sums
    assert f"pgflow--{new}--{DEFAULT}.sql\n" in sums  # the way back out of it, final too
    assert f"pgflow--{new}.sql\n" in sums


def test_release_keeps_a_changelog_heading_that_is_dated_already(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _changelog_with(root, f"## {DEFAULT} — 2030-01-01")
    done = _release(root)
    assert done.returncode == 0, done.stderr
    changelog = (root / "CHANGELOG.md").read_text()
    new = _bump(DEFAULT)
    assert changelog.count(f"## {DEFAULT} — ") == 1
    assert f"## {DEFAULT} — 2030-01-01\n" in changelog  # the date the entry was given
    assert changelog.index(f"## Unreleased ({new})") < changelog.index(f"## {DEFAULT} — ")
    assert changelog.startswith("# Changelog\n")  # the new section goes under the preamble
    assert "tag v" in done.stdout and "the commit before" in done.stdout


def test_release_refuses_a_version_that_is_frozen_or_versions_that_differ(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    (root / "extension" / "sql" / f"pgflow--{DEFAULT}.sql").write_text("-- frozen\n")
    done = _release(root)
    assert done.returncode == 1
    assert "already released" in done.stderr

    root = _copy(tmp_path / "b")
    init = root / "tools" / "pgflow" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{DEFAULT}"', '"9.9.9"'))
    done = _release(root)
    assert done.returncode == 1
    assert "must move together" in done.stderr
    assert "9.9.9" in done.stderr
    assert not (root / "extension" / "sql" / f"pgflow--{DEFAULT}.sql").exists()
    bad = _release(_copy(tmp_path / "c"), "--next", "0.0.1")
    assert bad.returncode == 1
    assert "must be X.Y.Z and above" in bad.stderr


def test_release_refuses_uncommitted_changes_in_extension(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("no git")
    root = _copy(tmp_path)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-C", str(root)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    (root / "extension" / "src" / "999_wip.sql").write_text("-- work in progress\n")
    done = _release(root)
    assert done.returncode == 1
    assert "uncommitted changes" in done.stderr
    assert "999_wip.sql" in done.stderr
    assert not (root / "extension" / "sql" / f"pgflow--{DEFAULT}.sql").exists()
