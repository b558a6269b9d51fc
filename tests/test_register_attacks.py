"""The tool-registration path, attacked as a new user (or a model) would: each test is a repro.

Methods, partials, generators, and `Annotated[..., Field-like]` constraints, registered with the
public API and called with the public `run_tool_call` as a model's JSON text.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import pytest

from agentloop import ToolDefinitionError, ToolRegistry, run_tool_call

pydantic = pytest.importorskip("pydantic")  # not a dependency of agentloop; annotated_types comes with it
at = pytest.importorskip("annotated_types")

pytestmark = pytest.mark.anyio

# What a Decimal parameter advertises: a number, or a string its converter takes (the pattern).
DECIMAL_SCHEMA = {
    "type": ["number", "string"],
    "format": "decimal",
    "pattern": r"^[ \t\n\r]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?[ \t\n\r]*$",
    "maxLength": 3300,
}


async def call_tool(fn: Any, args: dict[str, Any] | str, **options: Any) -> Any:
    tools = ToolRegistry()
    tool = tools.register(fn, name="t", **options)
    return tool, await run_tool_call(tools, "t", args if isinstance(args, str) else json.dumps(args))


class Service:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def method(self, x: int) -> int:
        self.seen.append(x)
        return x

    @classmethod
    def cmethod(cls, x: int) -> int:
        return x

    @staticmethod
    def smethod(x: int) -> int:
        return x


def test_a_method_taken_from_its_class_is_refused_with_the_fix() -> None:
    # was: registered with a required "self" parameter the model had to invent
    with pytest.raises(ToolDefinitionError, match=r"first parameter is 'self'.*bound method"):
        ToolRegistry().register(Service.method)


@pytest.mark.parametrize("fn", [Service().method, Service.cmethod, Service.smethod], ids=lambda f: f.__name__)
async def test_bound_class_and_static_methods_are_tools(fn: Any) -> None:
    tool, record = await call_tool(fn, {"x": 4})
    assert tool.parameters["properties"] == {"x": {"type": "integer"}}
    assert (record.status, record.content) == ("ok", "4")


def delete_rows(user_id: int, table: str) -> str:
    return f"deleted {table} of user {user_id}"


async def test_a_partial_bound_keyword_cannot_be_overridden_by_the_model() -> None:
    # was: user_id appeared in the schema with default 7, and {"user_id": 999} reached the function
    tool, record = await call_tool(functools.partial(delete_rows, user_id=7), {"table": "t", "user_id": 999})
    assert "user_id" not in tool.parameters["properties"]
    assert record.status == "invalid_arguments"
    assert "user_id" in record.content
    _, record = await call_tool(functools.partial(delete_rows, user_id=7), {"table": "t"})
    assert (record.status, record.content) == ("ok", "deleted t of user 7")


async def agen(x: int) -> Any:
    yield x


def gen(x: int) -> Any:
    yield x


@pytest.mark.parametrize("fn", [agen, gen], ids=lambda f: f.__name__)
def test_generator_functions_are_refused_at_registration(fn: Any) -> None:
    # was: registered, then every call ended as invalid_result ("returned a generator")
    with pytest.raises(ToolDefinitionError, match="generator function"):
        ToolRegistry().register(fn)


# --- Annotated constraints are enforced, never silently dropped ----------------------------------

CONSTRAINED: list[tuple[Any, Any, Any, dict[str, Any]]] = [
    # (annotation, an accepted value, a refused value, what the schema says)
    (Annotated[int, at.Ge(0)], 0, -1, {"type": "integer", "minimum": 0}),
    (
        Annotated[int, at.Interval(gt=0, lt=10)],
        9,
        10,
        {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
    ),
    (Annotated[float, at.MultipleOf(0.5)], 1.5, 1.2, {"type": "number", "multipleOf": 0.5}),
    (Annotated[str, at.MaxLen(3)], "abc", "abcd", {"type": "string", "maxLength": 3}),
    (
        Annotated[list[int], at.Len(1, 2)],
        [1],
        [],
        {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
    ),
    (
        Annotated[int, pydantic.Field(ge=0, le=10, description="count")],
        10,
        11,
        {"type": "integer", "minimum": 0, "maximum": 10, "description": "count"},
    ),
    (Annotated[str, pydantic.Field(pattern="^a+$")], "aa", "ab", {"type": "string", "pattern": "^a+$"}),
    (Annotated[int | None, at.Ge(0)], None, -1, {"type": ["integer", "null"], "minimum": 0}),
    (Annotated[int, at.doc("how many")], 1, "x", {"type": "integer", "description": "how many"}),
    # converted types: the constraint is checked on the converted value
    (Annotated[Decimal, at.Ge(0)], "0.00", "-0.01", DECIMAL_SCHEMA),
    (Annotated[dt.timedelta, at.Gt(dt.timedelta(0))], "PT1S", "PT0S", None),
    (Annotated[bytes, at.MaxLen(3)], "YWJj", "YWJjZA==", None),  # b"abc" / b"abcd": bytes, not base64 text
    (Annotated[dt.date, at.Ge(dt.date(2024, 1, 1))], "2024-01-01", "2023-12-31", None),
    (Annotated[Path, at.MaxLen(5)], "a/b", "a/b/c/d", None),  # a Path has no len(): its text's
]


@pytest.mark.parametrize(("annotation", "good", "bad", "schema"), CONSTRAINED, ids=repr)
async def test_annotated_constraints_are_enforced(annotation: Any, good: Any, bad: Any, schema: Any) -> None:
    got: list[Any] = []

    def f(x: Any) -> str:
        got.append(x)
        return "ok"

    f.__annotations__ = {"x": annotation}
    tool, record = await call_tool(f, {"x": good})
    assert record.status == "ok", record.content
    if schema is not None:
        assert tool.parameters["properties"]["x"] == schema
    _, record = await call_tool(f, {"x": bad})
    assert record.status == "invalid_arguments", record.content
    assert len(got) == 1


@pytest.mark.parametrize(
    ("annotation", "match"),
    [
        (Annotated[int, at.Predicate(lambda v: v > 0)], "cannot enforce the constraint Predicate"),
        (Annotated[int, pydantic.Field(alias="y")], r"Field\(alias=...\)"),
        (Annotated[int, pydantic.Field(default=3)], "write `= value`"),
        (Annotated[dt.datetime, at.Timezone(None)], "cannot enforce the constraint Timezone"),
    ],
    ids=[
        "Predicate",
        "Field-alias",
        "Field-default",
        "Timezone",
    ],  # stable ids (a lambda's repr has its address)
)
def test_a_constraint_that_cannot_be_enforced_is_refused(annotation: Any, match: str) -> None:
    # was: registered, and the constraint silently ignored
    def f(x: Any) -> None: ...

    f.__annotations__ = {"x": annotation}
    with pytest.raises(ToolDefinitionError, match=match):
        ToolRegistry().register(f)


def with_field_defaults(
    x: int = pydantic.Field(3, ge=0, description="how many"),
    tags: list[str] = pydantic.Field(default_factory=list),  # noqa: B008 - the PydanticAI spelling
    name: str = pydantic.Field(description="who"),
) -> list[Any]:
    tags.append("seen")
    return [x, tags, name]


async def test_pydantic_field_as_a_default_is_its_schema_and_its_default() -> None:
    # was: `x` optional with no constraint, and a call leaving it out passed the FieldInfo object itself
    tool, record = await call_tool(with_field_defaults, {"name": "a"})
    assert tool.parameters["properties"]["x"] == {
        "type": "integer",
        "minimum": 0,
        "description": "how many",
        "default": 3,
    }
    assert tool.parameters["required"] == ["name"]
    assert (record.status, json.loads(record.content)) == ("ok", [3, ["seen"], "a"])
    _, record = await call_tool(with_field_defaults, {"name": "a"})  # a fresh list from the factory
    assert json.loads(record.content) == [3, ["seen"], "a"]
    _, record = await call_tool(with_field_defaults, {"name": "a", "x": -1})
    assert record.status == "invalid_arguments"
    _, record = await call_tool(with_field_defaults, {"x": 1})
    assert record.status == "invalid_arguments"


def logged(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:  # a sync wrapper, as most logging decorators are
        return fn(*args, **kwargs)

    return wrapper


@logged
async def fetch(when: dt.date, amount: Decimal = Decimal("1.50")) -> str:
    return f"{when}:{amount!r}"


async def test_an_async_function_under_a_sync_decorator_is_awaited() -> None:
    # was: run in a thread as a sync tool; the coroutine it returned was never awaited (invalid_result)
    tool, record = await call_tool(fetch, {"when": "2024-01-02"})
    assert tool.sandbox == "inline"
    assert (record.status, record.content) == ("ok", "2024-01-02:Decimal('1.50')")


def test_defaults_of_the_new_types_are_shown_in_their_json_form() -> None:
    def f(
        a: Decimal = Decimal("1.50"),
        b: dt.timedelta = dt.timedelta(minutes=5),
        c: bytes = b"\x00",
        d: Any = Decimal("NaN"),  # no JSON form: no default shown (the function's own still applies)
    ) -> None: ...

    props = ToolRegistry().register(f).parameters["properties"]
    assert [props[k].get("default") for k in "abcd"] == ["1.50", "PT5M", "AA==", None]


@pytest.mark.parametrize(
    "loop",
    [{"$ref": "#/$defs/a"}, {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}],
    ids=["ref", "anyOf"],
)
@pytest.mark.parametrize("closed", [True, False], ids=["fast-path", "jsonschema"])
async def test_an_explicit_schema_whose_ref_cycle_consumes_no_input_is_told_not_crashed(
    loop: Any, closed: bool
) -> None:
    # a $ref cycle that never descends into the value: checking it recurses without end
    schema = {"type": "object", "properties": {"x": {"$ref": "#/$defs/a"}}, "$defs": {"a": loop}}
    if closed:  # the shape the fast acceptance check compiles
        schema["additionalProperties"] = False

    def f(x: Any) -> str:
        return "ran"

    _, record = await call_tool(f, {"x": 1}, parameters=schema)
    assert record.status == "invalid_arguments"
    assert "refers to itself without end" in record.content
