"""pgflow-build catches drift: structure changes need a new version, tunables become updates.

And the migrations it writes mean the same whatever the session's settings;
migrations written in the TypeScript compiler's style still apply.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgflow.cli.build import build
from pgflow.testing import Server, create_database, drop_database

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

ORDER = """\
flow: order
max_attempts: 3
steps:
  - slug: fetch
  - slug: price
    depends_on: [fetch]
  - slug: notify
    depends_on: [price]
"""


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "order.yaml").write_text(ORDER, encoding="utf-8")
    return tmp_path


def run_build(*args: str) -> Result:
    return CliRunner().invoke(build, list(args), prog_name="pgflow-build")


def files(cwd: Path) -> list[str]:
    return sorted(p.name.split("_", 1)[1] for p in (cwd / "migrations").iterdir())


def edit(cwd: Path, old: str, new: str) -> None:
    spec = cwd / "order.yaml"
    text = spec.read_text(encoding="utf-8")
    assert old in text
    spec.write_text(text.replace(old, new), encoding="utf-8")


def test_a_removed_step_is_refused_until_the_version_is_bumped(cwd: Path) -> None:
    assert run_build("order.yaml").exit_code == 0
    edit(cwd, "  - slug: notify\n    depends_on: [price]\n", "")
    refused = run_build("order.yaml")
    assert refused.exit_code == 1
    assert 'step "notify" is removed' in refused.stderr
    assert "set `version: 2` in order.yaml" in refused.stderr
    assert files(cwd) == ["create_order_flow.sql"], "nothing written"
    assert run_build("order.yaml", "--check").exit_code == 1

    edit(cwd, "flow: order\n", "flow: order\nversion: 2\n")
    bumped = run_build("order.yaml")
    assert bumped.exit_code == 0, bumped.output
    assert files(cwd) == ["create_order_flow.sql", "create_order_v2_flow.sql"]
    assert "order version 2: wrote" in bumped.stdout
    assert run_build("order.yaml", "--check").exit_code == 0


def test_a_changed_dependency_is_a_structure_change(cwd: Path) -> None:
    assert run_build("order.yaml").exit_code == 0
    edit(cwd, "    depends_on: [price]\n", "    depends_on: [fetch]\n")
    refused = run_build("order.yaml")
    assert refused.exit_code == 1
    assert 'step "notify": deps_slugs is ["price"] in the migration, ["fetch"] in the spec' in (
        refused.stderr
    )


def test_a_tunable_change_writes_an_update_migration(cwd: Path) -> None:
    assert run_build("order.yaml").exit_code == 0
    edit(cwd, "max_attempts: 3\n", "max_attempts: 7\n")
    updated = run_build("order.yaml")
    assert updated.exit_code == 0, updated.output
    assert files(cwd) == ["create_order_flow.sql", "update_order_flow.sql"]
    assert run_build("order.yaml").stdout.startswith("order: up to date (migrations/")


def test_a_migration_pgflow_build_did_not_write_is_not_compared_and_it_says_so(
    cwd: Path,
) -> None:
    (cwd / "migrations").mkdir()
    (cwd / "migrations" / "20200101000000_create_order_flow.sql").write_text(
        "SELECT pgflow.create_flow('order');\n", encoding="utf-8"
    )
    result = run_build("order.yaml")
    assert result.exit_code == 0
    assert "was not written by pgflow-build: not compared with the spec" in result.stderr


@pytest.mark.db
def test_against_a_database_the_structure_there_is_compared_too(
    cwd: Path, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_build("order.yaml").exit_code == 0
    (migration,) = (cwd / "migrations").iterdir()
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(migration.read_text(encoding="utf-8"))
    # the migrations directory is gone (another checkout): only the database knows
    migration.unlink()
    edit(cwd, "  - slug: notify\n    depends_on: [price]\n", "")
    refused = run_build("order.yaml", "--against", db)
    assert refused.exit_code == 1
    assert 'the database has step "notify" the spec lacks' in refused.stderr
    assert "set `version: 2`" in refused.stderr


@pytest.mark.db
def test_versions_apply_side_by_side_and_the_name_starts_the_newest(cwd: Path, db: str) -> None:
    assert run_build("order.yaml").exit_code == 0
    edit(cwd, "flow: order\n", "flow: order\nversion: 2\n")
    edit(cwd, "  - slug: notify\n    depends_on: [price]\n", "")
    assert run_build("order.yaml").exit_code == 0
    with psycopg.connect(db, autocommit=True) as conn:
        for path in sorted((cwd / "migrations").iterdir()):
            conn.execute(path.read_text(encoding="utf-8"))
        for path in sorted((cwd / "migrations").iterdir()):  # again: no-ops
            conn.execute(path.read_text(encoding="utf-8"))
        row = conn.execute("SELECT flow_slug FROM pgflow.start_flow('order', '{}')").fetchone()
        assert row == ("order@2",)
        steps = conn.execute(
            "SELECT flow_slug, count(*) FROM pgflow.steps GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert steps == [("order", 3), ("order@2", 2)]


@pytest.mark.db
def test_a_migration_without_the_whole_definition_check_still_applies(
    conn: psycopg.Connection,
) -> None:  # type: ignore[type-arg]
    """The style of the TypeScript compiler's migrations: positional dependencies, no check."""
    conn.execute(
        "SELECT pgflow.create_flow('ts_style', max_attempts => 3, timeout => 60);"
        " SELECT pgflow.add_step('ts_style', 'a');"
        " SELECT pgflow.add_step('ts_style', 'b', ARRAY['a']);"
        " SELECT pgflow.add_step('ts_style', 'c', ARRAY['a', 'b'], step_type => 'single');"
    )
    # and a later one of it that leaves a step out applies too (as before)
    conn.execute(
        "SELECT pgflow.create_flow('ts_style', max_attempts => 3, timeout => 60);"
        " SELECT pgflow.add_step('ts_style', 'a');"
    )
    row = conn.execute("SELECT count(*) FROM pgflow.steps WHERE flow_slug = 'ts_style'").fetchone()
    assert row == (3,)


