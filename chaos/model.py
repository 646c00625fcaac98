"""What each chaos run must do: its scripted input and expected outcome.

Pure functions of a random generator: the harness draws an input, stores the
per-task behaviours and the expected final status and output beside the run,
and the checks compare them with what PostgreSQL recorded.  See flows.py for
what a behaviour means.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

CHAIN = ("s1", "s2", "s3", "s4")
DIAMOND = ("top", "left", "right", "bottom")
FANOUT_SINGLE = ("items", "summary", "audit", "double_sum")
FLOWS = ("chaos_chain", "chaos_diamond", "chaos_fanout", "chaos_nest")
#: attempts (child runs) of a chaos_nest "each" task
NEST_ATTEMPTS = 2


@dataclass(frozen=True)
class Expectation:
    status: str  # completed | failed
    output: dict[str, Any] | None  # without the "a" keys; None when failed
    fatal_steps: tuple[str, ...]  # steps whose scripted failure fails the run


def behaviour(rng: random.Random) -> dict[str, Any]:
    """One task's script: mostly plain, some retries, overruns, slow ones, rare failures."""
    r = rng.random()
    if r < 0.68:
        return {}
    if r < 0.78:
        return {"raise": 1}
    if r < 0.83:
        return {"raise": 2}
    if r < 0.87:
        return {"overrun": 1}
    if r < 0.99:
        return {"sleep": round(rng.uniform(0.05, 0.5), 2)}
    return {"fail": 1}


def make_input(flow: str, rng: random.Random) -> dict[str, Any]:
    x = rng.randint(0, 1000)
    if flow == "chaos_chain":
        return {"x": x, "plan": {s: behaviour(rng) for s in CHAIN}}
    if flow == "chaos_diamond":
        return {"x": x, "plan": {s: behaviour(rng) for s in DIAMOND}}
    if flow == "chaos_fanout":
        n = rng.randint(0, 6)
        return {
            "audit": rng.random() < 0.5,
            "lite": rng.random() < 0.3,
            "plan": {s: behaviour(rng) for s in FANOUT_SINGLE},
            "elems": [{"w": behaviour(rng), "d": behaviour(rng)} for _ in range(n)],
        }
    if flow == "chaos_nest":
        n = rng.randint(0, 3)
        return {
            "plan": {"pick": behaviour(rng)},
            "chains": [make_input("chaos_chain", rng) for _ in range(n)],
        }
    raise ValueError(f"unknown chaos flow {flow!r}")


def children(flow: str, inp: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """(sub-flow step, task_index, child run input) of every child run a run may start
    (one per attempt: the harness scripts each of them)."""
    if flow == "chaos_nest":
        return [("each", i, c) for i, c in enumerate(inp["chains"])]
    return []


def scripts(flow: str, inp: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """(step, task_index, behaviour) of every task the run may have."""
    rows = [(step, 0, b) for step, b in inp["plan"].items()]
    if flow == "chaos_fanout":
        for i, e in enumerate(inp["elems"]):
            rows.append(("work", i, e["w"]))
            rows.append(("double", i, e["d"]))
    return rows


def _fails(b: dict[str, Any]) -> bool:
    return bool(b.get("fail"))


def expect(flow: str, inp: dict[str, Any]) -> Expectation:
    plan = inp["plan"]
    if flow == "chaos_chain":
        for step in CHAIN:
            if _fails(plan[step]):
                return Expectation("failed", None, (step,))
        return Expectation("completed", {"s4": {"v": inp["x"] + 10}}, ())
    if flow == "chaos_diamond":
        x = inp["x"]
        if _fails(plan["top"]):
            return Expectation("failed", None, ("top",))
        if _fails(plan["left"]):
            return Expectation("failed", None, ("left",))
        if _fails(plan["bottom"]):
            return Expectation("failed", None, ("bottom",))
        other = 100 if _fails(plan["right"]) else 6 * x
        return Expectation("completed", {"bottom": {"v": 2 * x + 1 + other}}, ())
    if flow == "chaos_fanout":
        if _fails(plan["items"]):
            return Expectation("failed", None, ("items",))
        elems = inp["elems"]
        n = len(elems)
        fatal: list[str] = []
        if any(_fails(e["w"]) for e in elems):
            fatal.append("work")
        elif _fails(plan["summary"]):
            fatal.append("summary")
        if inp["audit"] and _fails(plan["audit"]):
            fatal.append("audit")
        if not inp["lite"]:
            if any(_fails(e["d"]) for e in elems):
                fatal.append("double")
            elif _fails(plan["double_sum"]):
                fatal.append("double_sum")
        if fatal:
            return Expectation("failed", None, tuple(fatal))
        output: dict[str, Any] = {"summary": {"v": sum(i * i for i in range(n))}}
        if inp["audit"]:
            output["audit"] = {"v": n}
        if not inp["lite"]:
            output["double_sum"] = {"v": sum(2 * i for i in range(n))}
        return Expectation("completed", output, ())
    if flow == "chaos_nest":
        if _fails(plan["pick"]):
            return Expectation("failed", None, ("pick",))
        outcomes = [expect("chaos_chain", c) for c in inp["chains"]]
        if any(o.status == "failed" for o in outcomes):
            return Expectation("failed", None, ("each",))
        return Expectation("completed", {"each": [o.output for o in outcomes]}, ())
    raise ValueError(f"unknown chaos flow {flow!r}")
