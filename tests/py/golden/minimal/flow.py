from __future__ import annotations

from pgflow import Flow

flow = Flow("hello")


@flow.step
def greet(input: dict[str, object]) -> str:
    return "hello"
