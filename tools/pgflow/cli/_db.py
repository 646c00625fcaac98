"""The connection a database command works on (imports psycopg: database commands only)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, Literal

from psycopg import sql

from pgflow.cli._common import reported
from pgflow.db import install
from pgflow.db.queries import Queries, connect
from pgflow.errors import PermissionDenied

#: What a command's role needs: the client functions, an operator function, the stats views.
Needs = Literal["client", "retry_run", "prune_runs", "pause_flow", "resume_flow", "stats"]

#: The functions pgflow.grant_client and pgflow.grant_worker grant (extension/src/800_grants.sql).
CLIENT_FUNCTIONS: Final = frozenset(
    {"start_flow", "get_run", "list_runs", "listen_events", "cancel_run"}
)
WORKER_FUNCTIONS: Final = frozenset(
    {
        *("read_with_poll", "start_tasks", "complete_task", "fail_task", "claim_tasks"),
        *("complete_tasks", "worker_idle", "register_worker", "worker_heartbeat"),
        *("stop_worker", "flow_shape", "run_input"),
    }
)
#: Operator functions: granted to nobody, they run with their caller's rights.
OPERATOR_FUNCTIONS: Final = {
    "retry_run": "pgflow.retry_run(uuid)",
    "prune_runs": "pgflow.prune_runs(interval, integer)",
    "delete_flow": "pgflow.delete_flow(text, boolean)",
    "pause_flow": "pgflow.pause_flow(text)",
    "resume_flow": "pgflow.resume_flow(text)",
}
STATS_VIEWS: Final = ("run_stats", "step_stats", "active_tasks", "stalled_tasks")

_PLAIN_NAME: Final = re.compile(r"[a-z_][a-z0-9_]*")
_DENIED: Final = re.compile(r"permission denied for (?P<kind>\w+) (?P<name>[\w.]+)")


def permission_hint(message: str, role: str, needs: Needs) -> str:
    """The hint for a permission error of a command: which grant gives what is missing.

    The object the error names decides (a client or worker function, an
    operator function, a statistics view); a missing ``USAGE`` on schema
    pgflow is given with what the command needs.
    """
    literal = sql.Literal(role).as_string()
    ident = role if _PLAIN_NAME.fullmatch(role) else sql.Identifier(role).as_string()
    match = _DENIED.search(message)
    kind, name = (match["kind"], match["name"].rpartition(".")[2]) if match else ("", "")
    schema = kind == "schema"
    if kind == "function" and name in WORKER_FUNCTIONS:
        return (
            "pgflow.grant_worker gives a role the worker functions: as the extension owner,"
            f" run SELECT pgflow.grant_worker({literal})"
        )
    if (kind == "function" and name in CLIENT_FUNCTIONS) or (schema and needs == "client"):
        return (
            "pgflow.grant_client gives a role the client functions: as the extension owner,"
            f" run SELECT pgflow.grant_client({literal})"
        )
    usage = f" and GRANT USAGE ON SCHEMA pgflow TO {ident}" if schema else ""
    if (kind == "function" and name in OPERATOR_FUNCTIONS) or needs in OPERATOR_FUNCTIONS:
        function = name if name in OPERATOR_FUNCTIONS else needs
        return (
            f"{function} is an operator function: it needs the extension owner's rights."
            " Connect as the owner, or have it run"
            f" GRANT EXECUTE ON FUNCTION {OPERATOR_FUNCTIONS[function]} TO {ident}{usage}"
        )
    views = ", ".join(f"pgflow.{v}" for v in STATS_VIEWS)
    return (
        "the statistics views need the extension owner's rights: connect as the owner,"
        f" or have it run GRANT SELECT ON {views} TO {ident}{usage}"
    )


@contextmanager
def connected(
    dsn: str, check_version: bool = True, needs: Needs | None = None
) -> Iterator[Queries]:
    """An autocommit connection's queries; errors become lines on stderr and exit 1.

    Unless ``check_version`` is false, the database must have the pgflow
    version of these tools (:func:`pgflow.db.install.check_version`).  With
    ``needs``, a permission error gets a hint naming the grant that is missing.
    """
    with reported():
        queries = connect(dsn)
        try:
            if check_version:
                install.check_version(queries)
            yield queries
        except PermissionDenied as exc:
            if needs is None or exc.hint:
                raise
            hint = permission_hint(exc.message, str(queries.conn.info.user), needs)
            raise PermissionDenied(
                exc.message, sqlstate=exc.sqlstate, hint=hint, detail=exc.detail
            ) from exc
        finally:
            queries.close()
