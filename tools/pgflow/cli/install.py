"""The ``pgflow install`` and ``pgflow upgrade`` commands.

The work is done by :mod:`pgflow.db.install`.
"""

from __future__ import annotations

from typing import Final, Literal

import click

from pgflow import __version__
from pgflow.cli._common import CONTEXT_SETTINGS, dsn_option
from pgflow.cli._db import connected
from pgflow.db.install import (
    Step,
    apply,
    installed,
    plan_downgrade,
    plan_install,
    plan_upgrade,
    preview,
)
from pgflow.db.queries import Queries

INSTALL_EPILOG: Final = """\b
--method auto (the default) uses CREATE EXTENSION when the server has the pgflow
extension files (self-hosted: `make install` put them there), and otherwise applies
the same versioned SQL scripts, shipped in this package, as a plain migration
into schema pgflow (managed PostgreSQL, where extension files cannot be
installed).  A plain install records its version in pgflow.schema_version;
`pgflow upgrade` continues it with the same upgrade scripts.

\b
Installing needs CREATE on the database, not superuser.  Installing a version that
is already there does nothing; a different version needs `pgflow upgrade`.

\b
Examples:
  pgflow install --dsn postgresql://admin@db.example.com/app
  pgflow install --method plain --dry-run
"""

UPGRADE_EPILOG: Final = """\b
An extension is updated with ALTER EXTENSION pgflow UPDATE TO VERSION (install the
new extension files on the server first: `make install`).  A plain install gets
the upgrade scripts shipped in this package, applied in one transaction, and the
new version recorded in pgflow.schema_version.  Workers and the CLI refuse to
work with a database whose version differs from theirs, so upgrade the database
and the tools together (stop the workers, upgrade, start the new workers).

\b
Examples:
  pgflow upgrade --dry-run
  pgflow upgrade --dsn postgresql://admin@db.example.com/app
"""

version_option = click.option(
    "--version",
    "version",
    default=__version__,
    metavar="VERSION",
    help="The pgflow version to end at (default: the version of these tools, the only "
    "one they work with).",
)
dry_run_option = click.option(
    "--dry-run",
    is_flag=True,
    help="Print what would run; change nothing (upgrade: also every function, table, column, "
    "index and constraint it adds, changes or drops).",
)


def _run(conn: Queries, steps: list[Step], dry_run: bool) -> None:
    for step in steps:
        click.echo(("would " if dry_run else "") + step.description)
    if not dry_run:
        apply(conn, steps)


@click.command("install", context_settings=CONTEXT_SETTINGS, epilog=INSTALL_EPILOG)
@click.option(
    "--method",
    type=click.Choice(["auto", "extension", "plain"]),
    default="auto",
    show_default=True,
    help="CREATE EXTENSION, or the scripts as a plain migration.",
)
@version_option
@dry_run_option
@dsn_option
def install(method: str, version: str, dry_run: bool, dsn: str) -> None:
    """Install pgflow into a database (CREATE EXTENSION, or a plain migration)."""
    with connected(dsn, check_version=False) as conn:
        steps = plan_install(conn, version, method)
        if not steps:
            click.echo(f"pgflow {version} is already installed")
            return
        _run(conn, steps, dry_run)
        if not dry_run:
            click.echo(f"installed pgflow {version}")


@click.command("upgrade", context_settings=CONTEXT_SETTINGS, epilog=UPGRADE_EPILOG)
@version_option
@dry_run_option
@dsn_option
def upgrade(version: str, dry_run: bool, dsn: str) -> None:
    """Upgrade pgflow in a database to the version of these tools."""
    _move("upgrade", version, dry_run, dsn)


def _move(verb: Literal["upgrade", "downgrade"], version: str, dry_run: bool, dsn: str) -> None:
    """`pgflow upgrade` / `pgflow downgrade`: plan, run (or preview), report."""
    plan = plan_upgrade if verb == "upgrade" else plan_downgrade
    with connected(dsn, check_version=False) as conn:
        have = installed(conn)
        steps = plan(conn, version)
        if not steps:
            click.echo(f"pgflow {version} is installed: nothing to {verb}")
            return
        _run(conn, steps, dry_run)
        if dry_run:
            changes = preview(conn, steps)
            click.echo(
                f"{len(changes)} changes to schema pgflow (found by running the {verb} in a"
                " transaction that was rolled back):"
            )
            for change in changes:
                click.echo(f"  {change}")
        elif have is not None:
            click.echo(f"{verb}d pgflow {have.version} to {version}")


DOWNGRADE_EPILOG: Final = """\b
Runs the downgrade script shipped with this version (extension/sql/pgflow--N--P.sql):
ALTER EXTENSION pgflow UPDATE TO VERSION for the extension, the same script as a
plain migration for a plain install, in one transaction.  It refuses, changing
nothing, while the database uses what the older version cannot hold (flow
versions, heartbeats, ...), and says what to do.  Stop the workers first; start
workers of the older version after (these tools refuse the older database).

\b
Examples:
  pgflow downgrade --version 0.2.0 --dry-run
  pgflow downgrade --version 0.2.0 --dsn postgresql://admin@db.example.com/app
"""


@click.command("downgrade", context_settings=CONTEXT_SETTINGS, epilog=DOWNGRADE_EPILOG)
@click.option(
    "--version",
    "version",
    required=True,
    metavar="VERSION",
    help="The older pgflow version to go back to (one this version ships a downgrade script to).",
)
@dry_run_option
@dsn_option
def downgrade(version: str, dry_run: bool, dsn: str) -> None:
    """Take pgflow in a database back to the previous release."""
    _move("downgrade", version, dry_run, dsn)
