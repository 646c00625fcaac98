"""An upgraded database has exactly the catalog of a fresh install.

For every released version V (a frozen extension/sql/pgflow--V.sql):

* extension: ``CREATE EXTENSION pgflow VERSION 'V'; ALTER EXTENSION pgflow
  UPDATE`` has the fingerprint (:mod:`pgflow.catalog`) of ``CREATE EXTENSION
  pgflow``, membership and pg_extension_config_dump registrations included;
* plain: ``pgflow install --version V --method plain`` then ``pgflow upgrade``
  has the fingerprint of ``pgflow install --method plain``.

And a plain install has the catalog of the extension except for what only an
extension has (membership, config-dump registrations) and the plain path's
own ``pgflow.schema_version``.  A failure shows a unified diff.
"""

from __future__ import annotations

import pytest
from upgrade_helpers import DEFAULT, RELEASED, Conn, NewDb, connect

from pgflow.db import install as installer
from pgflow.testing import catalog

pytestmark = pytest.mark.db


def _assert_same(a: list[str], b: list[str], a_name: str, b_name: str) -> None:
    difference = catalog.diff(a, b, a_name, b_name)
    if difference:
        pytest.fail(
            f"the catalogs differ ({a_name} vs {b_name}); mirror extension/src/ changes in "
            f"the upgrade script:\n{difference}",
            pytrace=False,
        )


def _extension(conninfo: str, version: str | None) -> list[str]:
    with connect(conninfo) as conn:
        if version is None:
            conn.execute("CREATE EXTENSION pgflow")
        else:
            conn.execute(f"CREATE EXTENSION pgflow VERSION '{version}'".encode())
            conn.execute("ALTER EXTENSION pgflow UPDATE")
        assert installer.installed(conn) == installer.Installed(DEFAULT, "extension")
        return catalog.fingerprint(conn)


def _plain(conninfo: str, version: str | None) -> list[str]:
    with connect(conninfo) as conn:
        installer.apply(conn, installer.plan_install(conn, version or DEFAULT, "plain"))
        if version is not None:
            assert installer.installed(conn) == installer.Installed(version, "plain")
            installer.apply(conn, installer.plan_upgrade(conn, DEFAULT))
        assert installer.installed(conn) == installer.Installed(DEFAULT, "plain")
        return catalog.fingerprint(conn, extension=None)


@pytest.mark.parametrize("version", RELEASED)
def test_extension_updated_from_each_release_equals_a_fresh_install(
    new_db: NewDb, version: str
) -> None:
    upgraded = _extension(new_db("upgraded"), version)
    fresh = _extension(new_db("fresh"), None)
    assert any(line.startswith("config dump ") for line in fresh)
    assert any(line.startswith("member ") for line in fresh)
    _assert_same(upgraded, fresh, f"updated from {version}", f"fresh {DEFAULT}")


@pytest.mark.parametrize("version", RELEASED)
def test_plain_upgrade_from_each_release_equals_a_fresh_plain_install(
    new_db: NewDb, version: str
) -> None:
    upgraded = _plain(new_db("plain_upgraded"), version)
    fresh = _plain(new_db("plain_fresh"), None)
    _assert_same(upgraded, fresh, f"plain, upgraded from {version}", f"plain {DEFAULT}")


def test_plain_install_equals_the_extension_but_for_membership(new_db: NewDb) -> None:
    plain = _plain(new_db("plain"), None)
    with connect(new_db("ext")) as conn:
        conn.execute("CREATE EXTENSION pgflow")
        ext = catalog.fingerprint(conn, extension=None)
    plain_only = [line for line in plain if "schema_version" in line]
    assert plain_only, "the plain install records its version"
    with connect(new_db("plain2")) as conn:
        installer.apply(conn, installer.plan_install(conn, DEFAULT, "plain"))
        plain = catalog.fingerprint(conn, extension=None, ignore=["schema_version"])
    _assert_same(plain, ext, "plain install", "CREATE EXTENSION")


def test_every_release_has_an_update_path_to_the_default_version(conn: Conn) -> None:
    paths = dict(
        conn.execute(
            "SELECT source, path FROM pg_extension_update_paths('pgflow') WHERE target = %s",
            [DEFAULT],
        ).fetchall()
    )
    available = {
        r[0]
        for r in conn.execute(
            "SELECT version FROM pg_available_extension_versions WHERE name = 'pgflow'"
        )
    }
    assert set(RELEASED) | {DEFAULT} <= available, "make install installs every released version"
    for version in RELEASED:
        assert paths.get(version), f"no update path from {version} to {DEFAULT}"


MUTATIONS = [
    (
        "function body",
        "CREATE OR REPLACE FUNCTION pgflow._api_functions(kind text) "
        "RETURNS SETOF regprocedure LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp "
        "AS $$ SELECT NULL::regprocedure WHERE false $$",
    ),
    ("function volatility", "ALTER FUNCTION pgflow._api_functions(text) VOLATILE"),
    ("function security", "ALTER FUNCTION pgflow.get_run(uuid) SECURITY INVOKER"),
    ("function config", "ALTER FUNCTION pgflow.get_run(uuid) SET work_mem = '8MB'"),
    ("function comment", "COMMENT ON FUNCTION pgflow.get_run(uuid) IS 'changed'"),
    ("function privilege", "GRANT EXECUTE ON FUNCTION pgflow.get_run(uuid) TO PUBLIC"),
    ("column default", "ALTER TABLE pgflow.flows ALTER COLUMN opt_max_attempts SET DEFAULT 4"),
    ("column nullability", "ALTER TABLE pgflow.runs ALTER COLUMN output SET NOT NULL"),
    ("column type", "ALTER TABLE pgflow.workers ALTER COLUMN host TYPE varchar(300)"),
    ("new column", "ALTER TABLE pgflow.flows ADD COLUMN extra int"),
    ("constraint", "ALTER TABLE pgflow.flows ADD CONSTRAINT flows_extra_check CHECK (true)"),
    ("index", "CREATE INDEX flows_created_at_idx ON pgflow.flows (created_at)"),
    ("table privilege", "GRANT SELECT ON pgflow.runs TO PUBLIC"),
    ("table comment", "COMMENT ON TABLE pgflow.runs IS 'changed'"),
    ("membership", "ALTER EXTENSION pgflow DROP FUNCTION pgflow.get_run(uuid)"),
    ("config dump", "SELECT pg_catalog.pg_extension_config_dump('pgflow.flows', 'WHERE true')"),
    ("schema privilege", "GRANT USAGE ON SCHEMA pgflow TO PUBLIC"),
]


@pytest.mark.parametrize("what,statement", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_the_fingerprint_sees_every_kind_of_difference(
    conn: Conn, what: str, statement: str
) -> None:
    before = catalog.fingerprint(conn)
    if what == "config dump":
        # pg_extension_config_dump works only inside an extension script: edit
        # the registration the way ALTER EXTENSION would
        conn.execute(
            "UPDATE pg_extension SET extcondition = array_replace(extcondition, '', 'WHERE true') "
            "WHERE extname = 'pgflow'"
        )
    else:
        conn.execute(statement.encode())
    after = catalog.fingerprint(conn)
    assert catalog.diff(before, after, "before", "after"), f"{what} went unnoticed"
    assert catalog.diff(before, before) == ""
