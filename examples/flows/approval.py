"""The example "approval" flow in Python (same flow as approval.yaml, same SQL)."""

from __future__ import annotations

from typing import Any

from examples.handlers import approval as handlers

from pgflow import Flow

flow = Flow("approval", timeout=30)


@flow.step
def take_order(input: dict[str, Any]) -> dict[str, Any]:
    return handlers.take_order(input)


approval = flow.wait_for(
    "approval",
    event="order_approval",
    key="run.order_id",
    depends_on=[take_order],
    timeout=86400,
    when_exhausted="skip",
)


@flow.step(depends_on=[take_order, approval], if_={"approval": {"approved": True}})
def ship(input: dict[str, Any]) -> dict[str, Any]:
    return handlers.ship(input)


@flow.step(depends_on=[take_order, approval], if_not={"approval": {"approved": True}})
def cancel_order(input: dict[str, Any]) -> dict[str, Any]:
    return handlers.cancel_order(input)
