from __future__ import annotations

from pgflow import Flow

flow = Flow("approval")


@flow.step
def order(input: dict[str, object]) -> dict[str, object]:
    return {}


approved = flow.wait_for(
    "approved",
    event="approval",
    key="run.order_id",
    depends_on=[order],
    timeout=86400,
    when_exhausted="skip",
)
paid = flow.wait_for(
    "paid",
    event="payment_received",
    key="order.invoice",
    depends_on=[order],
    if_={"run": {"prepaid": False}},
)


@flow.step(depends_on=[approved, paid])
def ship(input: dict[str, object]) -> None:
    return None
