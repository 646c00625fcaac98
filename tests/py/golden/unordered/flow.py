from __future__ import annotations

from typing import Any

from pgflow import Flow

flow = Flow("diamond")


@flow.step(depends_on=["left", "right"])
def report(input: Any) -> Any:
    return None


@flow.step(depends_on=["start"])
def right(input: Any) -> Any:
    return None


@flow.step(depends_on=["start"])
def left(input: Any) -> Any:
    return None


@flow.step
def start(input: Any) -> Any:
    return None


@flow.step
def audit(input: Any) -> Any:
    return None
