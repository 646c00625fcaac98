"""CLI defects found by trying it: deep JSON, usage errors before connecting, permission
hints, unknown flows, column widths, python -m pgflow."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgflow.cli import main

Conn = psycopg.Connection[tuple[Any, ...]]

#: A DSN nothing listens on: a command that gets this far has connected too early.
NOWHERE = "host=/nonexistent port=1 connect_timeout=1"
DEPTH = 3000


def pgflow(db: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--dsn", db], prog_name="pgflow")


def deep_text(depth: int = DEPTH) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--run-id", "not-a-uuid"],
            "Invalid value for '--run-id': 'not-a-uuid' is not a valid UUID",
        ),
        (["--input", "NaN"], "Invalid value for '--input': NaN is not a JSON number"),
        (["--input", "[-Infinity]"], "Invalid value for '--input': -Infinity is not a JSON number"),
        (
            ["--input", "1e999"],
            "Invalid value for '--input': 1e999 is out of range: JSON numbers must fit a double",
        ),
        (
            ["--input", '{"name": "a\\u0000b"}'],
            "Invalid value for '--input': contains \\u0000, which PostgreSQL's jsonb cannot hold",
        ),
        (
            ["--input", '{"\\u0000": 1}'],
            "Invalid value for '--input': contains \\u0000, which PostgreSQL's jsonb cannot hold",
        ),
        (["--input", '"\\ud800"'], "Invalid value for '--input': contains a lone surrogate"),
        (["--input", "1" * 5000], "Invalid value for '--input': Exceeds the limit"),
    ],
)
def test_bad_start_arguments_are_usage_errors_found_before_connecting(
    args: list[str], message: str
) -> None:
    result = pgflow(NOWHERE, "start", "order", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert "connection" not in result.stderr


def test_start_with_deeply_nested_input_is_a_one_line_usage_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text(deep_text(), encoding="utf-8")
    result = pgflow(NOWHERE, "start", "order", "--input", f"@{deep}")
    assert result.exit_code == 2
    assert "Invalid value for '--input': nested too deeply" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --------------------------------------------------------------------------- deep runs


@pytest.fixture
def deep_run(conn: Conn) -> Iterator[str]:
    """A completed run whose input and output are nested 3000 levels deep (started in SQL)."""
    conn.execute("SELECT pgflow.create_flow('deep')")
    conn.execute("SELECT pgflow.add_step('deep', 'only')")
    row = conn.execute(
        "SELECT run_id::text FROM pgflow.start_flow('deep', %s::jsonb)", (deep_text(),)
    ).fetchone()
    assert row is not None
    (task,) = conn.execute(
        "SELECT run_id, step_slug, task_index FROM pgflow.claim_tasks('deep', 1, %s)",
        (uuid.uuid4(),),
    ).fetchall()
    conn.execute(
        "SELECT pgflow.complete_tasks(%s, %s, %s, %s::jsonb[])",
        ([task[0]], [task[1]], [task[2]], [deep_text()]),
    )
    yield row[0]


@pytest.mark.db
def test_status_of_a_deeply_nested_run_works(db: str, deep_run: str) -> None:
    text = pgflow(db, "status", deep_run)
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"run {deep_run}  flow deep  completed")
    assert lines[1].split()[1:3] == ["only", "completed"]
    assert lines[-1] == "output: (nested too deeply to show here: pgflow status --json prints it)"

    as_json = pgflow(db, "status", deep_run, "--json")
    assert as_json.exit_code == 0, as_json.output
    # (jsonb orders keys by length: "depth" of a sub-flow child comes first)
    assert as_json.stdout.startswith('{"depth": 0, "input": {"a": {"a": ')
    assert as_json.stdout.count('{"a": ') == 3 * DEPTH, "input, run output, step output"

    missing = pgflow(db, "status", str(uuid.uuid4()), "--json")
    assert (missing.exit_code, missing.stdout) == (1, "")


# --------------------------------------------------------------------------- permission hints


@pytest.fixture
def client_role(db: str, conn: Conn) -> Iterator[tuple[str, str]]:
    """(name, dsn) of a role given pgflow.grant_client, and nothing else."""
    role = f"app_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    conn.execute("SELECT pgflow.grant_client(%s)", (role,))
    yield role, psycopg.conninfo.make_conninfo(db, user=role)
    conn.execute(f"DROP OWNED BY {role}")
    conn.execute(f"DROP ROLE {role}")


@pytest.fixture
def bare_role(db: str, conn: Conn) -> Iterator[tuple[str, str]]:
    """(name, dsn) of a role without any pgflow grant."""
    role = f"nobody_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    yield role, psycopg.conninfo.make_conninfo(db, user=role)
    conn.execute(f"DROP OWNED BY {role}")
    conn.execute(f"DROP ROLE {role}")


@pytest.mark.db
def test_a_role_without_grants_is_told_about_grant_client(bare_role: tuple[str, str]) -> None:
    role, dsn = bare_role
    for args in (["runs"], ["status", str(uuid.uuid4())], ["start", "order"]):
        result = pgflow(dsn, *args)
        assert result.exit_code == 1, args
        assert result.stderr.splitlines() == [
            "error: permission denied for schema pgflow",
            "hint: pgflow.grant_client gives a role the client functions: as the extension"
            f" owner, run SELECT pgflow.grant_client('{role}')",
        ], args


@pytest.mark.db
def test_a_client_role_is_told_what_stats_and_retry_need(
    client_role: tuple[str, str], conn: Conn
) -> None:
    role, dsn = client_role
    stats = pgflow(dsn, "stats")
    assert stats.exit_code == 1
    error, hint = stats.stderr.splitlines()
    assert error.startswith("error: permission denied for view ")
    assert hint == (
        "hint: the statistics views need the extension owner's rights: connect as the owner,"
        " or have it run GRANT SELECT ON pgflow.run_stats, pgflow.step_stats,"
        f" pgflow.active_tasks, pgflow.stalled_tasks TO {role}"
    )
    retry = pgflow(dsn, "retry", str(uuid.uuid4()))
    assert retry.exit_code == 1
    assert retry.stderr.splitlines()[1] == (
        "hint: retry_run is an operator function: it needs the extension owner's rights."
        f" Connect as the owner, or have it run GRANT EXECUTE ON FUNCTION pgflow.retry_run(uuid)"
        f" TO {role}"
    )
    # what the role may do still works without hints
    assert pgflow(dsn, "runs").stdout == "no runs\n"


# --------------------------------------------------------------------------- unknown flows


@pytest.mark.db
def test_runs_and_stats_agree_on_unknown_flows_and_flows_without_runs(
    db: str, conn: Conn, client_role: tuple[str, str]
) -> None:
    conn.execute("SELECT pgflow.create_flow('idle')")
    conn.execute("SELECT pgflow.add_step('idle', 'only')")
    for command in ("runs", "stats"):
        unknown = pgflow(db, command, "--flow", "idel")
        assert unknown.exit_code == 1, command
        assert unknown.stderr.splitlines() == [
            'error: flow "idel" does not exist',
            "hint: pgflow.flows lists the flows",
        ], command
        assert pgflow(db, command, "--flow", "idel", "--json").exit_code == 1
        empty = pgflow(db, command, "--flow", "idle")
        assert empty.exit_code == 0, (command, empty.output)
    assert pgflow(db, "runs", "--flow", "idle").stdout == "no runs\n"
    assert pgflow(db, "runs", "--flow", "idle", "--status", "failed", "--json").stdout == "[]\n"
    # a role that may not call flow_shape cannot tell: a filter that matches nothing
    _, dsn = client_role
    assert pgflow(dsn, "runs", "--flow", "idel").stdout == "no runs\n"


# --------------------------------------------------------------------------- widths


@pytest.mark.db
def test_runs_columns_are_as_wide_as_their_widest_cell(db: str, conn: Conn) -> None:
    long_slug = "a_flow_with_a_name_longer_than_twenty"
    for slug in ("f", long_slug):
        conn.execute("SELECT pgflow.create_flow(%s)", (slug,))
        conn.execute("SELECT pgflow.add_step(%s, 'only')", (slug,))
        conn.execute("SELECT pgflow.start_flow(%s, '{}')", (slug,))
    lines = pgflow(db, "runs").stdout.splitlines()
    status_at = lines[0].index("STATUS")
    assert lines[0].index("FLOW") == 38
    assert status_at == 38 + len(long_slug) + 2
    assert all(line[status_at:].startswith("started") for line in lines[1:])
    assert all(line == line.rstrip() for line in lines)


def test_runs_pages_with_before_and_after_and_hides_children_with_top_level(
    db: str, conn: Conn
) -> None:
    conn.execute("SELECT pgflow.create_flow('f')")
    conn.execute("SELECT pgflow.add_step('f', 'only')")
    # 25 runs started at one instant (the run id orders them), one with 5 children
    conn.execute("SELECT pgflow.start_flow('f', '{}') FROM generate_series(1, 25)")
    parent = conn.execute("SELECT run_id FROM pgflow.runs ORDER BY run_id LIMIT 1").fetchone()
    assert parent is not None
    conn.execute(
        "INSERT INTO pgflow.runs (run_id, flow_slug, input, remaining_steps, parent_run_id,"
        " parent_step_slug, parent_task_index, parent_attempt, depth)"
        " SELECT gen_random_uuid(), 'f', '{}', 1, %s, 'only', 0, a, 1"
        " FROM generate_series(1, 5) AS a",
        (parent[0],),
    )

    def ids(*args: str) -> list[str]:
        result = pgflow(db, "runs", "--json", *args)
        assert result.exit_code == 0, result.output
        return [r["run_id"] for r in json.loads(result.stdout)]

    def expected(where: str) -> list[str]:
        rows = conn.execute(
            f"SELECT run_id FROM pgflow.runs WHERE {where} ORDER BY started_at DESC, run_id DESC"
        ).fetchall()
        return [str(r[0]) for r in rows]

    walked = ids("--top-level", "--limit", "10")
    while len(walked) % 10 == 0 and (
        page := ids("--top-level", "--limit", "10", "--before", walked[-1])
    ):
        walked += page
    assert walked == expected("parent_run_id IS NULL")
    everything = expected("true")
    assert len(everything) == 30
    assert ids("--limit", "7", "--before", everything[9]) == everything[10:17]
    assert ids("--limit", "4", "--after", everything[9]) == everything[5:9]
    unknown = pgflow(db, "runs", "--before", str(uuid.uuid4()))
    assert unknown.exit_code == 1
    assert "does not exist" in unknown.output
    both = pgflow(db, "runs", "--before", everything[0], "--after", everything[1])
    assert both.exit_code == 2
    assert "not both" in both.output


# --------------------------------------------------------------------------- python -m pgflow


def test_python_m_pgflow_shows_the_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pgflow", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: pgflow [OPTIONS] COMMAND [ARGS]...")
    assert json.dumps(proc.stderr) == '""'
