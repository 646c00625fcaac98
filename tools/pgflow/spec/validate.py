"""Validation: a :class:`~pgflow.spec.model.RawFlow` to a frozen :class:`FlowSpec`.

:func:`validate` checks a raw flow against the rules of the SQL API (the same
rules, the same limits, read from :mod:`pgflow.options`) and returns a
:class:`FlowSpec` whose steps are in topological order, or raises one
:class:`~pgflow.errors.SpecError` listing every problem it found, in line order.
Problems of every kind are found in one pass: a wrong option value does not
hide an unknown dependency or a cycle.  Only dependencies on a step whose own
slug is missing or invalid are not checked (that slug is reported instead).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pgflow.errors import SpecError
from pgflow.options import (
    FLOW_CONCURRENCY_KEY_FIRSTS,
    FLOW_KEYS,
    FLOW_OPTIONS,
    OPTION_MINIMUMS,
    STEP_KEYS,
    STEP_OPTIONS,
    SUBFLOW_STEP_OPTIONS,
    Concurrency,
    Option,
    step_option,
)
from pgflow.spec.model import (
    HANDLER_RE,
    OPTION_MAXIMUM,
    FlowSpec,
    RawFlow,
    RawStep,
    StepSpec,
    Value,
    canonical_json,
    describe,
    did_you_mean,
    pattern_problem,
    show,
    slug_problem,
)

# --------------------------------------------------------------------------- validation


def in_line_order(errors: Sequence[SpecError]) -> list[SpecError]:
    """Errors sorted by line (stable; files keep the order they first appear in)."""
    files: dict[str, int] = {}
    for error in errors:
        files.setdefault(error.file, len(files))
    return sorted(errors, key=lambda e: (files[e.file], e.line or 0))


def raise_errors(errors: Sequence[SpecError]) -> None:
    """Raise one SpecError for the errors, in line order (nothing when there are none)."""
    if errors:
        raise SpecError.collect(in_line_order(errors))


class _Checker:
    """Collects the problems of one raw flow."""

    def __init__(self, raw: RawFlow) -> None:
        self.raw = raw
        self.errors: list[SpecError] = []

    def error(self, line: int | None, key: str, message: str) -> None:
        self.errors.append(SpecError(self.raw.origin.file, line, key, message))

    def unknown_keys(self, fields: Mapping[str, Value], allowed: Sequence[str]) -> None:
        for name, value in fields.items():
            if name not in allowed:
                hint = did_you_mean(name, allowed) or f" (allowed: {', '.join(allowed)})"
                self.error(value.line, value.key, f"unknown key{hint}")

    def slug(self, value: Value) -> str | None:
        if not isinstance(value.value, str):
            self.error(value.line, value.key, f"must be a string, got {describe(value.value)}")
            return None
        problem = slug_problem(value.value)
        if problem:
            self.error(value.line, value.key, f"invalid slug {show(value.value)}: {problem}")
            return None
        return value.value

    def option(self, fields: Mapping[str, Value], name: str) -> int | None:
        value = fields.get(name)
        if value is None:
            return None
        minimum = OPTION_MINIMUMS[name]
        if not isinstance(value.value, int) or isinstance(value.value, bool):
            self.error(
                value.line,
                value.key,
                f"must be an integer >= {minimum}, got {describe(value.value)}",
            )
            return None
        if value.value < minimum:
            self.error(value.line, value.key, f"must be >= {minimum}, got {value.value}")
            return None
        if value.value > OPTION_MAXIMUM:
            self.error(value.line, value.key, f"must be <= {OPTION_MAXIMUM}, got {value.value}")
            return None
        return value.value

    def boolean(self, fields: Mapping[str, Value], name: str) -> bool | None:
        value = fields.get(name)
        if value is None:
            return None
        if not isinstance(value.value, bool):
            self.error(value.line, value.key, f"must be true or false, got {describe(value.value)}")
            return None
        return value.value

    def choice(self, fields: Mapping[str, Value], name: str, choices: Sequence[str]) -> str | None:
        value = fields.get(name)
        if value is None:
            return None
        allowed = ", ".join(choices)
        if not isinstance(value.value, str):
            self.error(
                value.line, value.key, f"must be one of {allowed}, got {describe(value.value)}"
            )
            return None
        if value.value not in choices:
            hint = did_you_mean(value.value, choices)
            self.error(
                value.line,
                value.key,
                f"invalid mode {show(value.value)}{hint}; use one of {allowed}",
            )
            return None
        return value.value

    def pattern(self, fields: Mapping[str, Value], name: str) -> str | None:
        value = fields.get(name)
        if value is None:
            return None
        problem = pattern_problem(value.value)
        if problem:
            self.error(value.line, value.key, problem)
            return None
        return canonical_json(value.value)

    def concurrency(
        self, fields: Mapping[str, Value], option: Option, firsts: Sequence[str], whose: str
    ) -> Concurrency | None:
        """``concurrency: N`` or ``{limit: N, key: <path>}``; ``firsts``: what the key's first
        segment may be (``whose`` says why, for the message)."""
        value = fields.get(option.yaml)
        if value is None:
            return None
        given = value.value
        example = "concurrency: 3 or concurrency: {limit: 3, key: run.tenant}"
        if isinstance(given, Concurrency):
            given = {"limit": given.limit, "key": given.key}
        if isinstance(given, int) and not isinstance(given, bool):
            given = {"limit": given}
        if not isinstance(given, Mapping):
            self.error(
                value.line,
                value.key,
                f"must be a limit or a mapping {{limit, key}}, got {describe(given)}"
                f" (write {example})",
            )
            return None
        ok = True
        for name in given:
            if name not in ("limit", "key"):
                hint = did_you_mean(str(name), ("limit", "key")) or " (allowed: limit, key)"
                self.error(value.line, f"{value.key}.{name}", f"unknown key{hint}")
                ok = False
        limit, key = given.get("limit"), given.get("key")
        minimum = option.minimum or 1
        if limit is None:
            self.error(
                value.line,
                f"{value.key}.limit",
                f"missing: how many tasks may run at once, e.g. {example}",
            )
            ok = False
        elif not isinstance(limit, int) or isinstance(limit, bool):
            self.error(
                value.line,
                value.key,
                f"the limit must be an integer >= {minimum}, got {describe(limit)}"
                " (leave concurrency out for no limit)",
            )
            ok = False
        elif not minimum <= limit <= OPTION_MAXIMUM:
            self.error(
                value.line,
                value.key,
                f"the limit must be between {minimum} and {OPTION_MAXIMUM}, got {limit}"
                " (leave concurrency out for no limit)",
            )
            ok = False
        if key is not None:
            path = key.split(".") if isinstance(key, str) else []
            if not path or "" in path or (len(path) < 2 and path[0] != "item"):
                shown = show(key) if isinstance(key, str) else describe(key)
                self.error(
                    value.line,
                    f"{value.key}.key",
                    f"invalid key path {shown}: a dotted path into the task's input,"
                    " e.g. run.tenant",
                )
                ok = False
            elif path[0] not in firsts:
                self.error(
                    value.line,
                    f"{value.key}.key",
                    f"key path {show(key)} starts with {show(path[0])}; {whose}"
                    f" (use one of: {', '.join(firsts)})",
                )
                ok = False
        if not ok:
            return None
        assert isinstance(limit, int)
        return Concurrency(limit, key if isinstance(key, str) else None)

    def handler(self, fields: Mapping[str, Value]) -> str | None:
        value = fields.get("handler")
        if value is None:
            return None
        if not isinstance(value.value, str) or not HANDLER_RE.fullmatch(value.value):
            self.error(
                value.line,
                value.key,
                f'must look like "package.module:function", got {describe(value.value)}',
            )
            return None
        return value.value

    def depends_on(self, fields: Mapping[str, Value]) -> list[tuple[str, Value]]:
        value = fields.get("depends_on")
        if value is None:
            return []
        if not isinstance(value.value, list | tuple):
            hint = (
                f" (write [{value.value}])" if isinstance(value.value, str) and value.value else ""
            )
            self.error(
                value.line,
                value.key,
                f"must be a list of step slugs, got {describe(value.value)}{hint}",
            )
            return []
        deps: list[tuple[str, Value]] = []
        for index, item in enumerate(value.value):
            where = value.items[index] if index < len(value.items) else value
            if not isinstance(item, str):
                self.error(where.line, value.key, f"must list step slugs, got {describe(item)}")
                continue
            deps.append((item, where))
        return deps


@dataclass
class _Draft:
    raw: RawStep
    index: int
    slug: str | None  # None: missing or invalid (reported)
    deps: list[tuple[str, Value]]
    step: dict[str, Any]


def validate(raw: RawFlow) -> FlowSpec:
    """Check a raw flow and build its model; raise one SpecError listing every problem."""
    check = _Checker(raw)
    prefix = raw.key_prefix
    check.unknown_keys(raw.fields, FLOW_KEYS)

    flow_slug: str | None = None
    slug_value = raw.fields.get("flow")
    if slug_value is None:
        check.error(raw.line, f"{prefix}flow", "missing: name the flow, e.g. flow: my_flow")
    else:
        flow_slug = check.slug(slug_value)
    flow_opts: dict[str, Any] = {}
    for option in FLOW_OPTIONS:
        if option.kind == "concurrency":
            value: object = check.concurrency(
                raw.fields,
                option,
                FLOW_CONCURRENCY_KEY_FIRSTS,
                "a flow's limit is keyed by the run's input",
            )
        else:
            value = _checked(check, raw.fields, option)
        if value is not None:
            flow_opts[option.name] = value

    if raw.steps is None:
        check.error(raw.line, f"{prefix}steps", "missing: a flow needs at least one step")
    elif not raw.steps:
        line = raw.steps_value.line if raw.steps_value else raw.line
        check.error(line, f"{prefix}steps", "is empty: a flow needs at least one step")

    drafts: list[_Draft] = []
    for index, raw_step in enumerate(raw.steps or ()):
        drafts.append(_check_step(check, raw_step, index))

    ordered = _check_graph(check, drafts)
    raise_errors(check.errors)

    assert flow_slug is not None
    steps = tuple(StepSpec(**drafts[i].step) for i in ordered)
    return FlowSpec(slug=flow_slug, steps=steps, origin=raw.origin, line=raw.line, **flow_opts)


def _check_step(check: _Checker, raw: RawStep, index: int) -> _Draft:
    fields = raw.fields
    check.unknown_keys(fields, STEP_KEYS)
    slug: str | None = None
    if "slug" not in fields:
        check.error(raw.line, f"{raw.key}.slug", "missing: every step needs a slug")
    else:
        slug = check.slug(fields["slug"])
    step: dict[str, Any] = {"slug": slug, "line": raw.line}
    for option in STEP_OPTIONS:
        if option.kind not in ("deps", "concurrency"):  # deps: with the graph; below
            value = _checked(check, fields, option)
            step[option.name] = option.default if value is None else value
    step["handler"] = raw.handler if raw.handler is not None else check.handler(fields)
    deps = check.depends_on(fields)
    if "wait_for" not in fields and "flow" not in fields:  # those refuse it below
        firsts = ["run", *(dep for dep, _ in deps), *(["item"] if step["map"] else [])]
        whose = "a step's limit is keyed by its input: run, a dependency" + (
            " or item (the map task's element)" if step["map"] else " (item: map steps only)"
        )
        step["concurrency"] = check.concurrency(fields, step_option("concurrency"), firsts, whose)
    if "wait_for" in fields:
        _check_wait(check, raw, step, [dep for dep, _ in deps])
    if "flow" in fields:
        _check_subflow(check, raw, step)
    return _Draft(raw=raw, index=index, slug=slug, deps=deps, step=step)


WAIT_EVENT_RE: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9_.:-]{0,127}")
WAIT_FOR_KEYS: Final = ("event", "key", "timeout")
#: Step keys that only make sense for a step with tasks.
TASK_ONLY_KEYS: Final = (
    "max_attempts", "base_delay", "start_delay", "heartbeat", "max_delay", "jitter", "map",
    "timeout", "concurrency",
)  # fmt: skip


def _check_wait(check: _Checker, raw: RawStep, step: dict[str, Any], deps: list[str]) -> None:
    """``wait_for: {event, key, timeout}``: a wait step (no handler, no task)."""
    value = raw.fields["wait_for"]
    where = value.key
    if not isinstance(value.value, Mapping):
        check.error(
            value.line,
            where,
            "must be a mapping {event: ..., key: run.<field>, timeout: <seconds>},"
            f" got {describe(value.value)}",
        )
        return
    spec: Mapping[str, Any] = value.value
    for name in spec:
        if name not in WAIT_FOR_KEYS:
            hint = (
                did_you_mean(str(name), WAIT_FOR_KEYS) or f" (allowed: {', '.join(WAIT_FOR_KEYS)})"
            )
            check.error(value.line, f"{where}.{name}", f"unknown key{hint}")
    event, key, timeout = spec.get("event"), spec.get("key"), spec.get("timeout")
    if event is None:
        check.error(
            value.line, f"{where}.event", "missing: the event it waits for, e.g. event: approval"
        )
    elif not isinstance(event, str) or not WAIT_EVENT_RE.fullmatch(event):
        check.error(
            value.line,
            f"{where}.event",
            f"invalid event name {show(event) if isinstance(event, str) else describe(event)}:"
            " a letter, then letters, digits, _ . : or - (at most 128)",
        )
        event = None
    if key is None:
        check.error(
            value.line,
            f"{where}.key",
            "missing: the path of the key in the input, e.g. key: run.order_id",
        )
    elif not isinstance(key, str) or "" in key.split(".") or len(key.split(".")) < 2:
        check.error(
            value.line,
            f"{where}.key",
            f"invalid key path {show(key) if isinstance(key, str) else describe(key)}: a dotted"
            " path into the step input, e.g. run.order_id or <dependency>.id",
        )
        key = None
    elif key.split(".")[0] != "run" and key.split(".")[0] not in deps:
        allowed = ", ".join(["run", *deps])
        check.error(
            value.line,
            f"{where}.key",
            f"key path {show(key)} starts with {show(key.split('.')[0])}, which is neither run"
            f" nor a dependency (use one of: {allowed})",
        )
        key = None
    if timeout is not None:
        minimum = OPTION_MINIMUMS["timeout"]
        if (
            not isinstance(timeout, int)
            or isinstance(timeout, bool)
            or not (minimum <= timeout <= OPTION_MAXIMUM)
        ):
            check.error(
                value.line,
                f"{where}.timeout",
                f"must be an integer of seconds between {minimum} and {OPTION_MAXIMUM},"
                f" got {describe(timeout)}",
            )
            timeout = None
    if raw.handler is not None or "handler" in raw.fields:
        line = raw.fields["handler"].line if "handler" in raw.fields else raw.line
        check.error(
            line, f"{raw.key}.handler", "a wait step has no handler: emit_event completes it"
        )
    for name in TASK_ONLY_KEYS:
        if name in raw.fields:
            hint = {
                "timeout": " (write it as wait_for.timeout)",
                "concurrency": " (limit the steps that depend on it instead)",
            }.get(name, "")
            check.error(
                raw.fields[name].line,
                raw.fields[name].key,
                f"does not apply to a wait step (it has no task){hint}",
            )
    step["wait_event"], step["wait_key"], step["timeout"] = event, key, timeout
    step["handler"] = None


SUBFLOW_RE: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9_]{0,127}(@[1-9][0-9]{0,8})?")


def _check_subflow(check: _Checker, raw: RawStep, step: dict[str, Any]) -> None:
    """``flow: <name>``: a sub-flow step (no handler; each task is a run of that flow)."""
    value = raw.fields["flow"]
    name = value.value
    if not isinstance(name, str) or not SUBFLOW_RE.fullmatch(name) or name.split("@")[0] == "run":
        shown = show(name) if isinstance(name, str) else describe(name)
        check.error(
            value.line,
            value.key,
            f"invalid flow {shown}: the name of another flow (a letter, then letters, digits"
            " or _), optionally with a version: ingest or ingest@2",
        )
        name = None
    if "wait_for" in raw.fields:
        check.error(value.line, value.key, "a step either waits for an event or runs a flow")
    if raw.handler is not None or "handler" in raw.fields:
        line = raw.fields["handler"].line if "handler" in raw.fields else raw.line
        check.error(
            line,
            f"{raw.key}.handler",
            "a sub-flow step has no handler: its tasks are runs of"
            f" flow {show(name) if name else 'it names'}",
        )
    allowed = {step_option(o).yaml for o in SUBFLOW_STEP_OPTIONS}
    for option in STEP_OPTIONS:
        if option.yaml in raw.fields and option.yaml not in allowed:
            check.error(
                raw.fields[option.yaml].line,
                raw.fields[option.yaml].key,
                "does not apply to a sub-flow step (its child run's steps have their own)"
                + (
                    ": set concurrency on the child flow or its steps"
                    if option.name == "concurrency"
                    else ""
                ),
            )
    step["subflow"] = name
    step["handler"] = None


def subflow_problems(flows: Sequence[FlowSpec]) -> list[str]:
    """Cycles of sub-flows among the flows of one build (by flow name, every version),
    as messages naming the step that closes each and the cycle (``c -> a -> b -> c``)."""
    edges: dict[str, list[tuple[str, FlowSpec, StepSpec]]] = {}
    for flow in flows:
        for step in flow.steps:
            if step.subflow_name is not None:
                edges.setdefault(flow.slug, []).append((step.subflow_name, flow, step))
    problems: list[str] = []
    reported: set[frozenset[str]] = set()
    for start in sorted(edges):
        # depth-first from start: a path back to it is a cycle
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            name, path = stack.pop()
            for child, flow, step in edges.get(name, ()):
                if child == start:
                    cycle = [*path, start]
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        where = f"{flow.origin.file}:{step.line}" if step.line else flow.origin.file
                        problems.append(
                            f"{where}: step {show(step.slug)} of flow {show(flow.slug)} closes a"
                            f" cycle of sub-flows: {' -> '.join(cycle)} (a flow cannot run"
                            " itself, directly or through other flows)"
                        )
                elif child not in path:
                    stack.append((child, [*path, child]))
    return problems


def _checked(check: _Checker, fields: Mapping[str, Value], option: Option) -> object:
    """The checked value of one option (``None`` when absent or invalid)."""
    if option.kind == "integer":
        return check.option(fields, option.yaml)
    if option.kind in ("boolean", "map"):
        return check.boolean(fields, option.yaml)
    if option.kind == "choice":
        return check.choice(fields, option.yaml, option.choices)
    if option.kind == "pattern":
        return check.pattern(fields, option.yaml)
    raise AssertionError(f"no check for option kind {option.kind!r}")


def _check_graph(check: _Checker, drafts: list[_Draft]) -> list[int]:
    """Duplicates, dependencies, map arity and cycles; the topological order of drafts.

    Runs whatever else is wrong with the flow.  Steps without a valid slug
    take no part; while some step has none, a dependency that names no step
    is not reported (it may name that step: its slug is reported instead).
    """
    by_slug: dict[str, _Draft] = {}
    unnamed = any(draft.slug is None for draft in drafts)
    for draft in drafts:
        if draft.slug is None:
            continue
        first = by_slug.get(draft.slug)
        if first is not None:
            slug_value = draft.raw.fields["slug"]
            at = f" (first defined at line {first.raw.line})" if first.raw.line else ""
            check.error(
                slug_value.line, slug_value.key, f"duplicate step slug {show(draft.slug)}{at}"
            )
            continue
        by_slug[draft.slug] = draft

    for draft in drafts:
        seen: set[str] = set()
        deps_value = draft.raw.fields.get("depends_on")
        for dep, where in draft.deps:
            key = deps_value.key if deps_value else f"{draft.raw.key}.depends_on"
            if dep in seen:
                check.error(where.line, key, f"lists {show(dep)} more than once")
            elif dep == draft.slug:
                check.error(where.line, key, f"step {show(dep)} cannot depend on itself")
            elif dep not in by_slug and not unnamed:
                hint = did_you_mean(dep, [s for s in by_slug if s != draft.slug])
                check.error(where.line, key, f"unknown step {show(dep)}{hint}")
            seen.add(dep)
        if draft.step["map"] and len(draft.deps) > 1:
            assert deps_value is not None
            names = ", ".join(dep for dep, _ in draft.deps)
            check.error(
                deps_value.line,
                deps_value.key,
                f"a map step takes its array from at most one dependency, got {len(draft.deps)}"
                f" ({names})",
            )
        draft.step["depends_on"] = tuple(dep for dep, _ in draft.deps)

    # the graph of the steps that have a slug, over the dependencies that name one
    edges = {
        slug: tuple(
            dict.fromkeys(d for d in draft.step["depends_on"] if d in by_slug and d != slug)
        )
        for slug, draft in by_slug.items()
    }
    cycle = _find_cycle(drafts, by_slug, edges)
    if cycle:
        start = by_slug[cycle[0]]
        deps_value = start.raw.fields.get("depends_on")
        line = deps_value.line if deps_value else start.raw.line
        key = deps_value.key if deps_value else f"{start.raw.key}.depends_on"
        check.error(line, key, "dependency cycle: " + " -> ".join(cycle))
    if check.errors:
        return []
    return _topological_order(drafts, by_slug)


def _find_cycle(
    drafts: list[_Draft], by_slug: Mapping[str, _Draft], edges: Mapping[str, tuple[str, ...]]
) -> list[str] | None:
    """The first cycle met walking the steps in spec order, as slugs ending where it starts."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(by_slug, white)
    for root in drafts:
        if root.slug is None or by_slug[root.slug] is not root or colour[root.slug] != white:
            continue
        path: list[str] = [root.slug]
        stack = [iter(edges[root.slug])]
        colour[root.slug] = grey
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                colour[path.pop()] = black
                stack.pop()
            elif colour[dep] == grey:
                cycle = path[path.index(dep) :]
                # read "a -> b" as "b depends on a" (the order steps would run in,
                # the direction of `pgflow graph` arrows); start at the step
                # listed first in the spec so the message is stable
                cycle.reverse()
                first = min(range(len(cycle)), key=lambda i: by_slug[cycle[i]].index)
                cycle = cycle[first:] + cycle[:first]
                return [*cycle, cycle[0]]
            elif colour[dep] == white:
                colour[dep] = grey
                path.append(dep)
                stack.append(iter(edges[dep]))
    return None


def _topological_order(drafts: list[_Draft], by_slug: Mapping[str, _Draft]) -> list[int]:
    """Kahn's algorithm; among ready steps the earliest in the spec goes first."""
    waiting = {d.index: len(d.step["depends_on"]) for d in drafts}
    dependents: dict[str, list[int]] = {slug: [] for slug in by_slug}
    for draft in drafts:
        for dep in draft.step["depends_on"]:
            dependents[dep].append(draft.index)
    ready = [index for index, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        slug = drafts[index].slug
        assert slug is not None
        for dependent in dependents[slug]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, dependent)
    return order
