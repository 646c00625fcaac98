"""A typed flow for the testing example: skus -> price each (map) -> total.

Handlers take dataclasses and keyword arguments (docs/howto/typed-handlers.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pgflow

PRICES = {"apple": Decimal("0.40"), "pear": Decimal("0.55")}

flow = pgflow.Flow("example_priced_order", max_attempts=2, base_delay=1)


@dataclass
class Order:
    id: int
    skus: list[str]


@dataclass
class Price:
    sku: str
    amount: Decimal


@flow.step
def skus(run: Order) -> list[str]:
    return run.skus


@flow.map(depends_on=[skus])
def price_line(sku: str, ctx: pgflow.Context) -> Price:
    ctx.logger.info("pricing %s", sku)
    if sku not in PRICES:
        raise pgflow.Fail(f"no price for {sku}")
    return Price(sku, PRICES[sku])


@flow.step(depends_on=[price_line])
def total(run: Order, price_line: list[Price]) -> dict[str, object]:
    return {"order": run.id, "total": sum((p.amount for p in price_line), Decimal(0))}
