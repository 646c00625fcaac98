"""The ``pgflow`` commands that run work and follow runs: worker, start, status, runs.

Connection: the libpq environment (``PGHOST``, ``PGPORT``, ``PGUSER``,
``PGDATABASE``, ``PGPASSWORD``, ...) unless ``--dsn`` says otherwise.
"""

from __future__ import annotations

import json
import math
import sys
import tomllib
import uuid
from typing import Any, Final

import click

from pgflow.cli._common import (
    CONTEXT_SETTINGS,
    DSN_HELP,
    dsn_option,
    fail,
    json_option,
    load_all,
    reported,
    unknown_flow,
)
from pgflow.cli._db import connected
from pgflow.cli.render import CHILDREN_SHOWN, duration, render_run, table
from pgflow.db.client import (
    flow_exists,
    get_run,
    get_run_text,
    list_runs,
    run_summary,
    start_flow,
    wait_for_run,
)
from pgflow.errors import JsonTooDeep, PermissionDenied, RunTimeoutError
from pgflow.spec.model import did_you_mean
from pgflow.worker import Worker, WorkerConfig
from pgflow.worker.logs import configure as configure_logging

# --------------------------------------------------------------------------- worker

WORKER_EPILOG: Final = """\b
Each SPEC is a flow spec as pgflow-build reads it: a .py file, a .yaml file or
package.module[:attr].  Python specs bring their handlers; YAML steps name them
with handler: module:function.  Before claiming anything the worker checks that
each flow in the database has the structure of its spec.

\b
Every option can also come from its environment variable (shown with it) or
from [tool.pgflow.worker] of pyproject.toml in the current directory or
--config PATH (keys concurrency, batch_size, poll_interval, grace, listen,
log_format, verbose); a flag
wins over the environment, the environment over pyproject.toml.

\b
SIGTERM or SIGINT: stop claiming, let running handlers finish (--grace), exit 0.
A second signal exits at once with 128 + the signal number.

\b
Examples:
  pgflow worker examples/flows/order.py
  pgflow worker flows/order.yaml --concurrency 20 --dsn postgresql:///app
  pgflow worker myapp.flows --no-listen          # through PgBouncer (transaction mode)
"""


def _pyproject_defaults(ctx: click.Context, param: click.Parameter, path: str) -> None:
    """Read ``[tool.pgflow.worker]`` of pyproject.toml into the command's defaults.

    click resolves each option as: the flag, else its environment variable,
    else ``ctx.default_map`` (filled here), else the built-in default.
    """
    settings = pyproject_settings(path, required=path != PYPROJECT)
    if not settings:
        return
    where = f"{path} [tool.pgflow.worker]"
    by_key = {p.name: p for p in ctx.command.params if p.name in PYPROJECT_KEYS.values()}
    defaults: dict[str, Any] = {}
    for key, value in settings.items():
        name = PYPROJECT_KEYS.get(key)
        if name is None:
            raise click.UsageError(
                f"{where}: unknown key {key!r}{did_you_mean(key, PYPROJECT_KEYS)}"
                f" (keys: {', '.join(PYPROJECT_KEYS)})"
            )
        if key == "listen":
            if not isinstance(value, bool):
                raise click.UsageError(f"{where}: listen must be true or false, got {value!r}")
            defaults[name] = not value
            continue
        try:
            defaults[name] = by_key[name].type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise click.UsageError(f"{where}: {key}: {exc.message}") from None
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


#: pyproject.toml keys of [tool.pgflow.worker] -> the worker command's parameter names.
PYPROJECT_KEYS: Final = {
    "concurrency": "concurrency",
    "batch_size": "batch_size",
    "poll_interval": "poll_interval",
    "grace": "grace",
    "listen": "no_listen",
    "log_format": "log_format",
    "verbose": "verbose",
}
PYPROJECT: Final = "pyproject.toml"


