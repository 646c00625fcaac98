"""pgflow start, status and runs against a real database, with a worker in a thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgflow.cli import main
from pgflow.compiler.migration import compile_flow
from pgflow.spec.loader import LoadedFlow, load
from pgflow.worker import Worker, WorkerConfig

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[3]
FLOWS = "tests/py/worker/flows.py"
PGFLOW = str(Path(sys.executable).with_name("pgflow"))

Conn = psycopg.Connection[tuple[Any, ...]]


def load_flows() -> list[LoadedFlow]:
    """The flows of tests/py/worker/flows.py (loaded from the repository root)."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return load(FLOWS)
    finally:
        os.chdir(cwd)


def apply_spec(db: str) -> None:
    """Run the flows' migrations, as a deployer would."""
    with psycopg.connect(db, autocommit=True) as conn:
        for flow in load_flows():
            conn.execute(compile_flow(flow.spec, generated_at=datetime(2026, 1, 1, tzinfo=UTC)))


@contextmanager
def running_worker(db: str) -> Iterator[Worker]:
    """The reference worker in a thread; stopped (and joined) afterwards."""
    worker = Worker(db, load_flows(), WorkerConfig(poll_interval=0.2, grace=5))
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(worker.run()), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the worker did not stop"
    assert status == [0]


