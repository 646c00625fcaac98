"""The ``pgflow`` operator commands: cancel, retry, prune, stats.

They call the operations functions of the SQL API (``cancel_run``,
``retry_run``, ``prune_runs``) and read the operator views (``run_stats``,
``step_stats``, ``active_tasks``, ``stalled_tasks``) through
:mod:`pgflow.db.client`; see docs/reference/operations.md.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any, Final

import click

from pgflow.cli._common import CONTEXT_SETTINGS, dsn_option, fail, json_option, unknown_flow
from pgflow.cli._db import connected
from pgflow.cli.render import table
from pgflow.db import client

# --------------------------------------------------------------------------- durations

UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART: Final = re.compile(r"(\d+)([smhdw])")
_DURATION: Final = re.compile(r"(?:\d+[smhdw])+")
DURATION_EXAMPLES: Final = "30s, 15m, 12h, 7d, 2w or 1d12h"


def parse_duration(text: str) -> timedelta:
    """``"7d"`` → 7 days.  Units s, m, h, d, w; parts may be combined (``1d12h``).

    Raises ValueError with a message meant for the user.
    """
    compact = text.strip().lower()
    if not _DURATION.fullmatch(compact):
        raise ValueError(
            f"{text!r} is not a duration: use a whole number and a unit, e.g. {DURATION_EXAMPLES}"
        )
    seconds = sum(int(n) * UNITS[unit] for n, unit in _PART.findall(compact))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None


class Duration(click.ParamType[timedelta]):
    """A click parameter for :func:`parse_duration`."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def human(value: timedelta | None) -> str:
    """A duration for tables: ``0.42 s``, ``12.3 s``, ``4m 05s``, ``2h 10m``; ``-`` if none."""
    if value is None:
        return "-"
    total = value.total_seconds()
    if total < 10:
        return f"{total:.2f} s"
    if total < 60:
        return f"{total:.1f} s"
    whole = int(total)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


# --------------------------------------------------------------------------- cancel

CANCEL_EPILOG: Final = """\b
The run's queued and running tasks are cancelled (a worker's late result changes
nothing), and so are its running steps.  Completed steps keep their outputs;
pgflow retry can resume the run later.  Cancelling a run that has already
finished changes nothing and is not an error.

\b
Examples:
  pgflow cancel 0190c5de-6f1e-7c2a-9d41-3b2f8a1e4c77
  pgflow runs --status started --json | jq -r '.[].run_id' | xargs -n1 pgflow cancel
"""


@click.command("cancel", context_settings=CONTEXT_SETTINGS, epilog=CANCEL_EPILOG)
@click.argument("run_id", metavar="RUN_ID", type=click.UUID)
@json_option
@dsn_option
def cancel(run_id: uuid.UUID, as_json: bool, dsn: str) -> None:
    """Cancel a running run (pgflow.cancel_run)."""
    with connected(dsn, needs="client") as conn:
        result = client.cancel_run(conn, run_id)
    run = result.run
    if as_json:
        click.echo(json.dumps(run))
    elif result.already_finished:
        click.echo(f"run {run_id} was already {run['status']}: nothing to cancel")
    else:
        click.echo(f"run {run_id} cancelled")


# --------------------------------------------------------------------------- retry

RETRY_EPILOG: Final = """\b
Completed steps keep their outputs and are not run again; only the failed and
cancelled tasks are queued again, with fresh attempts.  The earlier attempts stay
in pgflow.run_retries and pgflow.task_attempts.  Needs the extension owner's
rights (retry_run is an operator function).

\b
Examples:
  pgflow retry 0190c5de-6f1e-7c2a-9d41-3b2f8a1e4c77
  pgflow runs --status failed --flow order --json | jq -r '.[].run_id' | xargs -n1 pgflow retry
"""


