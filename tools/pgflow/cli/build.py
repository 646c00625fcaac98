"""The definition commands: ``pgflow-build``, ``pgflow graph``, ``pgflow new``.

They read specs and write files; none of them touches a database, so this
module imports neither psycopg nor the worker (a test holds it to that).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePath
from typing import Any, Final

import click

from pgflow import __version__
from pgflow.cli._common import CONTEXT_SETTINGS, fail, load_all, reported
from pgflow.compiler.definition import differences, header_identity, of_migration, of_spec
from pgflow.compiler.mermaid import mermaid
from pgflow.compiler.migration import MIGRATION_RE, compile_flow, migration_filename, same_body
from pgflow.compiler.scaffold import scaffold
from pgflow.spec.loader import LoadedFlow
from pgflow.spec.model import FlowSpec

# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _Migration:
    """A migration file of the output directory that pgflow-build wrote."""

    path: Path
    stamp: str
    name: str
    version: int
    text: str


def _migrations(out_dir: Path) -> tuple[list[_Migration], list[Path]]:
    """The migrations pgflow-build wrote (identified by their header), and other files
    that look like migrations but were not written by it (never compared)."""
    ours: list[_Migration] = []
    foreign: list[Path] = []
    if not out_dir.is_dir():
        return ours, foreign
    for path in sorted(out_dir.iterdir()):
        match = MIGRATION_RE.fullmatch(path.name)
        if not match or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        identity = header_identity(text)
        if identity is None:
            foreign.append(path)
        else:
            ours.append(_Migration(path, match["stamp"], identity[0], identity[1], text))
    return ours, foreign


def _stamp_after(stamp: str | None, now: datetime) -> datetime:
    """``now``, or one second after an existing migration's timestamp if that is later."""
    if stamp is None:
        return now
    existing = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
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


@dataclass
class _Plan:
    """What to do for one flow: write a migration (create or update), nothing, or refuse."""

    flow: LoadedFlow
    text: str
    kind: str | None = None  # "create" / "update"; None: up to date
    newest: _Migration | None = None
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _label(spec: FlowSpec) -> str:
    return spec.slug if (spec.version or 1) == 1 else f"{spec.slug} version {spec.version}"


def _version_hint(spec: FlowSpec, versions: Sequence[int]) -> str:
    nxt = max([*versions, spec.version or 1]) + 1
    return f"set `version: {nxt}` in {spec.origin.file} to define the changed flow as a new version"


def _plan(
    flow: LoadedFlow,
    text: str,
    ours: Sequence[_Migration],
    foreign: Sequence[Path],
    database: Mapping[str, Any] | None,
) -> _Plan:
    """Compare one compiled spec with the newest migration of its flow and version (and,
    with --against, with the database)."""
    spec = flow.spec
    plan = _Plan(flow, text)
    label = _label(spec)
    version = spec.version or 1
    same_flow = [m for m in ours if m.name == spec.slug]
    same = [m for m in same_flow if m.version == version]
    plan.newest = max(same, key=lambda m: (m.stamp, m.path.name)) if same else None
    versions = [m.version for m in same_flow]
    for path in foreign:
        match = MIGRATION_RE.fullmatch(path.name)
        if match and match["slug"].startswith(spec.slug):
            plan.notes.append(
                f"{label}: {path} was not written by pgflow-build: not compared with the spec"
            )
    if database is not None:
        from pgflow.db.shape import shape_differences  # noqa: PLC0415 - only with --against

        versions += database.get("versions", [])
        shape = database.get("shape")
        diffs = [] if shape is None else shape_differences(spec, shape)
        if diffs:
            plan.errors.append(
                f"{label}: the database holds another structure ({'; '.join(diffs)}):"
                f" {_version_hint(spec, versions)}"
            )
            return plan
    if plan.newest is None:
        plan.kind = "create"
        return plan
    if same_body(plan.newest.text, text):
        return plan
    old = of_migration(plan.newest.text)
    if old is None:
        plan.notes.append(
            f"{label}: {plan.newest.path} cannot be read as a pgflow-build migration:"
            " not compared with the spec"
        )
        plan.kind = "create"
        return plan
    structural, _tunable = differences(old, of_spec(spec))
    if structural:
        plan.errors.append(
            f"{label}: the structure changed since {plan.newest.path} ({'; '.join(structural)}):"
            f" {_version_hint(spec, versions)}"
        )
        return plan
    plan.kind = "update"
    return plan


def _against(dsn: str, flows: Sequence[LoadedFlow]) -> dict[str, dict[str, Any]]:
    """What the database holds of each flow: its shape and the versions of its name."""
    from pgflow.cli._db import connected  # noqa: PLC0415 - psycopg only with --against

    found: dict[str, dict[str, Any]] = {}
    with connected(dsn, check_version=False) as queries:
        listed = queries.list_flows()
        for flow in flows:
            spec = flow.spec
            found[spec.definition_slug] = {
                "shape": queries.flow_shape(spec.definition_slug),
                "versions": [int(f["version"]) for f in listed if f["flow_name"] == spec.slug],
            }
    return found


# --------------------------------------------------------------------------- commands

