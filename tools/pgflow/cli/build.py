"""The definition commands: ``pgflow-build``, ``pgflow graph``, ``pgflow new``.

They read specs and write files; none of them touches a database, so this
module imports neither psycopg nor the worker (a test holds it to that).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePath
from typing import Final

import click

from pgflow import __version__
from pgflow.cli._common import CONTEXT_SETTINGS, fail, load_all, reported
from pgflow.compiler.mermaid import mermaid
from pgflow.compiler.migration import MIGRATION_RE, compile_flow, migration_filename, same_body
from pgflow.compiler.scaffold import scaffold
from pgflow.spec.loader import LoadedFlow

# --------------------------------------------------------------------------- helpers


def _newest_migration(out_dir: Path, flow_slug: str) -> Path | None:
    """The newest ``*_create_<slug>_flow.sql`` in out_dir (by its timestamp)."""
    if not out_dir.is_dir():
        return None
    found: list[tuple[str, str, Path]] = []
    for path in out_dir.iterdir():
        match = MIGRATION_RE.fullmatch(path.name)
        if match and match["slug"] == flow_slug and path.is_file():
            found.append((match["stamp"], path.name, path))
    return max(found)[2] if found else None


def _stamp_after(path: Path | None, now: datetime) -> datetime:
    """``now``, or one second after an existing migration's timestamp if that is later."""
    if path is None:
        return now
    match = MIGRATION_RE.fullmatch(path.name)
    assert match is not None
    existing = datetime.strptime(match["stamp"], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    return max(now, existing + timedelta(seconds=1))


def _write_new(path: Path, text: str) -> None:
    """Write a file that must not exist yet, atomically (no half-written migration)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        if path.exists():
            raise FileExistsError(f"{path} already exists")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- commands

BUILD_EPILOG: Final = """\b
SPEC is one of:
  path/to/flow.yaml        one flow in YAML (also .yml)
  path/to/flows.py         every pgflow.Flow defined at the top level of the file
  package.module[:attr]    a module (all its Flows) or one attribute of it
Imports resolve from the current directory.

\b
Each flow gets one migration, <UTC YYYYMMDDHHMMSS>_create_<flow>_flow.sql: a comment
header (tool version, spec path and SHA-256) and one transaction of
pgflow.create_flow / pgflow.add_step calls.  When the newest migration of a flow
already has the same SQL below its header, nothing is written ("up to date").

\b
Examples:
  pgflow-build flows/order.yaml                  write migrations/..._create_order_flow.sql
  pgflow-build flows/*.yaml --out-dir db/migrations
  pgflow-build myapp.flows:order --dry-run       print the SQL, write nothing
  pgflow-build flows/*.yaml --check              exit 1 if a migration is missing or stale
"""


@click.command(
    "build",
    context_settings=CONTEXT_SETTINGS,
    epilog=BUILD_EPILOG,
    no_args_is_help=True,
)
@click.argument("specs", metavar="SPEC...", nargs=-1, required=True)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("migrations"),
    show_default=True,
    help="Directory of the migrations (created when missing).",
)
@click.option("--dry-run", is_flag=True, help="Print the migrations to stdout; write nothing.")
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 if a flow's newest migration is missing or differs.",
)
@click.version_option(__version__, "--version", prog_name="pgflow-build")
def build(specs: tuple[str, ...], out_dir: Path, dry_run: bool, check: bool) -> None:
    """Compile flow specs (YAML or Python) into SQL migrations.

    Every spec is validated first; on any error nothing is written and each
    problem is reported as file:line: key: message.
    """
    if dry_run and check:
        raise click.UsageError("--dry-run and --check cannot be combined")
    with reported():
        flows = load_all(specs)
        now = datetime.now(UTC).replace(microsecond=0)
        compiled = [(flow, compile_flow(flow.spec, generated_at=now)) for flow in flows]
        if dry_run:
            click.echo("\n".join(text for _, text in compiled), nl=False)
            return
        if check:
            _check(compiled, out_dir)
            return
        _write(compiled, out_dir, now)


def _check(compiled: Sequence[tuple[LoadedFlow, str]], out_dir: Path) -> None:
    stale: list[str] = []
    for flow, text in compiled:
        slug, source = flow.spec.slug, flow.spec.origin.file
        newest = _newest_migration(out_dir, slug)
        if newest is None:
            stale.append(f"{slug}: no migration in {out_dir} (run: pgflow-build {source})")
        elif not same_body(newest.read_text(encoding="utf-8", errors="replace"), text):
            stale.append(f"{slug}: {newest} differs from {source} (run: pgflow-build {source})")
        else:
            click.echo(f"{slug}: up to date ({newest})")
    if stale:
        fail(stale)


def _write(compiled: Sequence[tuple[LoadedFlow, str]], out_dir: Path, now: datetime) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for flow, text in compiled:
        slug = flow.spec.slug
        newest = _newest_migration(out_dir, slug)
        if newest is not None and same_body(
            newest.read_text(encoding="utf-8", errors="replace"), text
        ):
            click.echo(f"{slug}: up to date ({newest})")
            continue
        stamp = _stamp_after(newest, now)
        final = text if stamp == now else compile_flow(flow.spec, generated_at=stamp)
        path = out_dir / migration_filename(slug, stamp)
        _write_new(path, final)
        click.echo(f"{slug}: wrote {path}")


GRAPH_EPILOG: Final = """\b
Arrows point from a step to the steps that depend on it.  Map steps are drawn as
double-bordered boxes marked "map", conditional steps as hexagons marked "if" or
"if not".

\b
Examples:
  pgflow graph flows/order.yaml
  pgflow graph myapp.flows --flow order > order.mmd
"""


@click.command("graph", context_settings=CONTEXT_SETTINGS, epilog=GRAPH_EPILOG)
@click.argument("spec", metavar="SPEC")
@click.option("--flow", "flow_slug", metavar="SLUG", help="Draw only this flow of the SPEC.")
def graph(spec: str, flow_slug: str | None) -> None:
    """Print the DAG of each flow in SPEC as Mermaid (flowchart TD)."""
    with reported():
        flows = load_all([spec])
        if flow_slug is not None:
            flows = [f for f in flows if f.spec.slug == flow_slug]
            if not flows:
                fail([f'error: {spec} defines no flow "{flow_slug}"'])
        click.echo("\n".join(mermaid(f.spec) for f in flows), nl=False)


NEW_EPILOG: Final = """\b
Creates <DIR>/<FLOW_SLUG>.yaml (the spec) and <DIR>/<FLOW_SLUG>_handlers.py (one
handler per step); both work as they are.  Existing files are never overwritten.

\b
Examples:
  pgflow new order                     ./order.yaml and ./order_handlers.py
  pgflow new order --dir app/flows     handlers importable as app.flows.order_handlers
"""


@click.command("new", context_settings=CONTEXT_SETTINGS, epilog=NEW_EPILOG)
@click.argument("flow_slug", metavar="FLOW_SLUG")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to create the files (relative to the current directory).",
)
def new(flow_slug: str, directory: Path) -> None:
    """Scaffold a new flow: a YAML spec and a handler module."""
    with reported():
        files = scaffold(flow_slug, PurePath(directory))
        existing = [str(f.path) for f in files if Path(f.path).exists()]
        if existing:
            fail([f"error: {path} already exists (not overwritten)" for path in existing])
        directory.mkdir(parents=True, exist_ok=True)
        for file in files:
            _write_new(Path(file.path), file.text)
            click.echo(f"created {file.path}")
        click.echo(f"next: pgflow-build {files[0].path.as_posix()}")
