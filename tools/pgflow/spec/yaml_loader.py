"""The YAML front end: spec text to a validated :class:`~pgflow.spec.model.FlowSpec`.

The text is composed into YAML nodes (not loaded straight into Python objects)
so that every key keeps its line for error messages, duplicate keys are caught
instead of silently overwritten, and hostile documents (alias bombs, deep
nesting, unknown tags) end in a :class:`~pgflow.errors.SpecError` rather than
a traceback.  Scalars are typed with PyYAML's safe rules (``3`` is an integer,
``"3"`` a string, ``true`` a boolean); merge keys (``<<: *defaults``) work.

Every problem is reported at once, in line order: structure problems (a
duplicate key, a step that is not a mapping, a value PyYAML cannot read) are
collected while the document is converted, and the validator's findings on
what could be converted are added to them.  Only a document that cannot be
parsed at all, or expands beyond the size limits, stops at its first problem.
"""

from __future__ import annotations

import re
from typing import Final

import yaml

from pgflow.errors import SpecError
from pgflow.spec.model import FlowSpec, Origin, RawFlow, RawStep, Value, describe, show
from pgflow.spec.validate import in_line_order, raise_errors, validate

#: Most YAML nodes a spec may expand to (aliases count each time they are used).
MAX_NODES: Final = 100_000
#: Deepest nesting of YAML collections accepted.
MAX_DEPTH: Final = 100
MERGE_TAG: Final = "tag:yaml.org,2002:merge"
#: Top-level keys starting with this are ignored: a place for YAML anchors.
EXTENSION_PREFIX: Final = "x-"


class SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema scalars.

    Only ``true``/``false`` are booleans (``yes``, ``no``, ``on``, ``off`` stay
    strings, so ``if: {answer: no}`` means the string "no"), integers are
    decimal (``010`` is ten, ``1:30`` is a string), and dates stay strings.
    """


# a fresh table of implicit resolvers, filled below (SafeLoader's stays untouched)
SpecLoader.yaml_implicit_resolvers = {}


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    return int(str(loader.construct_scalar(node)).replace("_", ""))


for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^[-+]?[0-9]+$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("merge", r"^(?:<<)$", "<"),
):
    SpecLoader.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first)
    )
SpecLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml(text: str, origin: Origin) -> FlowSpec:
    """Parse and validate one flow from YAML text; ``origin`` names it in errors.

    Raises one :class:`~pgflow.errors.SpecError` listing every problem, in line order.
    """
    raw, problems = _convert(text, origin)
    try:
        spec = validate(raw)
    except SpecError as exc:
        # a key the conversion already reported (or a part of it) is not
        # reported again as missing or empty
        reported = [p.key for p in problems]
        found = [
            e
            for e in exc.errors
            if not any(k == e.key or k.startswith((e.key + "[", e.key + ".")) for k in reported)
        ]
        raise SpecError.collect(in_line_order([*problems, *found])) from None
    raise_errors(problems)
    return spec


def parse_yaml(text: str, origin: Origin) -> RawFlow:
    """The raw flow a YAML document describes (structure checked, values not yet).

    Raises a SpecError listing the structure problems, if there are any.
    """
    raw, problems = _convert(text, origin)
    raise_errors(problems)
    return raw


def _convert(text: str, origin: Origin) -> tuple[RawFlow, list[SpecError]]:
    """The raw flow and the structure problems met on the way (a fatal one is raised)."""
    try:
        documents = list(yaml.compose_all(text, Loader=SpecLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "cannot parse"
        raise SpecError(origin.file, line, "", f"invalid YAML: {_one_line(problem)}") from None
    except yaml.YAMLError as exc:
        raise SpecError(origin.file, None, "", f"invalid YAML: {_one_line(str(exc))}") from None
    except RecursionError:
        raise SpecError(origin.file, None, "", "invalid YAML: nested too deeply") from None

    if not documents or _is_null(documents[0]):
        raise SpecError(origin.file, 1, "", "empty spec: expected a mapping with flow: and steps:")
    converter = _Converter(origin)
    if len(documents) > 1:
        line = documents[1].start_mark.line + 1
        converter.problem(
            SpecError(
                origin.file, line, "", "a spec file holds one flow: remove the second document"
            )
        )
    return converter.flow(documents[0]), converter.problems


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _Converter:
    """Turns YAML nodes into raw flow parts, remembering the line of each key."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.constructor = SpecLoader("")
        self.budget = MAX_NODES
        self.pair_cache: dict[int, list[tuple[yaml.Node, yaml.Node]]] = {}
        #: Problems met so far that do not stop the conversion.
        self.problems: list[SpecError] = []

    def fail(self, node: yaml.Node, key: str, message: str) -> SpecError:
        return SpecError(self.origin.file, _line(node), key, message)

    def problem(self, error: SpecError) -> None:
        """Note a problem and go on (the part it concerns is left out)."""
        self.problems.append(error)

    def keep_going(self, error: SpecError) -> None:
        """Note a problem raised while converting one part, unless it must stop everything."""
        if self.budget < 0:  # an alias bomb: nothing after it is worth reading
            raise error
        self.problem(error)

    def flow(self, node: yaml.Node) -> RawFlow:
        if not isinstance(node, yaml.MappingNode):
            kind = describe(self.value(node, "", 0))
            raise self.fail(
                node, "", f"the top level must be a mapping with flow: and steps:, got {kind}"
            )
        fields: dict[str, Value] = {}
        steps: list[RawStep] | None = None
        steps_value: Value | None = None
        for key_node, value_node in self.pairs(node, ""):
            try:
                name = self.key(key_node, "")
                if name.startswith(EXTENSION_PREFIX):
                    continue
                if name == "steps":
                    steps_value = Value(None, _line(key_node), "steps")
                    steps = self.steps(key_node, value_node)
                else:
                    fields[name] = self.field(key_node, value_node, name)
            except SpecError as exc:
                self.keep_going(exc)
        return RawFlow(
            origin=self.origin,
            line=_line(node),
            fields=fields,
            steps=steps,
            steps_value=steps_value,
        )

    def steps(self, key_node: yaml.Node, node: yaml.Node) -> list[RawStep]:
        if not isinstance(node, yaml.SequenceNode):
            kind = describe(self.value(node, "steps", 0))
            raise self.fail(key_node, "steps", f"must be a list of steps, got {kind}")
        steps: list[RawStep] = []
        for index, item in enumerate(node.value):
            prefix = f"steps[{index}]"
            if not isinstance(item, yaml.MappingNode):
                try:
                    value = self.value(item, prefix, 0)
                except SpecError as exc:
                    self.keep_going(exc)
                    continue
                hint = f" (write - slug: {value})" if isinstance(value, str) else ""
                self.problem(
                    self.fail(
                        item, prefix, f"must be a mapping with a slug, got {describe(value)}{hint}"
                    )
                )
                continue
            fields: dict[str, Value] = {}
            for step_key, step_value in self.pairs(item, prefix):
                try:
                    name = self.key(step_key, prefix)
                    fields[name] = self.field(step_key, step_value, f"{prefix}.{name}")
                except SpecError as exc:
                    self.keep_going(exc)
            steps.append(RawStep(key=prefix, line=_line(item), fields=fields))
        return steps

    def field(self, key_node: yaml.Node, node: yaml.Node, key: str) -> Value:
        value = self.value(node, key, 1)
        items: tuple[Value, ...] = ()
        if isinstance(node, yaml.SequenceNode) and isinstance(value, list):
            items = tuple(
                Value(item, _line(item_node), key)
                for item, item_node in zip(value, node.value, strict=True)
            )
        return Value(value, _line(key_node), key, items)

    def pairs(self, node: yaml.MappingNode, key: str) -> list[tuple[yaml.Node, yaml.Node]]:
        """The key/value node pairs of a mapping: duplicates refused, merge keys applied.

        Keys written in the mapping override merged ones, as in PyYAML.
        """
        cached = self.pair_cache.get(id(node))
        if cached is not None:
            return cached
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != MERGE_TAG:
                try:
                    name = self.scalar(key_node, key)
                except SpecError:
                    continue  # reported below
                if name in seen:
                    path = f"{key}.{name}" if key else str(name)
                    self.problem(
                        self.fail(
                            key_node, path, f"duplicate key (first given at line {seen[name]})"
                        )
                    )
                    continue
                seen[name] = _line(key_node)
        try:
            self.constructor.flatten_mapping(node)
        except yaml.YAMLError as exc:
            raise self.fail(node, key, f"invalid merge: {_one_line(str(exc))}") from None
        unique: dict[object, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                try:
                    unique[self.scalar(key_node, key)] = (key_node, value_node)
                except SpecError as exc:
                    self.keep_going(exc)
            else:
                unique[object()] = (key_node, value_node)
        pairs = list(unique.values())
        self.pair_cache[id(node)] = pairs
        return pairs

    def key(self, node: yaml.Node, prefix: str) -> str:
        name = self.scalar(node, prefix) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(name, str):
            shown = describe(name) if isinstance(node, yaml.ScalarNode) else "a collection"
            raise self.fail(node, prefix, f"keys must be strings, got {shown}")
        return name

    def scalar(self, node: yaml.ScalarNode, key: str) -> object:
        try:
            return self.constructor.construct_object(node)
        except yaml.MarkedYAMLError as exc:
            problem = exc.problem or exc.context or "cannot read"
            raise self.fail(node, key, f"invalid value: {_one_line(problem)}") from None
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            raise self.fail(node, key, f"invalid value: {_one_line(str(exc))}") from None

    def value(self, node: yaml.Node, key: str, depth: int) -> object:
        """Plain Python data (dict, list, scalars) for a node, within the size limits."""
        self.budget -= 1
        if self.budget < 0:
            raise self.fail(node, key, f"the document expands to more than {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise self.fail(node, key, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, key)
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, key, depth + 1) for item in node.value]
        if isinstance(node, yaml.MappingNode):
            result: dict[object, object] = {}
            for key_node, value_node in self.pairs(node, key):
                if not isinstance(key_node, yaml.ScalarNode):
                    raise self.fail(key_node, key, "keys must be strings, got a collection")
                result[self.scalar(key_node, key)] = self.value(value_node, key, depth + 1)
            return result
        raise self.fail(node, key, f"unsupported YAML node {show(type(node).__name__)}")
