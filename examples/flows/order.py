"""The example "order" flow in Python: the same flow as examples/flows/order.yaml.

Build it with ``pgflow-build examples/flows/order.py``; run it with
``pgflow worker examples/flows/order.py``.
"""

from __future__ import annotations

from examples.handlers import order as handlers

from pgflow import Flow

flow = Flow("order", max_attempts=5, timeout=30)

# flow.step(fn) / flow.map(...)(fn) register existing functions as steps; the
# slug is the function's name.  In a module of your own, use them as decorators.
validate_order = flow.step(max_attempts=1)(handlers.validate_order)
price_line = flow.map(depends_on=[validate_order])(handlers.price_line)
reserve_stock = flow.map(depends_on=[validate_order], base_delay=2, timeout=10)(
    handlers.reserve_stock
)
total = flow.step(depends_on=[price_line, reserve_stock])(handlers.total)
loyalty_bonus = flow.step(depends_on=[total], if_={"run": {"customer": {"tier": "gold"}}})(
    handlers.loyalty_bonus
)
send_confirmation = flow.step(
    depends_on=[total, loyalty_bonus],
    if_not={"run": {"silent": True}},
    when_exhausted="skip",
)(handlers.send_confirmation)
