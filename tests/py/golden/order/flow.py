from __future__ import annotations

from typing import Any

from pgflow import Flow

flow = Flow("order", max_attempts=5, timeout=30)


@flow.step(max_attempts=1)
def validate_order(input: dict[str, Any]) -> list[Any]:
    return list(input["run"]["items"])


@flow.map(depends_on=[validate_order])
def price_line(item: Any) -> Any:
    return item


@flow.map(depends_on=[validate_order], base_delay=2, timeout=10)
def reserve_stock(item: Any) -> Any:
    return item


@flow.step(depends_on=[price_line, reserve_stock])
def total(input: dict[str, Any]) -> int:
    return len(input["price_line"])


@flow.step(depends_on=[total], if_={"run": {"customer": {"tier": "gold"}}})
def loyalty_bonus(input: dict[str, Any]) -> int:
    return 1


@flow.step(depends_on=[total, loyalty_bonus], if_not={"run": {"silent": True}}, when_exhausted="skip")
def send_confirmation(input: dict[str, Any]) -> None:
    return None
