from __future__ import annotations

from pgflow import Flow

flow = Flow("batch")


@flow.step
def list_docs(input: dict[str, object]) -> list[str]:
    return []


each_doc = flow.subflow("each_doc", flow="ingest", map=True, depends_on=[list_docs], max_attempts=2)
report = flow.subflow(
    "report",
    flow="report@2",
    depends_on=[each_doc],
    if_={"run": {"report": True}},
    when_exhausted="skip",
)


@flow.step(depends_on=[report])
def done(input: dict[str, object]) -> None:
    return None
