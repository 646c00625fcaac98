"""pgflow.testing.run_flow against the real extension, and the example test of examples/testing."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

import pgflow
from pgflow.errors import PgflowError, ShapeMismatchError
from pgflow.spec.loader import flow_of
from pgflow.testing import run_flow
from pgflow.testing.flows import install_flow

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[3]

flow = pgflow.Flow("rf_typed", max_attempts=2, base_delay=1)


@dataclasses.dataclass
class Numbers:
    values: list[int]


@flow.step
def double(run: Numbers) -> list[int]:
    return [v * 2 for v in run.values]


@flow.map(depends_on=[double])
def square(value: int) -> int:
    return value * value


@flow.step(depends_on=[square])
def add(square: list[int], ctx: pgflow.Context) -> dict[str, Any]:
    return {"sum": sum(square), "run_id": ctx.run_id}


def test_a_typed_flow_runs_to_the_end_and_the_definition_is_installed_once(db: str) -> None:
    run = run_flow(flow, {"values": [1, 2, 3]}, conninfo=db)
    assert run["status"] == "completed"
    assert run["output"]["add"]["sum"] == 4 + 16 + 36
    assert run["output"]["add"]["run_id"] == str(run["run_id"])
    assert install_flow(db, flow_of(flow)) is False, "already there: not created again"
    again = run_flow(flow, {"values": [5]}, conninfo=db)
    assert again["output"]["add"]["sum"] == 100


def test_input_that_does_not_fit_fails_the_run_at_once_naming_the_place(db: str) -> None:
    run = run_flow(flow, {"values": ["x"]}, conninfo=db, timeout=20)
    assert run["status"] == "failed"
    assert 'InputMismatch: $.run.values[0]: expected an integer, got "x"' in run["error_message"]
    with psycopg.connect(db) as conn:
        attempts = conn.execute(
            "SELECT attempts_count FROM pgflow.step_tasks"
            " WHERE run_id = %s AND step_slug = 'double'",
            (run["run_id"],),
        ).fetchone()
    assert attempts == (1,), "no retry: the same input would not fit again"


def test_fail_and_handlers_replace_steps_and_unknown_steps_are_refused(db: str) -> None:
    failed = run_flow(flow, {"values": [1]}, conninfo=db, fail={"square": "stubbed out"})
    assert failed["status"] == "failed"
    assert "Fail: stubbed out" in failed["error_message"]
    stubbed = run_flow(flow, {"values": [1]}, conninfo=db, handlers={"square": lambda v: 1})
    assert stubbed["output"]["add"]["sum"] == 1
    with pytest.raises(PgflowError, match="has no step 'nope'"):
        run_flow(flow, {"values": [1]}, conninfo=db, fail={"nope": "x"})


def test_a_different_definition_under_the_same_slug_is_refused(db: str) -> None:
    other = pgflow.Flow("rf_typed")

    @other.step
    def only(input: Any) -> None: ...

    run_flow(flow, {"values": [1]}, conninfo=db)
    with pytest.raises(ShapeMismatchError, match="differs from the spec"):
        run_flow(other, {}, conninfo=db)


def test_the_example_in_examples_testing_passes(db: str) -> None:
    """``make test`` runs examples/testing through this test, on the same server."""
    params = conninfo_to_dict(db)
    env = {
        **os.environ,
        "PGHOST": str(params.get("host", "")),
        "PGPORT": str(params.get("port", "5432")),
        "PGUSER": str(params.get("user", "")),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/testing"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


slow_retry = pgflow.Flow("rf_slow_retry", max_attempts=3, base_delay=60)
attempts_seen: list[int] = []


@slow_retry.step
def flaky(run: dict[str, Any], ctx: pgflow.Context) -> int:
    attempts_seen.append(ctx.attempt)
    if ctx.attempt < 3:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return ctx.attempt


def test_fast_retries_skips_the_backoff_and_keeps_the_attempts(db: str) -> None:
    attempts_seen.clear()
    with pytest.raises(pgflow.errors.RunTimeoutError, match="backoff"):
        run_flow(slow_retry, {}, conninfo=db, timeout=2)  # a 60 s backoff is waited for
    assert attempts_seen == [1]
    attempts_seen.clear()
    started = time.monotonic()
    run = run_flow(slow_retry, {}, conninfo=db, timeout=30, fast_retries=True)
    assert time.monotonic() - started < 30
    assert run["status"] == "completed"
    assert run["output"] == {"flaky": 3}
    assert attempts_seen == [1, 2, 3]


def test_a_connection_instead_of_a_conninfo(conn: psycopg.Connection[Any]) -> None:
    run = run_flow(flow, {"values": [3]}, connection=conn)
    assert run["status"] == "completed"
    assert run["output"]["add"]["sum"] == 36
    assert not conn.closed
    with pytest.raises(PgflowError, match="conninfo or connection, not both"):
        run_flow(flow, {"values": [1]}, conninfo="dbname=x", connection=conn)