BUILD_EPILOG: Final = """\b
SPEC is one of:
  path/to/flow.yaml        one flow in YAML (also .yml)
  path/to/flows.py         every pgflow.Flow defined at the top level of the file
  package.module[:attr]    a module (all its Flows) or one attribute of it
Imports resolve from the current directory.

\b
Each flow gets a migration, <UTC YYYYMMDDHHMMSS>_create_<flow>[_v<N>]_flow.sql: a
comment header (tool version, spec path and SHA-256) and one transaction of
pgflow.create_flow / pgflow.add_step calls that states the whole definition
(pgflow.check_flow_steps refuses a database definition with other steps).

\b
The spec is compared with the newest migration of the same flow and version in
--out-dir (and with --against DSN, with the database):
  same SQL below the header          nothing is written ("up to date")
  tunables changed (attempts, ...)   <stamp>_update_<flow>[_v<N>]_flow.sql
  structure changed (steps, deps,    refused, naming each difference: a definition
  conditions, modes, step types)     never changes; set `version: N+1` in the spec
Files there that pgflow-build did not write are not compared (it says so).

\b
Examples:
  pgflow-build flows/order.yaml                  write migrations/..._create_order_flow.sql
  pgflow-build flows/*.yaml --out-dir db/migrations
  pgflow-build myapp.flows:order --dry-run       print the SQL, write nothing
  pgflow-build flows/*.yaml --check              exit 1 if a migration is missing or stale
  pgflow-build flows/order.yaml --against postgresql:///app   also compare with the database
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
@click.option(
    "--against",
    metavar="DSN",
    help="Also compare each flow with the definition the database holds (libpq conninfo;"
    " an empty string: the PG* environment).",
)
@click.version_option(__version__, "--version", prog_name="pgflow-build")
def build(
    specs: tuple[str, ...], out_dir: Path, dry_run: bool, check: bool, against: str | None
) -> None:
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
        database = _against(against, flows) if against is not None else {}
        ours, foreign = _migrations(out_dir)
        plans = [
            _plan(
                flow,
                text,
                ours,
                foreign,
                database.get(flow.spec.definition_slug) if against is not None else None,
            )
            for flow, text in compiled
        ]
        for plan in plans:
            for note in plan.notes:
                click.echo(note, err=True)
        errors = [e for plan in plans for e in plan.errors]
        if check:
            errors += [
                f"{_label(p.flow.spec)}: "
                + (
                    f"no migration in {out_dir}"
                    if p.newest is None
                    else f"{p.newest.path} differs from {p.flow.spec.origin.file}"
                )
                + f" (run: pgflow-build {p.flow.spec.origin.file})"
                for p in plans
                if p.kind is not None and not p.errors
            ]
        if errors:
            fail(errors)
        for plan in plans:
            if plan.kind is None:
                assert plan.newest is not None
                click.echo(f"{_label(plan.flow.spec)}: up to date ({plan.newest.path})")
        if not check:
            _write([p for p in plans if p.kind is not None], out_dir, now)


def _children_first(plans: Sequence[_Plan]) -> list[_Plan]:
    """The plans in an order where a flow that another one runs as a sub-flow (every
    version of it: ``flow: ingest`` runs the current one) comes before it, since its
    migration must be applied first (``add_step`` needs the child flow); otherwise in
    the order given.  The build already refused cycles of sub-flows."""
    by_name: dict[str, list[_Plan]] = {}
    for plan in plans:
        by_name.setdefault(plan.flow.spec.slug, []).append(plan)
    ordered: list[_Plan] = []
    placed: set[int] = set()

    def place(plan: _Plan) -> None:
        if id(plan) in placed:
            return
        placed.add(id(plan))
        for name in _subflow_names(plan.flow.spec):
            for child in by_name.get(name, []):
                place(child)
        ordered.append(plan)

    for plan in plans:
        place(plan)
    return ordered


def _subflow_names(spec: FlowSpec) -> list[str]:
    """The names of the flows that ``spec``'s sub-flow steps run (without versions)."""
    return [s.subflow_name for s in spec.steps if s.subflow_name is not None]


def _write(plans: Sequence[_Plan], out_dir: Path, now: datetime) -> None:
    """Write the migrations; a flow run as a sub-flow by another flow of the same build
    gets an earlier timestamp than that flow, so applying the directory in file-name
    order creates the child before the parent's step that runs it."""
    if plans:
        out_dir.mkdir(parents=True, exist_ok=True)
    stamps: dict[str, datetime] = {}  # flow name -> the latest stamp written for it
    for plan in _children_first(plans):
        spec = plan.flow.spec
        assert plan.kind is not None
        newest_stamp = plan.newest.stamp if plan.newest is not None else None
        stamp = _stamp_after(newest_stamp, now)
        for name in _subflow_names(spec):
            if name in stamps:
                stamp = max(stamp, stamps[name] + timedelta(seconds=1))
        stamps[spec.slug] = max(stamp, stamps.get(spec.slug, stamp))
        final = plan.text if stamp == now else compile_flow(spec, generated_at=stamp)
        path = out_dir / migration_filename(spec.slug, stamp, version=spec.version, kind=plan.kind)
        _write_new(path, final)
        click.echo(f"{_label(spec)}: wrote {path}")


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
