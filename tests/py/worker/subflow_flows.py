"""Flows that run each other as sub-flows (for worker tests); children come first."""

from __future__ import annotations

import time
from typing import Any

from pgflow import Flow

leaf = Flow("sf_leaf", timeout=10)


@leaf.step()
def double(inp: dict[str, Any]) -> int:
    return int(inp["run"]) * 2


mid = Flow("sf_mid", timeout=10)


@mid.step()
def items(inp: dict[str, Any]) -> list[int]:
    # mid's run input is the input of top's sub-flow step: {"run": <top's input>}
    return list(range(int(inp["run"]["run"]["n"])))


each = mid.subflow("each", flow="sf_leaf", map=True, depends_on=[items])


@mid.step(depends_on=[each])
def total(inp: dict[str, Any]) -> int:
    return sum(child["double"] for child in inp["each"])


top = Flow("sf_top", timeout=10)
inner = top.subflow("mid", flow="sf_mid")


@top.step(depends_on=[inner])
def report(inp: dict[str, Any]) -> dict[str, int]:
    return {"total": inp["mid"]["total"]}


item = Flow("sf_item", timeout=30)


@item.step()
def plus_one(inp: dict[str, Any]) -> int:
    return int(inp["run"]) + 1


@item.step(depends_on=[plus_one])
def times_ten(inp: dict[str, Any]) -> int:
    return int(inp["plus_one"]) * 10


fan = Flow("sf_fan", timeout=30)
fan.subflow("each", flow="sf_item", map=True)


# under worker kills: each item sleeps a little (kills land mid-task); a 3 s
# timeout lets the task of a killed worker be claimed again within 5 s
slow_item = Flow("sf_slow_item", timeout=3, max_attempts=10, base_delay=1, max_delay=2)


@slow_item.step()
def nap(inp: dict[str, Any]) -> int:
    time.sleep(0.05 + (int(inp["run"]) % 7) * 0.03)
    return int(inp["run"])


@slow_item.step(depends_on=[nap])
def square(inp: dict[str, Any]) -> int:
    return int(inp["nap"]) ** 2


slow_fan = Flow("sf_slow_fan", timeout=3)
slow_fan.subflow("each", flow="sf_slow_item", map=True)