@click.command("retry", context_settings=CONTEXT_SETTINGS, epilog=RETRY_EPILOG)
@click.argument("run_id", metavar="RUN_ID", type=click.UUID)
@json_option
@dsn_option
def retry(run_id: uuid.UUID, as_json: bool, dsn: str) -> None:
    """Resume a failed or cancelled run from where it stopped (pgflow.retry_run)."""
    with connected(dsn, needs="retry_run") as conn:
        run = client.retry_run(conn, run_id)
        doc = client.get_run(conn, run_id)
    if as_json:
        click.echo(json.dumps(run))
        return
    steps = [] if doc is None else [s for s in doc["steps"] if s["tasks"]["queued"]]
    retries = 0 if doc is None else doc["retries"]
    tasks = sum(s["tasks"]["queued"] for s in steps)
    what = ""
    if steps:
        names = ", ".join(s["step_slug"] for s in steps)
        what = f": {tasks} task{'s' if tasks != 1 else ''} queued ({names})"
    click.echo(f"run {run_id} {run['status']} again (retry {retries}){what}")


# --------------------------------------------------------------------------- pause / resume

PAUSE_EPILOG: Final = """\b
While a flow is paused, claims (claim_tasks, read_with_poll, start_tasks) return
none of its tasks: its workers idle.  pgflow start still queues runs, and tasks
already started finish and report normally.  A claim already running when the
pause commits may still hand out tasks.  FLOW is a definition slug (order, or
order@3 for one version).  `pgflow flows` shows PAUSED; pgflow resume FLOW lets
the work go on.  Needs the extension owner's rights (pause_flow is an operator
function running as its caller: a delegated role needs EXECUTE on it, SELECT on
pgflow.flows and INSERT, DELETE on pgflow.paused_flows).

\b
Examples:
  pgflow pause order        # e.g. while the payment API is down
  pgflow resume order
"""

RESUME_EPILOG: Final = """\b
Idle workers are woken at once.  Tasks a per-task worker leased during the pause
(read_with_poll then start_tasks, which refused them) are claimable again when
their short lease ends.  Resuming a flow that is not paused changes nothing and
is not an error.  Needs the extension owner's rights (resume_flow is an operator
function).

\b
Examples:
  pgflow resume order
"""


@click.command("pause", context_settings=CONTEXT_SETTINGS, epilog=PAUSE_EPILOG)
@click.argument("flow_slug", metavar="FLOW")
@dsn_option
def pause(flow_slug: str, dsn: str) -> None:
    """Stop workers from taking a flow's tasks until resumed (pgflow.pause_flow)."""
    with connected(dsn, needs="pause_flow") as conn:
        changed = conn.pause_flow(flow_slug)
    click.echo(f"flow {flow_slug} paused" if changed else f"flow {flow_slug} was already paused")


@click.command("resume", context_settings=CONTEXT_SETTINGS, epilog=RESUME_EPILOG)
@click.argument("flow_slug", metavar="FLOW")
@dsn_option
def resume(flow_slug: str, dsn: str) -> None:
    """Let workers take a paused flow's tasks again (pgflow.resume_flow)."""
    with connected(dsn, needs="resume_flow") as conn:
        changed = conn.resume_flow(flow_slug)
    click.echo(f"flow {flow_slug} resumed" if changed else f"flow {flow_slug} was not paused")


# --------------------------------------------------------------------------- prune

PRUNE_EPILOG: Final = """\b
DURATION is a whole number and a unit: s, m, h, d or w (30s, 15m, 12h, 7d, 2w;
parts combine: 1d12h).  A run is due when it completed, failed or was cancelled
more than DURATION ago; running runs are never deleted.  Each batch is its own
transaction; the command calls pgflow.prune_runs until nothing is left that was
due when it started, and prints how many runs it deleted.  Needs the extension
owner's rights (prune_runs is an operator function).

\b
Examples:
  pgflow prune --older-than 7d
  pgflow prune --older-than 12h --batch-size 500 --dsn postgresql:///app
"""