def _shape(conninfo: str) -> list[tuple[object, ...]]:
    with psycopg.connect(conninfo) as conn:
        return [
            tuple(r)
            for r in conn.execute(
                "SELECT flow_slug, pgflow.flow_shape(flow_slug)::text FROM pgflow.flows ORDER BY 1"
            )
        ]


@pytest.mark.db
def test_golden_migrations_mean_the_same_under_hostile_session_settings(
    pg_server: Server, pgflow_template: str
) -> None:
    """Applied with psql under standard_conforming_strings = off and client_encoding LATIN1,
    every golden migration stores the same definition as under the defaults."""
    paths = sorted(GOLDEN.glob("*/expected.sql"))
    assert paths
    shapes = []
    for name, options, encoding in (
        ("pgflow_plain_settings", "", "UTF8"),
        ("pgflow_hostile_settings", "-c standard_conforming_strings=off", "LATIN1"),
    ):
        conninfo = create_database(pg_server, name, template=pgflow_template)
        try:
            env = {
                **os.environ,
                "PGHOST": pg_server.host,
                "PGPORT": pg_server.port,
                "PGUSER": pg_server.user,
                "PGDATABASE": name,
                "PGOPTIONS": options,
                "PGCLIENTENCODING": encoding,
            }
            # the sub-flows a case runs come first (requires.sql)
            for path in [p.with_name("requires.sql") for p in paths] + paths:
                if not path.is_file():
                    continue
                subprocess.run(
                    ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path)],
                    env=env,
                    check=True,
                    capture_output=True,
                )
            shapes.append(_shape(conninfo))
        finally:
            drop_database(pg_server, name)
    plain, hostile = shapes
    assert plain and hostile == plain


@pytest.mark.db
def test_a_changed_concurrency_limit_is_a_tunable_update_applied_in_place(
    cwd: Path, db: str
) -> None:
    edit(cwd, "    depends_on: [fetch]\n", "    depends_on: [fetch]\n    concurrency: 2\n")
    assert run_build("order.yaml").exit_code == 0
    with psycopg.connect(db, autocommit=True) as conn:
        (first,) = sorted((cwd / "migrations").iterdir())
        conn.execute(first.read_text(encoding="utf-8"))
        conn.execute("SELECT pgflow.start_flow('order', '{\"tenant\": \"A\"}')")
        edit(cwd, "    concurrency: 2\n", "    concurrency: {limit: 5, key: fetch.tenant}\n")
        updated = run_build("order.yaml")
        assert updated.exit_code == 0, updated.output
        assert files(cwd) == ["create_order_flow.sql", "update_order_flow.sql"]
        newest = sorted((cwd / "migrations").iterdir())[-1]
        assert "concurrency_key => 'fetch.tenant'" in newest.read_text(encoding="utf-8")
        conn.execute(newest.read_text(encoding="utf-8"))  # with a run in flight
        row = conn.execute(
            "SELECT opt_concurrency, opt_concurrency_key FROM pgflow.steps"
            " WHERE flow_slug = 'order' AND step_slug = 'price'"
        ).fetchone()
        assert row == (5, ["fetch", "tenant"])
        # the limit removed: a third migration, and no limit in the database
        edit(cwd, "    concurrency: {limit: 5, key: fetch.tenant}\n", "")
        assert run_build("order.yaml").exit_code == 0
        conn.execute(sorted((cwd / "migrations").iterdir())[-1].read_text(encoding="utf-8"))
        row = conn.execute(
            "SELECT opt_concurrency, opt_concurrency_key FROM pgflow.steps"
            " WHERE flow_slug = 'order' AND step_slug = 'price'"
        ).fetchone()
        assert row == (None, None)
    assert run_build("order.yaml").stdout.startswith("order: up to date (migrations/")


@pytest.mark.db
def test_sub_flows_built_together_apply_in_file_name_order(cwd: Path, db: str) -> None:
    # Named so that alphabetical order is the wrong one: the parent sorts first.
    (cwd / "a_parent.yaml").write_text(
        "flow: a_parent\nsteps:\n  - slug: docs\n  - slug: each\n    flow: m_mid\n"
        "    map: true\n    depends_on: [docs]\n",
        encoding="utf-8",
    )
    (cwd / "m_mid.yaml").write_text(
        "flow: m_mid\nsteps:\n  - slug: inner\n    flow: z_child\n", encoding="utf-8"
    )
    (cwd / "z_child.yaml").write_text("flow: z_child\nsteps:\n  - slug: work\n", encoding="utf-8")
    result = run_build("a_parent.yaml", "m_mid.yaml", "z_child.yaml")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (cwd / "migrations").iterdir())
    assert [n.split("_", 2)[2] for n in names] == [
        "z_child_flow.sql",
        "m_mid_flow.sql",
        "a_parent_flow.sql",
    ]
    assert len({n.split("_", 1)[0] for n in names}) == 3, "three distinct timestamps"
    with psycopg.connect(db, autocommit=True) as conn:
        for name in names:
            conn.execute((cwd / "migrations" / name).read_text(encoding="utf-8"))
        rows = conn.execute(
            "SELECT flow_slug, step_slug, subflow FROM pgflow.step_subflows ORDER BY 1"
        ).fetchall()
        assert rows == [("a_parent", "each", "m_mid"), ("m_mid", "inner", "z_child")]
    assert run_build("a_parent.yaml", "m_mid.yaml", "z_child.yaml", "--check").exit_code == 0
