"""pytest fixtures for code that uses pgflow: a database per test; :func:`run_flow`.

Enable them in a ``conftest.py`` with ``pytest_plugins = ["pgflow.testing"]``.

* ``pg_server`` (session): libpq settings of a PostgreSQL server.  When
  ``PGHOST`` is set, that server is used; otherwise a throwaway cluster
  (:class:`pgflow.testing.cluster.Cluster`) is started for the session and deleted at
  the end.
* ``pgflow_template`` (session): a template database with ``CREATE EXTENSION
  pgflow`` done (the extension must be installed: ``make install``).
* ``db`` (function): conninfo of a fresh database cloned from the template,
  dropped after the test.
* ``conn`` (function): an autocommit psycopg connection to ``db``.

When the server cannot be reached or the extension is not installed, tests
that use these fixtures are skipped with the reason, except when
``PGFLOW_REQUIRE_DB`` or ``CI`` is set: then they fail, so a CI run never
silently skips its database tests.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from pgflow.errors import ClusterError

if TYPE_CHECKING:
    from pgflow.testing.cluster import Cluster
    from pgflow.testing.flows import run_flow as run_flow

_counter = itertools.count()


@dataclass(frozen=True)
class Server:
    """Connection settings of a server (libpq keywords)."""

    host: str
    port: str
    user: str
    cluster: Cluster | None = None

    def conninfo(self, dbname: str, user: str | None = None) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host, port=self.port, user=user or self.user, dbname=dbname
        )


def _unavailable(reason: str) -> None:
    if os.environ.get("PGFLOW_REQUIRE_DB") or os.environ.get("CI"):
        pytest.fail(f"database tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"no database: {reason}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    if os.environ.get("PGHOST"):
        yield Server(
            host=os.environ["PGHOST"],
            port=os.environ.get("PGPORT", "5432"),
            user=os.environ.get("PGUSER", ""),
        )
        return
    from pgflow.testing.cluster import Cluster  # noqa: PLC0415 - `python -m` runs it too

    cluster = Cluster()
    try:
        cluster.start()
    except ClusterError as exc:
        _unavailable(str(exc))
    try:
        yield Server(
            host=cluster.host, port=str(cluster.port), user=cluster.superuser, cluster=cluster
        )
    finally:
        cluster.stop()


def admin_connect(server: Server) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the server's ``postgres`` database."""
    return psycopg.connect(server.conninfo("postgres"), autocommit=True)


def create_database(server: Server, name: str, template: str | None = None) -> str:
    """Create database ``name`` (from ``template``); returns its conninfo."""
    with admin_connect(server) as admin:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        admin.execute(query)
    return server.conninfo(name)


def drop_database(server: Server, name: str) -> None:
    with admin_connect(server) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def pgflow_template(pg_server: Server) -> Iterator[str]:
    name = f"pgflow_template_{os.getpid()}"
    try:
        drop_database(pg_server, name)
        conninfo = create_database(pg_server, name)
    except psycopg.Error as exc:
        _unavailable(f"cannot create a database on {pg_server.host}: {exc}")
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pgflow")
    except psycopg.Error as exc:
        drop_database(pg_server, name)
        _unavailable(f"CREATE EXTENSION pgflow failed ({exc}); run `make install` first")
    try:
        yield name
    finally:
        drop_database(pg_server, name)


@pytest.fixture
def db(pg_server: Server, pgflow_template: str) -> Iterator[str]:
    name = f"pgflow_test_{os.getpid()}_{next(_counter)}"
    conninfo = create_database(pg_server, name, template=pgflow_template)
    try:
        yield conninfo
    finally:
        drop_database(pg_server, name)


@pytest.fixture
def conn(db: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(db, autocommit=True) as connection:
        yield connection


def __getattr__(name: str) -> object:
    """``run_flow`` (and :mod:`pgflow.testing.flows`) loaded on first use."""
    if name == "run_flow":
        from pgflow.testing.flows import run_flow  # noqa: PLC0415 - keeps the plugin light

        return run_flow
    raise AttributeError(f"module 'pgflow.testing' has no attribute {name!r}")
