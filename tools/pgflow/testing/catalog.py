"""A text fingerprint of what pgflow put into a database's catalog.

Two databases whose fingerprints are equal have the same pgflow: the same
tables, columns (position, type, default, nullability, identity, collation),
constraints, indexes, sequences, views, triggers, policies, types, functions
(signature, result, body, language, volatility, strictness, security,
parallel safety, cost, settings), comments, owners and privileges of every
object of schema ``pgflow`` and of the schema itself, plus, for an extension,
its membership list and the tables it registers with
``pg_extension_config_dump``.  No OID appears, so databases can be compared
across clusters; privileges are compared by role name, after expanding a
default (NULL) ACL.

Used by the upgrade tests: a database upgraded from an old version must have
the fingerprint of a fresh install (:func:`diff` renders the difference).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator
from typing import Any, Final

import psycopg
from psycopg import sql

Conn = psycopg.Connection[Any]

#: ``aclexplode`` of an ACL column (NULL means the owner's default), as text.
_ACL: Final = """(SELECT coalesce(string_agg(
        format('%s=%s%s/%s',
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
               a.privilege_type, CASE WHEN a.is_grantable THEN '*' ELSE '' END,
               pg_get_userbyid(a.grantor)),
        ',' ORDER BY 1), '-')
    FROM aclexplode(coalesce({acl}, acldefault('{kind}', {owner}))) AS a)"""


def _acl(acl: str, kind: str, owner: str) -> str:
    return _ACL.format(acl=acl, kind=kind, owner=owner)


# Each query returns (key, attribute text) rows; the key names the object.
_QUERIES: Final[tuple[tuple[str, str], ...]] = (
    (
        "schema",
        f"""
        SELECT n.nspname,
               format('owner=%s comment=%s acl=%s', pg_get_userbyid(n.nspowner),
                      obj_description(n.oid, 'pg_namespace'),
                      {_acl("n.nspacl", "n", "n.nspowner")})
        FROM pg_namespace AS n WHERE n.nspname = :schema
        """,
    ),
    (
        "relation",
        f"""
        SELECT c.relname,
               format('kind=%s persistence=%s rls=%s/%s options=%s owner=%s comment=%s acl=%s',
                      c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity,
                      c.reloptions, pg_get_userbyid(c.relowner),
                      obj_description(c.oid, 'pg_class'),
                      {_acl("c.relacl", "r", "c.relowner")})
        FROM pg_class AS c
        WHERE c.relnamespace = :schema::regnamespace AND c.relkind <> 't'
        """,
    ),
    (
        "column",
        f"""
        SELECT format('%s.%s', c.relname, a.attname),
               format('position=%s type=%s notnull=%s default=%s identity=%s generated=%s '
                      'collation=%s comment=%s acl=%s',
                      row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                      format_type(a.atttypid, a.atttypmod), a.attnotnull,
                      pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
                      (SELECT collname FROM pg_collation WHERE oid = a.attcollation),
                      col_description(c.oid, a.attnum),
                      CASE WHEN a.attacl IS NULL THEN '-'
                           ELSE {_acl("a.attacl", "c", "c.relowner")} END)
        FROM pg_class AS c
        JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_attrdef AS d ON d.adrelid = c.oid AND d.adnum = a.attnum
        WHERE c.relnamespace = :schema::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'c', 'f')
        """,
    ),
    (
        "constraint",
        """
        SELECT format('%s.%s', coalesce(c.relname, t.typname), k.conname),
               format('%s comment=%s', pg_get_constraintdef(k.oid),
                      obj_description(k.oid, 'pg_constraint'))
        FROM pg_constraint AS k
        LEFT JOIN pg_class AS c ON c.oid = k.conrelid
        LEFT JOIN pg_type AS t ON t.oid = k.contypid
        WHERE k.connamespace = :schema::regnamespace
        """,
    ),
    (
        "index",
        """
        SELECT c.relname, pg_get_indexdef(c.oid)
        FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
        WHERE c.relnamespace = :schema::regnamespace
        """,
    ),
    (
        "sequence",
        """
        SELECT c.relname,
               format('type=%s start=%s increment=%s min=%s max=%s cache=%s cycle=%s owned_by=%s',
                      s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
                      s.seqcache, s.seqcycle,
                      (SELECT format('%s.%s', r.relname, a.attname)
                       FROM pg_depend AS dp
                       JOIN pg_class AS r ON r.oid = dp.refobjid
                       JOIN pg_attribute AS a ON a.attrelid = r.oid AND a.attnum = dp.refobjsubid
                       WHERE dp.classid = 'pg_class'::regclass AND dp.objid = c.oid
                         AND dp.refclassid = 'pg_class'::regclass AND dp.deptype IN ('a', 'i')))
        FROM pg_sequence AS s JOIN pg_class AS c ON c.oid = s.seqrelid
        WHERE c.relnamespace = :schema::regnamespace
        """,
    ),
    (
        "view",
        """
        SELECT c.relname, pg_get_viewdef(c.oid)
        FROM pg_class AS c
        WHERE c.relnamespace = :schema::regnamespace AND c.relkind IN ('v', 'm')
        """,
    ),
    (
        "trigger",
        """
        SELECT format('%s.%s', c.relname, g.tgname),
               format('%s enabled=%s comment=%s', pg_get_triggerdef(g.oid), g.tgenabled,
                      obj_description(g.oid, 'pg_trigger'))
        FROM pg_trigger AS g JOIN pg_class AS c ON c.oid = g.tgrelid
        WHERE c.relnamespace = :schema::regnamespace AND NOT g.tgisinternal
        """,
    ),
    (
        "policy",
        """
        SELECT format('%s.%s', c.relname, p.polname),
               format('cmd=%s permissive=%s roles=%s using=%s check=%s', p.polcmd,
                      p.polpermissive,
                      (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END,
                                         ',' ORDER BY 1) FROM unnest(p.polroles) AS r),
                      pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
        FROM pg_policy AS p JOIN pg_class AS c ON c.oid = p.polrelid
        WHERE c.relnamespace = :schema::regnamespace
        """,
    ),
    (
        "rule",
        """
        SELECT format('%s.%s', r.tablename, r.rulename), r.definition
        FROM pg_rules AS r WHERE r.schemaname = :schema
        """,
    ),
    (
        "type",
        f"""
        SELECT t.typname,
               format('type=%s base=%s notnull=%s default=%s labels=%s owner=%s comment=%s acl=%s',
                      t.typtype, t.typbasetype::regtype, t.typnotnull, t.typdefault,
                      (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                       FROM pg_enum AS e WHERE e.enumtypid = t.oid),
                      pg_get_userbyid(t.typowner), obj_description(t.oid, 'pg_type'),
                      {_acl("t.typacl", "T", "t.typowner")})
        FROM pg_type AS t
        WHERE t.typnamespace = :schema::regnamespace
          AND t.typcategory <> 'A'
          AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
        """,
    ),
    (
        "function",
        f"""
        SELECT p.oid::regprocedure::text,
               format('kind=%s returns=%s language=%s volatility=%s strict=%s security=%s '
                      'leakproof=%s parallel=%s cost=%s rows=%s config=%s owner=%s comment=%s '
                      'acl=%s',
                      p.prokind, pg_get_function_result(p.oid), l.lanname, p.provolatile,
                      p.proisstrict, CASE WHEN p.prosecdef THEN 'definer' ELSE 'invoker' END,
                      p.proleakproof, p.proparallel, p.procost, p.prorows, p.proconfig,
                      pg_get_userbyid(p.proowner), obj_description(p.oid, 'pg_proc'),
                      {_acl("p.proacl", "f", "p.proowner")})
               || E'\\n' || CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid)
                                 ELSE p.prosrc END
        FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
        WHERE p.pronamespace = :schema::regnamespace
        """,
    ),
    (
        "default privileges",
        f"""
        SELECT format('%s %s', pg_get_userbyid(d.defaclrole), d.defaclobjtype),
               {_acl("d.defaclacl", "r", "d.defaclrole")}
        FROM pg_default_acl AS d WHERE d.defaclnamespace = :schema::regnamespace
        """,
    ),
)

_EXTENSION_QUERIES: Final[tuple[tuple[str, str], ...]] = (
    (
        "extension",
        """
        SELECT e.extname, format('schema=%s relocatable=%s owner=%s', e.extnamespace::regnamespace,
                                 e.extrelocatable, pg_get_userbyid(e.extowner))
        FROM pg_extension AS e WHERE e.extname = :extension
        """,
    ),
    (
        "member",
        """
        SELECT pg_describe_object(d.classid, d.objid, d.objsubid), 'member of the extension'
        FROM pg_depend AS d JOIN pg_extension AS e ON e.oid = d.refobjid
        WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
          AND e.extname = :extension
        """,
    ),
    (
        "config dump",
        """
        SELECT c.oid::regclass::text, format('condition=%L', cond)
        FROM pg_extension AS e,
             unnest(e.extconfig, coalesce(e.extcondition, '{}')) AS x(cfg, cond)
        JOIN pg_class AS c ON c.oid = x.cfg
        WHERE e.extname = :extension
        """,
    ),
)


def fingerprint(
    conn: Conn,
    *,
    schema: str = "pgflow",
    extension: str | None = "pgflow",
    ignore: Collection[str] = (),
) -> list[str]:
    """Sorted lines describing the catalog of ``schema`` (and of ``extension``).

    ``extension=None`` leaves out membership and config-dump registrations
    (a plain install has none); ``ignore`` names relations to leave out (with
    their columns, constraints, indexes and row types), e.g. the plain path's
    ``schema_version``.
    """
    queries = _QUERIES + (_EXTENSION_QUERIES if extension else ())
    lines: list[str] = []
    with conn.transaction():
        # the text of definitions depends on these: fix them
        conn.execute("SET LOCAL search_path = pg_catalog")
        conn.execute("SET LOCAL DateStyle = ISO")
        for section, query in queries:
            text = query.replace(":schema", _quote(conn, schema)).replace(
                ":extension", _quote(conn, extension or "")
            )
            rows = conn.execute(text.encode()).fetchall()
            for key, value in rows:
                if _ignored(str(key), ignore):
                    continue
                lines.append(f"{section} {key}: {value}")
    return sorted(lines)


def _ignored(key: str, ignore: Collection[str]) -> bool:
    """Whether ``key`` names an ignored relation or something of it (column, index...)."""
    return any(key == name or key.startswith((f"{name}.", f"{name}_")) for name in ignore)


def _quote(conn: Conn, value: str) -> str:
    return sql.Literal(value).as_string(conn)


def diff(a: list[str], b: list[str], a_name: str = "a", b_name: str = "b") -> str:
    """A unified diff of two fingerprints (empty when they are equal)."""
    return "".join(
        difflib.unified_diff(list(_lines(a)), list(_lines(b)), fromfile=a_name, tofile=b_name, n=1)
    )


def _lines(fp: list[str]) -> Iterator[str]:
    for entry in fp:
        for line in entry.splitlines():
            yield line + "\n"
