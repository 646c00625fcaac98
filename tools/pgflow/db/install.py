"""Installing and upgrading pgflow in a database, and checking its version.

Two ways to put pgflow into a database, from the same versioned scripts:

* **extension** (self-hosted PostgreSQL with the extension files installed by
  ``make install``): ``CREATE EXTENSION pgflow VERSION ...`` and
  ``ALTER EXTENSION pgflow UPDATE TO ...``;
* **plain** (managed PostgreSQL where extension files cannot be installed):
  the same scripts, shipped in this package (``pgflow/sql/``), applied as an
  ordinary migration into schema ``pgflow``, one transaction, with the
  version recorded in ``pgflow.schema_version``.

The plain path does what ``CREATE EXTENSION`` does around a script: it drops
the ``\\echo ... \\quit`` guard line, replaces ``@extschema@`` with ``pgflow``,
runs with ``search_path = pgflow``, ``check_function_bodies = off`` and
``client_min_messages = warning``, and leaves out the top-level
``SELECT pg_catalog.pg_extension_config_dump(...)`` statements (that function
only works inside ``CREATE EXTENSION``; a plain schema is dumped whole by
pg_dump anyway).  Everything else is byte for byte the extension's script, so
both paths give the same catalog (tests/py/upgrade proves it).

The tools and the database must run the same version: :func:`check_version`
refuses a mismatch and names the command that fixes it.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import re
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import pglast
import psycopg

from pgflow import __version__
from pgflow.db import _scripts
from pgflow.db.queries import Queries
from pgflow.errors import InstallError, PermissionDenied, VersionMismatchError

Method = Literal["extension", "plain"]
#: A connection, or the queries bound to one.
Database = Queries | psycopg.Connection[Any]

EXTENSION: Final = "pgflow"
SCHEMA: Final = "pgflow"
VERSION_TABLE: Final = "schema_version"

#: The package's copy of the scripts (``make build`` and the wheel build fill it).
PACKAGE_SQL: Final = Path(__file__).resolve().parents[1] / "sql"
#: A source checkout: extension/ next to tools/.
CHECKOUT_EXTENSION: Final = Path(__file__).resolve().parents[3] / "extension"

SCRIPT_RE: Final = re.compile(r"^pgflow--(?P<a>\d+\.\d+\.\d+)(?:--(?P<b>\d+\.\d+\.\d+))?\.sql$")
_GUARD_RE: Final = re.compile(r"^\\echo .*$", re.M)
_CONFIG_DUMP_RE: Final = re.compile(
    r"^SELECT\s+(?:pg_catalog\s*\.\s*)?pg_extension_config_dump\s*\(", re.I
)


def _queries(db: Database) -> Queries:
    return db if isinstance(db, Queries) else Queries(db)


def version_key(version: str) -> tuple[int, ...]:
    """``'0.10.1'`` → ``(0, 10, 1)``, for ordering versions."""
    return tuple(int(part) for part in version.split("."))


# --------------------------------------------------------------------------- scripts


@dataclass(frozen=True)
class Scripts:
    """The versioned scripts available to these tools.

    ``full`` maps a version to its install script, ``upgrades`` a
    ``(from, to)`` pair to its upgrade script; ``default`` is the version the
    control file installs by default.
    """

    default: str
    full: Mapping[str, Path]
    upgrades: Mapping[tuple[str, str], Path]

    @property
    def versions(self) -> list[str]:
        """Every version with a full script, oldest first."""
        return sorted(self.full, key=version_key)

    def reaches(self, source: str, target: str) -> bool:
        """Whether a chain of these scripts leads from ``source`` to ``target``."""
        try:
            self.update_path(source, target)
        except InstallError:
            return False
        return True

    def update_path(self, source: str, target: str) -> list[tuple[str, str]]:
        """The shortest chain of upgrade scripts from ``source`` to ``target``
        (downgrade scripts only on the way down, upgrade scripts only up)."""
        if source == target:
            return []
        up = version_key(target) > version_key(source)
        edges = sorted(
            (e for e in self.upgrades if (version_key(e[1]) > version_key(e[0])) == up),
            key=lambda e: version_key(e[1]),
        )
        previous: dict[str, tuple[str, str]] = {}
        queue = deque([source])
        while queue:
            here = queue.popleft()
            for a, b in edges:
                if a == here and b not in previous and b != source:
                    previous[b] = (a, b)
                    queue.append(b)
        if target not in previous:
            raise InstallError(
                f"no upgrade path from pgflow {source} to {target} in {self.describe()}"
            )
        steps: list[tuple[str, str]] = []
        node = target
        while node != source:
            steps.append(previous[node])
            node = previous[node][0]
        return steps[::-1]

    def describe(self) -> str:
        paths = {p.parent for p in [*self.full.values(), *self.upgrades.values()]}
        return ", ".join(sorted(str(p) for p in paths)) or "(no scripts)"


def _control_version(control: Path) -> str:
    match = re.search(r"^default_version\s*=\s*'([^']+)'", control.read_text(), re.M)
    if not match:
        raise InstallError(f"{control}: no default_version")
    return match.group(1)


def collect(default: str, files: Iterable[Path]) -> Scripts:
    full: dict[str, Path] = {}
    upgrades: dict[tuple[str, str], Path] = {}
    for path in files:
        match = SCRIPT_RE.match(path.name)
        if not match:
            continue
        if match["b"]:
            upgrades[(match["a"], match["b"])] = path
        else:
            full[match["a"]] = path
    return Scripts(default=default, full=full, upgrades=upgrades)


def find_scripts(directory: Path | None = None) -> Scripts:
    """The scripts of the package (``pgflow/sql/``), or of a source checkout.

    ``directory``: a folder holding ``pgflow.control`` and ``pgflow--*.sql``
    (the layout of ``pgflow/sql/``).  A checkout without a package copy reads
    extension/sql/ and the built script in extension/build/; where ``make``
    never ran, the install script is built from extension/src/ as the
    Makefile builds it (:mod:`pgflow.db._scripts`), into a private temporary
    directory removed at exit.
    """
    if directory is None and (PACKAGE_SQL / "pgflow.control").is_file():
        directory = PACKAGE_SQL
    if directory is not None:
        control = directory / "pgflow.control"
        if not control.is_file():
            raise InstallError(f"{directory}: no pgflow.control (run `make build`)")
        return collect(_control_version(control), directory.glob("pgflow--*.sql"))
    control = CHECKOUT_EXTENSION / "pgflow.control"
    if not control.is_file():
        raise InstallError(
            f"the pgflow SQL scripts are missing from this package ({PACKAGE_SQL}); "
            "reinstall pgflow-tools, or run `make build` in a checkout"
        )
    default = _control_version(control)
    built = CHECKOUT_EXTENSION / "build" / _scripts.install_script_name(default)
    files = [
        *(CHECKOUT_EXTENSION / "sql").glob("pgflow--*.sql"),
        built if built.is_file() else _build_from_src(CHECKOUT_EXTENSION),
    ]
    return collect(default, (f for f in files if f.is_file()))


@functools.cache
def _private_directory() -> Path:
    path = Path(tempfile.mkdtemp(prefix="pgflow-sql-"))  # mode 0700
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _build_from_src(extension: Path) -> Path:
    """The install script built from ``extension/src/``, written to a private file."""
    try:
        version = _scripts.default_version(extension)
        data = _scripts.install_script(extension)
    except (_scripts.ScriptsError, OSError) as exc:
        raise InstallError(
            f"cannot build the install script from {extension / 'src'}: {exc}"
        ) from exc
    # one folder per content: a checkout whose src/ changes gets a new file
    folder = _private_directory() / hashlib.sha256(data).hexdigest()[:16]
    path = folder / _scripts.install_script_name(version)
    if not path.is_file():
        folder.mkdir(exist_ok=True)
        path.write_bytes(data)
    return path


def plain_statements(script: str) -> list[str]:
    """A script's statements as the plain path runs them (see the module doc)."""
    text = _GUARD_RE.sub("", script).replace("@extschema@", SCHEMA)
    kept: list[str] = []
    for piece in pglast.split(text, with_parser=True, only_slices=True):
        statement = text[piece]
        if _CONFIG_DUMP_RE.match(statement):
            continue
        if "pg_extension_config_dump" in statement:
            raise InstallError(
                "pg_extension_config_dump() may only be called as a top-level "
                "SELECT statement of its own (the plain install leaves those out): "
                + statement[:80]
            )
        kept.append(statement)
    return kept


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class Installed:
    """What a database has: a version and how it was installed."""

    version: str
    method: Method


