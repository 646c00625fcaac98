"""Every public function called with hostile arguments fails cleanly or not at all.

For each function of the ``pgflow`` schema that does not start with ``_``,
hypothesis draws argument lists from NULLs, empty strings, quotes and
backslashes, SQL-injection-looking text, odd unicode (no NUL: PostgreSQL text
cannot hold it), 128/129/10 000-character slugs, non-object patterns,
non-JSON text, extreme integers, unknown and known uuids, and leaves optional
arguments out at random.  Each call must either succeed or raise a psycopg
error whose SQLSTATE is in the small set documented for that function; a bad
cast done by the *client* (the statement itself, not the function: its error
context names no function) is also fine.  Never an internal error (XX000), never a missing
function (42883), and a failing call (or a call that reports a no-op) leaves
every pgflow table exactly as it was.

Known bugs found this way are pinned by strict xfail tests at the end (and
their inputs are kept out of the property so CI stays green).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors, sql

pytestmark = pytest.mark.db

Conn = psycopg.Connection[tuple[Any, ...]]

PROPS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# SQLSTATEs each public function may raise on bad input (its header comment
# and docs/reference): 22004 NULL, 22023 bad value, 42704 unknown object,
# 42P17 changed structure, 55000 wrong state, 23505 run_id of another flow.
ALLOWED: dict[str, set[str]] = {
    "create_flow": {"22004", "22023"},
    "add_step": {"22004", "22023", "42704", "42P17", "55000"},
    "add_subflow_step": {"22004", "22023", "42704", "42P17", "55000"},
    "start_flow": {"22004", "22023", "42704", "23505"},
    "start_flows": {"22004", "22023", "42704", "23505"},
    "check_flow_steps": {"22004", "22023", "42704", "42P17"},
    "set_current_version": {"22004", "22023", "42704"},
    "pause_flow": {"22004", "22023", "42704"},
    "resume_flow": {"22004", "22023", "42704"},
    "list_flows": set(),
    "read_with_poll": {"22004", "22023"},
    "start_tasks": {"22004", "22023"},
    "claim_tasks": {"22004", "22023"},
    "complete_tasks": {"22004", "22023", "55000"},
    "complete_task": {"22004", "55000"},
    "fail_task": {"22004", "22023", "55000"},
    "fail_tasks": {"22004", "22023", "55000"},
    "extend_leases": {"22004", "22023"},
    "worker_idle": {"22004"},
    "listen_events": {"22004"},
    "cancel_run": {"22004", "42704"},
    "retry_run": {"22004", "42704", "55000"},
    "prune_runs": {"22004", "22023"},
    "get_run": set(),
    "delete_flow": {"22004", "22023", "42704", "55000", "2BP01"},
    "list_runs": {"22004", "22023"},
    "register_worker": {"22004"},
    "worker_heartbeat": set(),
    "stop_worker": set(),
    "flow_shape": set(),
    "run_input": set(),
    "trace_contexts": set(),
    "grant_worker": {"22004", "42704"},
    "grant_client": {"22004", "42704"},
    "grant_dashboard": {"22004", "42704"},
    "emit_event": {"22004", "22023"},
    "expire_waits": {"22004", "22023"},
    "dashboard_snapshot": {"22004"},
}

# What a bad literal costs when the client's statement casts it (no function
# in the error context): invalid text representation, datetime format,
# numeric range.
CLIENT_CASTS = {"22P02", "22007", "22003", "22008"}

# Functions whose boolean result false means "nothing changed".
NO_OP_WHEN_FALSE = {"complete_task", "fail_task", "worker_heartbeat", "stop_worker"}


@dataclass(frozen=True)
class Raw:
    """A literal passed as text for the server to cast (may be malformed)."""

    text: str


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    has_default: bool


@dataclass(frozen=True)
class Seed:
    run_ids: tuple[str, ...]
    slugs: tuple[str, ...]
    worker_id: str


def _public_functions(conn: Conn) -> dict[str, list[Param]]:
    rows = conn.execute(
        """
        SELECT p.proname,
               coalesce(p.proargnames[1:p.pronargs], '{}'),
               ARRAY(SELECT format_type(t, NULL)
                     FROM unnest(p.proargtypes) WITH ORDINALITY AS a(t, i) ORDER BY i),
               p.pronargs, p.pronargdefaults
        FROM pg_proc AS p
        WHERE p.pronamespace = 'pgflow'::regnamespace AND p.proname !~ '^_'
        ORDER BY p.proname
        """
    ).fetchall()
    functions: dict[str, list[Param]] = {}
    for name, argnames, argtypes, nargs, ndefaults in rows:
        assert name not in functions, f"pgflow.{name} is overloaded: the test assumes one signature"
        functions[name] = [
            Param(argnames[i], argtypes[i], i >= nargs - ndefaults) for i in range(nargs)
        ]
    return functions


# --- strategies --------------------------------------------------------------

odd_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=40,
)
nasty_literals = st.sampled_from(
    [
        "",
        " ",
        "'",
        "''",
        "\\",
        "\\'",
        '"',
        "a'b",
        'a"b',
        "a\\b",
        "a b",
        "_a",
        "1a",
        "run",
        "RUN",
        "a-b",
        "a;b",
        "x'); DROP TABLE pgflow.runs; --",
        "known' OR '1'='1",
        "%s",
        "%I",
        "$1",
        "$$",
        "pg_catalog",
        "public",
        "PUBLIC",
        "é",
        "ǅ",
        "\u202eevil",
        "\ufeffa",
        "a\u200bb",
        "\U0001d518\U0001d52b\U0001d526",  # mathematical fraktur "Uni"
        "\U0010ffff",
        "\t\n\r",
        "a" * 128,
        "a" * 129,
        "b" * 10_000,
    ]
)


def texts(seed: Seed) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), nasty_literals, odd_text, st.sampled_from(seed.slugs))


INT4_EXTREMES = [-(2**31), -1, 0, 1, 2, 3, 59, 60, 2**31 - 1]
integers = st.one_of(
    st.none(),
    st.sampled_from(INT4_EXTREMES),
    st.integers(-(2**31), 2**31 - 1),
    # beyond int4: the client's cast refuses them (22003), the function never runs
    st.sampled_from([2**31, -(2**31) - 1, 2**63 - 1]),
)
bigints = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 1]))

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    odd_text,
    nasty_literals,
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(odd_text, nasty_literals), inner, max_size=4),
    ),
    max_leaves=12,
)
not_json = st.sampled_from(["", "{", "nope", "'", "\\", "{'a': 1}", "[1,]", "NaN", "01", "\\u0000"])
jsons = st.one_of(
    st.none(),
    json_values.map(lambda v: Raw(json.dumps(v))),
    not_json.map(Raw),
)


def uuids(seed: Seed) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.sampled_from(seed.run_ids),
        st.just(seed.worker_id),
        st.uuids().map(str),
        st.sampled_from(["", "not-a-uuid", "00000000-0000-0000-0000-00000000000", "'"]).map(Raw),
    )


booleans = st.one_of(st.none(), st.booleans(), st.sampled_from(["maybe", ""]).map(Raw))
intervals = st.one_of(
    st.none(),
    st.sampled_from(["0", "1 microsecond", "1 day", "-1 day", "-1 microsecond", "100 years"]),
    st.integers(-(10**6), 10**6).map(lambda n: f"{n} seconds"),
    st.sampled_from(["", "forever", "1 fortnight"]).map(Raw),
    # older_than above ~6 700 years: see test_prune_runs_with_a_huge_interval
)


timestamps = st.one_of(
    st.none(),
    st.sampled_from(
        ["infinity", "-infinity", "4713-01-01 00:00+00 BC", "294276-12-31 23:59+00", "2026-01-01"]
    ),
    st.datetimes().map(lambda d: d.isoformat() + "+00:00"),
    st.sampled_from(["", "soon", "2026-13-01", "epoch'"]).map(Raw),
)
#: list_runs' cursor: rows of list_runs, near misses and nonsense
cursors = st.one_of(
    jsons,
    st.fixed_dictionaries(
        {
            "started_at": st.one_of(
                st.sampled_from(["infinity", "-infinity", "2026-01-01T00:00:00+00:00", "x", ""]),
                json_leaves,
            ),
            "run_id": st.one_of(st.uuids().map(str), json_leaves),
        }
    ).map(lambda v: Raw(json.dumps(v))),
)


#: seconds as double precision (retry_delay): negative, huge and non-finite included
doubles = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, 1e300, 2.0**31]),
)


def arrays_of(element: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.lists(element, max_size=5))


def strategy_for(function: str, param: Param, seed: Seed) -> st.SearchStrategy[Any]:
    if function == "read_with_poll" and param.name == "max_poll_seconds":
        # a positive value makes the call wait for work: only the refusals
        return st.sampled_from([None, 0, -1, -(2**31)])
    if function in {"create_flow", "add_step"} and param.name == "timeout":
        # 2^31 - 1 is accepted but breaks start_tasks: see
        # test_the_largest_accepted_timeout_still_starts_tasks
        return st.one_of(st.none(), st.sampled_from([-(2**31), -1, 0, 2, 3, 60, 2**31 - 3]))
    if param.name == "step_type":
        return st.one_of(texts(seed), st.sampled_from(["single", "map", "MAP", "map "]))
    if param.name in {"when_unmet", "when_exhausted"}:
        return st.one_of(texts(seed), st.sampled_from(["skip", "skip-cascade", "fail"]))
    if function == "list_runs" and param.name == "cursor":
        return cursors
    if function == "list_runs" and param.name == "direction":
        return st.one_of(texts(seed), st.sampled_from(["older", "newer", "OLDER"]))
    if param.name == "status":
        return st.one_of(texts(seed), st.sampled_from(["started", "completed", "failed"]))
    by_type: dict[str, st.SearchStrategy[Any]] = {
        "text": texts(seed),
        "integer": integers,
        "bigint": bigints,
        "jsonb": jsons,
        "uuid": uuids(seed),
        "boolean": booleans,
        "interval": intervals,
        "timestamp with time zone": timestamps,
        "text[]": arrays_of(texts(seed)),
        "bigint[]": arrays_of(st.one_of(st.none(), bigints)),
        "integer[]": arrays_of(integers),
        "uuid[]": arrays_of(uuids(seed)),
        "jsonb[]": arrays_of(jsons),
        "double precision": doubles,
        "double precision[]": arrays_of(doubles),
        "boolean[]": arrays_of(st.one_of(st.none(), st.booleans())),
    }
    assert param.type in by_type, f"no strategy for {function}({param.name} {param.type})"
    return by_type[param.type]


@st.composite
def calls(
    draw: st.DrawFn, function: str, params: list[Param], seed: Seed
) -> list[tuple[Param, Any]]:
    chosen = []
    for param in params:
        if param.has_default and draw(st.booleans()):
            continue  # leave it out: its default applies
        chosen.append((param, draw(strategy_for(function, param, seed))))
    return chosen


# --- database ----------------------------------------------------------------


def _seed(conn: Conn) -> Seed:
    """Flows, a run in each state, a registered worker."""
    conn.execute("SELECT pgflow.create_flow('known', max_attempts => 1)")
    conn.execute("SELECT pgflow.add_step('known', 'a')")
    conn.execute("SELECT pgflow.add_step('known', 'b', ARRAY['a'])")
    conn.execute("SELECT pgflow.create_flow('mapped')")
    conn.execute("SELECT pgflow.add_step('mapped', 'm', step_type => 'map')")
    conn.execute("SELECT pgflow.create_flow('solo')")
    conn.execute("SELECT pgflow.add_step('solo', 'only')")

    def start(flow: str, payload: str) -> str:
        row = conn.execute(
            "SELECT run_id FROM pgflow.start_flow(%s, %s::jsonb)", (flow, payload)
        ).fetchone()
        assert row is not None
        return str(row[0])

    def work(flow: str) -> list[tuple[Any, ...]]:
        return conn.execute(
            "SELECT run_id, step_slug, task_index FROM pgflow.start_tasks(%s,"
            " ARRAY(SELECT msg_id FROM pgflow.read_with_poll(%s, 60, 10)), gen_random_uuid())",
            (flow, flow),
        ).fetchall()

    completed = start("solo", '{"x": 1}')
    for task in work("solo"):
        conn.execute("SELECT pgflow.complete_task(%s, %s, %s, '\"done\"')", task)
    running = start("known", '{"y": 2}')
    cancelled = start("known", "{}")
    work("known")
    conn.execute("SELECT pgflow.cancel_run(%s)", (cancelled,))
    failed = start("mapped", '{"not": "an array"}')
    worker_id = str(uuid.uuid4())
    conn.execute("SELECT pgflow.register_worker(%s, ARRAY['known'])", (worker_id,))
    statuses = conn.execute("SELECT status FROM pgflow.runs ORDER BY status").fetchall()
    assert statuses == [("cancelled",), ("completed",), ("failed",), ("started",)]
    assert running
    return Seed(
        run_ids=(completed, running, cancelled, failed),
        slugs=("known", "a", "b", "mapped", "m", "solo", "only"),
        worker_id=worker_id,
    )


def _fingerprint(conn: Conn) -> dict[str, str]:
    """md5 of the sorted rows of every pgflow table."""
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT relname FROM pg_class"
            " WHERE relnamespace = 'pgflow'::regnamespace AND relkind = 'r' ORDER BY relname"
        )
    ]
    parts = [
        sql.SQL(
            "(SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), ''))"
            " FROM pgflow.{} AS x)"
        ).format(sql.Identifier(t))
        for t in tables
    ]
    row = conn.execute(sql.SQL("SELECT ") + sql.SQL(", ").join(parts)).fetchone()
    assert row is not None
    return dict(zip(tables, row, strict=True))


def _plain(value: Any) -> Any:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _call(conn: Conn, function: str, args: list[tuple[Param, Any]]) -> list[tuple[Any, ...]]:
    placeholders = [
        sql.SQL("{} => %s::{}").format(sql.Identifier(p.name), sql.SQL(p.type)) for p, _ in args
    ]
    query = sql.SQL("SELECT * FROM pgflow.{}({})").format(
        sql.Identifier(function), sql.SQL(", ").join(placeholders)
    )
    values = [_plain(v) for _, v in args]
    return conn.execute(query, values).fetchall()


@pytest.fixture
def seeded(conn: Conn) -> Iterator[tuple[Conn, Seed, dict[str, list[Param]]]]:
    conn.execute("SET statement_timeout = '20s'")
    seed = _seed(conn)
    yield conn, seed, _public_functions(conn)


# --- properties ----------------------------------------------------------------


def test_every_public_function_has_an_error_contract(conn: Conn) -> None:
    assert set(_public_functions(conn)) - set(ALLOWED) == set()


@pytest.mark.parametrize("function", sorted(ALLOWED))
@PROPS
@given(data=st.data())
def test_hostile_arguments_fail_cleanly_or_not_at_all(
    seeded: tuple[Conn, Seed, dict[str, list[Param]]], function: str, data: st.DataObject
) -> None:
    conn, seed, functions = seeded
    if function not in functions:
        pytest.skip(f"pgflow.{function} is not in the installed extension")
    args = data.draw(calls(function, functions[function], seed), label="arguments")
    before = _fingerprint(conn)
    try:
        rows = _call(conn, function, args)
    except psycopg.Error as exc:
        state = exc.sqlstate or "?"
        context = exc.diag.context
        assert state not in {"XX000", "42883"}, f"{function}: {state} {exc}"
        inside = context is not None and "function" in context
        if state in CLIENT_CASTS and not inside:
            pass  # the client's literal did not cast: the function never ran
        else:
            assert state in ALLOWED[function], (
                f"pgflow.{function} raised {state} ({type(exc).__name__}): {exc}"
                f" [context: {context}]"
            )
        assert _fingerprint(conn) == before, f"{function} failed with {state} but changed rows"
        return
    if function in NO_OP_WHEN_FALSE and rows == [(False,)]:
        assert _fingerprint(conn) == before, f"{function} returned false but changed rows"


@PROPS
@given(
    task_index=integers,
    attempt=integers,
    output=jsons,
    retry=booleans,
    batch=st.sampled_from(["complete_task", "fail_task", "complete_tasks", "fail_tasks"]),
)
def test_hand_reports_of_a_sub_flow_task_are_refused_and_change_nothing(
    seeded: tuple[Conn, Seed, dict[str, list[Param]]],
    task_index: Any,
    attempt: Any,
    output: Any,
    retry: Any,
    batch: str,
) -> None:
    conn, _, _ = seeded
    # (the fixture lives across examples: the flow is made once, a run per example)
    conn.execute("SELECT pgflow.create_flow('outer')")
    conn.execute("SELECT pgflow.add_subflow_step('outer', 'sub', 'solo')")
    row = conn.execute("SELECT run_id FROM pgflow.start_flow('outer', '{}')").fetchone()
    assert row is not None
    run_id = str(row[0])
    before = _fingerprint(conn)
    calls = {
        "complete_task": (
            "SELECT pgflow.complete_task(%s, 'sub', %s::integer, %s::jsonb, %s::integer)",
            (run_id, task_index, _plain(output), attempt),
        ),
        "fail_task": (
            "SELECT pgflow.fail_task(%s, 'sub', %s::integer, 'x', %s::integer, %s::boolean)",
            (run_id, task_index, attempt, _plain(retry)),
        ),
        "complete_tasks": (
            "SELECT pgflow.complete_tasks(ARRAY[%s]::uuid[], ARRAY['sub'], ARRAY[%s::integer],"
            " ARRAY[%s::jsonb], ARRAY[%s::integer])",
            (run_id, task_index, _plain(output), attempt),
        ),
        "fail_tasks": (
            "SELECT pgflow.fail_tasks(ARRAY[%s]::uuid[], ARRAY['sub'], ARRAY[%s::integer],"
            " ARRAY['x'], ARRAY[%s::integer], ARRAY[%s::boolean])",
            (run_id, task_index, attempt, _plain(retry)),
        ),
    }
    query, params = calls[batch]
    try:
        conn.execute(query, params)
    except psycopg.Error as exc:
        state = exc.sqlstate or "?"
        # the client's cast of a bad literal, a NULL retry: refused before the check
        assert state in {"55000", "22004"} | CLIENT_CASTS, f"{batch}: {state} {exc}"
        if state == "55000":
            assert "is a sub-flow step" in str(exc) and run_id in str(exc)
    else:
        raise AssertionError(f"{batch} accepted a hand report of a sub-flow task")
    assert _fingerprint(conn) == before


def test_unknown_ids_are_documented_no_ops(conn: Conn) -> None:
    _seed(conn)
    nobody = str(uuid.uuid4())
    before = _fingerprint(conn)
    assert conn.execute("SELECT pgflow.get_run(%s)", (nobody,)).fetchone() == (None,)
    assert conn.execute("SELECT pgflow.run_input(%s)", (nobody,)).fetchone() == (None,)
    assert conn.execute("SELECT pgflow.flow_shape('nope')").fetchone() == (None,)
    assert conn.execute("SELECT pgflow.complete_task(%s, 'a', 0, '1')", (nobody,)).fetchone() == (
        False,
    )
    assert conn.execute("SELECT pgflow.fail_task(%s, 'a', 0, 'x')", (nobody,)).fetchone() == (
        False,
    )
    assert conn.execute("SELECT pgflow.worker_heartbeat(%s)", (nobody,)).fetchone() == (False,)
    assert conn.execute("SELECT pgflow.stop_worker(%s)", (nobody,)).fetchone() == (False,)
    assert conn.execute(
        "SELECT count(*) FROM pgflow.start_tasks('known', ARRAY[-1, 0, 9223372036854775807], %s)",
        (nobody,),
    ).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM pgflow.list_runs('nope')").fetchone() == (0,)
    assert _fingerprint(conn) == before
    with pytest.raises(errors.UndefinedObject):
        conn.execute("SELECT pgflow.cancel_run(%s)", (nobody,))
    with pytest.raises(errors.UndefinedObject):
        conn.execute("SELECT pgflow.retry_run(%s)", (nobody,))
    assert _fingerprint(conn) == before


# --- known bugs ----------------------------------------------------------------


def test_the_largest_accepted_timeout_still_starts_tasks(conn: Conn) -> None:
    conn.execute("SELECT pgflow.create_flow('big', timeout => 2147483647)")
    conn.execute("SELECT pgflow.add_step('big', 'a')")
    conn.execute("SELECT pgflow.start_flow('big', '{}')")
    started = conn.execute(
        "SELECT count(*) FROM pgflow.start_tasks('big',"
        " ARRAY(SELECT msg_id FROM pgflow.read_with_poll('big', 30, 1)), gen_random_uuid())"
    ).fetchone()
    assert started == (1,)


@pytest.mark.parametrize(
    "options",
    [
        "max_attempts => 2147483647, base_delay => 2147483647",
        "max_attempts => 1, base_delay => 1",
        "timeout => 3",
        "timeout => 2147483645",
    ],
)
def test_extreme_accepted_options_keep_the_protocol_working(conn: Conn, options: str) -> None:
    conn.execute(f"SELECT pgflow.create_flow('big', {options})")
    conn.execute("SELECT pgflow.add_step('big', 'a', start_delay => 0)")
    conn.execute("SELECT pgflow.add_step('big', 'later', start_delay => 2147483647)")
    run_id = conn.execute("SELECT run_id FROM pgflow.start_flow('big', '{}')").fetchone()[0]  # type: ignore[index]
    tasks = conn.execute(
        "SELECT step_slug FROM pgflow.start_tasks('big',"
        " ARRAY(SELECT msg_id FROM pgflow.read_with_poll('big', 2147483647, 2147483647)),"
        " gen_random_uuid())"
    ).fetchall()
    assert tasks == [("a",)]
    assert conn.execute("SELECT pgflow.fail_task(%s, 'a', 0, 'x')", (run_id,)).fetchone() == (True,)


def test_prune_runs_with_a_huge_interval(conn: Conn) -> None:
    _seed(conn)
    assert conn.execute("SELECT pgflow.prune_runs(interval '10000 years')").fetchone() == (0,)
