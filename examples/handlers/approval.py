"""Handlers of the example "approval" flow (examples/flows/approval.yaml and .py).

Flow input: ``{"order_id": "A-1001", "total_cents": 12500}``.  The approval
step's output is the payload of its event (``{"approved": true, "by": ...}``);
when nobody approved in time it is skipped and absent from the input of
``cancel_order``.
"""

from __future__ import annotations

from typing import Any


def take_order(input: dict[str, Any]) -> dict[str, Any]:
    """Record the order; what the approver is asked about."""
    order = input["run"]
    if not isinstance(order.get("order_id"), str) or not order["order_id"]:
        raise ValueError("order_id must be a non-empty string")
    return {"order_id": order["order_id"], "total_cents": int(order.get("total_cents", 0))}


def ship(input: dict[str, Any]) -> dict[str, Any]:
    """Ship an approved order."""
    return {
        "shipped": input["take_order"]["order_id"],
        "approved_by": input["approval"].get("by"),
    }


def cancel_order(input: dict[str, Any]) -> dict[str, Any]:
    """Cancel an order that was rejected, or that nobody approved in time."""
    approval = input.get("approval")
    reason = "not approved in time" if approval is None else f"rejected by {approval.get('by')}"
    return {"cancelled": input["take_order"]["order_id"], "reason": reason}