def pgflow(db: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--dsn", db], prog_name="pgflow")


def started(db: str, flow: str, flow_input: Any) -> str:
    result = pgflow(db, "start", flow, "--input", json.dumps(flow_input))
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def run_row(conn: Conn, run_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT flow_slug, status, input FROM pgflow.runs WHERE run_id = %s", (run_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture
def flows(db: str) -> str:
    apply_spec(db)
    return db


# --------------------------------------------------------------------------- start


def test_start_prints_the_run_id_of_a_run_with_the_given_input(flows: str, conn: Conn) -> None:
    result = pgflow(flows, "start", "wt_dag", "--input", '{"n": 3}')
    assert result.exit_code == 0, result.output
    run_id = result.stdout.strip()
    assert str(uuid.UUID(run_id)) == run_id
    assert result.stderr == ""
    assert run_row(conn, run_id) == ("wt_dag", "started", {"n": 3})


def test_start_with_a_priority(flows: str, conn: Conn) -> None:
    result = pgflow(flows, "start", "wt_dag", "--priority", "-3")
    assert result.exit_code == 0, result.output
    row = conn.execute(
        "SELECT priority FROM pgflow.runs WHERE run_id = %s", (result.stdout.strip(),)
    ).fetchone()
    assert row == (-3,)
    refused = pgflow(flows, "start", "wt_dag", "--priority", "high")
    assert refused.exit_code == 2 and "--priority" in refused.output


def test_start_reads_the_input_from_a_file(flows: str, conn: Conn, tmp_path: Path) -> None:
    (tmp_path / "input.json").write_text('{"n": 4, "note": "from a file"}', encoding="utf-8")
    result = pgflow(flows, "start", "wt_dag", "--input", f"@{tmp_path / 'input.json'}")
    assert result.exit_code == 0, result.output
    assert run_row(conn, result.stdout.strip())[2] == {"n": 4, "note": "from a file"}


def test_start_json_prints_the_run_row(flows: str) -> None:
    result = pgflow(flows, "start", "wt_dag", "--input", '{"n": 1}', "--json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert run["flow_slug"] == "wt_dag"
    assert run["status"] == "started"
    assert run["input"] == {"n": 1}


def test_start_with_a_run_id_is_idempotent(flows: str, conn: Conn) -> None:
    run_id = str(uuid.uuid4())
    first = pgflow(flows, "start", "wt_dag", "--input", '{"n": 1}', "--run-id", run_id)
    again = pgflow(flows, "start", "wt_dag", "--input", '{"n": 2}', "--run-id", run_id)
    assert (first.exit_code, again.exit_code) == (0, 0)
    assert first.stdout == again.stdout == f"{run_id}\n"
    assert run_row(conn, run_id)[2] == {"n": 1}, "the first start's input stays"


@pytest.mark.parametrize(
    ("input_text", "message"),
    [
        ("{bad", "Invalid value for '--input': not JSON:"),
        ("@/nonexistent/input.json", "cannot read /nonexistent/input.json: No such file"),
    ],
)
def test_start_with_bad_input_is_a_usage_error(flows: str, input_text: str, message: str) -> None:
    result = pgflow(flows, "start", "wt_dag", "--input", input_text)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_start_of_an_unknown_flow_reports_the_sql_error_and_its_hint(db: str) -> None:
    result = pgflow(db, "start", "no_such_flow")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        'error: flow "no_such_flow" does not exist',
        "hint: apply the flow's migration (pgflow-build writes it) before starting runs",
    ]


def test_start_cannot_reach_the_database(tmp_path: Path) -> None:
    result = pgflow(f"host={tmp_path} port=1 connect_timeout=2", "start", "wt_dag")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: connection ")


def test_start_wait_prints_the_finished_run_as_a_tree(flows: str) -> None:
    with running_worker(flows):
        result = pgflow(flows, "start", "wt_dag", "--input", '{"n": 3}', "--wait", "--timeout=30")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("run ") and "  flow wt_dag  completed  " in lines[0]
    assert [line.split()[1] for line in lines[1:5]] == ["root", "square", "count", "total"]
    assert all(line.split()[2] == "completed" for line in lines[1:5])
    assert "3/3 tasks" in lines[2]
    assert lines[-1] == 'output: {"total": {"sum": 5, "count": 3}}'


def test_start_wait_json_prints_get_run(flows: str) -> None:
    with running_worker(flows):
        result = pgflow(
            flows, "start", "wt_behave", "--input", '{"mode": "ctx"}', "--wait", "--json"
        )
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert run["status"] == "completed"
    assert run["output"]["act"]["flow_input"] == {"mode": "ctx"}
    assert [s["step_slug"] for s in run["steps"]] == ["act"]


def test_start_wait_exits_1_when_the_run_does_not_complete(flows: str) -> None:
    def cancel_soon() -> None:
        with psycopg.connect(flows, autocommit=True) as conn:
            for _ in range(100):
                row = conn.execute("SELECT run_id FROM pgflow.runs").fetchone()
                if row:
                    conn.execute("SELECT pgflow.cancel_run(%s)", row)
                    return
                time.sleep(0.05)

    thread = threading.Thread(target=cancel_soon)
    thread.start()
    result = pgflow(flows, "start", "wt_dag", "--input", '{"n": 2}', "--wait", "--timeout", "30")
    thread.join()
    assert result.exit_code == 1
    assert "  flow wt_dag  cancelled" in result.stdout.splitlines()[0]


def test_start_wait_times_out_with_exit_1(flows: str) -> None:
    result = pgflow(flows, "start", "wt_dag", "--input", '{"n": 2}', "--wait", "--timeout", "0.3")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: run ") and line.endswith(" is still started after 0.3 s")


# --------------------------------------------------------------------------- status


def test_status_shows_a_finished_run_as_text_and_json(flows: str) -> None:
    with running_worker(flows):
        done = pgflow(flows, "start", "wt_dag", "--input", '{"n": 2}', "--wait")
    assert done.exit_code == 0, done.output
    run_id = done.stdout.split()[1]

    text = pgflow(flows, "status", run_id)
    assert text.exit_code == 0, text.output
    assert text.stdout == done.stdout, "status shows what start --wait showed"

    as_json = pgflow(flows, "status", run_id, "--json")
    assert as_json.exit_code == 0, as_json.output
    run = json.loads(as_json.stdout)
    assert run["run_id"] == run_id
    assert run["status"] == "completed"
    assert run["output"] == {"total": {"sum": 1, "count": 2}}
    assert {s["step_slug"]: s["tasks"]["completed"] for s in run["steps"]} == {
        "root": 1,
        "square": 2,
        "count": 1,
        "total": 1,
    }


def test_status_of_a_started_run_shows_waiting_steps(flows: str) -> None:
    run_id = started(flows, "wt_dag", {"n": 2})
    result = pgflow(flows, "status", run_id)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"run {run_id}  flow wt_dag  started"
    assert lines[1].split()[1:3] == ["root", "started"]
    assert lines[-1].split()[1:3] == ["total", "created"]
    assert not any(line.startswith("output:") for line in lines)


def test_status_of_a_failed_step_shows_its_error(flows: str, conn: Conn) -> None:
    run_id = started(flows, "wt_dag", {"n": 2})
    worker = uuid.uuid4()
    for _ in range(3):  # wt_dag allows 3 attempts; base_delay 1 s is skipped by moving vt
        conn.execute("UPDATE pgflow.step_tasks SET vt = now() WHERE run_id = %s", (run_id,))
        msgs = conn.execute("SELECT msg_id FROM pgflow.read_with_poll('wt_dag', 30, 1)").fetchall()
        conn.execute("SELECT pgflow.start_tasks('wt_dag', %s, %s)", ([m[0] for m in msgs], worker))
        conn.execute("SELECT pgflow.fail_task(%s, 'root', 0, 'disk on fire')", (run_id,))
    result = pgflow(flows, "status", run_id)
    assert result.exit_code == 0, result.output
    assert f"run {run_id}  flow wt_dag  failed" in result.stdout
    assert "  error: disk on fire" in result.stdout
    assert "3 attempts" in result.stdout


def test_status_of_an_unknown_run_exits_1(db: str) -> None:
    run_id = str(uuid.uuid4())
    result = pgflow(db, "status", run_id)
    assert result.exit_code == 1
    assert result.stderr == f"error: run {run_id} does not exist\n"
    assert pgflow(db, "status", run_id, "--json").exit_code == 1


def test_status_of_a_malformed_run_id_is_a_usage_error(db: str) -> None:
    result = pgflow(db, "status", "123")
    assert result.exit_code == 2
    assert "'123' is not a valid UUID" in result.stderr


# --------------------------------------------------------------------------- runs


def test_runs_without_runs_says_so(flows: str) -> None:
    result = pgflow(flows, "runs")
    assert (result.exit_code, result.stdout) == (0, "no runs\n")
    as_json = pgflow(flows, "runs", "--json")
    assert (as_json.exit_code, as_json.stdout) == (0, "[]\n")


def test_runs_lists_newest_first_with_filters(flows: str, conn: Conn) -> None:
    dag = [started(flows, "wt_dag", {"n": n}) for n in range(3)]
    behave = started(flows, "wt_behave", {"mode": "return", "value": 1})
    conn.execute("SELECT pgflow.cancel_run(%s)", (dag[0],))

    table = pgflow(flows, "runs")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["RUN", "ID", "FLOW", "STATUS", "STARTED", "DURATION"]
    assert [line.split()[0] for line in lines[1:]] == [behave, *reversed(dag)]
    cancelled = next(line for line in lines if line.startswith(dag[0]))
    assert cancelled.split()[1:3] == ["wt_dag", "cancelled"]
    assert cancelled.endswith(" s"), "a finished run shows its duration"

    def ids(*args: str) -> list[str]:
        result = pgflow(flows, "runs", "--json", *args)
        assert result.exit_code == 0, result.output
        return [r["run_id"] for r in json.loads(result.stdout)]

    assert ids("--flow", "wt_dag") == list(reversed(dag))
    assert ids("--status", "cancelled") == [dag[0]]
    assert ids("--flow", "wt_dag", "--status", "started") == [dag[2], dag[1]]
    assert ids("--limit", "2") == [behave, dag[2]]
    unknown = pgflow(flows, "runs", "--json", "--flow", "no_such_flow")
    assert (unknown.exit_code, unknown.stdout) == (1, ""), "an unknown flow is an error"

    (doc,) = json.loads(pgflow(flows, "runs", "--json", "--status", "cancelled").stdout)
    assert set(doc) == {
        "run_id",
        "flow_slug",
        "version",
        "parent_run_id",
        "status",
        "remaining_steps",
        "error_message",
        "started_at",
        "finished_at",
        "waiting",
    }
    assert doc["waiting"] == []  # the steps waiting for an event: none in this flow


def test_runs_rejects_an_unknown_status_and_a_zero_limit(db: str) -> None:
    assert pgflow(db, "runs", "--status", "running").exit_code == 2
    assert pgflow(db, "runs", "--limit", "0").exit_code == 2


# --------------------------------------------------------------------------- installed command


def installed(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PGFLOW, *args, "--dsn", db],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def test_the_installed_pgflow_starts_and_follows_a_run(flows: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return installed(flows, *args)

    with running_worker(flows):
        done = run("start", "wt_dag", "--input", '{"n": 4}', "--wait", "--json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    listed = run("runs", "--json")
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [run_id]
    status = run("status", run_id)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[-1] == 'output: {"total": {"sum": 14, "count": 4}}'
    missing = run("status", str(uuid.uuid4()))
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.startswith("error: run ")


def test_start_wait_writes_nothing_to_stderr(flows: str) -> None:
    with running_worker(flows):
        done = installed(flows, "start", "wt_dag", "--input", '{"n": 1}', "--wait")
    assert done.returncode == 0
    assert done.stderr == ""
