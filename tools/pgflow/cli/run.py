"""The ``pgflow`` commands that run work and follow runs: worker, start, status, runs.

Connection: the libpq environment (``PGHOST``, ``PGPORT``, ``PGUSER``,
``PGDATABASE``, ``PGPASSWORD``, ...) unless ``--dsn`` says otherwise.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from typing import Any, Final

import click

from pgflow.cli._common import CONTEXT_SETTINGS, dsn_option, fail, json_option, load_all, reported
from pgflow.cli._db import connected
from pgflow.cli.render import duration, render_run
from pgflow.db.client import get_run, list_runs, start_flow, wait_for_run
from pgflow.errors import RunTimeoutError
from pgflow.worker import Worker, WorkerConfig

# --------------------------------------------------------------------------- worker

WORKER_EPILOG: Final = """\b
Each SPEC is a flow spec as pgflow-build reads it: a .py file, a .yaml file or
package.module[:attr].  Python specs bring their handlers; YAML steps name them
with handler: module:function.  Before claiming anything the worker checks that
each flow in the database has the structure of its spec.

\b
SIGTERM or SIGINT: stop claiming, let running handlers finish (--grace), exit 0.
A second signal exits at once with 128 + the signal number.

\b
Examples:
  pgflow worker examples/flows/order.py
  pgflow worker flows/order.yaml --concurrency 20 --dsn postgresql:///app
  pgflow worker myapp.flows --no-listen          # through PgBouncer (transaction mode)
"""


@click.command("worker", context_settings=CONTEXT_SETTINGS, epilog=WORKER_EPILOG)
@click.argument("specs", metavar="SPEC...", nargs=-1, required=True)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Handlers running at once.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Tasks claimed per call.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(0.05, 60),
    default=1.0,
    show_default=True,
    help="Seconds between fallback polls (delayed retries, start delays, missed wake-ups).",
)
@click.option(
    "--grace",
    type=click.FloatRange(0, 3600),
    default=30.0,
    show_default=True,
    help="Seconds running handlers get to finish after SIGTERM.",
)
@click.option(
    "--no-listen",
    is_flag=True,
    help="Do not LISTEN for wake-ups; poll instead (needed behind PgBouncer in transaction mode).",
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More logging: -v a line per completed task, -vv every poll too.",
)
@dsn_option
def worker(
    specs: tuple[str, ...],
    concurrency: int,
    batch_size: int,
    poll_interval: float,
    grace: float,
    no_listen: bool,
    verbose: int,
    dsn: str,
) -> None:
    """Run the handlers of the flows in SPEC... until stopped."""
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if verbose == 0:
        logging.getLogger("pgflow.worker").setLevel(logging.INFO)
        # a line per completed task costs more than a no-op handler: -v
        logging.getLogger("pgflow.worker.tasks").setLevel(logging.WARNING)
    with reported():
        flows = load_all(specs)
        config = WorkerConfig(
            concurrency=concurrency,
            batch_size=batch_size,
            poll_interval=poll_interval,
            grace=grace,
            listen=not no_listen,
        )
        status = Worker(dsn, flows, config).run()
    raise click.exceptions.Exit(status)


# --------------------------------------------------------------------------- runs

START_EPILOG: Final = """\b
Examples:
  pgflow start order --input '{"order_id": 42}'
  pgflow start order --input @order.json --wait --timeout 60
"""


def _parse_input(text: str) -> Any:
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise click.BadParameter(
                f"cannot read {text[1:]}: {reason}", param_hint="--input"
            ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from None


@click.command("start", context_settings=CONTEXT_SETTINGS, epilog=START_EPILOG)
@click.argument("flow_slug", metavar="FLOW")
@click.option(
    "--input",
    "input_text",
    default="{}",
    show_default=True,
    metavar="JSON",
    help="The run's input: JSON text, or @FILE to read it from a file.",
)
@click.option("--run-id", metavar="UUID", help="Start idempotently under this id.")
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
    input_text: str,
    run_id: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    dsn: str,
) -> None:
    """Start a run of FLOW."""
    flow_input = _parse_input(input_text)
    with connected(dsn) as conn:
        run = start_flow(conn, flow_slug, flow_input, run_id)
        if not wait:
            click.echo(json.dumps(run) if as_json else str(run["run_id"]))
            return
        try:
            done = wait_for_run(conn, run["run_id"], timeout)
        except RunTimeoutError as exc:
            fail([f"error: {exc}"])
        click.echo(json.dumps(done) if as_json else render_run(done))
        if done["status"] != "completed":
            raise click.exceptions.Exit(1)


STATUS_EPILOG: Final = """\b
Reads pgflow.get_run: any role given pgflow.grant_client may use it.  --json prints
that document as it is (run fields, then "steps" in definition order).

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
    with connected(dsn) as conn:
        run = get_run(conn, run_id)
        if run is None:
            fail([f"error: run {run_id} does not exist"])
        click.echo(json.dumps(run) if as_json else render_run(run))


RUNS_EPILOG: Final = """\b
Reads pgflow.list_runs (ids, status, times; never inputs or outputs): any role
given pgflow.grant_client may use it.

\b
Examples:
  pgflow runs
  pgflow runs --flow order --status failed --limit 100
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
@json_option
@dsn_option
def runs(
    flow_slug: str | None, run_status: str | None, limit: int, as_json: bool, dsn: str
) -> None:
    """List the most recent runs, newest first."""
    with connected(dsn) as conn:
        rows = list_runs(conn, flow_slug, run_status, limit)
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no runs")
        return
    click.echo(f"{'RUN ID':<36}  {'FLOW':<20}  {'STATUS':<9}  {'STARTED':<19}  DURATION")
    for r in rows:
        started = r["started_at"][:19].replace("T", " ")
        click.echo(
            f"{r['run_id']:<36}  {r['flow_slug']:<20}  {r['status']:<9}  {started:<19}  "
            f"{duration(r['started_at'], r['finished_at'])}"
        )
