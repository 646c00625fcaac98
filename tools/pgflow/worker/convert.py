"""Typed handlers: JSON into the annotated parameter types, return values into JSON.

Each handler gets one :class:`Binding`, built once at worker start from its
signature (:func:`pgflow.spec.signatures.classify`) and type annotations.
Calling a task's handler through it converts the input (or, for handlers
taking keyword arguments, ``run`` and each dependency's output) into the
annotated types; :func:`encode_json` turns what the handler returns into JSON
text.  The rules are those of docs/howto/typed-handlers.md:

* JSON into a parameter: dataclasses (every field converted by its own
  annotation; missing required fields and unknown keys are errors),
  ``TypedDict`` (required keys checked, values converted), pydantic models
  (``model_validate``; only when pydantic is installed and a handler uses one),
  ``list[T]`` / ``tuple[...]`` / ``dict[str, T]``, ``X | None`` and unions
  (first member that fits), ``Literal``, ``Enum`` (by value), ``datetime`` /
  ``date`` / ``time`` (ISO 8601 text), ``Decimal`` (text or number), ``UUID``
  (text), and the JSON types themselves (checked, ``float`` takes integers).
  Unannotated parameters, ``Any`` and ``object`` get the JSON as it is.
* Back into JSON (:func:`json_default`): ``datetime`` / ``date`` / ``time`` as
  ISO 8601 text, ``Decimal`` as text (exact; a ``Decimal`` parameter reads it
  back), ``UUID`` as text, ``Enum`` as its value, dataclasses as objects,
  pydantic models as ``model_dump(mode="json")``, sets as arrays.

An input that does not fit fails the attempt with :class:`InputMismatch`, a
:class:`pgflow.Fail` (no retry: the same input would not fit again), naming
the path inside the input and what was expected.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import inspect
import json
import sys
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Union, get_args, get_origin, get_type_hints, is_typeddict

from pgflow.errors import Fail, SpecError
from pgflow.spec.dsl import display_path
from pgflow.spec.signatures import Shape, classify, where_defined

__all__ = [
    "AnnotationError",
    "Binding",
    "InputMismatch",
    "bind_all",
    "encode_json",
    "from_json",
    "json_default",
]

#: Converts a JSON value found at a path (``$.run.items[2]``) into the annotated type.
Converter = Callable[[Any, str], Any]

_JSON_TYPES: Final = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


class InputMismatch(Fail):
    """The task's input does not fit the handler's annotations (fails the task, no retry)."""


class AnnotationError(TypeError):
    """An annotation the worker cannot convert JSON into (reported at worker start)."""


def _pydantic_model(tp: Any) -> bool:
    """Whether ``tp`` is a pydantic model class (pydantic is never imported for this)."""
    pydantic = sys.modules.get("pydantic")
    base = getattr(pydantic, "BaseModel", None)
    return base is not None and isinstance(tp, type) and issubclass(tp, base)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def converter(tp: Any) -> Converter | None:
    """The converter of an annotation (``None``: the JSON value is taken as it is)."""
    if tp is Any or tp is object or tp is inspect.Parameter.empty:
        return None
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return converter(get_args(tp)[0])
    if tp is None or tp is type(None):
        return _exact_none
    if origin in (Union, types.UnionType):
        return _union([converter(a) for a in get_args(tp)], get_args(tp))
    if origin is typing.Literal:
        return _literal(get_args(tp))
    if origin in (list, Sequence, typing.Sequence, set, frozenset):
        item = converter((get_args(tp) or (Any,))[0])
        return _sequence(item, origin if origin in (set, frozenset) else list)
    if origin is tuple:
        return _tuple(get_args(tp))
    if origin in (dict, Mapping, typing.Mapping):
        args = get_args(tp) or (str, Any)
        return _mapping(converter(args[1]))
    if origin is not None:
        raise AnnotationError(f"cannot convert JSON into {_type_name(tp)}")
    if tp in _JSON_TYPES:
        return _json_type(tp)
    if tp in (list, dict):
        return _container(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum(tp)
    if tp in (datetime.datetime, datetime.date, datetime.time):
        return _iso(tp)
    if tp is decimal.Decimal:
        return _decimal
    if tp is uuid.UUID:
        return _uuid
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass(tp)
    if is_typeddict(tp):
        return _typeddict(tp)
    if _pydantic_model(tp):
        return _pydantic(tp)
    raise AnnotationError(
        f"cannot convert JSON into {_type_name(tp)}: annotate with a dataclass, a TypedDict,"
        " a pydantic model, list/dict/tuple of those, or JSON types"
    )


def from_json(tp: Any, value: Any) -> Any:
    """``value`` (parsed JSON) converted into ``tp``; :class:`InputMismatch` if it does not fit."""
    convert = converter(tp)
    return value if convert is None else convert(value, "$")


# --------------------------------------------------------------------------- converters


def _mismatch(path: str, expected: str, value: Any) -> InputMismatch:
    return InputMismatch(f"{path}: expected {expected}, got {_shown(value)}")


def _exact_none(value: Any, path: str) -> Any:
    if value is not None:
        raise _mismatch(path, "null", value)
    return None


def _json_type(tp: type) -> Converter:
    expected = _JSON_TYPES[tp]

    def convert(value: Any, path: str) -> Any:
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise _mismatch(path, expected, value)
        return value

    return convert


def _container(tp: type) -> Converter:
    expected = "an array" if tp is list else "an object"

    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, tp):
            raise _mismatch(path, expected, value)
        return value

    return convert


def _union(members: list[Converter | None], types_: tuple[Any, ...]) -> Converter:
    expected = " or ".join(_type_name(t) for t in types_)

    def convert(value: Any, path: str) -> Any:
        if value is None and type(None) in types_:
            return None
        for member in members:
            if member is None:
                return value
            try:
                return member(value, path)
            except (InputMismatch, ValueError, TypeError):
                continue
        raise _mismatch(path, expected, value)

    return convert


def _literal(options: tuple[Any, ...]) -> Converter:
    def convert(value: Any, path: str) -> Any:
        if value not in options:
            raise _mismatch(path, "one of " + ", ".join(_shown(o) for o in options), value)
        return value

    return convert


def _sequence(item: Converter | None, kind: Callable[[Any], Any]) -> Converter:
    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise _mismatch(path, "an array", value)
        if item is None:
            return kind(value)
        return kind(item(v, f"{path}[{i}]") for i, v in enumerate(value))

    return convert


def _tuple(args: tuple[Any, ...]) -> Converter:
    if len(args) == 2 and args[1] is Ellipsis:
        each = converter(args[0])
        inner = _sequence(each, list)
        return lambda value, path: tuple(inner(value, path))
    items = [converter(a) for a in args]

    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, list) or len(value) != len(items):
            raise _mismatch(path, f"an array of {len(items)} elements", value)
        return tuple(
            v if c is None else c(v, f"{path}[{i}]")
            for i, (c, v) in enumerate(zip(items, value, strict=True))
        )

    return convert


def _mapping(values: Converter | None) -> Converter:
    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _mismatch(path, "an object", value)
        if values is None:
            return value
        return {k: values(v, f"{path}.{k}") for k, v in value.items()}

    return convert


def _enum(tp: type[enum.Enum]) -> Converter:
    def convert(value: Any, path: str) -> Any:
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(_shown(m.value) for m in tp)
            raise _mismatch(path, f"a {tp.__name__} ({allowed})", value) from None

    return convert


def _iso(tp: type[datetime.date] | type[datetime.time]) -> Converter:
    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise _mismatch(path, f"an ISO 8601 {tp.__name__} text", value)
        try:
            parsed = tp.fromisoformat(value)
        except ValueError:
            raise _mismatch(path, f"an ISO 8601 {tp.__name__} text", value) from None
        if tp is datetime.date and isinstance(parsed, datetime.datetime):
            return parsed.date()
        return parsed

    return convert


def _decimal(value: Any, path: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _mismatch(path, "a decimal number or its text", value)
    try:
        return decimal.Decimal(str(value))
    except decimal.InvalidOperation:
        raise _mismatch(path, "a decimal number or its text", value) from None


def _uuid(value: Any, path: str) -> Any:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise _mismatch(path, "a UUID text", value)


def _hints(tp: Any) -> dict[str, Any]:
    try:
        return get_type_hints(tp, include_extras=True)
    except Exception as exc:  # an unresolvable forward reference
        raise AnnotationError(
            f"cannot resolve the annotations of {_type_name(tp)}: {exc}"
        ) from None


def _dataclass(tp: type) -> Converter:
    hints = _hints(tp)
    fields = [f for f in dataclasses.fields(tp) if f.init]
    converters = {f.name: converter(hints.get(f.name, Any)) for f in fields}
    required = {
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }

    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _mismatch(path, f"an object ({tp.__name__})", value)
        missing = sorted(required - value.keys())
        if missing:
            raise InputMismatch(f"{path}: {tp.__name__} needs {', '.join(missing)}")
        unknown = sorted(k for k in value if k not in converters)
        if unknown:
            raise InputMismatch(f"{path}: {tp.__name__} has no field {', '.join(unknown)}")
        args = {}
        for key, item in value.items():
            convert_item = converters[key]
            args[key] = item if convert_item is None else convert_item(item, f"{path}.{key}")
        return tp(**args)

    return convert


def _typeddict(tp: Any) -> Converter:
    hints = _hints(tp)
    converters = {k: converter(v) for k, v in hints.items()}
    required: frozenset[str] = getattr(tp, "__required_keys__", frozenset(hints))

    def convert(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _mismatch(path, f"an object ({tp.__name__})", value)
        missing = sorted(required - value.keys())
        if missing:
            raise InputMismatch(f"{path}: {tp.__name__} needs {', '.join(missing)}")
        out = dict(value)
        for key, item in value.items():
            convert_item = converters.get(key)
            if convert_item is not None:
                out[key] = convert_item(item, f"{path}.{key}")
        return out

    return convert


def _pydantic(tp: Any) -> Converter:
    def convert(value: Any, path: str) -> Any:
        pydantic = sys.modules["pydantic"]
        try:
            return tp.model_validate(value)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{path}{''.join(f'.{p}' for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise InputMismatch(f"{tp.__name__}: {problems}") from None

    return convert


# --------------------------------------------------------------------------- back to JSON


def json_default(value: Any) -> Any:
    """The ``default`` of :func:`json.dumps` for return values (see the module docstring)."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"Decimal {value} has no JSON form")
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if _pydantic_model(type(value)):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encode_json(value: Any) -> str:
    """JSON text of a handler result; ValueError with a clear message if it has none."""
    try:
        return json.dumps(value, allow_nan=False, default=json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            "handler returned a value that is not JSON-serialisable"
            f" ({type(value).__name__}): {exc}"
        ) from exc