@click.command("prune", context_settings=CONTEXT_SETTINGS, epilog=PRUNE_EPILOG)
@click.option(
    "--older-than",
    "older_than",
    type=Duration(),
    required=True,
    metavar="DURATION",
    help="Delete runs that finished longer ago than this.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="Runs deleted per transaction.",
)
@json_option
@dsn_option
def prune(older_than: timedelta, batch_size: int, as_json: bool, dsn: str) -> None:
    """Delete finished runs older than a duration, in batches (pgflow.prune_runs)."""
    progress = _Progress(enabled=not as_json and sys.stderr.isatty())
    total = batches = 0
    began = time.monotonic()
    with connected(dsn, needs="prune_runs") as conn:
        try:
            while True:
                # keep the cutoff where it was at the start: runs finishing
                # meanwhile become due too, and the loop would never end
                elapsed = timedelta(seconds=time.monotonic() - began)
                deleted = client.prune_runs(conn, older_than + elapsed, batch_size)
                batches += 1
                total += deleted
                if deleted == 0:
                    break
                progress.show(f"pruning: {total} runs deleted ({batches} batches)")
        except KeyboardInterrupt:
            progress.clear()
            fail([f"interrupted: {total} runs deleted before the interrupt (each batch is kept)"])
    progress.clear()
    if as_json:
        click.echo(json.dumps({"deleted": total, "batches": batches}))
    else:
        runs = f"{total} run{'s' if total != 1 else ''}"
        click.echo(f"deleted {runs} finished more than {human_older(older_than)} ago")


def human_older(value: timedelta) -> str:
    """``7d`` style text of a duration given to --older-than."""
    left = int(value.total_seconds())
    if left == 0:
        return "0s"
    parts = []
    for unit, size in sorted(UNITS.items(), key=lambda u: -u[1]):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts)


class _Progress:
    """One line on a terminal's stderr, rewritten in place (nothing when not a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.width = 0

    def show(self, text: str) -> None:
        if self.enabled:
            click.echo("\r" + text.ljust(self.width), err=True, nl=False)
            self.width = len(text)

    def clear(self) -> None:
        if self.enabled and self.width:
            click.echo("\r" + " " * self.width + "\r", err=True, nl=False)
            self.width = 0


# --------------------------------------------------------------------------- stats

STATS_EPILOG: Final = """\b
Runs per flow by status, with the median and 95th percentile duration of the runs
completed in the last 24 hours; tasks per step with attempts, failure rate (failed
/ finished tasks) and mean duration; and how many tasks are running now (active)
or stalled (started, lease expired, not yet claimed again).  Reads the views
pgflow.run_stats, step_stats, active_tasks and stalled_tasks: the extension owner
can, other roles need SELECT on them.  --json gives durations in seconds.

\b
--flow FLOW of a flow without runs shows it with zeros; a FLOW that does not
exist is an error (exit 1: most likely a typo), as for pgflow runs.

\b
Examples:
  pgflow stats
  pgflow stats --flow order --json
