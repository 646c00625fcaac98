"""``pgflow new``: the files of a new flow (a YAML spec and its handler module).

:func:`scaffold` is pure: it returns the files to write; the command line
writes them.  The spec builds as it is and its handlers run as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Final

import jinja2

from pgflow.errors import ScaffoldError
from pgflow.spec.model import show, slug_problem

_ENV: Final = jinja2.Environment(
    loader=jinja2.PackageLoader("pgflow.compiler", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class ScaffoldFile:
    """A file to create: its path (relative to the working directory) and text."""

    path: PurePath
    text: str


def handler_module(flow_slug: str, directory: PurePath) -> str:
    """The dotted module name of the handler file, importable from the working directory."""
    parts = [p for p in directory.parts if p != "."]
    if directory.is_absolute() or not all(p.isidentifier() for p in parts):
        raise ScaffoldError(
            f"directory {show(str(directory))} must be a relative path of Python identifiers"
            " (e.g. flows or app/flows) so that the handler module can be imported"
        )
    return ".".join([*parts, f"{flow_slug}_handlers"])


def scaffold(flow_slug: str, directory: PurePath) -> list[ScaffoldFile]:
    """The spec ``<dir>/<slug>.yaml`` and the handlers ``<dir>/<slug>_handlers.py``."""
    problem = slug_problem(flow_slug)
    if problem:
        raise ScaffoldError(f"invalid flow slug {show(flow_slug)}: {problem}")
    module = handler_module(flow_slug, directory)
    spec_path = directory / f"{flow_slug}.yaml"
    handlers_path = directory / f"{flow_slug}_handlers.py"
    values = {"slug": flow_slug, "module": module, "spec_path": spec_path.as_posix()}
    return [
        ScaffoldFile(spec_path, _ENV.get_template("new_flow.yaml.j2").render(values)),
        ScaffoldFile(handlers_path, _ENV.get_template("new_handlers.py.j2").render(values)),
    ]
