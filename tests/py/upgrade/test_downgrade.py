"""The ways back: a version downgraded to an older release.

For every way back the shipped scripts offer (one downgrade script
extension/sql/pgflow--A--B.sql, or a chain of them), from the version in
development or from a released one:

* a fresh A downgraded to B has exactly the catalog of a fresh B, by
  ``ALTER EXTENSION pgflow UPDATE TO 'B'`` and by ``pgflow downgrade`` of a
  plain install (fingerprints of :mod:`pgflow.testing.catalog`);
* runs written at A (finished, failed, leased, queued, retried) read the
  same and finish under B's protocol;
* a database that uses what 0.2.0 cannot hold (a flow version, a heartbeat,
  ...) is refused on the way to 0.2.0 with SQLSTATE 55000 and a hint, and is
  left exactly as it was.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from upgrade_helpers import DEFAULT, SQL, NewDb, connect

from pgflow.cli import main
from pgflow.db import install as installer
from pgflow.testing import catalog

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]
WORKER = uuid.UUID("00000000-0000-4000-8000-00000000000b")


def _key(version: str) -> tuple[int, ...]:
    return installer.version_key(version)


SCRIPTS = installer.collect(DEFAULT, SQL.glob("pgflow--*.sql"))
#: versions the default version ships a downgrade script to
TARGETS = sorted((b for a, b in SCRIPTS.upgrades if a == DEFAULT and _key(b) < _key(a)), key=_key)
#: (from, to) of every way back: the default and each release, to each older
#: release a downgrade script or a chain of them reaches
WAYS_BACK = [
    (a, b)
    for a in [*SCRIPTS.full, DEFAULT]
    for b in SCRIPTS.full
    if _key(b) < _key(a) and SCRIPTS.reaches(a, b)
]


def test_the_default_version_ships_a_way_back_to_the_previous_release() -> None:
    released = installer.collect(DEFAULT, SQL.glob("pgflow--*.sql")).full
    previous = max(released, key=installer.version_key)
    assert previous in TARGETS, f"no extension/sql/pgflow--{DEFAULT}--{previous}.sql"


def _pgflow(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def _fresh(conninfo: str, version: str, method: str) -> list[str]:
    with connect(conninfo) as conn:
        if method == "extension":
            conn.execute(f"CREATE EXTENSION pgflow VERSION '{version}'".encode())
            return catalog.fingerprint(conn)
        installer.apply(conn, installer.plan_install(conn, version, "plain"))
        return catalog.fingerprint(conn, extension=None)


def test_every_release_after_the_first_has_a_way_back() -> None:
    for version in [*SCRIPTS.full, DEFAULT]:
        older = [v for v in SCRIPTS.full if _key(v) < _key(version)]
        if _key(version) > _key("0.2.0"):  # 0.2.0 -> 0.1.0 was never written
            assert (version, max(older, key=_key)) in WAYS_BACK, version


@pytest.mark.parametrize("method", ["extension", "plain"])
@pytest.mark.parametrize(("source", "target"), WAYS_BACK)
def test_a_downgraded_database_has_the_catalog_of_a_fresh_install(
    new_db: NewDb, source: str, target: str, method: str
) -> None:
    fresh = _fresh(new_db("fresh_old"), target, method)
    dsn = new_db("down")
    if _fresh(dsn, source, method) != fresh:  # the script has something to undo
        dry = _pgflow("downgrade", "--version", target, "--dsn", dsn, "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert dry.stdout.startswith("would ")
        assert re.search(r"^  (drops|changes|adds) ", dry.stdout, re.M), dry.stdout
    with connect(dsn) as conn:
        assert installer.installed(conn) == installer.Installed(source, method)  # type: ignore[arg-type]
    done = _pgflow("downgrade", "--version", target, "--dsn", dsn)
    assert done.exit_code == 0, done.output
    assert done.stdout.endswith(f"downgraded pgflow {source} to {target}\n")
    with connect(dsn) as conn:
        assert installer.installed(conn) == installer.Installed(target, method)  # type: ignore[arg-type]
        down = catalog.fingerprint(conn, extension="pgflow" if method == "extension" else None)
    difference = catalog.diff(down, fresh, f"downgraded to {target}", f"fresh {target}")
    if difference:
        pytest.fail(
            f"the catalogs differ (if {source} is in development, regenerate with "
            f"`tools/scripts/downgrade {target}`):\n"
            f"{difference}",
            pytrace=False,
        )
    # and back up again
    again = _pgflow("upgrade", "--dsn", dsn)
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize(("source", "target"), WAYS_BACK)
def test_grants_come_back_with_the_old_signatures(new_db: NewDb, source: str, target: str) -> None:
    dsn = new_db("down_grants")
    with connect(dsn) as conn:
        conn.execute(f"CREATE EXTENSION pgflow VERSION '{source}'".encode())
        conn.execute("CREATE ROLE pgflow_down_worker")
        try:
            conn.execute("SELECT pgflow.grant_worker('pgflow_down_worker')")
            conn.execute(f"ALTER EXTENSION pgflow UPDATE TO '{target}'".encode())
            allowed = conn.execute(
                "SELECT has_function_privilege('pgflow_down_worker', f, 'EXECUTE')"
                " FROM pgflow._api_functions('worker') AS f"
            ).fetchall()
            assert allowed and all(a for (a,) in allowed)
        finally:
            conn.execute("DROP EXTENSION pgflow")
            conn.execute("DROP OWNED BY pgflow_down_worker")
            conn.execute("DROP ROLE pgflow_down_worker")


def _claim(conn: Conn, flow: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT run_id, step_slug, task_index FROM pgflow.claim_tasks(%s, 10, %s)",
        (flow, WORKER),
    ).fetchall()


def _run(conn: Conn, run_id: str) -> Any:
    row = conn.execute("SELECT pgflow.get_run(%s)", (run_id,)).fetchone()
    assert row
    return row[0]


def _start(conn: Conn, flow: str) -> str:
    row = conn.execute("SELECT run_id FROM pgflow.start_flow(%s, '{}')", (flow,)).fetchone()
    assert row
    return str(row[0])


def _as_old(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``before`` with only the keys the older version's ``get_run`` has."""
    old = {k: v for k, v in before.items() if k in after}
    steps = {s["step_slug"]: s for s in after["steps"]}
    old["steps"] = [
        {k: v for k, v in s.items() if k in steps[s["step_slug"]]} for s in before["steps"]
    ]
    return old


