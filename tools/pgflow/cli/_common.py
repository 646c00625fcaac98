"""What every ``pgflow`` command shares: help layout, error reporting, shared options.

Imports neither psycopg nor the worker: the definition commands
(``pgflow-build``, ``pgflow graph``, ``pgflow new``) load only this, the spec
and the compiler.  Database commands get their connection from
:mod:`pgflow.cli._db`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, NoReturn

import click

from pgflow.errors import DatabaseError, PgflowError, SpecError

if TYPE_CHECKING:
    from pgflow.spec.loader import LoadedFlow

#: Fixed help width, so that ``--help`` reads the same everywhere (and in docs/reference/cli.md).
HELP_WIDTH: Final = 88
CONTEXT_SETTINGS: Final[dict[str, Any]] = {
    "help_option_names": ["-h", "--help"],
    "max_content_width": HELP_WIDTH,
    "terminal_width": HELP_WIDTH,
}

DSN_HELP: Final = "libpq connection string or URI (default: the PG* environment variables)"

dsn_option = click.option("--dsn", default="", metavar="DSN", help=DSN_HELP)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def fail(lines: Sequence[str]) -> NoReturn:
    """Print each line on stderr and exit 1."""
    for line in lines:
        click.echo(line, err=True)
    raise click.exceptions.Exit(1)


def unknown_flow(flow_slug: str) -> NoReturn:
    """Exit 1 for a --flow that names no flow (most likely a typo; a flow without runs is not)."""
    fail([f'error: flow "{flow_slug}" does not exist', "hint: pgflow.flows lists the flows"])


def messages(exc: PgflowError) -> list[str]:
    """The lines an error is reported with: every problem of a spec, a database error's hint."""
    if isinstance(exc, SpecError):
        return [e.rendered for e in exc.errors]
    if isinstance(exc, DatabaseError):
        return [f"error: {exc}"] + ([f"hint: {exc.hint}"] if exc.hint else [])
    return [f"error: {exc}"]


@contextmanager
def reported() -> Iterator[None]:
    """Turn pgflow errors into lines on stderr and exit status 1."""
    try:
        yield
    except PgflowError as exc:
        fail(messages(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        fail([f"error: {where}{exc.strerror or exc}"])


def load_all(specs: Sequence[str]) -> list[LoadedFlow]:
    """Load every SPEC, reporting the problems of all of them before giving up."""
    from pgflow.spec.loader import load  # noqa: PLC0415 - user code is imported on demand

    loaded: list[LoadedFlow] = []
    problems: list[str] = []
    for spec in dict.fromkeys(specs):  # a SPEC given twice counts once
        try:
            loaded.extend(load(spec))
        except PgflowError as exc:
            problems.extend(messages(exc))
    seen: dict[str, LoadedFlow] = {}
    flows: list[LoadedFlow] = []
    for flow in loaded:
        first = seen.setdefault(flow.spec.definition_slug, flow)
        if first is flow:
            flows.append(flow)
        elif first.spec != flow.spec or first.spec.origin != flow.spec.origin:
            problems.append(
                f'{flow.spec.origin.file}:{flow.spec.line}: flow: flow "{flow.spec.slug}"'
                f" is also defined in {first.spec.origin.file}:{first.spec.line}"
            )
    if not problems:
        from pgflow.spec.validate import subflow_problems  # noqa: PLC0415 - as load above

        problems.extend(subflow_problems([f.spec for f in flows]))
    if problems:
        fail(problems)
    return flows
