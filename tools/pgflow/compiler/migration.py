"""Compile a :class:`~pgflow.spec.model.FlowSpec` into a migration (pure: no clock, file or env).

A migration is a comment header (tool version, spec path and hash, the time
it was generated) followed by the body: one transaction of
``pgflow.create_flow`` and ``pgflow.add_step`` calls with named arguments,
steps in topological order, options equal to their defaults left out.  The
body depends on the definition only, so two specs describing the same flow
(YAML and Python, say) compile to the same body, and "is this migration up to
date" is a comparison of bodies (:func:`split_header`, :func:`same_body`).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Final

import jinja2
import pglast
from pglast.parser import ParseError, parse_sql_json

from pgflow import __version__
from pgflow.compiler.sqltext import environment
from pgflow.errors import CompileError
from pgflow.options import FLOW_OPTIONS, STEP_OPTIONS
from pgflow.spec.model import FlowSpec

#: Name of a migration file: ``<UTC YYYYMMDDHHMMSS>_<kind>_<flow>[_v<N>]_flow.sql``, kind
#: ``create`` (a new definition or version) or ``update`` (its tunables changed).  Which
#: flow and version a file holds is read from its header, not its name (a flow may
#: itself be called ``order_v2``).
MIGRATION_RE: Final = re.compile(
    r"(?P<stamp>[0-9]{14})_(?P<kind>create|update)_(?P<slug>[A-Za-z0-9_]+)_flow\.sql"
)

_ENV: Final = environment(jinja2.PackageLoader("pgflow.compiler", "templates"))


def compile_flow(flow: FlowSpec, *, generated_at: datetime, version: str | None = None) -> str:
    """The migration text of one flow: header, blank line, pretty-printed body."""
    version = __version__ if version is None else version
    return (
        render_header(flow, generated_at=generated_at, version=version) + "\n" + render_body(flow)
    )


def render_header(flow: FlowSpec, *, generated_at: datetime, version: str) -> str:
    """The comment header: every line starts with ``--``."""
    return _ENV.get_template("header.sql.j2").render(
        flow=flow, origin=flow.origin, generated_at=generated_at, version=version
    )


def render_body(flow: FlowSpec) -> str:
    """The SQL of the definition, checked and pretty-printed by pglast."""
    text = _ENV.get_template("flow.sql.j2").render(
        flow=flow, flow_options=FLOW_OPTIONS, step_options=STEP_OPTIONS
    )
    try:
        pretty = pglast.prettify(
            text,
            safety_belt=True,
            semicolon_after_last_statement=True,
            comma_at_eoln=True,
        )
    except Exception as exc:  # pglast raises several types; any of them is our bug
        raise CompileError(
            f"bug: the SQL generated for flow {flow.slug!r} does not parse ({exc});"
            f" please report it with this text:\n{text}"
        ) from exc
    return pretty.rstrip("\n") + "\n"


def split_header(text: str) -> tuple[str, str]:
    """``(header, body)`` of a migration: the header is the leading ``--`` lines.

    Blank lines between header and body belong to neither, so bodies compare
    equal whatever the header says.
    """
    lines = text.splitlines(keepends=True)
    index = 0
    while index < len(lines) and lines[index].startswith("--"):
        index += 1
    header = "".join(lines[:index])
    while index < len(lines) and not lines[index].strip():
        index += 1
    return header, "".join(lines[index:])


def same_body(a: str, b: str) -> bool:
    """Whether two migrations define the same thing (equal below their headers).

    The bodies are compared as parse trees without the positions of their
    nodes: layout, line breaks, keyword case and comments do not count, so a
    pglast release that pretty-prints differently leaves every migration up
    to date.  When either body does not parse, their texts are compared
    (trailing blanks and blank lines at either end left out).
    """
    body_a, body_b = split_header(a)[1], split_header(b)[1]
    tree_a, tree_b = _parse_tree(body_a), _parse_tree(body_b)
    if tree_a is not None and tree_b is not None:
        return tree_a == tree_b
    return _normalise(body_a) == _normalise(body_b)


def _parse_tree(body: str) -> object | None:
    """The statements of ``body`` as libpg_query's JSON tree, positions removed."""
    try:
        tree = json.loads(parse_sql_json(body))
    except ParseError:
        return None
    return _without_positions(tree.get("stmts", []))


def _is_position(key: str, value: object) -> bool:
    # libpg_query's ParseLoc fields: location, stmt_location, name_location,
    # ..., stmt_len, and (PostgreSQL 18) list_start, rexpr_list_end, ...
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (key.endswith(("location", "list_start", "list_end")) or key == "stmt_len")
    )


def _without_positions(node: object) -> object:
    if isinstance(node, dict):
        return {
            key: _without_positions(value)
            for key, value in node.items()
            if not _is_position(key, value)
        }
    if isinstance(node, list):
        return [_without_positions(item) for item in node]
    return node


def _normalise(body: str) -> str:
    return "\n".join(line.rstrip() for line in body.strip().splitlines())


def migration_filename(
    flow_slug: str, generated_at: datetime, *, version: int | None = None, kind: str = "create"
) -> str:
    """``<UTC YYYYMMDDHHMMSS>_<kind>_<flow_slug>[_v<version>]_flow.sql`` (version >= 2 only)."""
    if generated_at.tzinfo is None:
        raise ValueError("generated_at must be timezone-aware")
    if kind not in ("create", "update"):
        raise ValueError(f"a migration is a create or an update, not {kind!r}")
    stamp = generated_at.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    suffix = f"_v{version}" if version is not None and version > 1 else ""
    return f"{stamp}_{kind}_{flow_slug}{suffix}_flow.sql"