"""

RUN_HEADERS: Final = (
    *("FLOW", "RUNS", "STARTED", "COMPLETED", "FAILED", "CANCELLED"),
    *("DONE 24H", "P50 24H", "P95 24H"),
)
STEP_HEADERS: Final = (
    "FLOW",
    "STEP",
    "TASKS",
    "COMPLETED",
    "FAILED",
    "ATTEMPTS",
    "FAILURE",
    "MEAN",
)
RUN_COUNTS: Final = ("runs", "started", "completed", "failed", "cancelled", "completed_24h")


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready values: intervals as seconds, numerics as floats."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, timedelta):
            out[key] = seconds(value)
        elif isinstance(value, Decimal):
            out[key] = float(value)
        else:
            out[key] = value
    return out


@click.command("stats", context_settings=CONTEXT_SETTINGS, epilog=STATS_EPILOG)
@click.option("--flow", "flow_slug", metavar="FLOW", help="Only this flow.")
@json_option
@dsn_option
def stats(flow_slug: str | None, as_json: bool, dsn: str) -> None:
    """Show run and step statistics and the number of active and stalled tasks."""
    with connected(dsn, needs="stats") as conn:
        found = client.stats(conn, flow_slug)
    run_rows, step_rows = found.runs, found.steps
    if flow_slug is not None and not run_rows:
        unknown_flow(flow_slug)  # run_stats has a row for every flow, with runs or not
    if as_json:
        doc = {
            "runs": [_plain(r) for r in run_rows],
            "steps": [_plain(r) for r in step_rows],
            "active_tasks": found.active_tasks,
            "stalled_tasks": found.stalled_tasks,
        }
        click.echo(json.dumps(doc))
        return
    if not run_rows:
        click.echo("no flows")
        return
    runs_table = table(
        RUN_HEADERS,
        [
            [
                r["flow_slug"],
                *(str(r[k]) for k in RUN_COUNTS),
                human(r["p50_duration_24h"]),
                human(r["p95_duration_24h"]),
            ]
            for r in run_rows
        ],
        right=set(range(1, 9)),
    )
    steps_table = table(
        STEP_HEADERS,
        [
            [
                r["flow_slug"],
                r["step_slug"],
                str(r["tasks"]),
                str(r["completed_tasks"]),
                str(r["failed_tasks"]),
                str(r["attempts"]),
                "-" if r["failure_rate"] is None else f"{float(r['failure_rate']) * 100:.1f} %",
                human(r["mean_duration"]),
            ]
            for r in step_rows
        ],
        right=set(range(2, 8)),
    )
    click.echo("\n".join([*runs_table, "", *steps_table, ""]))
    click.echo(f"active tasks: {found.active_tasks}  stalled tasks: {found.stalled_tasks}")


# --------------------------------------------------------------------------- flows

FLOWS_EPILOG: Final = """\b
One line per flow definition: its name and version (version 1 is the plain slug,
version N the definition <name>@N that workers of a `version: N` spec serve),
whether `pgflow start NAME` starts it (current; "pinned" when set with
pgflow.set_current_version), its runs in flight, failed and in all (each
count stops at 10000, shown "10000+": the listing costs the same with millions
of runs; pgflow stats counts exactly), whether it is drained (no run in
flight: its workers may stop, pgflow.delete_flow('<name>@N') may remove it),
and whether it is paused (pgflow pause).  Reads pgflow.list_flows: any role
given pgflow.grant_client may.

\b
Examples:
  pgflow flows
  pgflow flows --json | jq -r '.[] | select(.drained and (.current | not)) | .flow_slug'
"""


@click.command("flows", context_settings=CONTEXT_SETTINGS, epilog=FLOWS_EPILOG)
@json_option
@dsn_option
def flows(as_json: bool, dsn: str) -> None:
    """List every flow with its versions, the current one, and runs in flight."""
    with connected(dsn, needs="client") as conn:
        rows = conn.list_flows()
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no flows")
        return
    headers = (
        "FLOW",
        "VERSION",
        "SLUG",
        "CURRENT",
        "IN FLIGHT",
        "FAILED",
        "RUNS",
        "DRAINED",
        "PAUSED",
    )
    lines = table(
        headers,
        [
            [
                r["flow_name"],
                str(r["version"]),
                r["flow_slug"],
                ("pinned" if r["pinned"] else "yes") if r["current"] else "",
                _at_least(r, "runs_in_flight"),
                _at_least(r, "runs_failed"),
                _at_least(r, "runs"),
                "yes" if r["drained"] else "no",
                "yes" if r.get("paused") else "",
            ]
            for r in rows
        ],
        right={1, 4, 5, 6},
    )
    click.echo("\n".join(lines))


def _at_least(row: dict[str, Any], key: str) -> str:
    """A count of list_flows, "10000+" once it reaches the row's count_limit."""
    if row.get(key) is None:  # an extension older than 0.3.0 does not count by status
        return ""
    value = int(row[key])
    limit = row.get("count_limit")
    return f"{value}+" if limit is not None and value >= int(limit) else str(value)