@pytest.mark.parametrize(("source", "target"), WAYS_BACK)
def test_runs_written_at_the_new_version_finish_on_the_old_one(
    new_db: NewDb, source: str, target: str
) -> None:
    with connect(new_db("down_data")) as conn:
        conn.execute(f"CREATE EXTENSION pgflow VERSION '{source}'".encode())
        conn.execute("SELECT pgflow.create_flow('chain', max_attempts => 1)")
        conn.execute("SELECT pgflow.add_step('chain', 'a')")
        conn.execute("SELECT pgflow.add_step('chain', 'b', ARRAY['a'])")
        done = _start(conn, "chain")
        for _ in range(2):
            for task in _claim(conn, "chain"):
                conn.execute("SELECT pgflow.complete_task(%s, %s, %s, '1')", task)
        leased = _start(conn, "chain")
        (held,) = _claim(conn, "chain")  # started, reported after the downgrade
        retried = _start(conn, "chain")
        for task in _claim(conn, "chain"):  # its one attempt fails; retried at the new version
            if str(task[0]) == retried:
                conn.execute("SELECT pgflow.fail_task(%s, %s, %s, 'boom')", task)
        assert _run(conn, retried)["status"] == "failed"
        conn.execute("SELECT pgflow.retry_run(%s)", (retried,))
        before = _run(conn, done)

        conn.execute(f"ALTER EXTENSION pgflow UPDATE TO '{target}'".encode())

        after = _run(conn, done)
        assert after == _as_old(before, after)
        conn.execute("SELECT pgflow.complete_task(%s, %s, %s, '2')", held)
        # the retried run has its whole budget again, counted as the old version counts
        claimed = _claim(conn, "chain")
        (task,) = [t for t in claimed if str(t[0]) == retried]
        attempts = conn.execute(
            "SELECT attempts_count FROM pgflow.step_tasks"
            " WHERE run_id = %s AND step_slug = %s AND task_index = %s",
            task,
        ).fetchone()
        # 0.2.0 counts from the retry; 0.3.0 on count over the task's life
        assert attempts == ((1,) if _key(target) < _key("0.3.0") else (2,))
        for t in claimed:
            conn.execute("SELECT pgflow.complete_task(%s, %s, %s, '3')", t)
        for _ in range(3):
            for t in _claim(conn, "chain"):
                conn.execute("SELECT pgflow.complete_task(%s, %s, %s, '4')", t)
        for run_id in (leased, retried):
            assert _run(conn, run_id)["status"] == "completed", _run(conn, run_id)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            [
                "SELECT pgflow.create_flow('order', version => 2)",
                "SELECT pgflow.add_step('order@2', 'a')",
            ],
            "flow versions exist: order@2 (version 2)",
        ),
        (
            [
                "SELECT pgflow.create_flow('beat')",
                "SELECT pgflow.add_step('beat', 'a', heartbeat => 5)",
            ],
            "heartbeat, max_delay or jitter is set on step beat.a",
        ),
        (
            [
                "SELECT pgflow.create_flow('approve')",
                "SELECT pgflow.add_step('approve', 'ok', step_type => 'wait',"
                " wait_event => 'approved', wait_key => 'run.id')",
            ],
            "wait steps exist: approve.ok",
        ),
        (
            [
                "SELECT pgflow.create_flow('held')",
                "SELECT pgflow.add_step('held', 'a')",
                "SELECT pgflow.pause_flow('held')",
            ],
            "paused flows exist: held",
        ),
        (
            [
                "SELECT pgflow.create_flow('inner')",
                "SELECT pgflow.add_step('inner', 'a')",
                "SELECT pgflow.create_flow('outer')",
                "SELECT pgflow.add_subflow_step('outer', 'sub', 'inner')",
                "SELECT pgflow.start_flow('outer', '{}')",
            ],
            "sub-flow steps exist: outer.sub (runs inner)",
        ),
        (
            [
                "SELECT pgflow.create_flow('gated', concurrency => 2, concurrency_key => 'run.t')",
                "SELECT pgflow.add_step('gated', 'a', concurrency => 1)",
            ],
            "concurrency limits are set or in use: gated, gated.a",
        ),
        (
            [  # the limit is gone, but a task still waits for a slot under it
                "SELECT pgflow.create_flow('gated')",
                "SELECT pgflow.add_step('gated', 'a', concurrency => 1)",
                "SELECT pgflow.start_flow('gated', '{}') FROM generate_series(1, 2)",
                "UPDATE pgflow.steps SET opt_concurrency = NULL WHERE flow_slug = 'gated'",
            ],
            "concurrency limits are set or in use: gated (tasks waiting for a slot)",
        ),
        (
            [
                "SELECT pgflow.create_flow('urgent')",
                "SELECT pgflow.add_step('urgent', 'a')",
                "SELECT pgflow.start_flow('urgent', '{}', priority => 5)",
            ],
            "1 running runs have a priority or a trace context",
        ),
    ],
)
@pytest.mark.parametrize("source", [a for a, b in WAYS_BACK if b == "0.2.0"])
def test_what_the_old_version_cannot_hold_is_refused_and_nothing_changes(
    new_db: NewDb, source: str, setup: list[str], message: str
) -> None:
    target = "0.2.0"  # the checks of pgflow--0.3.0--0.2.0.sql, on every way down to 0.2.0
    dsn = new_db("down_refused")
    with connect(dsn) as conn:
        conn.execute(f"CREATE EXTENSION pgflow VERSION '{source}'".encode())
        for statement in setup:
            conn.execute(statement.encode())
        before = catalog.fingerprint(conn)
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
            conn.execute(f"ALTER EXTENSION pgflow UPDATE TO '{target}'".encode())
        assert message in str(refused.value)
        assert refused.value.diag.message_hint
        assert catalog.fingerprint(conn) == before
        assert installer.installed(conn) == installer.Installed(source, "extension")
    cli = _pgflow("downgrade", "--version", target, "--dsn", dsn)
    assert cli.exit_code == 1
    assert message in cli.stderr
    assert "Traceback" not in cli.output


def test_downgrade_names_its_limits(new_db: NewDb) -> None:
    dsn = new_db("down_limits")
    with connect(dsn) as conn:
        conn.execute("CREATE EXTENSION pgflow")
    newer = _pgflow("downgrade", "--version", "9.0.0", "--dsn", dsn)
    assert newer.exit_code == 1
    assert "older than 9.0.0: use `pgflow upgrade`" in newer.stderr
    nowhere = _pgflow("downgrade", "--version", "0.0.1", "--dsn", dsn)
    assert nowhere.exit_code == 1
    assert f"no downgrade script from pgflow {DEFAULT} to 0.0.1" in nowhere.stderr
    assert "restore a backup" in nowhere.stderr
    reachable = sorted((b for a, b in WAYS_BACK if a == DEFAULT), key=_key)
    assert f"(only to {', '.join(reachable)})" in nowhere.stderr
    up = _pgflow("upgrade", "--version", "0.1.0", "--dsn", dsn)
    assert up.exit_code == 1
    assert "`pgflow downgrade --version 0.1.0`" in up.stderr