def installed(db: Database) -> Installed | None:
    """The pgflow version of the database, or ``None`` when it has none.

    Reads ``pg_extension`` (readable by every role) and, for a plain install,
    ``pgflow.schema_version`` (readable by every role with USAGE on schema
    pgflow, i.e. roles given ``grant_worker`` / ``grant_client``).
    """
    queries = _queries(db)
    version = queries.extension_version()
    if version is not None:
        return Installed(version, "extension")
    version = queries.plain_version()
    return Installed(version, "plain") if version is not None else None


def upgrade_command(method: Method) -> str:
    if method == "extension":
        return "`pgflow upgrade` (runs ALTER EXTENSION pgflow UPDATE)"
    return "`pgflow upgrade` (applies the upgrade scripts to the plain install)"


def check_version(db: Database, expected: str = __version__) -> Installed:
    """Refuse to work with a database whose pgflow version is not ``expected``."""
    try:
        have = installed(db)
    except PermissionDenied as exc:
        raise VersionMismatchError(
            f"cannot read the installed pgflow version ({exc.message}): "
            "grant the role access with pgflow.grant_worker() or pgflow.grant_client()"
        ) from exc
    if have is None:
        raise VersionMismatchError(
            f"pgflow is not installed in this database: install it with `pgflow install` "
            f"(pgflow-tools {expected})"
        )
    if have.version == expected:
        return have
    if version_key(have.version) < version_key(expected):
        raise VersionMismatchError(
            f"the database has pgflow {have.version} but pgflow-tools is {expected}: "
            f"upgrade the database with {upgrade_command(have.method)}"
        )
    raise VersionMismatchError(
        f"the database has pgflow {have.version} but pgflow-tools is {expected}: "
        f"upgrade the tools with `pip install 'pgflow-tools=={have.version}'`"
    )


