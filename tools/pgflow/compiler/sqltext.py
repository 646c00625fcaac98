"""Quoting for SQL templates: the only way a value reaches generated SQL.

Every ``{{ ... }}`` in a pgflow SQL template must go through one of the filters
below, which return :class:`SqlText`; the environment's ``finalize`` hook
refuses anything else, so a forgotten filter is an error at render time rather
than an injection waiting to happen.

String literals use standard SQL quoting (quotes doubled, backslashes kept as
they are), which is what PostgreSQL reads with ``standard_conforming_strings``
on, its default since 9.1.  Slugs never contain quotes or backslashes; JSON
text may, and JSON's own escaping keeps every quote paired even if that
setting were off.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

import jinja2

from pgflow.errors import UnquotedValueError, one_line
from pgflow.options import STEP_TYPES, Option, sql_arguments

_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]*")


class SqlText(str):
    """A fragment of SQL produced by a quoting filter (safe to print in a template)."""

    __slots__ = ()


def _defined(value: object) -> None:
    """Raise jinja2's error for an undefined value (StrictUndefined fails on use)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()


def literal(value: object) -> SqlText:
    """An SQL literal: ``NULL``, ``true``/``false``, an integer or a quoted string."""
    _defined(value)
    if value is None:
        return SqlText("NULL")
    if isinstance(value, bool):
        return SqlText("true" if value else "false")
    if isinstance(value, int):
        return SqlText(str(value))
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("an SQL string cannot contain the NUL character")
        return SqlText("'" + value.replace("'", "''") + "'")
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def text_array(values: Iterable[str]) -> SqlText:
    """A ``text[]`` value: ``ARRAY['a', 'b']::text[]``."""
    _defined(values)
    items = list(values)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"text[] element must be a string, got {type(item).__name__}")
    return SqlText("ARRAY[" + ", ".join(literal(item) for item in items) + "]::text[]")


def jsonb(value: object) -> SqlText:
    """A ``jsonb`` value from JSON text (``str``) or a JSON-able object: ``'...'::jsonb``."""
    _defined(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    json.loads(text)  # must be JSON: never pass arbitrary text off as jsonb
    return SqlText(literal(text) + "::jsonb")


def identifier(value: object) -> SqlText:
    """A lowercase SQL name as it is (an argument name from the options table)."""
    _defined(value)
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"not a plain lowercase SQL identifier: {value!r}")
    return SqlText(value)


def option_value(value: object, kind: str) -> SqlText:
    """The SQL value of an option of ``kind`` (see :class:`pgflow.options.Option`)."""
    _defined(value)
    if kind == "deps":
        assert isinstance(value, Iterable)
        return text_array(value)
    if kind == "map":
        return literal(STEP_TYPES[bool(value)])
    if kind == "pattern":
        return jsonb(value)
    return literal(value)


def option_arguments(value: object, option: Option) -> list[tuple[str, SqlText]]:
    """The SQL arguments of one option's value, as ``(name, SQL value)``: one for most
    options, several for one whose YAML key sets more (``concurrency``: the limit, and the
    key when there is one; an argument that is NULL is left out)."""
    _defined(value)
    if option.extra_sql:
        return [
            (name, literal(arg))
            for name, arg in sql_arguments(option, value).items()
            if arg is not None
        ]
    return [(option.sql, option_value(value, option.kind))]


def comment(value: object) -> SqlText:
    """Text for a ``--`` comment: one line, control characters escaped."""
    _defined(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a timestamp in generated SQL must be timezone-aware")
        text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        text = str(value)
    return SqlText(one_line(text))


def _finalize(value: object) -> object:
    if isinstance(value, SqlText):
        return value
    raise UnquotedValueError(
        f"template printed {value!r} without a quoting filter"
        " (literal, text_array, jsonb, comment, identifier, option_value)"
    )


def environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    """A jinja2 environment for SQL templates: strict undefined, quoting enforced."""
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=_finalize,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        literal=literal,
        text_array=text_array,
        jsonb=jsonb,
        comment=comment,
        identifier=identifier,
        option_value=option_value,
        option_arguments=option_arguments,
    )
    return env
