from __future__ import annotations

from typing import Any

from pgflow import Flow

flow = Flow("Everything_1", max_attempts=10, base_delay=3, timeout=120, step_events=True)


@flow.step(max_attempts=2, base_delay=1, timeout=3, start_delay=0, when_exhausted="skip-cascade")
def source(input: Any) -> Any:
    return []


@flow.map(
    depends_on=[source],
    start_delay=30,
    if_={"run": {"enabled": True}},
    when_unmet="skip-cascade",
    when_exhausted="skip",
)
def each(item: Any) -> Any:
    return item


@flow.step(
    depends_on=[each],
    if_={"each": []},
    if_not={"run": {"mode": "dry"}},
    when_unmet="fail",
    max_attempts=2147483647,
)
def strict(input: Any) -> Any:
    return None


@flow.map
def rootmap(item: Any) -> Any:
    return item
