"""Testing a flow end to end with pgflow.testing.run_flow (docs/howto/testing-flows.md).

Run: ``pytest examples/testing`` (a throwaway cluster is started unless PGHOST is set).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from order_flow import Order, Price, flow, price_line, total

import pgflow
from pgflow.testing import run_flow

pytestmark = pytest.mark.db


def test_the_total_is_the_sum_of_the_prices(db: str) -> None:
    run = run_flow(flow, {"id": 7, "skus": ["apple", "pear", "apple"]}, conninfo=db)
    assert run["status"] == "completed"
    assert run["output"] == {"total": {"order": 7, "total": "1.35"}}


def test_a_failing_step_fails_the_run(db: str) -> None:
    run = run_flow(flow, {"id": 8, "skus": ["apple"]}, conninfo=db, fail={"skus": "inventory down"})
    assert run["status"] == "failed"
    assert "inventory down" in run["error_message"]


def test_a_handler_raising_fail_fails_the_run_without_retries(db: str) -> None:
    run = run_flow(flow, {"id": 9, "skus": ["kiwi"]}, conninfo=db)
    assert run["status"] == "failed"
    assert "no price for kiwi" in run["error_message"]


def test_a_handler_is_a_plain_function_too() -> None:
    ctx = pgflow.Context("example_priced_order", step_slug="price_line")
    assert price_line("pear", ctx) == Price("pear", Decimal("0.55"))
    assert total(Order(1, []), [Price("a", Decimal(1))]) == {"order": 1, "total": Decimal(1)}
