"""The benchmark's flows, with no-op handlers (for `pgflow worker bench.flows:chain3`).

The protocol driver never calls these handlers: it completes every task with
``{}``.  They exist so that the reference worker has something to run and so
that the definitions go through ``pgflow-build``'s compiler like a user's.
"""

from __future__ import annotations

import time
from typing import Any

from pgflow import Flow

chain3 = Flow("chain3")


@chain3.step()
def a(inp: dict[str, Any]) -> dict[str, Any]:
    return {}


@chain3.step(depends_on=[a])
def b(inp: dict[str, Any]) -> dict[str, Any]:
    return {}


@chain3.step(depends_on=[b])
def c(inp: dict[str, Any]) -> dict[str, Any]:
    return {}


diamond = Flow("diamond")


@diamond.step()
def root(inp: dict[str, Any]) -> dict[str, Any]:
    return {}


@diamond.step(depends_on=[root])
def left(inp: dict[str, Any]) -> dict[str, Any]:
    return {}


@diamond.step(depends_on=[root])
def right(inp: dict[str, Any]) -> dict[str, Any]:
    return {}


@diamond.step(depends_on=[left, right])
def join(inp: dict[str, Any]) -> dict[str, Any]:
    return {}


fanout = Flow("fanout")


@fanout.map()
def items(item: Any) -> dict[str, Any]:
    return {}


@fanout.step(depends_on=[items])
def reduce(inp: dict[str, Any]) -> dict[str, Any]:
    return {}


single = Flow("single")


@single.step()
def only(inp: dict[str, Any]) -> dict[str, Any]:
    return {}


def _hold_first_attempt(ctx: Any) -> dict[str, Any]:
    """Hold the first attempt (the worker running it gets killed); later ones return."""
    if ctx.attempt == 1:
        time.sleep(3600)
    return {"attempt": ctx.attempt}


#: recovery with a heartbeat: timeout 600 s, a dead worker noticed after ~4 s
lease_beat = Flow("lease_beat", timeout=600, heartbeat=2, max_attempts=5)


@lease_beat.step()
def beat_hold(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return _hold_first_attempt(ctx)


#: the same without a heartbeat: recovery waits for the lease, timeout + 2 s
lease_plain = Flow("lease_plain", timeout=10, max_attempts=5)


@lease_plain.step()
def plain_hold(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return _hold_first_attempt(ctx)


#: every flow of this module, with the number of tasks one run creates
#: (fanout: per element of its input, plus the reduce task)
# one wait step per run (completed by emit_event, no task): the events benchmark
waits = Flow("waits")
waits.wait_for("w", event="bench_event", key="run.k")

# a map over a two-step sub-flow: one child run of sub_item per element
sub_item = Flow("sub_item")


@sub_item.step()
def first(inp: dict[str, Any]) -> dict[str, Any]:
    return {}


@sub_item.step(depends_on=[first])
def second(inp: dict[str, Any]) -> dict[str, Any]:
    return {}


sub_fanout = Flow("sub_fanout")
sub_fanout.subflow("each", flow="sub_item", map=True)

FLOWS = (chain3, diamond, fanout, single, lease_beat, lease_plain, waits, sub_item, sub_fanout)
