"""Helpers of the upgrade tests: the versions in extension/ and empty databases."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from pgflow.testing import Server, create_database, drop_database

ROOT = Path(__file__).resolve().parents[3]
EXTENSION = ROOT / "extension"
SQL = EXTENSION / "sql"
DEFAULT = re.search(
    r"^default_version\s*=\s*'([^']+)'", (EXTENSION / "pgflow.control").read_text(), re.M
).group(1)  # type: ignore[union-attr]


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


#: Released versions (a frozen extension/sql/pgflow--X.Y.Z.sql), oldest first.
RELEASED = sorted(
    (
        m.group(1)
        for p in SQL.glob("pgflow--*.sql")
        if (m := re.fullmatch(r"pgflow--([\d.]+)\.sql", p.name))
    ),
    key=_key,
)

_counter = itertools.count()
Conn = psycopg.Connection[tuple[object, ...]]
NewDb = Callable[[str], str]


@pytest.fixture
def new_db(pg_server: Server, pgflow_template: str) -> Iterator[NewDb]:
    """A factory of empty databases (no pgflow), dropped after the test."""
    names: list[str] = []

    def make(label: str) -> str:
        name = f"pgflow_up_{os.getpid()}_{next(_counter)}_{label}"
        names.append(name)
        return create_database(pg_server, name)

    try:
        yield make
    finally:
        for name in names:
            drop_database(pg_server, name)


def connect(conninfo: str) -> Conn:
    return psycopg.connect(conninfo, autocommit=True)
