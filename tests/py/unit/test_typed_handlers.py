"""Handler signatures (checked at build and worker start), typed inputs, the JSON encoder,
keyword-argument handlers and the public Context -- without a database."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import logging
import threading
import uuid
from typing import Any, Literal, TypedDict

import pydantic
import pytest

import pgflow
from pgflow import Flow
from pgflow.errors import SpecError
from pgflow.spec.signatures import classify, handler_problem
from pgflow.worker.convert import (
    AnnotationError,
    Binding,
    InputMismatch,
    bind_all,
    encode_json,
    from_json,
)
from pgflow.worker.executor import Executor
from pgflow.worker.task import Outcome, Task

# --------------------------------------------------------------------------- signatures


def test_wrong_arity_is_a_spec_error_at_the_handlers_line() -> None:
    flow = Flow("sig_bad")

    @flow.step()
    def nothing() -> None: ...

    @flow.step()
    def three(a: Any, b: Any, c: Any) -> None: ...

    @flow.step()
    def defaulted(input: Any, retries: int = 3) -> None: ...

    @flow.map()
    def mapped(item: Any, ctx: Any, extra: Any) -> None: ...

    with pytest.raises(SpecError) as caught:
        flow.spec()
    errors = caught.value.errors
    assert [e.key for e in errors] == [
        "nothing.handler",
        "three.handler",
        "defaulted.handler",
        "mapped.handler",
    ]
    lines = [nothing, three, defaulted, mapped]
    assert [e.line for e in errors] == [f.__code__.co_firstlineno for f in lines]
    assert all(e.file.endswith("test_typed_handlers.py") for e in errors)
    assert "takes no parameters" in errors[0].message
    assert "def nothing(input) or def nothing(input, ctx)" in errors[0].message
    assert "keyword arguments named run" in errors[0].message
    assert "not c" in errors[1].message
    assert "'retries' with a default" in errors[2].message
    assert "would pass the Context as 'retries'" in errors[2].message
    assert "a map step's handler takes one element" in errors[3].message


def test_signatures_the_worker_can_call() -> None:
    def plain(input: Any) -> None: ...
    def with_ctx(input: Any, ctx: Any) -> None: ...
    def optional_ctx(input: Any, ctx: Any = None) -> None: ...
    def keyword_only(input: Any, *, retries: int = 3) -> None: ...
    def star(*args: Any) -> None: ...
    def by_name(run: Any, fetch: Any, ctx: Any) -> None: ...
    def rest(run: Any, **others: Any) -> None: ...

    assert classify(plain, is_map=False, deps=()).form == "input"
    assert classify(with_ctx, is_map=False, deps=()).form == "input+context"
    assert classify(optional_ctx, is_map=False, deps=()).form == "input+context"
    assert classify(keyword_only, is_map=False, deps=()).form == "input"
    assert classify(star, is_map=False, deps=()).form == "input+context"
    shape = classify(by_name, is_map=False, deps=("fetch",))
    assert (shape.form, shape.names, shape.context) == ("keywords", ("run", "fetch"), "ctx")
    assert classify(rest, is_map=False, deps=("a",)).rest

    # a map step never takes keywords: run is just the element's name there
    def run_ctx(run: Any, ctx: Any) -> None: ...

    assert classify(run_ctx, is_map=False, deps=()).form == "keywords"
    assert classify(run_ctx, is_map=True, deps=()).form == "input+context"
    assert handler_problem(by_name, is_map=True, deps=()) is not None
    assert handler_problem(print, is_map=False, deps=()) is None  # a builtin: trusted


class Unknown:
    pass


def test_the_worker_checks_handlers_of_yaml_specs_too() -> None:
    def two_inputs(a: Any, b: Any, c: Any) -> None: ...

    def odd_type(input: Unknown) -> None: ...

    with pytest.raises(SpecError) as caught:
        bind_all(
            [
                ("f", "a", two_inputs, False, ()),
                ("f", "b", odd_type, False, ()),
                ("f", "c", lambda input: input, False, ()),
            ]
        )
    first, second = caught.value.errors
    assert (first.key, first.line) == ("f.a.handler", two_inputs.__code__.co_firstlineno)
    assert second.key == "f.b.handler"
    assert "cannot convert JSON into Unknown" in second.message


# --------------------------------------------------------------------------- conversions


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Line:
    sku: str
    qty: int
    price: decimal.Decimal


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: datetime.datetime
    lines: list[Line]
    colour: Colour = Colour.RED
    note: str | None = None


class Address(TypedDict):
    city: str
    zip: int


class Customer(pydantic.BaseModel):
    name: str
    age: int


ORDER_JSON = {
    "id": "0b6a4c2e-8f1a-4e3b-9a55-2f2d4b8f7c11",
    "placed": "2026-12-03T10:00:00+00:00",
    "lines": [{"sku": "a", "qty": 2, "price": "9.95"}],
    "colour": "blue",
}


def test_json_into_dataclasses_typeddicts_and_pydantic() -> None:
    order = from_json(Order, ORDER_JSON)
    assert order == Order(
        uuid.UUID(ORDER_JSON["id"]),  # type: ignore[arg-type]
        datetime.datetime(2026, 12, 3, 10, tzinfo=datetime.UTC),
        [Line("a", 2, decimal.Decimal("9.95"))],
        Colour.BLUE,
    )
    assert from_json(list[Address], [{"city": "Oslo", "zip": 150}]) == [
        {"city": "Oslo", "zip": 150}
    ]
    assert from_json(Customer, {"name": "Ada", "age": 36}) == Customer(name="Ada", age=36)
    assert from_json(dict[str, float], {"a": 1}) == {"a": 1.0}
    assert from_json(tuple[int, str], [1, "x"]) == (1, "x")
    assert from_json(int | None, None) is None
    assert from_json(Literal["a", "b"], "b") == "b"
    assert from_json(datetime.date, "2026-12-03") == datetime.date(2026, 12, 3)
    assert from_json(Any, {"x": 1}) == {"x": 1}


@pytest.mark.parametrize(
    ("tp", "value", "message"),
    [
        (
            Order,
            {**ORDER_JSON, "lines": [{"sku": "a", "qty": "2", "price": "1"}]},
            r"\$.lines\[0\].qty: expected an integer, got \"2\"",
        ),
        (Order, {"id": ORDER_JSON["id"]}, r"\$: Order needs lines, placed"),
        (Order, {**ORDER_JSON, "extra": 1}, r"\$: Order has no field extra"),
        (Order, {**ORDER_JSON, "colour": "green"}, r"\$.colour: expected a Colour"),
        (Order, {**ORDER_JSON, "id": "nope"}, r"\$.id: expected a UUID text"),
        (Address, {"city": "Oslo"}, r"\$: Address needs zip"),
        (Customer, {"name": "Ada", "age": "old"}, r"Customer: \$.age: "),
        (int, True, r"\$: expected an integer, got true"),
        (list[int], {"a": 1}, r"\$: expected an array"),
    ],
)
def test_input_that_does_not_fit_says_where(tp: Any, value: Any, message: str) -> None:
    with pytest.raises(InputMismatch, match=message):
        from_json(tp, value)
    assert issubclass(InputMismatch, pgflow.Fail), "no retry: the same input would not fit"


def test_annotations_without_a_json_form_are_refused_up_front() -> None:
    with pytest.raises(AnnotationError, match="cannot convert JSON into"):
        from_json(threading.Lock, {})


def test_one_encoder_for_return_values() -> None:
    value = {
        "at": datetime.datetime(2026, 12, 3, 10, 30, tzinfo=datetime.UTC),
        "day": datetime.date(2026, 12, 3),
        "amount": decimal.Decimal("10.10"),
        "id": uuid.UUID(int=1),
        "colour": Colour.RED,
        "line": Line("a", 1, decimal.Decimal("2")),
        "customer": Customer(name="Ada", age=36),
        "tags": frozenset({"x"}),
    }
    assert json.loads(encode_json(value)) == {
        "at": "2026-12-03T10:30:00+00:00",
        "day": "2026-12-03",
        "amount": "10.10",
        "id": "00000000-0000-0000-0000-000000000001",
        "colour": "red",
        "line": {"sku": "a", "qty": 1, "price": "2"},
        "customer": {"name": "Ada", "age": 36},
        "tags": ["x"],
    }
    # round trip: what the encoder writes, the input conversion reads back
    assert from_json(Line, json.loads(encode_json(Line("b", 3, decimal.Decimal("0.1"))))) == Line(
        "b", 3, decimal.Decimal("0.1")
    )
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        encode_json(object())
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        encode_json(float("nan"))


# --------------------------------------------------------------------------- calling


@dataclasses.dataclass
class Price:
    sku: str
    amount: decimal.Decimal


def test_keyword_handlers_get_run_and_each_dependency_converted() -> None:
    seen: dict[str, Any] = {}

    def total(run: Order, price_line: list[Price], ctx: pgflow.Context) -> decimal.Decimal:
        seen.update(run=run, ctx=ctx)
        return sum((p.amount for p in price_line), decimal.Decimal(0))

    binding = Binding(total, is_map=False, deps=("price_line",))
    ctx = pgflow.Context("order", step_slug="total")
    value = {
        "run": ORDER_JSON,
        "price_line": [{"sku": "a", "amount": "1.5"}, {"sku": "b", "amount": 2}],
    }
    assert binding.call(value, lambda: ctx) == decimal.Decimal("3.5")
    assert isinstance(seen["run"], Order)
    assert seen["ctx"] is ctx
    with pytest.raises(InputMismatch, match="the input has no 'price_line'"):
        binding.call({"run": ORDER_JSON}, lambda: ctx)

    def classic(input: dict[str, Any]) -> Any:
        return sorted(input)

    assert Binding(classic, is_map=False, deps=("a",)).call({"run": 1, "a": 2}, lambda: ctx) == [
        "a",
        "run",
    ]


def test_the_executor_converts_inputs_and_encodes_outputs() -> None:
    outcomes: list[Outcome] = []
    done = threading.Event()

    def record(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 2:
            done.set()

    def line_total(item: Line) -> dict[str, Any]:
        return {"sku": item.sku, "total": item.price * item.qty, "at": datetime.date(2026, 1, 2)}

    handlers = {("f", "m"): line_total}
    executor = Executor(
        2,
        handlers,
        on_outcome=record,
        on_free=lambda: None,
        run_input=lambda _: None,
        bindings=bind_all([("f", "m", line_total, True, ())]),
    )
    for index, text in enumerate(['{"sku": "a", "qty": 3, "price": "1.25"}', '{"sku": 1}']):
        t = Task("f", "r", "m", index, None, 1, 60.0, executor.handler("f", "m"))
        executor.dispatch(t, text)
    assert done.wait(10)
    executor.shutdown()
    by_index = {o.task.task_index: o for o in outcomes}
    assert json.loads(by_index[0].output or "") == {"sku": "a", "total": "3.75", "at": "2026-01-02"}
    assert by_index[1].retry is False
    assert by_index[1].error == "InputMismatch: $: Line needs price, qty"


# --------------------------------------------------------------------------- Context


def test_context_has_a_public_constructor_and_a_logger_with_the_task_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = pgflow.Context("order", "r-1", "charge", task_index=2, attempt=3, flow_input={"id": 7})
    assert ctx.flow_input == {"id": 7}
    assert pgflow.Context("order").attempt == 1
    with caplog.at_level(logging.INFO, logger="pgflow.handler"):
        ctx.logger.info("charging", extra={"amount": 5})
    record = caplog.records[-1]
    assert record.name == "pgflow.handler"
    fields = {k: getattr(record, k) for k in ("run_id", "flow", "step", "task_index", "attempt")}
    assert fields == {
        "run_id": "r-1",
        "flow": "order",
        "step": "charge",
        "task_index": 2,
        "attempt": 3,
    }
    assert record.__dict__["amount"] == 5
