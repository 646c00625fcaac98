"""Does the database hold the flow a spec describes?  (``pgflow.flow_shape``.)

A worker compares each flow it serves with the database before claiming
anything: the structure -- steps, their types, dependencies, conditions and
modes, the options :mod:`pgflow.options` marks structural -- must be the
spec's.  Tunables may differ (they are updated in place); the worker takes
them from the database.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pgflow.options import SHAPE_KEYS, STEP_OPTIONS, Option, sql_value
from pgflow.spec.model import FlowSpec, StepSpec


def _shape_value(step: StepSpec, option: Option) -> Any:
    """A structural option of a spec's step as ``flow_shape`` writes it."""
    return sql_value(option, getattr(step, option.name))


def expected_shape(spec: FlowSpec) -> list[dict[str, Any]]:
    """The structure part of ``pgflow.flow_shape`` that a spec implies."""
    return [
        {
            "step_slug": step.slug,
            **{
                option.shape_key: _shape_value(step, option)
                for option in STEP_OPTIONS
                if option.shape_key is not None
            },
            "step_type": step.step_type,
            # what a wait step waits for (flow_shape's "wait"; null for other steps)
            "wait": None if not step.waits else {"event": step.wait_event, "key": step.wait_key},
            # the flow a sub-flow step runs (flow_shape's "subflow"; null for other steps)
            "subflow": step.subflow,
        }
        for step in spec.steps
    ]


def shape_differences(spec: FlowSpec, shape: Mapping[str, Any] | None) -> list[str]:
    """Human-readable differences between a spec and ``flow_shape`` (empty: same)."""
    if shape is None:
        return [f'flow "{spec.slug}" does not exist in the database']
    have = {s["step_slug"]: s for s in shape["steps"]}
    want = {s["step_slug"]: s for s in expected_shape(spec)}
    diffs = [f'step "{slug}" is missing in the database' for slug in want if slug not in have]
    diffs += [f'the database has step "{slug}" the spec lacks' for slug in have if slug not in want]
    for slug in want.keys() & have.keys():
        for key in (*SHAPE_KEYS, "wait", "subflow"):
            if want[slug][key] != have[slug].get(key):
                diffs.append(
                    f'step "{slug}": {key} is {json.dumps(have[slug].get(key))} in the database,'
                    f" {json.dumps(want[slug][key])} in the spec"
                )
    return sorted(diffs)
