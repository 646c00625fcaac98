"""docs/reference/python-api.md documents the package's face as it is.

Each entry is a level-3 heading holding its name in backquotes, with the
parameters when it is called: ``### `pgflow.Client(db='')` `` for a name of
``pgflow.__all__``, ``### `Client.start(flow, input, run_id=None)` `` for a
method.  The test holds the headings against the package: every name of
``pgflow.__all__`` has one and no heading names something the package lacks;
every public method of the client classes has one; parameter lists are the
real ones (names, order, defaults).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pgflow

DOC = Path(__file__).resolve().parents[3] / "docs" / "reference" / "python-api.md"
HEADING = re.compile(r"^### `(?P<name>[\w.]+)(?:\((?P<params>.*)\))?`$", re.M)

#: Classes whose every public method and property is documented as ``Class.name``.
CLIENT_CLASSES = (
    "Client",
    "AsyncClient",
    "RunHandle",
    "AsyncRunHandle",
    "Events",
    "AsyncEvents",
    "Event",
)


def entries() -> dict[str, str | None]:
    """Documented name -> its parameter text (None: documented without parentheses)."""
    found: dict[str, str | None] = {}
    for match in HEADING.finditer(DOC.read_text(encoding="utf-8")):
        assert match["name"] not in found, f"{match['name']} is documented twice"
        found[match["name"]] = match["params"]
    return found


def split_params(text: str) -> list[str]:
    """``a, b=(1, 2), *, c=None`` -> ``["a", "b=(1, 2)", "*", "c=None"]`` (brackets respected)."""
    parts: list[str] = []
    depth, current = 0, ""
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def shown(param: inspect.Parameter) -> str:
    """A parameter as the doc writes it: ``name`` or ``name=default``."""
    prefix = "**" if param.kind is param.VAR_KEYWORD else ""
    if param.default is param.empty:
        return prefix + param.name
    default = param.default
    text = default.__name__ if callable(default) else repr(default)
    return f"{param.name}={text}"


def documented_signature(obj: Callable[..., Any]) -> list[str]:
    """The parameters of a callable as the doc lists them (``*`` and ``/`` included)."""
    params = [p for p in inspect.signature(obj).parameters.values() if p.name != "self"]
    out: list[str] = []
    for before, param in zip([None, *params], params, strict=False):
        after_positional_only = before is not None and before.kind is param.POSITIONAL_ONLY
        if after_positional_only and param.kind is not param.POSITIONAL_ONLY:
            out.append("/")
        if param.kind is param.KEYWORD_ONLY and (
            before is None or before.kind is not param.KEYWORD_ONLY
        ):
            out.append("*")
        out.append(shown(param))
    if params and params[-1].kind is inspect.Parameter.POSITIONAL_ONLY:
        out.append("/")
    return out


def target(name: str) -> Any:
    """The object a documented name stands for (``pgflow.X`` or ``Class.member``)."""
    if name.startswith("pgflow."):
        return getattr(pgflow, name.removeprefix("pgflow."))
    owner, _, member = name.partition(".")
    return inspect.getattr_static(getattr(pgflow, owner), member)


def test_every_public_name_is_documented_and_every_documented_name_exists() -> None:
    documented = {n.removeprefix("pgflow.") for n in entries() if n.startswith("pgflow.")}
    assert sorted(set(pgflow.__all__) - documented) == [], "add these to python-api.md"
    assert sorted(documented - set(pgflow.__all__)) == [], "not in pgflow.__all__"


def test_every_method_of_the_client_classes_is_documented() -> None:
    documented = {n for n in entries() if not n.startswith("pgflow.")}
    expected: set[str] = set()
    for name in CLIENT_CLASSES:
        cls = getattr(pgflow, name)
        fields = (
            {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        )
        expected |= {f"{name}.{m}" for m in dir(cls) if not m.startswith("_") and m not in fields}
    assert sorted(expected - documented) == [], "add these methods to python-api.md"
    for name in sorted(documented):
        owner, _, member = name.partition(".")
        assert owner in pgflow.__all__, f"{name}: {owner} is not a public name"
        assert hasattr(getattr(pgflow, owner), member), f"{name} does not exist"


@pytest.mark.parametrize("name", [n for n, p in entries().items() if p is not None])
def test_documented_parameters_are_the_real_ones(name: str) -> None:
    obj = target(name)
    if isinstance(obj, staticmethod | classmethod):  # as called: without cls
        owner, _, member = name.partition(".")
        obj = getattr(getattr(pgflow, owner), member)
    assert callable(obj), f"{name} is documented with parameters but is not callable"
    params = entries()[name]
    assert params is not None
    assert split_params(params) == documented_signature(obj), f"the signature of {name} changed"


def test_every_entry_has_an_example() -> None:
    text = DOC.read_text(encoding="utf-8")
    sections = re.split(r"^### ", text, flags=re.M)[1:]
    missing = [s.splitlines()[0] for s in sections if "```python" not in s]
    assert missing == [], "entries without an example"
