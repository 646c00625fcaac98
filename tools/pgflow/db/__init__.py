"""The database side of the package: named statements, the client API, checks, installs.

* :mod:`pgflow.db.queries` -- ``queries.sql`` (every runtime statement, by
  name) behind :class:`~pgflow.db.queries.Queries`; psycopg errors become the
  typed errors of :mod:`pgflow.errors` there;
* :mod:`pgflow.db.client` -- starting, following and operating on runs (used
  by applications, the CLI and the demo);
* :mod:`pgflow.db.shape` -- does the database hold the flow a spec describes;
* :mod:`pgflow.db.install` -- ``pgflow install`` / ``pgflow upgrade`` and the
  version check.
"""

from __future__ import annotations

from pgflow.db.queries import QUERIES, Queries, connect, translated

__all__ = ["QUERIES", "Queries", "connect", "translated"]
