"""Draw a flow as a Mermaid flowchart (``pgflow graph``).

Arrows point from a dependency to the step that needs it, the order steps run
in.  Single steps are rectangles, map steps are stacked "subroutine" boxes
marked ``map``, conditional steps are hexagons marked ``if`` / ``if not``,
wait steps are rounded boxes marked ``waits for <event>`` (and their timeout).
Node ids are prefixed (``s_<slug>``) so that no slug collides with a Mermaid
keyword such as ``end``.
"""

from __future__ import annotations

from pgflow.spec.model import FlowSpec, StepSpec


def mermaid(flow: FlowSpec) -> str:
    """The Mermaid ``flowchart TD`` text of a flow (ends with a newline)."""
    lines = ["flowchart TD", f"    %% flow {flow.slug}"]
    for step in flow.steps:
        lines.append(f"    {_node(step)}")
    for step in flow.steps:
        for dep in step.depends_on:
            lines.append(f"    {_id(dep)} --> {_id(step.slug)}")
    maps = [_id(s.slug) for s in flow.steps if s.map]
    conditional = [_id(s.slug) for s in flow.steps if s.conditional]
    waits = [_id(s.slug) for s in flow.steps if s.waits]
    if maps:
        lines.append("    classDef map stroke-width:3px")
        lines.append(f"    class {','.join(maps)} map")
    if conditional:
        lines.append("    classDef conditional stroke-dasharray:5 5")
        lines.append(f"    class {','.join(conditional)} conditional")
    if waits:
        lines.append("    classDef wait stroke-dasharray:2 2,stroke-width:2px")
        lines.append(f"    class {','.join(waits)} wait")
    return "\n".join(lines) + "\n"


def _id(slug: str) -> str:
    return f"s_{slug}"


def _node(step: StepSpec) -> str:
    marks: list[str] = []
    if step.waits:
        marks.append(f"waits for {step.wait_event} by {step.wait_key}")
        if step.timeout is not None:
            marks.append(f"timeout {step.timeout} s, then {step.when_exhausted}")
    if step.subflow is not None:
        marks.append(f"runs flow {step.subflow}")
    if step.map:
        marks.append("map")
    if step.required_input_pattern is not None:
        marks.append("if")
    if step.forbidden_input_pattern is not None:
        marks.append("if not")
    label = step.slug + (f"<br/><i>{', '.join(marks)}</i>" if marks else "")
    if step.conditional:
        return f'{_id(step.slug)}{{{{"{label}"}}}}'
    if step.map:
        return f'{_id(step.slug)}[["{label}"]]'
    if step.waits:
        return f'{_id(step.slug)}(["{label}"])'
    return f'{_id(step.slug)}["{label}"]'
