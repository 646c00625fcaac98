"""``pgflow ui``: serve the web dashboard (pgflow.ui) with uvicorn.

Starlette, uvicorn and prometheus_client come with the ``ui`` extra and are
imported only here, when the command runs.
"""

from __future__ import annotations

import importlib.util
import os

import click
import psycopg

from pgflow.cli._common import CONTEXT_SETTINGS, dsn_option, fail

UI_EPILOG = """\b
Binds 127.0.0.1 by default.  Another address needs a token (--token or
PGFLOW_UI_TOKEN): with one, every page, /metrics and /events ask for it
(a sign-in form, or Authorization: Bearer), and cancel / retry are
allowed (POST forms with a CSRF token).  Without one, pages are open to
this machine and actions are off.  Connect as a role given
pgflow.grant_dashboard (docs/howto/dashboard.md).
\b
Examples:
  pgflow ui --dsn postgresql:///app
  PGFLOW_UI_TOKEN=$(openssl rand -hex 16) pgflow ui --host 0.0.0.0 --port 8080
  pgflow ui --hide-payloads      run inputs and step outputs never reach a page
"""

NEEDED = ("starlette", "uvicorn", "prometheus_client")


@click.command("ui", context_settings=CONTEXT_SETTINGS, epilog=UI_EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token",
    envvar="PGFLOW_UI_TOKEN",
    default=None,
    metavar="TOKEN",
    help="the secret pages and actions need (env PGFLOW_UI_TOKEN)",
)
@click.option(
    "--hide-payloads", is_flag=True, help="never show run inputs or step outputs on a page"
)
@dsn_option
def ui(host: str, port: int, token: str | None, hide_payloads: bool, dsn: str) -> None:
    """Serve the web dashboard: flows, runs (live), workers, queues, /metrics."""
    from pgflow.ui import is_loopback  # noqa: PLC0415 - needs nothing of the extra

    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        fail(
            [
                f"error: pgflow ui needs {', '.join(missing)}, which are not installed",
                "hint: pip install 'pgflow-tools[ui]'",
            ]
        )
    token = token or None
    if token is not None and len(token) < 16:
        fail(["error: the token is shorter than 16 characters", "hint: openssl rand -hex 16"])
    if not is_loopback(host) and token is None:
        fail(
            [
                f"error: refusing to bind {host} without a token: anyone who can reach it"
                " could read runs",
                "hint: pass --token (or set PGFLOW_UI_TOKEN), or bind 127.0.0.1",
            ]
        )
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SELECT pgflow.list_flows()").fetchall()
    except psycopg.errors.InsufficientPrivilege as exc:
        fail(
            [
                f"error: {exc.diag.message_primary}",
                "hint: as the extension owner, run SELECT pgflow.grant_dashboard('<role>')",
            ]
        )
    except psycopg.Error as exc:
        fail([f"error: cannot use the database: {str(exc).strip()}"])

    import uvicorn  # noqa: PLC0415 - the ui extra, imported when the command runs

    from pgflow.ui import app  # noqa: PLC0415

    where = host if ":" not in host else f"[{host}]"
    click.echo(f"pgflow ui: http://{where}:{port}/" + ("" if token else "  (read-only: no token)"))
    uvicorn.run(
        app(dsn, token=token, show_payloads=not hide_payloads),
        host=host,
        port=port,
        log_level=os.environ.get("PGFLOW_UI_LOG_LEVEL", "warning"),
        proxy_headers=False,
    )
