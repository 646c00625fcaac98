from __future__ import annotations

from pgflow import Concurrency, Flow

flow = Flow("tenant_reports", concurrency={"limit": 20, "key": "run.tenant"})


@flow.step
def list_pages(input: dict[str, object]) -> list[object]:
    return []


@flow.map(depends_on=[list_pages], concurrency=Concurrency(2, key="item.tenant"))
def render(item: object) -> None:
    return None


@flow.step(depends_on=[list_pages], concurrency=Concurrency(3, key="list_pages.bucket"))
def upload(input: dict[str, object]) -> None:
    return None


@flow.step(depends_on=[render, upload], concurrency=1)
def notify(input: dict[str, object]) -> None:
    return None