def available_versions(db: Database) -> list[str]:
    """Versions of the extension whose files the server has (empty: none)."""
    return sorted(_queries(db).available_versions(), key=version_key)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Step:
    """One thing install/upgrade does: a description and its SQL."""

    description: str
    statements: tuple[str, ...]
    record: tuple[str, str] | None = None  # plain path: (version, script name) to record


def choose_method(requested: str, available: list[str], version: str) -> Method:
    """``auto``: the extension when the server has its files, else plain."""
    if requested == "plain":
        return "plain"
    if not available:
        if requested == "extension":
            raise InstallError(
                "the server has no pgflow extension files: run `make install` on the "
                "server, or install without them with --method plain"
            )
        return "plain"
    if version not in available:
        raise InstallError(
            f"the server's pgflow extension files provide versions {', '.join(available)} "
            f"but not {version}: install the new files (`make install`), or use --method plain"
        )
    return "extension"


def plan_install(
    db: Database, version: str, method: str, scripts: Scripts | None = None
) -> list[Step]:
    """What ``pgflow install`` does to this database (empty: already installed)."""
    have = installed(db)
    if have is not None:
        if have.version == version:
            return []
        raise InstallError(
            f"pgflow {have.version} is already installed ({have.method}): "
            f"use {upgrade_command(have.method)}"
        )
    chosen = choose_method(method, available_versions(db), version)
    if chosen == "extension":
        stmt = f"CREATE EXTENSION pgflow VERSION {_literal(version)}"
        return [Step(f"CREATE EXTENSION pgflow VERSION '{version}'", (stmt,))]
    scripts = scripts or find_scripts()
    path = scripts.full.get(version)
    if path is None:
        raise InstallError(
            f"no install script for pgflow {version} in {scripts.describe()} "
            f"(versions: {', '.join(scripts.versions) or 'none'})"
        )
    if _queries(db).schema_relations():
        raise InstallError(
            "schema pgflow already holds objects but no pgflow version is recorded: "
            "drop it or install into another database"
        )
    return [
        Step(
            f"apply {path.name} as a plain migration into schema pgflow",
            ("CREATE SCHEMA IF NOT EXISTS pgflow", *plain_statements(path.read_text())),
            record=(version, path.name),
        )
    ]


def plan_upgrade(db: Database, target: str, scripts: Scripts | None = None) -> list[Step]:
    """What ``pgflow upgrade`` does to this database (empty: up to date)."""
    have = installed(db)
    if have is None:
        raise InstallError("pgflow is not installed in this database: use `pgflow install`")
    if have.version == target:
        return []
    if version_key(have.version) > version_key(target):
        raise InstallError(
            f"the database has pgflow {have.version}, newer than {target}: "
            f"going back is `pgflow downgrade --version {target}`"
        )
    return _plan_move(db, have, target, scripts)


