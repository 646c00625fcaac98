"""pgflow cancel, retry, prune and stats: against a real database, plus the duration parser."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgflow.cli import main
from pgflow.cli.ops import human, human_older, parse_duration

PGFLOW = str(Path(sys.executable).with_name("pgflow"))

Conn = psycopg.Connection[tuple[Any, ...]]


def pgflow(db: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--dsn", db], prog_name="pgflow")


@pytest.fixture
def ops(conn: Conn) -> Conn:
    """Flow ``ops``: a → b, one attempt per task (a failure fails the run at once)."""
    conn.execute("SELECT pgflow.create_flow('ops', max_attempts => 1)")
    conn.execute("SELECT pgflow.add_step('ops', 'a')")
    conn.execute("SELECT pgflow.add_step('ops', 'b', ARRAY['a'])")
    return conn


def start(conn: Conn, flow: str = "ops") -> str:
    row = conn.execute("SELECT run_id FROM pgflow.start_flow(%s, '{}')", (flow,)).fetchone()
    assert row is not None
    return str(row[0])


def claim(conn: Conn, flow: str = "ops", qty: int = 10) -> list[tuple[Any, ...]]:
    """read_with_poll + start_tasks: (run_id, step_slug, task_index) of the started tasks."""
    msgs = conn.execute(
        "SELECT msg_id FROM pgflow.read_with_poll(%s, 30, %s)", (flow, qty)
    ).fetchall()
    return conn.execute(
        "SELECT run_id::text, step_slug, task_index FROM pgflow.start_tasks(%s, %s, %s)",
        (flow, [m[0] for m in msgs], uuid.uuid4()),
    ).fetchall()


def finish_all(conn: Conn, flow: str = "ops") -> None:
    """Complete every task of the flow until nothing is claimable."""
    while tasks := claim(conn, flow):
        for run_id, step, index in tasks:
            conn.execute("SELECT pgflow.complete_task(%s, %s, %s, '1')", (run_id, step, index))


def status_of(conn: Conn, run_id: str) -> str:
    row = conn.execute("SELECT status FROM pgflow.runs WHERE run_id = %s", (run_id,)).fetchone()
    assert row is not None
    return str(row[0])


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("0s", timedelta(0)),
        (" 7D ", timedelta(days=7)),
    ],
)
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "7 d", "-7d", "1.5h", "7x", "7days", "h12"])
def test_bad_durations_are_refused_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a duration: .* e\.g\. 30s, 15m, 12h, 7d, 2w"):
        parse_duration(text)


def test_an_overlong_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("99999999999999w")


def test_durations_read_back() -> None:
    assert human_older(timedelta(days=8, hours=3)) == "1w1d3h"
    assert human_older(timedelta(0)) == "0s"
    assert [human(timedelta(seconds=s)) for s in (0.421, 12.34, 245, 7800, 180000)] == [
        "0.42 s",
        "12.3 s",
        "4m 05s",
        "2h 10m",
        "2d 02h",
    ]
    assert human(None) == "-"


# --------------------------------------------------------------------------- cancel


@pytest.mark.db
def test_cancel_cancels_a_running_run_and_then_changes_nothing(db: str, ops: Conn) -> None:
    run_id = start(ops)
    first = pgflow(db, "cancel", run_id)
    assert (first.exit_code, first.stdout, first.stderr) == (0, f"run {run_id} cancelled\n", "")
    assert status_of(ops, run_id) == "cancelled"
    assert claim(ops) == [], "its tasks cannot be claimed any more"

    again = pgflow(db, "cancel", run_id)
    assert again.exit_code == 0
    assert again.stdout == f"run {run_id} was already cancelled: nothing to cancel\n"


@pytest.mark.db
def test_cancel_of_a_completed_run_is_not_an_error(db: str, ops: Conn) -> None:
    run_id = start(ops)
    finish_all(ops)
    result = pgflow(db, "cancel", run_id)
    assert result.exit_code == 0
    assert result.stdout == f"run {run_id} was already completed: nothing to cancel\n"
    assert status_of(ops, run_id) == "completed"


@pytest.mark.db
def test_cancel_json_prints_the_run_row(db: str, ops: Conn) -> None:
    run_id = start(ops)
    result = pgflow(db, "cancel", run_id, "--json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert (run["run_id"], run["status"]) == (run_id, "cancelled")
    assert run["cancelled_at"] is not None


@pytest.mark.db
def test_cancel_of_an_unknown_run_reports_the_sql_error_and_hint(db: str) -> None:
    run_id = str(uuid.uuid4())
    result = pgflow(db, "cancel", run_id)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: run {run_id} does not exist",
        "hint: check the run_id (pgflow.runs lists the runs; pruned runs are gone)",
    ]


@pytest.mark.db
@pytest.mark.parametrize("command", ["cancel", "retry"])
def test_a_malformed_run_id_is_a_usage_error(db: str, command: str) -> None:
    result = pgflow(db, command, "not-a-uuid")
    assert result.exit_code == 2
    assert "'not-a-uuid' is not a valid UUID" in result.stderr


# --------------------------------------------------------------------------- retry


@pytest.mark.db
def test_retry_resumes_a_failed_run_which_then_completes(db: str, ops: Conn) -> None:
    run_id = start(ops)
    ((_, step, index),) = claim(ops)
    ops.execute("SELECT pgflow.fail_task(%s, %s, %s, 'boom')", (run_id, step, index))
    assert status_of(ops, run_id) == "failed"

    result = pgflow(db, "retry", run_id)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"run {run_id} started again (retry 1): 1 task queued (a)\n"
    assert status_of(ops, run_id) == "started"
    finish_all(ops)
    assert status_of(ops, run_id) == "completed"


@pytest.mark.db
def test_retry_of_a_cancelled_map_run_counts_its_queued_tasks(db: str, conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('fan')")
    conn.execute("SELECT pgflow.add_step('fan', 'each', step_type => 'map')")
    row = conn.execute("SELECT run_id FROM pgflow.start_flow('fan', '[1, 2, 3]')").fetchone()
    assert row is not None
    run_id = str(row[0])
    assert pgflow(db, "cancel", run_id).exit_code == 0
    result = pgflow(db, "retry", run_id, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "started"
    second = pgflow(db, "cancel", run_id)
    assert second.exit_code == 0
    text = pgflow(db, "retry", run_id)
    assert text.stdout == f"run {run_id} started again (retry 2): 3 tasks queued (each)\n"


@pytest.mark.db
def test_retry_of_a_running_run_reports_the_sql_error_and_hint(db: str, ops: Conn) -> None:
    run_id = start(ops)
    result = pgflow(db, "retry", run_id)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: run {run_id} is still running",
        "hint: only failed or cancelled runs can be retried;"
        " cancel it first with pgflow.cancel_run()",
    ]


# --------------------------------------------------------------------------- prune


def backdate(conn: Conn, run_id: str, days: int) -> None:
    """Pretend a run started and finished ``days`` days ago."""
    conn.execute(
        "UPDATE pgflow.runs SET started_at = now() - make_interval(days => %(d)s),"
        " completed_at = CASE WHEN completed_at IS NOT NULL"
        "                     THEN now() - make_interval(days => %(d)s) END,"
        " cancelled_at = CASE WHEN cancelled_at IS NOT NULL"
        "                     THEN now() - make_interval(days => %(d)s) END"
        " WHERE run_id = %(r)s",
        {"d": days, "r": run_id},
    )


@pytest.mark.db
def test_prune_deletes_old_finished_runs_in_batches_until_none_is_left(db: str, ops: Conn) -> None:
    old_done = [start(ops) for _ in range(4)]
    finish_all(ops)
    old_cancelled = start(ops)
    ops.execute("SELECT pgflow.cancel_run(%s)", (old_cancelled,))
    for run_id in [*old_done, old_cancelled]:
        backdate(ops, run_id, 10)
    old_running = start(ops)
    backdate(ops, old_running, 10)
    recent = start(ops)
    ops.execute("SELECT pgflow.cancel_run(%s)", (recent,))

    result = pgflow(db, "prune", "--older-than", "7d", "--batch-size", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"deleted": 5, "batches": 4}, "2 + 2 + 1, then 0"
    left = {r[0] for r in ops.execute("SELECT run_id::text FROM pgflow.runs")}
    assert left == {old_running, recent}, "running and recent runs stay"

    again = pgflow(db, "prune", "--older-than", "1w")
    assert (again.exit_code, again.stdout) == (0, "deleted 0 runs finished more than 1w ago\n")
    assert again.stderr == "", "no progress output when stderr is not a terminal"


@pytest.mark.db
def test_prune_older_than_zero_deletes_every_finished_run(db: str, ops: Conn) -> None:
    start(ops)
    finish_all(ops)
    running = start(ops)
    result = pgflow(db, "prune", "--older-than", "0s")
    assert (result.exit_code, result.stdout) == (0, "deleted 1 run finished more than 0s ago\n")
    assert [r[0] for r in ops.execute("SELECT run_id::text FROM pgflow.runs")] == [running]


@pytest.mark.db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "7x"], "'7x' is not a duration"),
        (["--older-than", "-7d"], "'-7d' is not a duration"),
        ([], "Missing option '--older-than'"),
        (["--older-than", "7d", "--batch-size", "0"], "0 is not in the range 1<=x<=1000000"),
    ],
)
def test_prune_usage_errors(db: str, args: list[str], message: str) -> None:
    result = pgflow(db, "prune", *args)
    assert result.exit_code == 2
    assert message in result.stderr


@pytest.mark.db
def test_prune_without_the_owners_rights_reports_the_permission_error(db: str, conn: Conn) -> None:
    role = f"pgflow_client_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        conn.execute("SELECT pgflow.grant_client(%s)", (role,))
        dsn = psycopg.conninfo.make_conninfo(db, user=role)
        result = pgflow(dsn, "prune", "--older-than", "7d")
        assert result.exit_code == 1
        assert result.stderr.splitlines() == [
            "error: permission denied for function prune_runs",
            "hint: prune_runs is an operator function: it needs the extension owner's rights."
            " Connect as the owner, or have it run GRANT EXECUTE ON FUNCTION"
            f" pgflow.prune_runs(interval, integer) TO {role}",
        ]
    finally:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


# --------------------------------------------------------------------------- stats


@pytest.mark.db
def test_stats_of_an_empty_database(db: str) -> None:
    assert pgflow(db, "stats").stdout == "no flows\n"
    doc = json.loads(pgflow(db, "stats", "--json").stdout)
    assert doc == {"runs": [], "steps": [], "active_tasks": 0, "stalled_tasks": 0}


@pytest.mark.db
def test_stats_counts_runs_steps_and_active_and_stalled_tasks(db: str, ops: Conn) -> None:
    for _ in range(3):
        start(ops)
    finish_all(ops)
    failed = start(ops)
    ((_, step, index),) = claim(ops)
    ops.execute("SELECT pgflow.fail_task(%s, %s, %s, 'boom')", (failed, step, index))
    start(ops)
    stalled = start(ops)
    assert len(claim(ops, qty=2)) == 2
    ops.execute(
        "UPDATE pgflow.step_tasks SET vt = now() - interval '1 minute' WHERE run_id = %s",
        (stalled,),
    )
    ops.execute("SELECT pgflow.create_flow('idle')")
    ops.execute("SELECT pgflow.add_step('idle', 'only')")

    result = pgflow(db, "stats", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["active_tasks"], doc["stalled_tasks"]) == (1, 1)
    runs = {r["flow_slug"]: r for r in doc["runs"]}
    assert set(runs) == {"ops", "idle"}
    assert {k: runs["ops"][k] for k in ("runs", "started", "completed", "failed", "cancelled")} == {
        "runs": 6,
        "started": 2,
        "completed": 3,
        "failed": 1,
        "cancelled": 0,
    }
    assert runs["ops"]["completed_24h"] == 3
    assert isinstance(runs["ops"]["p50_duration_24h"], float), "durations in seconds"
    assert runs["idle"]["runs"] == 0 and runs["idle"]["p50_duration_24h"] is None
    steps = {(s["flow_slug"], s["step_slug"]): s for s in doc["steps"]}
    assert list(steps) == [("idle", "only"), ("ops", "a"), ("ops", "b")]
    a = steps[("ops", "a")]
    assert (a["tasks"], a["completed_tasks"], a["failed_tasks"], a["attempts"]) == (6, 3, 1, 6)
    assert a["failure_rate"] == 0.25
    assert isinstance(a["mean_duration"], float)

    only_ops = json.loads(pgflow(db, "stats", "--flow", "ops", "--json").stdout)
    assert [r["flow_slug"] for r in only_ops["runs"]] == ["ops"]
    assert {s["flow_slug"] for s in only_ops["steps"]} == {"ops"}
    idle = json.loads(pgflow(db, "stats", "--flow", "idle", "--json").stdout)
    assert (idle["active_tasks"], idle["stalled_tasks"]) == (0, 0)

    text = pgflow(db, "stats", "--flow", "ops")
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].split() == [
        *("FLOW", "RUNS", "STARTED", "COMPLETED", "FAILED", "CANCELLED"),
        *("DONE", "24H", "P50", "24H", "P95", "24H"),
    ]
    assert lines[1].split()[:7] == ["ops", "6", "2", "3", "1", "0", "3"]
    assert lines[2] == ""
    assert lines[3].split() == [
        *("FLOW", "STEP", "TASKS", "COMPLETED", "FAILED", "ATTEMPTS", "FAILURE", "MEAN"),
    ]
    assert lines[4].split()[:8] == ["ops", "a", "6", "3", "1", "6", "25.0", "%"]
    assert lines[5].split()[:8] == ["ops", "b", "3", "3", "0", "3", "0.0", "%"]
    assert lines[-1] == "active tasks: 1  stalled tasks: 1"


@pytest.mark.db
def test_stats_of_an_unknown_flow_exits_1(db: str) -> None:
    result = pgflow(db, "stats", "--flow", "nope")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        'error: flow "nope" does not exist',
        "hint: pgflow.flows lists the flows",
    ]


# --------------------------------------------------------------------------- installed command


@pytest.mark.db
def test_the_installed_pgflow_cancels_retries_prunes_and_reports(db: str, ops: Conn) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PGFLOW, *args, "--dsn", db], capture_output=True, text=True, timeout=60, check=False
        )

    run_id = start(ops)
    assert run("cancel", run_id).stdout == f"run {run_id} cancelled\n"
    assert run("retry", run_id).returncode == 0
    finish_all(ops)
    stats = run("stats", "--json")
    assert (stats.returncode, stats.stderr) == (0, "")
    assert json.loads(stats.stdout)["runs"][0]["completed"] == 1
    pruned = run("prune", "--older-than", "0s")
    assert (pruned.returncode, pruned.stdout) == (0, "deleted 1 run finished more than 0s ago\n")
    bad = run("prune", "--older-than", "soon")
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[-1].startswith("Error: Invalid value for '--older-than'")


def test_flows_counts_in_flight_failed_and_all_up_to_the_limit(db: str, ops: Conn) -> None:
    start(ops)
    ops.execute(
        "INSERT INTO pgflow.runs (flow_slug, status, input, remaining_steps, failed_at,"
        " error_message) VALUES ('ops', 'failed', '{}', 1, now(), 'boom')"
    )

    def line() -> list[str]:
        out = pgflow(db, "flows").stdout.splitlines()
        assert out[0].split()[4:9] == ["IN", "FLIGHT", "FAILED", "RUNS", "DRAINED"]
        (row,) = [ln.split() for ln in out[1:] if ln.startswith("ops ")]
        return row

    assert line()[4:7] == ["1", "1", "2"]
    ops.execute(
        "INSERT INTO pgflow.runs (flow_slug, status, input, output, remaining_steps,"
        " completed_at) SELECT 'ops', 'completed', '{}', '{}', 0, now()"
        " FROM generate_series(1, 10000)"
    )
    assert line()[4:7] == ["1", "1", "10000+"]
