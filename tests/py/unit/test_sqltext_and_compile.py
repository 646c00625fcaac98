"""Quoting filters, template enforcement, and the compiler's output."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import jinja2
import pglast
import pytest

from pgflow.compiler.migration import (
    MIGRATION_RE,
    compile_flow,
    migration_filename,
    render_body,
    same_body,
    split_header,
)
from pgflow.compiler.sqltext import (
    SqlText,
    UnquotedValueError,
    comment,
    environment,
    jsonb,
    literal,
    text_array,
)
from pgflow.errors import CompileError
from pgflow.spec.model import FlowSpec, Origin, StepSpec

WHEN = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "sql"),
    [
        (None, "NULL"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-12, "-12"),
        ("plain", "'plain'"),
        ("it's", "'it''s'"),
        ("''", "''''''"),
        ("back\\slash", "'back\\slash'"),
        ("$$ dollar $$", "'$$ dollar $$'"),
        ("é ✓", "'é ✓'"),
    ],
)
def test_literal(value: object, sql: str) -> None:
    assert literal(value) == sql
    assert isinstance(literal(value), SqlText)


def test_literal_refuses_what_it_cannot_quote() -> None:
    with pytest.raises(TypeError, match="no SQL literal for list"):
        literal([1])
    with pytest.raises(ValueError, match="NUL"):
        literal("a\x00b")


def test_text_array_and_jsonb() -> None:
    assert text_array(["a", "b'c"]) == "ARRAY['a', 'b''c']::text[]"
    assert text_array([]) == "ARRAY[]::text[]"
    with pytest.raises(TypeError, match="text\\[\\] element must be a string, got int"):
        text_array([1])  # type: ignore[list-item]
    assert jsonb('{"a": "it\'s"}') == "'{\"a\": \"it''s\"}'::jsonb"
    assert jsonb({"k": [1, None]}) == "'{\"k\": [1, null]}'::jsonb"
    with pytest.raises(ValueError, match="Expecting value"):
        jsonb("not json'); DROP TABLE x; --")


def test_comment_keeps_one_line() -> None:
    assert comment("a\nDROP TABLE x;\r\u2028b") == "a\\nDROP TABLE x;\\r\\u2028b"
    assert comment(WHEN.astimezone(timezone(timedelta(hours=2)))) == "2025-03-04T05:06:07Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        comment(datetime(2025, 1, 1))


def test_templates_refuse_unquoted_values() -> None:
    env = environment(
        jinja2.DictLoader({"bad": "SELECT {{ x }}", "good": "SELECT {{ x | literal }}"})
    )
    with pytest.raises(UnquotedValueError, match="template printed '1; DROP' without"):
        env.get_template("bad").render(x="1; DROP")
    assert env.get_template("good").render(x="1; DROP") == "SELECT '1; DROP'"
    with pytest.raises(jinja2.UndefinedError):
        env.get_template("good").render()


def flow(*steps: StepSpec, **options: object) -> FlowSpec:
    return FlowSpec(slug="f", steps=steps, origin=Origin("flows/f.yaml", "ab" * 32), **options)  # type: ignore[arg-type]


def test_defaults_are_left_out() -> None:
    assert render_body(flow(StepSpec(slug="a"))) == (
        "BEGIN;\n\n"
        "SET LOCAL standard_conforming_strings TO 'on';\n\n"
        "SET LOCAL client_encoding TO 'UTF8';\n\n"
        "SELECT pgflow.create_flow(flow_slug => 'f');\n\n"
        "SELECT pgflow.add_step(flow_slug => 'f',\n"
        "                       step_slug => 'a');\n\n"
        "SELECT pgflow.check_flow_steps(flow_slug => 'f',\n"
        "                               step_slugs => CAST(ARRAY['a'] AS text[]));\n\n"
        "COMMIT;\n"
    )


def test_every_option_is_named() -> None:
    body = render_body(
        flow(
            StepSpec(slug="a"),
            StepSpec(
                slug="b",
                depends_on=("a",),
                max_attempts=1,
                base_delay=2,
                timeout=3,
                start_delay=0,
                map=True,
                required_input_pattern='{"x": 1}',
                forbidden_input_pattern='{"y": 2}',
                when_unmet="fail",
                when_exhausted="skip-cascade",
            ),
            max_attempts=4,
            base_delay=5,
            timeout=6,
            step_events=True,
        )
    )
    assert "create_flow(flow_slug => 'f',\n" in body
    for argument in [
        "max_attempts => 4",
        "base_delay => 5",
        "timeout => 6",
        "step_events => TRUE",
        "deps_slugs => CAST(ARRAY['a'] AS text[])",
        "max_attempts => 1",
        "base_delay => 2",
        "timeout => 3",
        "start_delay => 0",
        "step_type => 'map'",
        """required_input_pattern => CAST('{"x": 1}' AS jsonb)""",
        """forbidden_input_pattern => CAST('{"y": 2}' AS jsonb)""",
        "when_unmet => 'fail'",
        "when_exhausted => 'skip-cascade'",
    ]:
        assert argument in body
    statements = pglast.parse_sql(body)
    # BEGIN, two settings, create_flow, two add_step, check_flow_steps, COMMIT
    assert len(statements) == 8


def test_migration_header_and_body() -> None:
    text = compile_flow(flow(StepSpec(slug="a")), generated_at=WHEN, version="9.9.9")
    header, body = split_header(text)
    assert header == (
        "-- pgflow migration: flow f (generated by pgflow-build 9.9.9; do not edit)\n"
        "-- spec: flows/f.yaml\n"
        f"-- spec sha256: {'ab' * 32}\n"
        "-- generated at: 2025-03-04T05:06:07Z\n"
        "--\n"
        "-- Plain SQL, one transaction; applying it again changes nothing.\n"
    )
    assert body == render_body(flow(StepSpec(slug="a")))
    assert text == header + "\n" + body


def test_a_hostile_spec_path_stays_in_the_comment() -> None:
    spec = FlowSpec(
        slug="f", steps=(StepSpec(slug="a"),), origin=Origin("x\nDROP TABLE t; --.yaml", "")
    )
    header, body = split_header(compile_flow(spec, generated_at=WHEN))
    assert "-- spec: x\\nDROP TABLE t; --.yaml\n" in header
    assert "DROP" not in body


def test_bodies_compare_below_the_header() -> None:
    a = compile_flow(flow(StepSpec(slug="a")), generated_at=WHEN)
    b = compile_flow(flow(StepSpec(slug="a")), generated_at=WHEN + timedelta(days=1), version="2")
    c = compile_flow(flow(StepSpec(slug="a", timeout=9)), generated_at=WHEN)
    assert a != b
    assert same_body(a, b)
    assert same_body(a, b.replace("COMMIT;\n", "COMMIT;  \n\n"))
    assert not same_body(a, c)
    assert split_header("BEGIN;\n") == ("", "BEGIN;\n")


def test_migration_filename() -> None:
    name = migration_filename("Order_2", WHEN.astimezone(timezone(timedelta(hours=-5))))
    assert name == "20250304050607_create_Order_2_flow.sql"
    match = MIGRATION_RE.fullmatch(name)
    assert match is not None
    assert (match["stamp"], match["slug"]) == ("20250304050607", "Order_2")
    with pytest.raises(ValueError, match="timezone-aware"):
        migration_filename("f", datetime(2025, 1, 1))


def test_unparseable_output_is_reported_as_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(text: str, **options: object) -> str:
        raise pglast.parser.ParseError('syntax error at or near "x"', 1)

    monkeypatch.setattr(pglast, "prettify", broken)
    with pytest.raises(CompileError) as caught:
        render_body(flow(StepSpec(slug="a")))
    message = str(caught.value)
    assert message.startswith(
        "bug: the SQL generated for flow 'f' does not parse (syntax error at or near \"x\""
    )
    assert "please report it with this text:\nBEGIN;" in message
