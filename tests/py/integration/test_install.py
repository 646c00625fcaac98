"""Installing the extension: as a non-superuser, and cleanly removable."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from pgflow.testing import Server, admin_connect, create_database, drop_database

pytestmark = pytest.mark.db


def test_a_role_with_only_create_on_the_database_can_install(
    pg_server: Server, pgflow_template: str
) -> None:
    role = "pgflow_installer"
    dbname = "pgflow_nonsuper_install"
    with admin_connect(pg_server) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                sql.Identifier(role)
            )
        )
    create_database(pg_server, dbname)
    try:
        with admin_connect(pg_server) as admin:
            admin.execute(
                sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                    sql.Identifier(dbname), sql.Identifier(role)
                )
            )
        with psycopg.connect(pg_server.conninfo(dbname, user=role), autocommit=True) as conn:
            superuser = conn.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            assert superuser == (False,)
            conn.execute("CREATE EXTENSION pgflow")
            owner = conn.execute(
                "SELECT pg_get_userbyid(extowner) FROM pg_extension WHERE extname = 'pgflow'"
            ).fetchone()
            assert owner == (role,)
            # the installing role owns everything and can use the API
            conn.execute("SELECT pgflow.create_flow('installed')")
            conn.execute("SELECT pgflow.add_step('installed', 'only')")
            run = conn.execute("SELECT status FROM pgflow.start_flow('installed', '{}')").fetchone()
            assert run == ("started",)
            conn.execute("DROP EXTENSION pgflow")
            # PostgreSQL keeps the schema it created for the extension (it is
            # not a member); nothing of pgflow is left in it.
            left = conn.execute(
                "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = n.oid)"
                " + (SELECT count(*) FROM pg_proc WHERE pronamespace = n.oid)"
                " + (SELECT count(*) FROM pg_type WHERE typnamespace = n.oid)"
                " FROM pg_namespace AS n WHERE n.nspname = 'pgflow'"
            ).fetchone()
            assert left == (0,)
    finally:
        drop_database(pg_server, dbname)
        with admin_connect(pg_server) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_drop_extension_removes_every_object(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("SELECT pgflow.create_flow('gone')")
    conn.execute("DROP EXTENSION pgflow")
    leftovers = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'pgflow'"
    ).fetchone()
    assert leftovers == (0,)