def plan_downgrade(db: Database, target: str, scripts: Scripts | None = None) -> list[Step]:
    """What ``pgflow downgrade`` does to this database (empty: already there)."""
    have = installed(db)
    if have is None:
        raise InstallError("pgflow is not installed in this database: use `pgflow install`")
    if have.version == target:
        return []
    if version_key(have.version) < version_key(target):
        raise InstallError(
            f"the database has pgflow {have.version}, older than {target}: use `pgflow upgrade`"
        )
    scripts = scripts or find_scripts()
    if not scripts.reaches(have.version, target):  # one script, or a chain of them
        back = [
            v
            for v in sorted({b for _, b in scripts.upgrades}, key=version_key)
            if version_key(v) < version_key(have.version) and scripts.reaches(have.version, v)
        ]
        raise InstallError(
            f"there is no downgrade script from pgflow {have.version} to {target}"
            + (f" (only to {', '.join(back)})" if back else "")
            + ": restore a backup taken before the upgrade (docs/howto/upgrading.md)"
        )
    return _plan_move(db, have, target, scripts)


def _plan_move(db: Database, have: Installed, target: str, scripts: Scripts | None) -> list[Step]:
    if have.method == "extension":
        path = _queries(db).update_path(have.version, target)
        if path is None:
            raise InstallError(
                f"the server's pgflow extension files have no update path from {have.version} "
                f"to {target}: install the new files on the server (`make install`)"
            )
        stmt = f"ALTER EXTENSION pgflow UPDATE TO {_literal(target)}"
        return [Step(f"ALTER EXTENSION pgflow UPDATE TO '{target}' (via {path})", (stmt,))]
    scripts = scripts or find_scripts()
    steps = []
    for a, b in scripts.update_path(have.version, target):
        script = scripts.upgrades[(a, b)]
        steps.append(
            Step(
                f"apply {script.name} as a plain migration",
                tuple(plain_statements(script.read_text())),
                record=(b, script.name),
            )
        )
    return steps


def apply(db: Database, steps: list[Step]) -> None:
    """Run the steps in one transaction (the connection must be in autocommit mode)."""
    if not steps:
        return
    queries = _queries(db)
    with queries.transaction():
        _run_steps(queries, steps)


def _run_steps(queries: Queries, steps: list[Step]) -> None:
    queries.install_lock()
    if any(step.record for step in steps):
        queries.plain_script_settings()
    for step in steps:
        if step.record:
            queries.plain_search_path()
        for statement in step.statements:
            queries.execute_script_statement(statement)
        if step.record:
            queries.record_version(*step.record)


class _RolledBackError(Exception):
    """Ends the transaction of :func:`preview` (nothing it did may stay)."""


@dataclass(frozen=True)
class Change:
    """One object of schema pgflow that an upgrade adds, changes or drops."""

    action: Literal["adds", "changes", "drops"]
    kind: str  # function, table, view, sequence, column, index, constraint
    name: str

    def __str__(self) -> str:
        return f"{self.action} {self.kind} {self.name}"


def preview(db: Database, steps: list[Step]) -> list[Change]:
    """What the steps would change in schema pgflow, found by running them in a
    transaction that is rolled back (it takes the steps' locks for as long)."""
    if not steps:
        return []
    queries = _queries(db)
    before = queries.schema_objects()
    after: dict[tuple[str, str], str] = {}
    try:
        with queries.transaction():
            _run_steps(queries, steps)
            after = queries.schema_objects()
            raise _RolledBackError
    except _RolledBackError:
        pass
    changes = [Change("adds", k, n) for (k, n) in after.keys() - before.keys()]
    changes += [Change("drops", k, n) for (k, n) in before.keys() - after.keys()]
    changes += [
        Change("changes", k, n)
        for (k, n) in before.keys() & after.keys()
        if before[(k, n)] != after[(k, n)]
    ]
    order = {"table": 0, "view": 1, "sequence": 2, "column": 3, "constraint": 4, "index": 5}
    return sorted(changes, key=lambda c: (order.get(c.kind, 6), c.name, c.action))


def _literal(value: str) -> str:
    if not re.fullmatch(r"\d+\.\d+\.\d+", value):
        raise InstallError(f"not a version: {value!r}")
    return f"'{value}'"
