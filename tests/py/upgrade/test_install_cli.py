"""`pgflow install` / `pgflow upgrade`, and the version check of the CLI and the worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from upgrade_helpers import DEFAULT, RELEASED, ROOT, Conn, NewDb, connect

from pgflow.cli import main
from pgflow.db import install as installer
from pgflow.spec.loader import load
from pgflow.worker import Worker, WorkerConfig

pytestmark = pytest.mark.db


def pgflow(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_install_uses_create_extension_when_the_server_has_the_files(new_db: NewDb) -> None:
    dsn = new_db("install_ext")
    dry = pgflow("install", "--dsn", dsn, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout == f"would CREATE EXTENSION pgflow VERSION '{DEFAULT}'\n"
    with connect(dsn) as conn:
        assert installer.installed(conn) is None
    done = pgflow("install", "--dsn", dsn)
    assert done.exit_code == 0, done.output
    assert f"installed pgflow {DEFAULT}" in done.stdout
    with connect(dsn) as conn:
        assert installer.installed(conn) == installer.Installed(DEFAULT, "extension")
    again = pgflow("install", "--dsn", dsn)
    assert again.exit_code == 0
    assert again.stdout == f"pgflow {DEFAULT} is already installed\n"
    same = pgflow("upgrade", "--dsn", dsn)
    assert same.exit_code == 0
    assert "nothing to upgrade" in same.stdout


def test_plain_install_applies_the_scripts_and_records_the_version(new_db: NewDb) -> None:
    dsn = new_db("install_plain")
    done = pgflow("install", "--dsn", dsn, "--method", "plain")
    assert done.exit_code == 0, done.output
    assert f"apply pgflow--{DEFAULT}.sql as a plain migration into schema pgflow" in done.stdout
    with connect(dsn) as conn:
        assert installer.installed(conn) == installer.Installed(DEFAULT, "plain")
        assert conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pgflow'"
        ).fetchone() == (0,)
        rows = conn.execute("SELECT version, script FROM pgflow.schema_version").fetchall()
        assert rows == [(DEFAULT, f"pgflow--{DEFAULT}.sql")]
        # the API works, the CLI accepts the database
        conn.execute("SELECT pgflow.create_flow('plain_flow')")
        conn.execute("SELECT pgflow.add_step('plain_flow', 'only')")
        conn.execute("SELECT pgflow.start_flow('plain_flow', '{}')")
    listed = pgflow("runs", "--dsn", dsn, "--json")
    assert listed.exit_code == 0, listed.output
    assert '"plain_flow"' in listed.stdout
    # installing again is a no-op; the extension cannot go on top
    assert pgflow("install", "--dsn", dsn).stdout == f"pgflow {DEFAULT} is already installed\n"


@pytest.mark.parametrize("method", ["extension", "plain"])
@pytest.mark.parametrize("version", RELEASED)
def test_upgrade_from_each_release(new_db: NewDb, version: str, method: str) -> None:
    dsn = new_db("upgrade")
    old = pgflow("install", "--dsn", dsn, "--method", method, "--version", version)
    assert old.exit_code == 0, old.output
    # the tools refuse the old database and say which command upgrades it
    refused = pgflow("runs", "--dsn", dsn)
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"error: the database has pgflow {version} but pgflow-tools is {DEFAULT}: "
        f"upgrade the database with {installer.upgrade_command(method)}\n"  # type: ignore[arg-type]
    )
    again = pgflow("install", "--dsn", dsn)
    assert again.exit_code == 1
    assert "use `pgflow upgrade`" in again.stderr
    with connect(dsn) as conn:
        before = _functions_and_columns(conn)
    dry = pgflow("upgrade", "--dsn", dsn, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.startswith("would ")
    with connect(dsn) as conn:
        assert installer.installed(conn) == installer.Installed(version, method)  # type: ignore[arg-type]
        assert _functions_and_columns(conn) == before, "--dry-run changed the database"
    done = pgflow("upgrade", "--dsn", dsn)
    assert done.exit_code == 0, done.output
    assert done.stdout.endswith(f"upgraded pgflow {version} to {DEFAULT}\n")
    with connect(dsn) as conn:
        assert installer.installed(conn) == installer.Installed(DEFAULT, method)  # type: ignore[arg-type]
        after = _functions_and_columns(conn)
        if method == "plain":
            versions = [
                r[0]
                for r in conn.execute(
                    "SELECT version FROM pgflow.schema_version ORDER BY applied_at"
                )
            ]
            assert versions[0] == version and versions[-1] == DEFAULT
    # the dry run announced exactly what the upgrade then added and dropped
    listed = set(dry.stdout.splitlines())
    for kind, name in after - before:
        assert f"  adds {kind} {name}" in listed, (kind, name, dry.stdout)
    for kind, name in before - after:
        assert f"  drops {kind} {name}" in listed, (kind, name, dry.stdout)
    announced = {
        line for line in listed if line.startswith(("  adds function", "  drops function"))
    }
    assert len(announced) == sum(1 for k, _ in (after ^ before) if k == "function")
    assert pgflow("runs", "--dsn", dsn).exit_code == 0


def _functions_and_columns(conn: Conn) -> set[tuple[str, str]]:
    """Functions and columns of schema pgflow, read straight from the catalog."""
    rows = conn.execute(
        """
        SELECT 'function', p.oid::regprocedure::text FROM pg_proc AS p
        WHERE p.pronamespace = 'pgflow'::regnamespace
        UNION ALL
        SELECT 'column', 'pgflow.' || c.relname || '.' || a.attname
        FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid
        WHERE c.relnamespace = 'pgflow'::regnamespace AND c.relkind = 'r'
          AND a.attnum > 0 AND NOT a.attisdropped
        """
    ).fetchall()
    return {(str(k), str(n)) for k, n in rows}


def test_the_worker_refuses_another_version(new_db: NewDb) -> None:
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        flows = load("tests/py/worker/flows.py")
    finally:
        os.chdir(cwd)
    dsn = new_db("worker_version")
    with pytest.raises(installer.VersionMismatchError, match="`pgflow install`"):
        Worker(dsn, flows, WorkerConfig()).run()
    if not RELEASED:
        return
    with connect(dsn) as conn:
        conn.execute(f"CREATE EXTENSION pgflow VERSION '{RELEASED[-1]}'".encode())
    with pytest.raises(installer.VersionMismatchError) as info:
        Worker(dsn, flows, WorkerConfig()).run()
    assert str(info.value) == (
        f"the database has pgflow {RELEASED[-1]} but pgflow-tools is {DEFAULT}: upgrade the "
        "database with `pgflow upgrade` (runs ALTER EXTENSION pgflow UPDATE)"
    )


def test_the_cli_refuses_a_database_without_pgflow(new_db: NewDb) -> None:
    refused = pgflow("runs", "--dsn", new_db("no_pgflow"))
    assert refused.exit_code == 1
    assert (
        "pgflow is not installed in this database: install it with `pgflow install`"
        in refused.stderr
    )


def test_check_version_names_the_fix(new_db: NewDb) -> None:
    with connect(new_db("check")) as conn:
        conn.execute("CREATE EXTENSION pgflow")
        assert installer.check_version(conn, DEFAULT).version == DEFAULT
        with pytest.raises(installer.VersionMismatchError, match=r"`pip install 'pgflow-tools=="):
            installer.check_version(conn, "0.0.1")
        with pytest.raises(installer.VersionMismatchError, match="`pgflow upgrade`"):
            installer.check_version(conn, "99.0.0")


def test_choose_method() -> None:
    assert installer.choose_method("auto", [], "1.0.0") == "plain"
    assert installer.choose_method("auto", ["1.0.0"], "1.0.0") == "extension"
    assert installer.choose_method("plain", ["1.0.0"], "1.0.0") == "plain"
    with pytest.raises(installer.InstallError, match="no pgflow extension files"):
        installer.choose_method("extension", [], "1.0.0")
    with pytest.raises(installer.InstallError, match=r"not 2\.0\.0"):
        installer.choose_method("auto", ["1.0.0"], "2.0.0")


def test_plain_statements_do_what_create_extension_does() -> None:
    script = (
        '-- header\n\\echo Use "CREATE EXTENSION pgflow" to load this file. \\quit\n'
        "CREATE TABLE @extschema@.t (a int);\n"
        "SELECT pg_catalog.pg_extension_config_dump('pgflow.t', '');\n"
        "CREATE FUNCTION pgflow.f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;\n"
    )
    assert installer.plain_statements(script) == [
        "CREATE TABLE pgflow.t (a int)",
        "CREATE FUNCTION pgflow.f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$",
    ]
    hidden = "DO $$ BEGIN PERFORM pg_extension_config_dump('pgflow.t', ''); END $$;"
    with pytest.raises(installer.InstallError, match="top-level"):
        installer.plain_statements(hidden)


def test_update_path_through_several_scripts(tmp_path: Path) -> None:
    for name in (
        "pgflow--1.0.0.sql",
        "pgflow--1.0.0--1.1.0.sql",
        "pgflow--1.1.0--1.2.0.sql",
        "pgflow--1.0.0--1.2.0.sql",
        "pgflow--1.2.0--2.0.0.sql",
    ):
        (tmp_path / name).write_text("")
    (tmp_path / "pgflow.control").write_text("default_version = '2.0.0'\n")
    scripts = installer.find_scripts(tmp_path)
    assert scripts.default == "2.0.0"
    assert scripts.update_path("1.0.0", "2.0.0") == [("1.0.0", "1.2.0"), ("1.2.0", "2.0.0")]
    assert scripts.update_path("1.1.0", "1.2.0") == [("1.1.0", "1.2.0")]
    with pytest.raises(installer.InstallError, match="no upgrade path"):
        scripts.update_path("2.0.0", "1.0.0")
