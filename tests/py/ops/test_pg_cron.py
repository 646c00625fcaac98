"""The pg_cron recipe of docs/reference/operations.md, on a real pg_cron.

pg_cron must be in shared_preload_libraries, so this test starts its own
throwaway cluster instead of using the session server.  Nothing waits for a
job to fire (that takes a minute): the test checks that cron.schedule
accepted the jobs as written in the docs and runs their commands the way
pg_cron does (one top-level statement on an autocommit connection).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgflow.testing.cluster import FAST_SETTINGS, Cluster, ClusterError

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]

DOC = Path(__file__).resolve().parents[3] / "docs" / "reference" / "operations.md"
DBNAME = "app"


def _unavailable(reason: str) -> None:
    if os.environ.get("PGFLOW_REQUIRE_DB") or os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _sharedir() -> Path:
    exe = os.environ.get("PG_CONFIG", "pg_config")
    out = subprocess.run([exe, "--sharedir"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def _recipe() -> list[str]:
    """The SQL blocks of the pg_cron section of the operations reference."""
    text = DOC.read_text()
    section = text.split("<!-- pg_cron recipe -->")[1].split("<!-- end pg_cron recipe -->")[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)


@pytest.fixture(scope="module")
def cron_db() -> Iterator[str]:
    if not (_sharedir() / "extension" / "pg_cron.control").exists():
        _unavailable("pg_cron is not installed (apt-get install postgresql-15-cron)")
    cluster = Cluster(
        settings={
            **FAST_SETTINGS,
            "shared_preload_libraries": "pg_cron",
            "cron.database_name": DBNAME,
            "cron.use_background_workers": "on",
        }
    )
    try:
        cluster.start()
    except ClusterError as exc:
        _unavailable(f"cannot start a cluster with pg_cron: {exc}")
    try:
        with psycopg.connect(cluster.conninfo(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DBNAME}")
        yield cluster.conninfo(DBNAME)
    finally:
        cluster.stop()


def test_the_documented_recipe_schedules_a_start_and_a_nightly_prune(cron_db: str) -> None:
    blocks = _recipe()
    assert len(blocks) >= 3, "the recipe has setup, schedule and check blocks"
    with psycopg.connect(cron_db, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgflow")
        conn.execute("SELECT pgflow.create_flow('nightly_report')")
        conn.execute("SELECT pgflow.add_step('nightly_report', 'collect')")
        for block in blocks:
            conn.execute(block)

        jobs = {
            name: (schedule, command, active, database)
            for name, schedule, command, active, database in conn.execute(
                "SELECT jobname, schedule, command, active, database FROM cron.job"
            )
        }
        assert set(jobs) == {"pgflow-start-nightly-report", "pgflow-prune-runs"}
        assert jobs["pgflow-start-nightly-report"][0] == "* * * * *"
        assert jobs["pgflow-prune-runs"][0] == "17 3 * * *"
        assert all(active and database == DBNAME for _, _, active, database in jobs.values())

        # what pg_cron does when a job fires: run its command as one statement
        conn.execute(jobs["pgflow-start-nightly-report"][1])
        runs = conn.execute(
            "SELECT status, input FROM pgflow.runs WHERE flow_slug = 'nightly_report'"
        ).fetchall()
        assert len(runs) == 1
        assert runs[0][0] == "started"
        assert "scheduled_at" in runs[0][1]

        # the prune job deletes old finished runs in batches, committing between them
        conn.execute(
            "UPDATE pgflow.runs SET status = 'cancelled', started_at = now() - interval '30 days',"
            " cancelled_at = now() - interval '30 days'"
        )
        conn.execute(
            "INSERT INTO pgflow.runs (flow_slug, status, input, remaining_steps, started_at,"
            " completed_at) SELECT 'nightly_report', 'completed', '{}', 0,"
            " now() - interval '20 days', now() - interval '20 days' FROM generate_series(1, 2500)"
        )
        conn.execute(jobs["pgflow-prune-runs"][1])
        left = conn.execute("SELECT count(*) FROM pgflow.runs").fetchone()
        assert left == (0,)


def test_cron_schedule_refuses_a_bad_schedule(cron_db: str) -> None:
    with psycopg.connect(cron_db, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SELECT cron.schedule('bad', 'every minute', 'SELECT 1')")