# --------------------------------------------------------------------------- calling a handler


class Binding:
    """How to call one handler: its :class:`~pgflow.spec.signatures.Shape` and converters.

    Raises :class:`ValueError` (a signature the worker cannot call) or
    :class:`AnnotationError` when built; the worker turns both into a
    :class:`~pgflow.errors.SpecError` at the handler's line.
    """

    def __init__(self, handler: Callable[..., Any], *, is_map: bool, deps: Sequence[str]) -> None:
        self.handler = handler
        self.shape: Shape = classify(handler, is_map=is_map, deps=deps)
        try:
            params = inspect.signature(handler).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        annotated = any(p.annotation is not p.empty for p in params.values())
        hints = _hints(handler) if annotated else {}
        self.defaults = {n: p.default for n, p in params.items() if p.default is not p.empty}
        if self.shape.form == "keywords":
            self.converters = {n: converter(hints.get(n, Any)) for n in self.shape.names}
            self.input_converter: Converter | None = None
        else:
            self.converters = {}
            first = next(iter(params.values()), None)
            positional = first is not None and first.kind in (
                first.POSITIONAL_ONLY,
                first.POSITIONAL_OR_KEYWORD,
            )
            self.input_converter = (
                converter(hints.get(first.name, Any)) if first is not None and positional else None
            )
        self.takes_context = self.shape.form == "input+context" or self.shape.context is not None

    def call(self, value: Any, context: Callable[[], Any]) -> Any:
        """Call the handler with a task's parsed input (``context`` makes its Context)."""
        if self.shape.form == "keywords":
            return self.handler(**self.keywords(value, context))
        if self.input_converter is not None:
            value = self.input_converter(value, "$")
        if self.takes_context:
            return self.handler(value, context())
        return self.handler(value)

    def keywords(self, value: Any, context: Callable[[], Any]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _mismatch("$", "an object with run and the dependencies", value)
        kwargs: dict[str, Any] = {}
        for name, convert in self.converters.items():
            if name not in value:
                if name in self.defaults:
                    continue
                raise InputMismatch(f"$: the input has no {name!r} (keys: {', '.join(value)})")
            item = value[name]
            kwargs[name] = item if convert is None else convert(item, f"$.{name}")
        if self.shape.rest:
            kwargs.update({k: v for k, v in value.items() if k not in kwargs})
        if self.shape.context is not None:
            kwargs[self.shape.context] = context()
        return kwargs


def bind_all(
    steps: Sequence[tuple[str, str, Callable[..., Any], bool, Sequence[str]]],
) -> dict[tuple[str, str], Binding]:
    """A :class:`Binding` per ``(flow, step, handler, is_map, deps)``; one
    :class:`~pgflow.errors.SpecError` (file:line of each handler) for every
    handler that cannot be called or whose annotations cannot be converted."""
    bindings: dict[tuple[str, str], Binding] = {}
    problems: list[SpecError] = []
    for flow, step, handler, is_map, deps in steps:
        try:
            bindings[flow, step] = Binding(handler, is_map=is_map, deps=deps)
        except (ValueError, AnnotationError) as exc:
            file, line = where_defined(handler)
            key = f"{flow}.{step}.handler"
            problems.append(SpecError(display_path(file), line, key, str(exc)))
    if problems:
        raise SpecError.collect(problems)
    return bindings
