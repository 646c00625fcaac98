"""The compiler: flow specs to SQL migrations, Mermaid pictures and scaffolds.

Pure: nothing here reads a clock, a file, the environment or the network
(:func:`compile_flow` takes the generation time as an argument).

* :mod:`pgflow.compiler.migration` -- :func:`compile_flow`, migration names and bodies;
* :mod:`pgflow.compiler.sqltext` -- the quoting filters every template value passes;
* :mod:`pgflow.compiler.mermaid` -- ``pgflow graph``;
* :mod:`pgflow.compiler.scaffold` -- ``pgflow new``.
"""

from __future__ import annotations

from pgflow.compiler.mermaid import mermaid
from pgflow.compiler.migration import (
    MIGRATION_RE,
    compile_flow,
    migration_filename,
    render_body,
    same_body,
    split_header,
)
from pgflow.compiler.scaffold import ScaffoldFile, scaffold

__all__ = [
    "MIGRATION_RE",
    "ScaffoldFile",
    "compile_flow",
    "mermaid",
    "migration_filename",
    "render_body",
    "same_body",
    "scaffold",
    "split_header",
]
