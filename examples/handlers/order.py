"""Handlers of the example "order" flow (examples/flows/order.yaml and order.py).

Flow input::

    {"order_id": "A-1001",
     "customer": {"email": "ada@example.com", "tier": "gold"},
     "items": [{"sku": "BOOK-1", "qty": 2, "unit_price": "12.50"}, ...],
     "silent": false}

Every handler takes the step input (JSON) and returns JSON; they are
deterministic, so a retried task computes the same result.  Money is kept in
integer cents.
"""

from __future__ import annotations

import zlib
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

#: Sales tax, in basis points (8.25 %).
TAX_BASIS_POINTS = 825
#: Lines of at least this many units get the bulk discount.
BULK_QTY = 10
#: Bulk discount, in percent.
BULK_DISCOUNT_PERCENT = 5
WAREHOUSES = ("ams", "fra", "waw")


def validate_order(input: dict[str, Any]) -> list[dict[str, Any]]:
    """Check the order and return its lines, normalised (price in cents).

    Raises ValueError for an order that can never succeed, so the task fails
    (and, after its attempts, the run) with a message saying why.
    """
    order = input["run"]
    items = order.get("items")
    if not isinstance(items, list) or not items:
        raise ValueError("order has no items")
    lines: list[dict[str, Any]] = []
    for number, item in enumerate(items, start=1):
        sku = str(item.get("sku", "")).strip().upper()
        qty = item.get("qty")
        if not sku:
            raise ValueError(f"item {number} has no sku")
        if not isinstance(qty, int) or isinstance(qty, bool) or qty < 1:
            raise ValueError(f"item {number} ({sku}) has an invalid quantity: {qty!r}")
        lines.append({"line": number, "sku": sku, "qty": qty, "unit_cents": _cents(item)})
    return lines


def price_line(line: dict[str, Any]) -> dict[str, Any]:
    """Price one order line (a map task): quantity times price, bulk discount applied."""
    gross = line["qty"] * line["unit_cents"]
    discount = gross * BULK_DISCOUNT_PERCENT // 100 if line["qty"] >= BULK_QTY else 0
    return {
        "line": line["line"],
        "sku": line["sku"],
        "gross_cents": gross,
        "discount_cents": discount,
        "net_cents": gross - discount,
    }


def reserve_stock(line: dict[str, Any]) -> dict[str, Any]:
    """Reserve one line's units (a map task) in the warehouse that stocks the sku."""
    warehouse = WAREHOUSES[zlib.crc32(line["sku"].encode()) % len(WAREHOUSES)]
    return {"line": line["line"], "sku": line["sku"], "qty": line["qty"], "warehouse": warehouse}


def total(input: dict[str, Any]) -> dict[str, Any]:
    """Join the priced lines and the reservations into the order total."""
    priced = input["price_line"]
    reserved = input["reserve_stock"]
    if [p["line"] for p in priced] != [r["line"] for r in reserved]:
        raise ValueError("priced and reserved lines do not match")
    net = sum(p["net_cents"] for p in priced)
    tax = (net * TAX_BASIS_POINTS + 5_000) // 10_000
    return {
        "order_id": input["run"].get("order_id"),
        "lines": len(priced),
        "discount_cents": sum(p["discount_cents"] for p in priced),
        "net_cents": net,
        "tax_cents": tax,
        "total_cents": net + tax,
        "warehouses": sorted({r["warehouse"] for r in reserved}),
    }


def loyalty_bonus(input: dict[str, Any]) -> dict[str, Any]:
    """Gold customers earn one point per whole unit of currency (a conditional step)."""
    return {"points": input["total"]["total_cents"] // 100}


def send_confirmation(input: dict[str, Any]) -> dict[str, Any]:
    """Compose the confirmation message (the loyalty bonus is absent when skipped)."""
    summary = input["total"]
    customer = input["run"].get("customer", {})
    text = f"Order {summary['order_id']}: {summary['lines']} line(s), total {_money(summary)}"
    bonus = input.get("loyalty_bonus")
    if bonus is not None:
        text += f"; you earned {bonus['points']} loyalty points"
    return {"to": customer.get("email"), "subject": f"Order {summary['order_id']}", "text": text}


def _cents(item: dict[str, Any]) -> int:
    raw = item.get("unit_price")
    try:
        price = Decimal(str(raw))
    except InvalidOperation:
        raise ValueError(f"invalid unit price {raw!r} for {item.get('sku')}") from None
    if not price.is_finite() or price < 0:
        raise ValueError(f"invalid unit price {raw!r} for {item.get('sku')}")
    return int((price * 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _money(summary: dict[str, Any]) -> str:
    cents = summary["total_cents"]
    return f"{cents // 100}.{cents % 100:02d}"
