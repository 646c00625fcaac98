from __future__ import annotations

from typing import Any

from pgflow import Flow

flow = Flow("hostile")


@flow.step(if_={"run": {"name": "O'Brien's \"quoted\" text", "sql": "'); DROP TABLE pgflow.flows; --"}})
def quotes(input: Any) -> Any:
    return None


@flow.step(
    depends_on=[quotes],
    if_not={"$$": "$$ $tag$ $$", "back\\slash": "C:\\new\\table \\' \\\\"},
)
def dollars(input: Any) -> Any:
    return None


@flow.step(
    depends_on=[dollars],
    if_={
        "run": {
            "text": "é ✓ 😀 \u2028 tab\tnewline\n",
            "nested": [[1, -2.5e-3, 1e20], {"": None}, True],
            "big": 123456789012345678901234567890,
        }
    },
)
def unicode(input: Any) -> Any:
    return None
