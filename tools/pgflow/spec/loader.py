"""Resolve a SPEC argument into validated flows and their handlers.

A SPEC is one of:

- ``path/to/flow.yaml`` (or ``.yml``): one flow in YAML;
- ``path/to/flows.py``: a Python file; every :class:`~pgflow.spec.dsl.Flow` at its
  top level is a flow;
- ``package.module`` or ``package.module:attribute``: an importable module
  (every ``Flow`` at its top level) or one attribute of it (a ``Flow``, or a
  list or tuple of them).

Imports resolve from the current directory first, as with ``python -m``.  The
loader is the one part of the definition layer that reads files and imports
code; the worker uses it too, to find each step's handler.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from pgflow.errors import HandlerError, LoadError, PgflowError, SpecError
from pgflow.spec.dsl import Flow, display_path
from pgflow.spec.model import HANDLER_RE, FlowSpec, Origin
from pgflow.spec.validate import raise_errors
from pgflow.spec.yaml_loader import load_yaml

YAML_SUFFIXES: Final = (".yaml", ".yml")
MODULE_RE: Final = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)?"
)

Handler = Callable[..., Any]


@dataclass(frozen=True)
class LoadedFlow:
    """A validated flow plus the handler functions a Python spec defined."""

    spec: FlowSpec
    callables: Mapping[str, Handler] = field(default_factory=dict)

    def handler(self, step_slug: str) -> Handler:
        """The handler of a step: the decorated function, else its ``handler:`` reference."""
        if step_slug in self.callables:
            return self.callables[step_slug]
        try:
            step = self.spec.step(step_slug)
        except KeyError:
            raise HandlerError(f'flow "{self.spec.slug}" has no step "{step_slug}"') from None
        if step.handler is None:
            raise HandlerError(
                f'step "{step_slug}" of flow "{self.spec.slug}" names no handler'
                " (add handler: module:function to the spec)"
            )
        return resolve_handler(step.handler)

    def handlers(self) -> dict[str, Handler]:
        """Every step's handler, by step slug (raises HandlerError for the first missing one).

        Wait steps have none: ``emit_event`` completes them, no worker claims them;
        nor do sub-flow steps: their tasks are child runs of another flow."""
        return {
            step.slug: self.handler(step.slug)
            for step in self.spec.steps
            if not step.waits and not step.runs_subflow
        }


def load(spec: str) -> list[LoadedFlow]:
    """The flows a SPEC argument names (see the module docstring)."""
    if spec.endswith(YAML_SUFFIXES):
        return [load_yaml_file(Path(spec))]
    if spec.endswith(".py"):
        return _flows_of(_import_file(Path(spec)), spec)
    if MODULE_RE.fullmatch(spec):
        module_name, _, attribute = spec.partition(":")
        module = _import_module(module_name)
        if not attribute:
            return _flows_of(module, spec)
        return _flows_of_attribute(module, attribute, spec)
    raise LoadError(
        f"cannot load {spec!r}: a SPEC is a .yaml/.yml file, a .py file"
        " or package.module[:attribute]"
    )


def load_yaml_file(path: Path) -> LoadedFlow:
    """One flow from a YAML file."""
    data = _read(path)
    shown = display_path(os.path.abspath(path))
    origin = Origin(shown, hashlib.sha256(data).hexdigest())
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(shown, line, "", "not UTF-8 text") from None
    return LoadedFlow(load_yaml(text, origin))


def resolve_handler(ref: str) -> Handler:
    """The callable a ``"package.module:function"`` reference names."""
    if not HANDLER_RE.fullmatch(ref):
        raise HandlerError(f'handler {ref!r} must look like "package.module:function"')
    module_name, _, attribute = ref.partition(":")
    try:
        module = _import_module(module_name)
    except PgflowError as exc:
        raise HandlerError(f"handler {ref!r}: {exc}") from None
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HandlerError(f"handler {ref!r}: {module_name} has no {attribute!r}") from None
    if not callable(target):
        raise HandlerError(f"handler {ref!r} is not callable")
    return target


def flow_of(flow: Flow) -> LoadedFlow:
    """Validate a Python flow; its origin is the file that created it."""
    origin = Origin(flow.file, _sha256_of(flow.file))
    return LoadedFlow(flow.spec(origin), dict(flow.handlers))


def flows_of(flows: list[Flow]) -> list[LoadedFlow]:
    """Validate Python flows, reporting the problems of all of them at once (line order)."""
    loaded: list[LoadedFlow] = []
    problems: list[SpecError] = []
    for flow in flows:
        try:
            loaded.append(flow_of(flow))
        except SpecError as exc:
            problems.extend(exc.errors)
    raise_errors(problems)
    return loaded


# --------------------------------------------------------------------------- helpers


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise LoadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LoadError(f"{path}: is a directory, not a spec file") from None
    except OSError as exc:
        raise LoadError(f"{path}: cannot read: {exc.strerror}") from None


def _sha256_of(file: str) -> str:
    try:
        return hashlib.sha256(Path(file).read_bytes()).hexdigest()
    except OSError:
        return ""


def _cwd_on_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _module_name_for(path: Path) -> str:
    """A dotted name for a file below the working directory, else a private one."""
    relative = os.path.relpath(path.resolve(), Path.cwd().resolve())
    parts = Path(relative).with_suffix("").parts
    if parts and not relative.startswith(os.pardir) and all(p.isidentifier() for p in parts):
        return ".".join(parts)
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    return f"_pgflow_spec_{path.stem if path.stem.isidentifier() else 'file'}_{digest}"


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    _cwd_on_path()
    name = _module_name_for(path)
    existing = sys.modules.get(name)
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() == (
        path.resolve()
    ):
        return existing
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        raise LoadError(f"{path}: cannot import this file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except PgflowError:
        del sys.modules[name]
        raise
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise _import_failure(exc, str(path.resolve())) from None
    return module


def _import_module(name: str) -> ModuleType:
    _cwd_on_path()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise LoadError(
                f"no module named {name!r} (imports resolve from {os.getcwd()})"
            ) from None
        raise _import_failure(exc, None) from None
    except PgflowError:
        raise
    except (Exception, SystemExit) as exc:
        raise _import_failure(exc, None) from None


def _import_failure(exc: BaseException, file: str | None) -> SpecError:
    """The error of a spec module that raised while being imported, at its line."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename]
    chosen = next((f for f in reversed(user) if file is None or f.filename == file), None)
    if isinstance(exc, SyntaxError) and exc.filename:
        where, line = exc.filename, exc.lineno
    elif chosen is not None:
        where, line = chosen.filename, chosen.lineno
    else:
        where, line = file or "<module>", None
    message = " ".join(f"{type(exc).__name__}: {exc}".split())
    return SpecError(display_path(where), line, "import", message)


def _flows_of(module: ModuleType, spec: str) -> list[LoadedFlow]:
    flows: list[Flow] = []
    for value in vars(module).values():
        if isinstance(value, Flow) and all(value is not f for f in flows):
            flows.append(value)
    if not flows:
        raise LoadError(f"{spec}: defines no pgflow.Flow at its top level")
    return flows_of(flows)


def _flows_of_attribute(module: ModuleType, attribute: str, spec: str) -> list[LoadedFlow]:
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LoadError(f"{spec}: {module.__name__} has no attribute {attribute!r}") from None
    if isinstance(target, Flow):
        return [flow_of(target)]
    if isinstance(target, list | tuple) and target and all(isinstance(f, Flow) for f in target):
        return flows_of(list(target))
    raise LoadError(f"{spec}: is a {type(target).__name__}, not a pgflow.Flow")
