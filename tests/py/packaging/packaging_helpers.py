"""Helpers of the packaging tests: a clean copy of the repository, and `make` on a copy."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
EXTENSION = ROOT / "extension"


def unavailable(reason: str) -> None:
    """Skip, except in CI or with PGFLOW_REQUIRE_DB set (as pgflow.testing does)."""
    if os.environ.get("PGFLOW_REQUIRE_DB") or os.environ.get("CI"):
        pytest.fail(f"packaging tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def clean_env() -> dict[str, str]:
    """The environment for the tools under test: nothing points into the checkout."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    return env


def run(args: list[str | Path], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its output."""
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout}{done.stderr}"
    return done


def working_tree_copy(dest: Path) -> Path:
    """The repository as a fresh ``git clone`` of the working tree would be.

    ``git ls-files --cached --others --exclude-standard``: tracked files as
    they are on disk (committed or not) plus new files that .gitignore does
    not exclude; deleted files are left out, and ignored ones (.venv,
    tools/pgflow/sql/, extension/build/, *.egg-info) are not there, exactly as
    in a clone.  So the test builds the code under review, uncommitted
    changes included, without anything a local ``make build`` left behind.
    """
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        unavailable(f"{ROOT} is not a git checkout (or git is missing)")
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in sorted(set(filter(None, listed.split("\0")))):
        source = ROOT / name
        if not source.is_file() and not source.is_symlink():
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return dest


def make_extension(extension: Path, workdir: Path) -> Path:
    """``make -C extension`` on a copy of ``extension`` in ``workdir``; returns the copy.

    The built install script is ``<copy>/build/pgflow--<version>.sql``.
    """
    pg_config = os.environ.get("PG_CONFIG", "pg_config")
    if shutil.which("make") is None or shutil.which(pg_config) is None:
        unavailable(f"make or {pg_config} is missing (the extension's PGXS build needs them)")
    copy = workdir / "extension"
    shutil.copytree(extension, copy, ignore=shutil.ignore_patterns("build"))
    run(["make", "-s", "--no-print-directory", "-C", copy, f"PG_CONFIG={pg_config}"])
    return copy
