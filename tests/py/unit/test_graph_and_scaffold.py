"""Mermaid output of `pgflow graph` and the files of `pgflow new`."""

from __future__ import annotations

import sys
from pathlib import Path, PurePath

import pytest

from pgflow.compiler.mermaid import mermaid
from pgflow.compiler.migration import render_body
from pgflow.compiler.scaffold import ScaffoldError, handler_module, scaffold
from pgflow.spec.loader import load
from pgflow.spec.model import FlowSpec, StepSpec


def test_mermaid_marks_map_and_conditional_steps() -> None:
    flow = FlowSpec(
        slug="f",
        steps=(
            StepSpec(slug="end"),
            StepSpec(slug="each", depends_on=("end",), map=True),
            StepSpec(slug="maybe", depends_on=("each",), required_input_pattern="{}"),
            StepSpec(
                slug="both",
                depends_on=("end",),
                map=True,
                required_input_pattern="{}",
                forbidden_input_pattern="{}",
            ),
        ),
    )
    assert mermaid(flow) == (
        "flowchart TD\n"
        "    %% flow f\n"
        '    s_end["end"]\n'
        '    s_each[["each<br/><i>map</i>"]]\n'
        '    s_maybe{{"maybe<br/><i>if</i>"}}\n'
        '    s_both{{"both<br/><i>map, if, if not</i>"}}\n'
        "    s_end --> s_each\n"
        "    s_each --> s_maybe\n"
        "    s_end --> s_both\n"
        "    classDef map stroke-width:3px\n"
        "    class s_each,s_both map\n"
        "    classDef conditional stroke-dasharray:5 5\n"
        "    class s_maybe,s_both conditional\n"
    )


def test_mermaid_of_a_plain_flow_has_no_classes() -> None:
    flow = FlowSpec(slug="f", steps=(StepSpec(slug="a"), StepSpec(slug="b", depends_on=("a",))))
    assert mermaid(flow) == (
        'flowchart TD\n    %% flow f\n    s_a["a"]\n    s_b["b"]\n    s_a --> s_b\n'
    )


@pytest.mark.parametrize(
    ("directory", "module"),
    [
        (".", "order_handlers"),
        ("flows", "flows.order_handlers"),
        ("app/flows", "app.flows.order_handlers"),
    ],
)
def test_handler_module(directory: str, module: str) -> None:
    assert handler_module("order", PurePath(directory)) == module


@pytest.mark.parametrize("directory", ["/abs/flows", "my-flows", "../up"])
def test_handler_module_needs_an_importable_directory(directory: str) -> None:
    with pytest.raises(ScaffoldError) as caught:
        handler_module("order", PurePath(directory))
    assert str(caught.value) == (
        f'directory "{directory}" must be a relative path of Python identifiers'
        " (e.g. flows or app/flows) so that the handler module can be imported"
    )


def test_scaffold_refuses_an_invalid_slug() -> None:
    with pytest.raises(ScaffoldError) as caught:
        scaffold("my-flow", PurePath("."))
    assert str(caught.value) == 'invalid flow slug "my-flow": character "-" is not allowed'


def test_scaffolded_flow_builds_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    files = scaffold("words", PurePath("app/flows"))
    assert [f.path.as_posix() for f in files] == [
        "app/flows/words.yaml",
        "app/flows/words_handlers.py",
    ]
    for file in files:
        Path(file.path).parent.mkdir(parents=True, exist_ok=True)
        Path(file.path).write_text(file.text, encoding="utf-8")
    before = set(sys.modules)
    try:
        (flow,) = load("app/flows/words.yaml")
        assert [s.slug for s in flow.spec.steps] == ["split_words", "measure", "summarize"]
        assert "pgflow.add_step" in render_body(flow.spec)
        handlers = flow.handlers()
        words = handlers["split_words"]({"run": {"text": "the quick  brown fox"}})
        measured = [handlers["measure"](w) for w in words]
        summary = handlers["summarize"]({"run": {}, "split_words": words, "measure": measured})
        assert summary == {"words": 4, "longest": "quick"}
        assert handlers["summarize"]({"run": {}, "split_words": [], "measure": []}) == {
            "words": 0,
            "longest": None,
        }
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]