def pyproject_settings(path: str, *, required: bool = False) -> dict[str, Any]:
    """``[tool.pgflow.worker]`` of a pyproject.toml (empty when the file or table is absent)."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        if required:
            raise click.UsageError(f"{path}: no such file") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.UsageError(f"{path}: cannot read it: {exc}") from None
    table = data.get("tool", {}).get("pgflow", {}).get("worker", {})
    if not isinstance(table, dict):
        raise click.UsageError(f"{path}: [tool.pgflow.worker] must be a table")
    return table


@click.command("worker", context_settings=CONTEXT_SETTINGS, epilog=WORKER_EPILOG)
@click.argument("specs", metavar="SPEC...", nargs=-1, required=True)
@click.option(
    "--config",
    metavar="PATH",
    default=PYPROJECT,
    show_default=True,
    is_eager=True,
    expose_value=False,
    callback=_pyproject_defaults,
    help="Read defaults from [tool.pgflow.worker] of this pyproject.toml (when it exists).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    envvar="PGFLOW_CONCURRENCY",
    show_envvar=True,
    help="Handlers running at once.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    envvar="PGFLOW_BATCH_SIZE",
    show_envvar=True,
    help="Tasks claimed per call.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(0.05, 60),
    default=1.0,
    show_default=True,
    envvar="PGFLOW_POLL_INTERVAL",
    show_envvar=True,
    help="Seconds between fallback polls (delayed retries, start delays, missed wake-ups).",
)
@click.option(
    "--grace",
    type=click.FloatRange(0, 3600),
    default=30.0,
    show_default=True,
    envvar="PGFLOW_GRACE",
    show_envvar=True,
    help="Seconds running handlers get to finish after SIGTERM.",
)
@click.option(
    "--no-listen",
    is_flag=True,
    envvar="PGFLOW_NO_LISTEN",
    show_envvar=True,
    help="Do not LISTEN for wake-ups; poll instead (needed behind PgBouncer in transaction mode).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="PGFLOW_LOG_FORMAT",
    show_envvar=True,
    help="Log lines as text or one JSON object per line (with run_id, flow, step, ...).",
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    envvar="PGFLOW_VERBOSE",
    show_envvar=True,
    help="More logging: -v a line per completed task, -vv every poll too (env: a count).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    metavar="PORT",
    envvar="PGFLOW_METRICS_PORT",
    show_envvar=True,
    help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (needs the ui extra).",
)
@click.option(
    "--dsn",
    default="",
    metavar="DSN",
    envvar="PGFLOW_DSN",
    show_envvar=True,
    help=DSN_HELP,
)
def worker(
    specs: tuple[str, ...],
    concurrency: int,
    batch_size: int,
    poll_interval: float,
    grace: float,
    no_listen: bool,
    log_format: str,
    verbose: int,
    metrics_port: int | None,
    dsn: str,
) -> None:
    """Run the handlers of the flows in SPEC... until stopped."""
    configure_logging(log_format, verbose, sys.stderr)
    with reported():
        flows = load_all(specs)
        if metrics_port is not None:
            from pgflow.worker import metrics  # noqa: PLC0415 - only with --metrics-port

            metrics.serve(metrics_port)
        config = WorkerConfig(
            concurrency=concurrency,
            batch_size=batch_size,
            poll_interval=poll_interval,
            grace=grace,
            listen=not no_listen,
        )
        status = Worker(flows, dsn, config).run()
    raise click.exceptions.Exit(status)


# --------------------------------------------------------------------------- runs

START_EPILOG: Final = """\b
--input must be JSON that PostgreSQL's jsonb can hold and Python can read: no
NaN or Infinity, no number beyond a double's range (1e999), no \\u0000 in a
string, at most about 1000 levels of nesting.  Anything else is a usage error
(exit 2), found before connecting.

\b
Examples:
  pgflow start order --input '{"order_id": 42}'
  pgflow start order --input @order.json --wait --timeout 60
"""


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (JSON numbers are finite)")


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range: JSON numbers must fit a double")
    return value


def _unstorable(value: Any) -> str | None:
    """Why PostgreSQL's jsonb cannot hold a parsed JSON value, or None (walks without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "contains \\u0000, which PostgreSQL's jsonb cannot hold"
            if any("\ud800" <= c <= "\udfff" for c in item):
                return "contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode"
    return None


def parse_input(text: str) -> Any:
    """The value of --input (JSON text or @FILE); ValueError with a message for the user."""
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ValueError(f"cannot read {text[1:]}: {reason}") from None
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_number)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    except RecursionError:
        raise ValueError(
            "nested too deeply: Python's json module (and so the reference worker) reads"
            f" at most about {sys.getrecursionlimit()} levels"
        ) from None
    # the ValueErrors of _constant and _number, and of an integer with more digits
    # than Python converts, reach the caller as they are
    problem = _unstorable(value)
    if problem:
        raise ValueError(problem)
    return value


