"""The connection a database command works on (imports psycopg: database commands only)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pgflow.cli._common import reported
from pgflow.db import install
from pgflow.db.queries import Queries, connect


@contextmanager
def connected(dsn: str, check_version: bool = True) -> Iterator[Queries]:
    """An autocommit connection's queries; errors become lines on stderr and exit 1.

    Unless ``check_version`` is false, the database must have the pgflow
    version of these tools (:func:`pgflow.db.install.check_version`).
    """
    with reported():
        queries = connect(dsn)
        try:
            if check_version:
                install.check_version(queries)
            yield queries
        finally:
            queries.close()
