"""The extension's SQL scripts as the package ships them (standard library only).

``pgflow/sql/`` in a wheel holds the control file, every
``extension/sql/pgflow--*.sql`` (frozen scripts of released versions and
upgrade scripts) and the install script of the version in development, which
:func:`install_script` concatenates from ``extension/src/*.sql`` exactly as
``extension/Makefile`` does, byte for byte.

Two callers: setup.py loads this file by its path while building a wheel
(when the package's dependencies are not installed, so it imports nothing of
pgflow), and :func:`pgflow.db.install.find_scripts` uses it in a checkout
where ``make build`` never ran.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

CONTROL: Final = "pgflow.control"
#: The line extension/Makefile's ``sed`` reads the version from; anything else
#: on it (which sed would keep) is refused rather than guessed at.
_DEFAULT_VERSION_RE: Final = re.compile(r"^default_version *= *'([^']+)' *$", re.M)


class ScriptsError(Exception):
    """extension/ lacks what the scripts are made of (pgflow.errors is not importable here)."""


def default_version(extension: Path) -> str:
    """``default_version`` of ``extension/pgflow.control``."""
    control = extension / CONTROL
    try:
        text = control.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScriptsError(f"{control}: cannot read it ({exc.strerror})") from exc
    versions = _DEFAULT_VERSION_RE.findall(text)
    if len(versions) != 1:
        raise ScriptsError(f"{control}: expected one line default_version = 'X.Y.Z'")
    return str(versions[0])


def sources(extension: Path) -> list[Path]:
    """``$(sort $(wildcard src/*.sql))``: byte order, no hidden files."""
    found = [
        p for p in (extension / "src").glob("*.sql") if not p.name.startswith(".") and p.is_file()
    ]
    return sorted(found, key=lambda p: p.name.encode())


def install_script_name(version: str) -> str:
    return f"pgflow--{version}.sql"


def install_script(extension: Path) -> bytes:
    """``extension/build/pgflow--<version>.sql`` as ``make -C extension`` writes it."""
    version = default_version(extension)
    files = sources(extension)
    if not files:
        raise ScriptsError(f"{extension / 'src'}: no *.sql source files")
    parts = [
        f"-- pgflow {version}: generated from extension/src/ by make; do not edit.\n".encode(),
        b'\\echo Use "CREATE EXTENSION pgflow" to load this file. \\quit\n',
    ]
    for path in files:
        parts.append(f"\n-- ---- src/{path.name}\n".encode())
        parts.append(path.read_bytes())
    return b"".join(parts)


def package_files(extension: Path) -> dict[str, bytes]:
    """File name -> content of ``pgflow/sql/`` (what ``make build`` copies there).

    The built install script takes the place of an ``extension/sql/`` file of
    the same name, as it does in ``make install``.
    """
    files = {CONTROL: (extension / CONTROL).read_bytes()}
    for path in sorted((extension / "sql").glob("pgflow--*.sql")):
        files[path.name] = path.read_bytes()
    files[install_script_name(default_version(extension))] = install_script(extension)
    return files
