"""Apply every golden migration to a real database, twice, and read the definition back.

The second application must be a no-op: no row of pgflow.flows, pgflow.steps or
pgflow.deps gets a new version (same xmin and ctid).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgflow.compiler.migration import compile_flow
from pgflow.spec.loader import load
from pgflow.spec.model import FlowSpec

pytestmark = pytest.mark.db

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "tests" / "py" / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "expected.sql").is_file())
EXAMPLES = ["examples/flows/order.yaml", "examples/flows/approval.yaml"]

Conn = psycopg.Connection[tuple[Any, ...]]


def snapshot(conn: Conn, flow_slug: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every definition row of a flow with its row version (xmin, ctid)."""
    queries = {
        "flows": "SELECT xmin::text, ctid::text, * FROM pgflow.flows WHERE flow_slug = %s",
        "steps": "SELECT xmin::text, ctid::text, * FROM pgflow.steps WHERE flow_slug = %s"
        " ORDER BY step_index",
        "deps": "SELECT xmin::text, ctid::text, * FROM pgflow.deps WHERE flow_slug = %s"
        " ORDER BY step_slug, dep_slug",
    }
    return {name: conn.execute(q, (flow_slug,)).fetchall() for name, q in queries.items()}


def assert_definition(conn: Conn, spec: FlowSpec) -> None:
    flow = conn.execute(
        "SELECT opt_max_attempts, opt_base_delay, opt_timeout, opt_step_events"
        " FROM pgflow.flows WHERE flow_slug = %s",
        (spec.slug,),
    ).fetchone()
    assert flow == (spec.max_attempts, spec.base_delay, spec.timeout, spec.step_events)
    steps = conn.execute(
        "SELECT step_slug, step_type, step_index, deps_count, opt_max_attempts, opt_base_delay,"
        " opt_timeout, opt_start_delay, required_input_pattern, forbidden_input_pattern,"
        " when_unmet, when_exhausted FROM pgflow.steps WHERE flow_slug = %s ORDER BY step_index",
        (spec.slug,),
    ).fetchall()
    assert steps == [
        (
            step.slug,
            step.step_type,
            index,
            len(step.depends_on),
            step.max_attempts,
            step.base_delay,
            step.timeout,
            step.start_delay,
            step.if_,
            step.if_not,
            step.when_unmet,
            step.when_exhausted,
        )
        for index, step in enumerate(spec.steps)
    ]
    deps = conn.execute(
        "SELECT step_slug, dep_slug FROM pgflow.deps WHERE flow_slug = %s", (spec.slug,)
    ).fetchall()
    assert sorted(deps) == sorted((s.slug, d) for s in spec.steps for d in s.depends_on)


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


@pytest.mark.parametrize("case", CASES)
def test_golden_migration_applies_and_reapplies_as_a_no_op(
    conn: Conn, in_repo: None, case: str
) -> None:
    (flow,) = load(f"tests/py/golden/{case}/flow.yaml")
    migration = (GOLDEN / case / "expected.sql").read_text(encoding="utf-8")
    requires = GOLDEN / case / "requires.sql"  # the sub-flows a case runs
    if requires.is_file():
        conn.execute(requires.read_bytes())
    conn.execute(migration.encode())
    assert_definition(conn, flow.spec)
    before = snapshot(conn, flow.spec.slug)
    conn.execute(migration.encode())
    assert snapshot(conn, flow.spec.slug) == before
    assert_definition(conn, flow.spec)


@pytest.mark.parametrize("spec", EXAMPLES)
def test_example_flows_apply(conn: Conn, in_repo: None, spec: str) -> None:
    (flow,) = load(spec)
    conn.execute(compile_flow(flow.spec, generated_at=datetime.now(UTC)).encode())
    assert_definition(conn, flow.spec)


def test_a_changed_structure_is_refused_by_the_database(conn: Conn, in_repo: None) -> None:
    migration = (GOLDEN / "unordered" / "expected.sql").read_text(encoding="utf-8")
    conn.execute(migration.encode())
    changed = migration.replace(
        "deps_slugs => CAST(ARRAY['left', 'right'] AS text[])",
        "deps_slugs => CAST(ARRAY['left'] AS text[])",
    )
    assert changed != migration
    with pytest.raises(psycopg.errors.InvalidObjectDefinition) as caught:
        conn.execute(changed.encode())
    assert 'step "report" of flow "diamond" already exists with a different definition' in str(
        caught.value
    )
