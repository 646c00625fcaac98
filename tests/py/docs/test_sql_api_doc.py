"""docs/reference/sql-api.md documents exactly the live SQL API.

The function index must list every public function of schema pgflow (name
not starting with ``_``) and nothing else, with its exact arguments, return
type and grant; every function has a section (here or in operations.md) that
shows its name and every argument name; every table and column is
documented; and the SQLSTATE table matches what extension/src raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
import psycopg.errors
import pytest

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[3]
DOC_PATH = ROOT / "docs" / "reference" / "sql-api.md"
DOC = DOC_PATH.read_text(encoding="utf-8")
OPS_DOC = (ROOT / "docs" / "reference" / "operations.md").read_text(encoding="utf-8")
SRC = "\n".join(
    p.read_text(encoding="utf-8") for p in sorted((ROOT / "extension" / "src").glob("*.sql"))
)

Conn = psycopg.Connection[tuple[object, ...]]

# | [`name`](target) | `name(args)` | `returns` | granted by |
INDEX_ROW = re.compile(
    r"^\| \[`(?P<name>\w+)`\]\((?P<target>[^)]*)\) "
    r"\| `(?P<sig_name>\w+)\((?P<args>.*)\)` "
    r"\| `(?P<returns>[^`]+)` "
    r"\| (?P<grant>[^|]+?) \|$",
    re.M,
)


def section(doc: str, heading: str) -> str:
    """The text under a `## heading`, up to the next `## `."""
    return doc.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def anchors(doc: str) -> set[str]:
    """GitHub-style anchors of every heading of a Markdown document."""
    out = set()
    for title in re.findall(r"^#+ (.+)$", doc, re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def strip_casts(text: str) -> str:
    """`DEFAULT '{}'::text[]` -> `DEFAULT '{}'`, as the doc writes defaults."""
    return re.sub(r"::[a-z][a-z0-9_ ]*(\[\])?", "", text)


def index() -> dict[str, dict[str, str]]:
    rows = {}
    for m in INDEX_ROW.finditer(section(DOC, "Function index")):
        assert m["name"] == m["sig_name"], f"index row {m['name']} shows {m['sig_name']}(...)"
        assert m["name"] not in rows, f"{m['name']} is listed twice in the index"
        rows[m["name"]] = m.groupdict()
    return rows


@dataclass(frozen=True)
class Function:
    args: str  # pg_get_function_arguments
    returns: str  # pg_get_function_result
    argnames: tuple[str, ...]


def catalog(conn: Conn) -> dict[str, Function]:
    rows = conn.execute(
        """
        SELECT p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
               coalesce(p.proargnames, '{}')
        FROM pg_proc AS p
        JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pgflow' AND p.proname NOT LIKE '\\_%'
        """
    ).fetchall()
    names = [r[0] for r in rows]
    assert len(names) == len(set(names)), "overloaded public functions: extend this test"
    return {
        str(name): Function(str(args), str(result), tuple(str(a) for a in argnames))  # type: ignore[attr-defined]
        for name, args, result, argnames in rows
    }


def test_the_index_lists_exactly_the_public_functions(conn: Conn) -> None:
    assert sorted(index()) == sorted(catalog(conn))


def test_index_signatures_and_return_types_match_the_catalog(conn: Conn) -> None:
    documented = index()
    for name, fn in catalog(conn).items():
        row = documented[name]
        assert row["args"] == strip_casts(fn.args), f"{name}: arguments differ"
        assert row["returns"] == fn.returns, f"{name}: return type differs"


def test_the_granted_by_column_matches_the_grant_helpers(conn: Conn) -> None:
    granted: dict[str, str] = {}
    for kind in ("worker", "client", "dashboard"):
        for (fn,) in conn.execute(
            "SELECT f::regproc::text FROM pgflow._api_functions(%s) AS f", [kind]
        ).fetchall():
            granted[str(fn).removeprefix("pgflow.")] = f"`grant_{kind}`"
    for name, row in index().items():
        assert row["grant"] == granted.get(name, "owner only"), name


def test_granted_functions_are_security_definer_and_others_not(conn: Conn) -> None:
    # the role model the overview describes
    rows = conn.execute(
        """
        SELECT p.proname, p.prosecdef FROM pg_proc AS p
        JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pgflow' AND p.proname NOT LIKE '\\_%'
        """
    ).fetchall()
    definer = {str(name): bool(flag) for name, flag in rows}
    for name, row in index().items():
        assert definer[name] == (row["grant"] != "owner only"), name


def test_every_index_link_resolves() -> None:
    local, ops = anchors(DOC), anchors(OPS_DOC)
    for name, row in index().items():
        target = row["target"]
        if target.startswith("#"):
            assert target[1:] in local, f"{name}: no heading for {target}"
        else:
            page, _, anchor = target.partition("#")
            assert page == "operations.md" and anchor in ops, f"{name}: broken link {target}"


def signature_blocks(doc: str) -> dict[str, str]:
    """name -> text of each ```sql block that starts with `pgflow.name(`."""
    out = {}
    for block in re.findall(r"```sql\n(.*?)```", doc, re.S):
        m = re.match(r"pgflow\.(\w+)\(", block)
        if m:
            out[m[1]] = block
    return out


def test_every_function_has_a_section_naming_every_argument(conn: Conn) -> None:
    here = signature_blocks(DOC)
    for name, fn in catalog(conn).items():
        target = index()[name]["target"]
        if target.startswith("#"):
            assert f"\n### {name}\n" in DOC, f"no section for {name}"
            text = here.get(name)
            assert text is not None, f"no signature block for {name}"
            assert fn.returns in text, f"{name}: return type missing"
        else:
            text = section(OPS_DOC, name) + OPS_DOC.split("\n## ", 1)[0]
        for arg in fn.argnames:
            assert re.search(rf"\b{arg}\b", text), f"{name}: argument {arg} not documented"


def test_no_section_documents_a_function_that_does_not_exist(conn: Conn) -> None:
    known = set(catalog(conn))
    assert set(signature_blocks(DOC)) <= known
    called = set(re.findall(r"\bpgflow\.([a-z]\w*)\(", DOC))
    assert called <= known, f"unknown functions mentioned: {sorted(called - known)}"


def test_every_table_and_column_is_documented(conn: Conn) -> None:
    tables = section(DOC, "Tables")
    rows = conn.execute(
        """
        SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum)
        FROM pg_class AS c
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = 'pgflow' AND c.relkind = 'r'
        GROUP BY c.relname
        """
    ).fetchall()
    assert rows
    for table, column_list in rows:
        columns = [str(c) for c in column_list]  # type: ignore[attr-defined]
        part = tables.split(f"\n### pgflow.{table}\n", 1)
        assert len(part) == 2, f"no section for table {table}"
        body = part[1].split("\n### ", 1)[0]
        documented = re.findall(r"^\| `(\w+)` \|", body, re.M)
        assert sorted(documented) == sorted(columns), f"columns of {table} differ"


def test_the_composite_types_are_documented(conn: Conn) -> None:
    types = section(DOC, "Tables").split("\n### Types\n", 1)[1]
    for typ in ("message_record", "step_task_record"):
        row = conn.execute(
            """
            SELECT array_agg(a.attname::text ORDER BY a.attnum)
            FROM pg_attribute AS a
            WHERE a.attrelid = %s::regclass AND a.attnum > 0
            """,
            [f"pgflow.{typ}"],
        ).fetchone()
        assert row is not None
        fields = [str(f) for f in row[0]]  # type: ignore[attr-defined]
        body = types.split(f"`pgflow.{typ}`", 1)[1].split("\n\n`pgflow.", 1)[0]
        assert sorted(re.findall(r"^\| `(\w+)` \|", body, re.M)) == sorted(fields), typ


def sqlstate_table() -> dict[str, str]:
    rows = re.findall(r"^\| `(\w{5})` \| `(\w+)` \|", section(DOC, "SQLSTATEs"), re.M)
    assert rows
    return dict(rows)


def test_sqlstate_codes_and_condition_names_agree() -> None:
    for code, name in sqlstate_table().items():
        camel = "".join(w.capitalize() for w in name.split("_"))
        assert psycopg.errors.lookup(code).__name__ == camel, f"{code} is not {name}"


def test_every_documented_sqlstate_occurs_in_the_source() -> None:
    for code, name in sqlstate_table().items():
        assert re.search(rf"\b({code}|{name})\b", SRC), f"{code} {name} not in extension/src"


def test_every_sqlstate_the_source_raises_is_documented() -> None:
    raised = set(re.findall(r"ERRCODE = '(\w+)'", SRC))
    assert raised
    assert raised <= set(sqlstate_table().values())
