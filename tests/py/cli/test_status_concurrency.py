"""pgflow status shows the steps whose tasks wait for a concurrency slot (real database)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgflow.cli import main
from pgflow.cli.render import waiting_for_slot

pytestmark = pytest.mark.db


def pgflow(db: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--dsn", db], prog_name="pgflow")


def start(conn: psycopg.Connection[Any], flow: str, flow_input: object) -> str:
    row = conn.execute(
        "SELECT run_id FROM pgflow.start_flow(%s, %s::jsonb)", (flow, json.dumps(flow_input))
    ).fetchone()
    assert row is not None
    return str(row[0])


def step_line(text: str, slug: str) -> str:
    (line,) = [line for line in text.splitlines() if line[3:].split()[:1] == [slug]]
    return line


def test_a_step_over_its_keyed_limit_says_which_slot_it_waits_for(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SELECT pgflow.create_flow('tenants')")
        conn.execute(
            "SELECT pgflow.add_step('tenants', 'work', concurrency => 2,"
            " concurrency_key => 'run.tenant')"
        )
        runs = [start(conn, "tenants", {"tenant": "A"}) for _ in range(3)]
        other = start(conn, "tenants", {"tenant": "B"})
    # the first two of A hold the slots; the third waits; B has slots of its own
    for run_id in (*runs[:2], other):
        shown = pgflow(db, "status", run_id)
        assert shown.exit_code == 0, shown.output
        assert "concurrency slot" not in shown.stdout
    shown = pgflow(db, "status", runs[2])
    assert shown.exit_code == 0, shown.output
    assert step_line(shown.stdout, "work").endswith(
        'waiting for a concurrency slot (tenant = "A": 2/2)'
    )
    as_json = pgflow(db, "status", runs[2], "--json")
    assert as_json.exit_code == 0, as_json.output
    (work,) = json.loads(as_json.stdout)["steps"]
    assert work["waiting_for_slot"] == [
        {"limit_of": "step", "key": "run.tenant", "value": "A", "tasks": 1, "held": 2, "limit": 2}
    ]


def test_a_flow_limit_without_a_key_shows_held_of_limit(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SELECT pgflow.create_flow('one_at_a_time', concurrency => 1)")
        conn.execute("SELECT pgflow.add_step('one_at_a_time', 'work')")
        start(conn, "one_at_a_time", {})
        second = start(conn, "one_at_a_time", {})
    shown = pgflow(db, "status", second)
    assert shown.exit_code == 0, shown.output
    assert step_line(shown.stdout, "work").endswith("waiting for a concurrency slot (flow, 1/1)")


def test_the_rendering_of_several_gates() -> None:
    assert waiting_for_slot([{"limit_of": "step", "key": None, "held": 3, "limit": 3}]) == (
        "waiting for a concurrency slot (3/3)"
    )
    gates = [
        {"limit_of": "step", "key": "item.org.id", "value": 7, "held": 1, "limit": 1},
        {"limit_of": "step", "key": "item.org.id", "value": None, "held": 2, "limit": 1},
    ]
    assert waiting_for_slot(gates) == (
        "waiting for a concurrency slot (id = 7: 1/1; id = null: 2/1)"
    )
