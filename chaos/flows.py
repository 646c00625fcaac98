"""The chaos flows: every handler does what its run input scripts.

A *behaviour* is a small dict carried in the run input (or in a map element):

- ``{}``: return at once;
- ``{"raise": k}``: raise on attempts 1..k, then succeed;
- ``{"overrun": 1}``: on attempt 1 sleep past the step timeout (the worker
  reports a timeout failure), then succeed;
- ``{"sleep": s}``: sleep ``s`` seconds on every attempt, then succeed;
- ``{"fail": 1}``: raise on every attempt (the step exhausts its attempts).

Outputs are deterministic functions of the run input, plus ``"a"``: the
attempt that produced them (the checks ignore it for equality and use it to
count late completions).  Error messages carry ``attempt=N`` so the checks can
tell which attempt a recorded failure came from.

Each execution that returns appends one JSON line (run, step, task, attempt,
pid) to ``$CHAOS_HANDLER_LOG`` when set: the at-least-once side of the story.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pgflow import Flow

#: every chaos step: timeout 3 s (lease 5 s), 5 attempts, backoff 1, 2, 4, 8 s
TIMEOUT = 3
MAX_ATTEMPTS = 5
#: how long an overrunning attempt sleeps (past TIMEOUT, inside the lease)
OVERRUN_SLEEP = TIMEOUT + 1.5


class ScriptedError(RuntimeError):
    """A failure the run input asked for."""


def _act(behaviour: dict[str, Any], ctx: Any) -> None:
    attempt = int(ctx.attempt)
    where = f"step={ctx.step_slug} task={ctx.task_index} attempt={attempt}"
    if behaviour.get("fail"):
        raise ScriptedError(f"scripted failure {where}")
    if attempt <= int(behaviour.get("raise", 0)):
        raise ScriptedError(f"scripted raise {where}")
    if behaviour.get("overrun") and attempt == 1:
        time.sleep(OVERRUN_SLEEP)
    if behaviour.get("sleep"):
        time.sleep(float(behaviour["sleep"]))


def _done(ctx: Any, value: Any) -> dict[str, Any]:
    path = os.environ.get("CHAOS_HANDLER_LOG")
    if path:
        line = json.dumps(
            {
                "run_id": ctx.run_id,
                "step": ctx.step_slug,
                "task": ctx.task_index,
                "attempt": ctx.attempt,
                "pid": os.getpid(),
            }
        )
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    return {"v": value, "a": ctx.attempt}


def _plan(inp: dict[str, Any], step: str) -> dict[str, Any]:
    plan: dict[str, Any] = inp["run"].get("plan", {}).get(step, {})
    return plan


# ---------------------------------------------------------------- chain: s1 -> s2 -> s3 -> s4

chain = Flow("chaos_chain", max_attempts=MAX_ATTEMPTS, base_delay=1, timeout=TIMEOUT)


@chain.step()
def s1(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    _act(_plan(inp, "s1"), ctx)
    return _done(ctx, inp["run"]["x"] + 1)


@chain.step(depends_on=[s1])
def s2(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    _act(_plan(inp, "s2"), ctx)
    return _done(ctx, inp["s1"]["v"] + 2)


@chain.step(depends_on=[s2])
def s3(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    _act(_plan(inp, "s3"), ctx)
    return _done(ctx, inp["s2"]["v"] + 3)


@chain.step(depends_on=[s3])
def s4(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    _act(_plan(inp, "s4"), ctx)
    return _done(ctx, inp["s3"]["v"] + 4)


# ---------------------------------------------------------------- diamond
#
#   top -> left, right -> bottom

diamond = Flow("chaos_diamond", max_attempts=MAX_ATTEMPTS, base_delay=1, timeout=TIMEOUT)


@diamond.step()
def top(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    _act(_plan(inp, "top"), ctx)
    return _done(ctx, inp["run"]["x"] * 2)


@diamond.step(depends_on=[top])
def left(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    _act(_plan(inp, "left"), ctx)
    return _done(ctx, inp["top"]["v"] + 1)


@diamond.step(depends_on=[top], when_exhausted="skip")
def right(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Optional: when it exhausts its attempts it is skipped, not fatal."""
    _act(_plan(inp, "right"), ctx)
    return _done(ctx, inp["top"]["v"] * 3)


@diamond.step(depends_on=[left, right])
def bottom(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    _act(_plan(inp, "bottom"), ctx)
    other = inp["right"]["v"] if "right" in inp else 100
    return _done(ctx, inp["left"]["v"] + other)


# ---------------------------------------------------------------- fan-out with conditions
#
#   items -> work (map) -> summary
#   items -> audit            (only if run.audit)
#   items -> double (map) -> double_sum   (skip-cascade if run.lite)

fanout = Flow("chaos_fanout", max_attempts=MAX_ATTEMPTS, base_delay=1, timeout=TIMEOUT)


@fanout.step()
def items(inp: dict[str, Any], ctx: Any) -> list[dict[str, Any]]:
    _act(_plan(inp, "items"), ctx)
    elems: list[dict[str, Any]] = inp["run"]["elems"]
    _done(ctx, None)
    return [{"i": i, **e} for i, e in enumerate(elems)]


@fanout.map(depends_on=[items])
def work(elem: dict[str, Any], ctx: Any) -> dict[str, Any]:
    _act(elem.get("w", {}), ctx)
    return _done(ctx, elem["i"] * elem["i"])


@fanout.step(depends_on=[work])
def summary(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    _act(_plan(inp, "summary"), ctx)
    return _done(ctx, sum(w["v"] for w in inp["work"]))


@fanout.step(depends_on=[items], if_={"run": {"audit": True}})
def audit(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    _act(_plan(inp, "audit"), ctx)
    return _done(ctx, len(inp["items"]))


@fanout.map(depends_on=[items], if_not={"run": {"lite": True}}, when_unmet="skip-cascade")
def double(elem: dict[str, Any], ctx: Any) -> dict[str, Any]:
    _act(elem.get("d", {}), ctx)
    return _done(ctx, 2 * elem["i"])


@fanout.step(depends_on=[double])
def double_sum(inp: dict[str, Any], ctx: Any) -> dict[str, Any]:
    _act(_plan(inp, "double_sum"), ctx)
    return _done(ctx, sum(d["v"] for d in inp["double"]))


# ---------------------------------------------------------------- sub-flows
#
#   pick -> each (a map sub-flow step: one chaos_chain run per element)

nest = Flow("chaos_nest", max_attempts=MAX_ATTEMPTS, base_delay=1, timeout=TIMEOUT)


@nest.step()
def pick(inp: dict[str, Any], ctx: Any) -> list[dict[str, Any]]:
    _act(_plan(inp, "pick"), ctx)
    chains: list[dict[str, Any]] = inp["run"]["chains"]
    _done(ctx, None)
    return chains


#: a failed child fails one attempt; the second attempt is a new child run
nest.subflow("each", flow="chaos_chain", map=True, depends_on=[pick], max_attempts=2)
