"""Flow specs: the model, its validation, and the YAML and Python front ends.

Pure but for :mod:`pgflow.spec.loader`, which reads spec files and imports
user modules (the definition layer's one door to files and code).

* :mod:`pgflow.spec.model` -- :class:`FlowSpec`, :class:`StepSpec` and the raw
  input they are validated from;
* :mod:`pgflow.spec.validate` -- :func:`validate`;
* :mod:`pgflow.spec.yaml_loader` / :mod:`pgflow.spec.dsl` -- the front ends;
* :mod:`pgflow.spec.loader` -- a SPEC argument to :class:`LoadedFlow` objects.
"""

from __future__ import annotations

from pgflow.spec.dsl import Flow
from pgflow.spec.loader import Handler, LoadedFlow, load, resolve_handler
from pgflow.spec.model import FlowSpec, Origin, StepSpec
from pgflow.spec.validate import validate
from pgflow.spec.yaml_loader import load_yaml

__all__ = [
    "Flow",
    "FlowSpec",
    "Handler",
    "LoadedFlow",
    "Origin",
    "StepSpec",
    "load",
    "load_yaml",
    "resolve_handler",
    "validate",
]
