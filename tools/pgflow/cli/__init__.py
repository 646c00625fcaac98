"""Command line: ``pgflow`` (a group of subcommands) and ``pgflow-build``.

Every command exits 0 on success, 1 on failure (one line per problem on
stderr, no traceback) and 2 on a usage error.

Commands live one group per module -- :mod:`~pgflow.cli.build` (build, graph,
new), :mod:`~pgflow.cli.run` (worker, start, status, runs),
:mod:`~pgflow.cli.ops` (cancel, retry, pause, resume, prune, stats, flows),
:mod:`~pgflow.cli.ui` (ui) and
:mod:`~pgflow.cli.install` (install, upgrade) -- and are imported when they
are used: ``pgflow graph`` and ``pgflow-build`` never load psycopg or the
worker.  A new command is a function in one of those modules and a line in
:data:`COMMANDS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Final

import click

from pgflow import __version__
from pgflow.cli._common import CONTEXT_SETTINGS

#: Command name -> "module:attribute" of its click command.
COMMANDS: Final[Mapping[str, str]] = {
    "build": "pgflow.cli.build:build",
    "graph": "pgflow.cli.build:graph",
    "new": "pgflow.cli.build:new",
    "worker": "pgflow.cli.run:worker",
    "start": "pgflow.cli.run:start",
    "status": "pgflow.cli.run:status",
    "runs": "pgflow.cli.run:runs",
    "cancel": "pgflow.cli.ops:cancel",
    "emit": "pgflow.cli.events:emit",
    "retry": "pgflow.cli.ops:retry",
    "prune": "pgflow.cli.ops:prune",
    "stats": "pgflow.cli.ops:stats",
    "flows": "pgflow.cli.ops:flows",
    "pause": "pgflow.cli.ops:pause",
    "resume": "pgflow.cli.ops:resume",
    "ui": "pgflow.cli.ui:ui",
    "install": "pgflow.cli.install:install",
    "upgrade": "pgflow.cli.install:upgrade",
    "downgrade": "pgflow.cli.install:downgrade",
}

MAIN_EPILOG: Final = """\b
Examples:
  pgflow new order --dir flows        scaffold flows/order.yaml and its handlers
  pgflow-build flows/order.yaml       write the flow's SQL migration
  pgflow graph flows/order.yaml       draw the flow as a Mermaid flowchart

Docs: docs/reference/cli.md, docs/reference/spec-format.md.
"""


def load_command(name: str) -> click.Command:
    """The click command called ``name`` (imports its module)."""
    module_name, _, attribute = COMMANDS[name].partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    assert isinstance(command, click.Command)
    return command


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (see :data:`COMMANDS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            return load_command(cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS, epilog=MAIN_EPILOG)
@click.version_option(__version__, "--version", prog_name="pgflow")
def main() -> None:
    """pgflow: durable DAG workflows inside PostgreSQL.

    Flows are defined in YAML or Python, compiled to SQL migrations with
    pgflow-build, and run by workers that call the pgflow SQL API.
    """


def build_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``pgflow-build`` command."""
    command = load_command("build")
    command.main(args=list(argv) if argv is not None else None, prog_name="pgflow-build")


__all__ = ["COMMANDS", "LazyGroup", "build_main", "load_command", "main"]