def _input_option(ctx: click.Context, param: click.Parameter, text: str) -> Any:
    try:
        return parse_input(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@click.command("start", context_settings=CONTEXT_SETTINGS, epilog=START_EPILOG)
@click.argument("flow_slug", metavar="FLOW")
@click.option(
    "--input",
    "flow_input",
    default="{}",
    show_default=True,
    metavar="JSON",
    callback=_input_option,
    help="The run's input: JSON text, or @FILE to read it from a file.",
)
@click.option("--run-id", type=click.UUID, metavar="UUID", help="Start idempotently under this id.")
@click.option(
    "--version",
    "flow_version",
    type=click.IntRange(1),
    metavar="N",
    help="Start version N of FLOW (default: its current version, see pgflow flows).",
)
@click.option(
    "--priority",
    type=click.IntRange(-(2**31), 2**31 - 1),
    default=0,
    show_default=True,
    metavar="N",
    help="Workers take higher-priority runs' tasks first, then the oldest"
    " (it does not shorten delays nor pass concurrency limits).",
)
@click.option("--wait", is_flag=True, help="Wait until the run finishes; exit 1 unless completed.")
@click.option(
    "--timeout",
    type=click.FloatRange(0),
    default=300.0,
    show_default=True,
    help="Seconds --wait waits.",
)
@json_option
@dsn_option
def start(
    flow_slug: str,
    flow_input: Any,
    run_id: uuid.UUID | None,
    flow_version: int | None,
    priority: int,
    wait: bool,
    timeout: float,
    as_json: bool,
    dsn: str,
) -> None:
    """Start a run of FLOW (a flow name: its current version; or a definition: order@2)."""
    with connected(dsn, needs="client") as conn:
        run = start_flow(
            conn, flow_slug, flow_input, run_id, version=flow_version, priority=priority
        )
        if not wait:
            click.echo(_dumps(run) if as_json else str(run["run_id"]))
            return
        try:
            done = wait_for_run(conn, run["run_id"], timeout)
        except RunTimeoutError as exc:
            fail([f"error: {exc}"])
        click.echo(_dumps(done) if as_json else render_run(done))
        if done["status"] != "completed":
            raise click.exceptions.Exit(1)


def _dumps(run: dict[str, Any]) -> str:
    """A run document as JSON text; one too deep for Python's encoder fails in one line."""
    try:
        return json.dumps(run)
    except RecursionError:
        raise JsonTooDeep(
            f"run {run.get('run_id')} is nested too deeply to print from Python:"
            " pgflow status RUN_ID --json prints it"
        ) from None


STATUS_EPILOG: Final = """\b
Reads pgflow.get_run: any role given pgflow.grant_client may use it.  --json prints
that document as it is (run fields, then "steps" in definition order), whatever its
depth; the text view of a run whose values are nested too deeply for Python's json
module leaves them out.  The child runs of sub-flow steps are nested under their
step, 3 levels deep and 5 per step at most (the others in one line or counted);
--json shows a run's "children" and "parent" (pgflow status CHILD_ID for more).

\b
Examples:
  pgflow status 0190c5de-6f1e-7c2a-9d41-3b2f8a1e4c77
  pgflow status 0190c5de-6f1e-7c2a-9d41-3b2f8a1e4c77 --json | jq '.steps[].status'
"""


@click.command("status", context_settings=CONTEXT_SETTINGS, epilog=STATUS_EPILOG)
@click.argument("run_id", metavar="RUN_ID", type=click.UUID)
@json_option
@dsn_option
def status(run_id: uuid.UUID, as_json: bool, dsn: str) -> None:
    """Show a run as a tree of its steps: status, attempts, durations, errors."""
    with connected(dsn, needs="client") as conn:
        if as_json:
            text = get_run_text(conn, run_id)  # printed as PostgreSQL writes it
            if text is None:
                fail([f"error: run {run_id} does not exist"])
            click.echo(text)
            return
        try:
            run = get_run(conn, run_id)
        except JsonTooDeep:
            run = run_summary(conn, run_id)
        if run is None:
            fail([f"error: run {run_id} does not exist"])
        _attach_children(conn, run, STATUS_DEPTH)
        click.echo(render_run(run))


#: How many levels of child runs `pgflow status` nests under a run.
STATUS_DEPTH: Final = 3


def _attach_children(conn: Any, run: dict[str, Any], depth: int) -> None:
    """Fetch the child runs `render_run` shows as trees into ``run["child_runs"]``."""
    if depth <= 0:
        return
    shown: dict[str, int] = {}
    fetched: dict[str, Any] = {}
    for kid in run.get("children", []):
        step = str(kid.get("step_slug"))
        shown[step] = shown.get(step, 0) + 1
        if shown[step] > CHILDREN_SHOWN:
            continue
        try:
            doc = get_run(conn, uuid.UUID(str(kid["run_id"])))
        except JsonTooDeep:
            continue
        if doc is not None:
            _attach_children(conn, doc, depth - 1)
            fetched[str(kid["run_id"])] = doc
    run["child_runs"] = fetched


RUNS_EPILOG: Final = """\b
Reads pgflow.list_runs (ids, status, times; never inputs or outputs): any role
given pgflow.grant_client may use it.

\b
Filters that match no run print "no runs" (exit 0).  A --flow that names no flow
is an error (exit 1: most likely a typo), as for pgflow stats; telling the two
apart needs pgflow.flow_shape (the owner and roles given pgflow.grant_worker),
so for a role given only pgflow.grant_client an unknown flow prints "no runs".

\b
Sub-flow children are listed like any run; --top-level leaves them out.
Paging: one call lists at most --limit runs (newest first); --before RUN_ID
lists the runs older than that run (pass the last run of a page for the next
page), --after RUN_ID the ones newer than it (the previous page).  Each page
reads one bounded index range, however deep.

\b
Examples:
  pgflow runs
  pgflow runs --flow order --status failed --limit 100
  pgflow runs --top-level --before 0193d6f2-0c1e-7a6b-9f55-3c2d1e0f4a10
  pgflow runs --status started --json | jq -r '.[].run_id'
"""


@click.command("runs", context_settings=CONTEXT_SETTINGS, epilog=RUNS_EPILOG)
@click.option("--flow", "flow_slug", metavar="FLOW", help="Only runs of this flow.")
@click.option(
    "--status",
    "run_status",
    type=click.Choice(["started", "completed", "failed", "cancelled"]),
    help="Only runs in this status.",
)
@click.option(
    "--limit", type=click.IntRange(1, 10000), default=20, show_default=True, help="At most N runs."
)
@click.option("--top-level", is_flag=True, help="Leave sub-flow children out.")
@click.option(
    "--before",
    type=click.UUID,
    metavar="RUN_ID",
    help="Only runs older than this run (the next page after it).",
)
@click.option(
    "--after",
    type=click.UUID,
    metavar="RUN_ID",
    help="Only runs newer than this run (the page before it).",
)
@json_option
@dsn_option
def runs(
    flow_slug: str | None,
    run_status: str | None,
    limit: int,
    top_level: bool,
    before: uuid.UUID | None,
    after: uuid.UUID | None,
    as_json: bool,
    dsn: str,
) -> None:
    """List the most recent runs, newest first."""
    if before is not None and after is not None:
        raise click.UsageError("pass --before or --after, not both")
    with connected(dsn, needs="client") as conn:
        cursor = None
        if (edge := before or after) is not None:
            found = run_summary(conn, edge)
            if found is None:
                fail([f"error: run {edge} does not exist", "hint: pgflow runs lists the runs"])
            cursor = {"started_at": found["started_at"], "run_id": str(edge)}
        rows = list_runs(
            conn,
            flow_slug,
            run_status,
            limit,
            top_level=top_level,
            cursor=cursor,
            direction="newer" if after is not None else "older",
        )
        if not rows and flow_slug is not None and not _may_exist(conn, flow_slug):
            unknown_flow(flow_slug)
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no runs")
        return
    lines = table(
        RUNS_HEADERS,
        [
            [
                r["run_id"],
                r["flow_slug"],
                r["status"],
                r["started_at"][:19].replace("T", " "),
                duration(r["started_at"], r["finished_at"]),
            ]
            for r in rows
        ],
        right=set(),
    )
    click.echo("\n".join(lines))


RUNS_HEADERS: Final = ("RUN ID", "FLOW", "STATUS", "STARTED", "DURATION")


def _may_exist(conn: Any, flow_slug: str) -> bool:
    """Whether the flow exists, or may (the role cannot ask: client roles)."""
    try:
        return flow_exists(conn, flow_slug)
    except PermissionDenied:
        return True
