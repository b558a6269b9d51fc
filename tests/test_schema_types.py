"""Decimal, paths, timedelta, bytes, NamedTuple and recursive types as tool parameters (and results).

From the outside: a function is registered with the public API, a call is run with the public
`run_tool_call` (as the model would send it: a JSON text) or a whole `Agent.run`, and the test
looks at what the tool received and what the model was sent back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import pathlib
from decimal import Decimal
from typing import Any, NamedTuple, TypedDict

import pytest
from jsonschema import Draft202012Validator

from agentloop import Agent, InputBudget, ToolRegistry, run_tool_call
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio

# What a Decimal parameter advertises: a number, or a string its converter takes (the pattern).
DECIMAL_SCHEMA = {
    "type": ["number", "string"],
    "format": "decimal",
    "pattern": r"^[ \t\n\r]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?[ \t\n\r]*$",
    "maxLength": 3300,
}


class Point(NamedTuple):
    """A point.

    Args:
        x: across
        y: up
    """

    x: int
    y: int = 0
    label: str = "p"


class Tree(TypedDict):
    value: int
    kids: list[Tree]


@dataclasses.dataclass
class Branch:
    name: str
    when: dt.date
    kids: list[Branch] = dataclasses.field(default_factory=list)


class Pair(TypedDict):  # two recursive types referring to each other
    left: Ring | None


class Ring(TypedDict):
    right: Pair | None


def tool_for(annotation: Any) -> tuple[ToolRegistry, dict[str, Any]]:
    got: dict[str, Any] = {}

    def f(x: Any) -> Any:
        got["x"] = x
        return x

    f.__annotations__ = {"x": annotation, "return": annotation}
    tools = ToolRegistry()
    tools.register(f, sandbox="thread")
    return tools, got


def params_of(tools: ToolRegistry) -> dict[str, Any]:
    tool = tools.get("f")
    assert tool is not None
    return tool.parameters


async def run_one(annotation: Any, value: Any, budget: InputBudget | None = None) -> tuple[Any, Any]:
    """(the call's record, what the tool received) for `{"x": value}` sent as JSON text."""
    tools, got = tool_for(annotation)
    raw = value if isinstance(value, str) and value.startswith("{") else json.dumps({"x": value})
    if budget is None:
        record = await run_tool_call(tools, "f", raw)
    else:
        model = ScriptedModel([tool_calls(call("f", raw)), text("done")])
        result = await Agent(client=model, tools=tools, input_budget=budget).run("go")
        record = result.tool_calls[0]
    return record, got.get("x", "<not called>")


# --- registration: the schemas ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "schema"),
    [
        (Decimal, DECIMAL_SCHEMA),
        (pathlib.Path, {"type": "string", "format": "path", "minLength": 1}),
        (pathlib.PurePath, {"type": "string", "format": "path", "minLength": 1}),
        (pathlib.PurePosixPath, {"type": "string", "format": "path", "minLength": 1}),
        (
            dt.timedelta,
            {
                "type": ["string", "number"],
                "format": "duration",
                "minimum": -(10**9 - 1) * 86400,
                "maximum": (10**9 - 1) * 86400,
            },
        ),
        (
            bytes,
            {
                "type": "string",
                "format": "byte",
                "contentEncoding": "base64",
                # standard base64, padded: exactly what the binder takes (tests/test_bytes_pattern.py)
                "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
            },
        ),
    ],
)
def test_leaf_schemas(annotation: Any, schema: dict[str, Any]) -> None:
    tools, _ = tool_for(annotation)
    params = params_of(tools)
    assert params["properties"]["x"] == schema
    Draft202012Validator.check_schema(params)


def test_namedtuple_schema_is_an_array_of_its_fields_in_order() -> None:
    tools, _ = tool_for(Point)
    x = params_of(tools)["properties"]["x"]
    assert x == {
        "type": "array",
        "minItems": 1,
        "maxItems": 3,
        "prefixItems": [
            {"title": "x", "description": "across", "type": "integer"},
            {"title": "y", "description": "up", "type": "integer", "default": 0},
            {"title": "label", "type": "string", "default": "p"},
        ],
    }


def test_recursive_types_are_defs_and_refs() -> None:
    tools, _ = tool_for(Tree)
    params = params_of(tools)
    assert params["properties"]["x"] == {"$ref": "#/$defs/Tree"}
    assert params["$defs"]["Tree"]["properties"]["kids"] == {
        "type": "array",
        "items": {"$ref": "#/$defs/Tree"},
    }
    Draft202012Validator.check_schema(params)


async def test_mutually_recursive_types_register_and_run() -> None:
    tools, _ = tool_for(Pair)
    assert params_of(tools)["properties"]["x"] == {"$ref": "#/$defs/Pair"}  # Ring is inlined in Pair
    value = {"left": {"right": {"left": {"right": None}}}}
    record, got = await run_one(Pair, value)
    assert (record.status, got) == ("ok", value)
    record, got = await run_one(Pair, {"left": {"right": {"left": {"right": 1}}}})
    assert record.status == "invalid_arguments"


# --- what the tool receives -----------------------------------------------------------------------

GOOD = [
    (Decimal, "12.50", Decimal("12.50")),
    (Decimal, 12.5, Decimal("12.5")),
    (Decimal, 0.1, Decimal("0.1")),  # not 0.1000000000000000055511151231257827...
    (Decimal, 10**30, Decimal(10**30)),
    (Decimal, "-1.5e3", Decimal("-1.5e3")),
    (pathlib.Path, "/data/a b.txt", pathlib.Path("/data/a b.txt")),
    (pathlib.PurePath, "rel/x", pathlib.PurePath("rel/x")),
    (dt.timedelta, "PT1H30M", dt.timedelta(hours=1, minutes=30)),
    (dt.timedelta, "P2DT0.5S", dt.timedelta(days=2, seconds=0.5)),
    (dt.timedelta, "-PT1S", dt.timedelta(seconds=-1)),
    (dt.timedelta, "P1W", dt.timedelta(days=7)),
    (dt.timedelta, 90, dt.timedelta(seconds=90)),
    (dt.timedelta, 0.000001, dt.timedelta(microseconds=1)),
    (bytes, "aGVsbG8=", b"hello"),
    (bytes, "", b""),
    (Point, [1], Point(1)),
    (Point, [1, 2, "q"], Point(1, 2, "q")),
    (
        Tree,
        {"value": 1, "kids": [{"value": 2, "kids": []}]},
        {"value": 1, "kids": [{"value": 2, "kids": []}]},
    ),
    (
        Branch,
        {"name": "a", "when": "2024-01-02", "kids": [{"name": "b", "when": "2024-01-03"}]},
        Branch("a", dt.date(2024, 1, 2), [Branch("b", dt.date(2024, 1, 3))]),
    ),
    (Tree | int, {"value": 1, "kids": []}, {"value": 1, "kids": []}),
    (Branch | int, {"name": "a", "when": "2024-01-02"}, Branch("a", dt.date(2024, 1, 2))),
    (list[Point], [[1], [2, 3]], [Point(1), Point(2, 3)]),
    (dict[str, Decimal], {"a": "1.0"}, {"a": Decimal("1.0")}),
    (Decimal | None, None, None),
]


@pytest.mark.parametrize(("annotation", "sent", "expected"), GOOD, ids=repr)
async def test_tool_receives_the_converted_value(annotation: Any, sent: Any, expected: Any) -> None:
    record, got = await run_one(annotation, sent)
    assert record.status == "ok", record.content
    assert got == expected
    assert type(got) is type(expected)
    if isinstance(expected, Decimal):
        assert str(got) == str(expected)  # the digits too, not only the value (12.50 stays 12.50)


async def test_decimal_keeps_every_digit_of_a_long_string() -> None:
    # a JSON number goes through a float (15 significant digits exact); a string keeps them all
    record, got = await run_one(Decimal, "0.10000000000000000000000001")
    assert record.status == "ok", record.content
    assert got == Decimal("0.10000000000000000000000001")


async def test_float_parameters_of_a_tool_with_a_decimal_one_stay_floats() -> None:
    # a fuzz find: a re-read of long numbers for the Decimal gave the float parameter a float subclass
    got: dict[str, Any] = {}

    def f(d: Decimal, x: float) -> None:
        got.update(d=d, x=x)

    tools = ToolRegistry()
    tools.register(f)
    record = await run_tool_call(tools, "f", '{"d": "1.5", "x": -1.9438990881485308e+71}')
    assert record.status == "ok"
    assert type(got["x"]) is float and got["x"] == -1.9438990881485308e71


@pytest.mark.parametrize(
    ("annotation", "result", "content"),
    [
        (Decimal, Decimal("12.50"), '"12.50"'),
        (dt.timedelta, dt.timedelta(days=1, hours=2, microseconds=5), '"P1DT2H0.000005S"'),
        (dt.timedelta, dt.timedelta(0), '"PT0S"'),
        (dt.timedelta, dt.timedelta(seconds=-1), '"-PT1S"'),
        (bytes, b"\x00\xff", '"AP8="'),
        (pathlib.Path, pathlib.Path("/a/b"), '"/a/b"'),
        (Point, Point(1, 2), '[1,2,"p"]'),
        (set[int], {3, 1, 2}, "[1,2,3]"),
        (list[Any], [Decimal("1.5"), {"d": dt.timedelta(minutes=1)}], '["1.5",{"d":"PT1M"}]'),
    ],
)
async def test_results_of_these_types_are_sent_as_json(annotation: Any, result: Any, content: str) -> None:
    tools = ToolRegistry()

    def r() -> Any:
        return result

    tools.register(r)
    record = await run_tool_call(tools, "r", "{}")
    assert (record.status, record.content) == ("ok", content)


async def test_a_duration_result_reads_back_as_the_same_argument() -> None:
    td = dt.timedelta(days=3, seconds=7, microseconds=123)
    tools = ToolRegistry()
    tools.register(lambda: td, name="r")
    sent = await run_tool_call(tools, "r", "{}")
    _, got = await run_one(dt.timedelta, json.loads(sent.content))
    assert got == td


# --- hostile arguments: fed back to the model, never a crash ------------------------------------------

HOSTILE = [
    (Decimal, "NaN"),
    (Decimal, "Infinity"),
    (Decimal, "-inf"),
    (Decimal, "1e999999999"),
    (Decimal, "12,5"),
    (Decimal, ""),
    (Decimal, True),
    (Decimal, [1]),
    (Decimal, "9" * 5000),
    (dt.timedelta, "P1M"),  # months: no fixed length
    (dt.timedelta, "P1Y"),
    (dt.timedelta, "PT"),
    (dt.timedelta, "P"),
    (dt.timedelta, "1 day"),
    (dt.timedelta, 10**20),
    (dt.timedelta, -1e300),
    (dt.timedelta, "P99999999999D"),
    (dt.timedelta, "PT" + "9" * 5000 + "S"),
    (dt.timedelta, True),
    (bytes, "not base64!"),
    (bytes, "aGVsbG8"),  # padding missing
    (bytes, 12),
    (pathlib.Path, ""),
    (pathlib.Path, "a\x00b"),
    (pathlib.Path, 3),
    (Point, []),
    (Point, [1, 2, "q", "extra"]),
    (Point, ["x"]),
    (Point, {"x": 1}),
    (Tree, {"value": 1, "kids": [{"value": "no", "kids": []}]}),
    (Tree, {"value": 1}),
]


@pytest.mark.parametrize(("annotation", "sent"), HOSTILE, ids=lambda v: repr(v)[:40])
async def test_hostile_argument_is_fed_back(annotation: Any, sent: Any) -> None:
    record, got = await run_one(annotation, sent)
    assert record.status == "invalid_arguments", (record.status, record.content)
    assert got == "<not called>"
    assert "Invalid arguments for tool 'f'" in record.content
    assert len(record.content) < 2000


async def test_a_ten_megabyte_decimal_is_refused_by_the_budget_before_parsing() -> None:
    record, got = await run_one(Decimal, '{"x": "' + "1" * 10_000_000 + '"}')
    assert record.status == "invalid_arguments"
    assert "more than the limit" in record.content
    assert got == "<not called>"


async def test_a_number_past_the_float_range_is_refused_as_json() -> None:
    record, got = await run_one(Decimal, '{"x": 1e400}')
    assert record.status == "invalid_arguments"
    assert got == "<not called>"


def _deep_tree(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"value": 0, "kids": []}
    for i in range(depth - 1):
        node = {"value": i, "kids": [node]}
    return node


@pytest.mark.parametrize("max_depth", [64, 128])
async def test_recursion_is_bounded_by_max_json_depth(max_depth: int) -> None:
    budget = InputBudget(max_json_depth=max_depth)
    # each tree level is two JSON levels (an object, then the kids array)
    inside = _deep_tree(max_depth // 2 - 1)
    record, got = await run_one(Branch | Tree, json.dumps({"x": inside}), budget)
    assert record.status == "ok", record.content[:300]
    assert got == inside
    record, got = await run_one(Tree, json.dumps({"x": _deep_tree(max_depth)}), budget)
    assert record.status == "invalid_arguments"
    assert "nested deeper than" in record.content


async def test_a_recursive_pydantic_model_is_defined_once_however_often_it_appears() -> None:
    import pydantic

    class PNode(pydantic.BaseModel):
        value: int
        kids: list[PNode] = []

    class Holder(pydantic.BaseModel):
        node: PNode | None = None

    PNode.model_rebuild()
    got: list[Any] = []

    def f(root: PNode, held: Holder, other: PNode | int = 0) -> None:
        got.append((root, held, other))

    tools = ToolRegistry()
    params = tools.register(f, name="f").parameters
    assert list(params["$defs"]) == ["PNode"]
    Draft202012Validator.check_schema(params)
    sent = {
        "root": {"value": 1, "kids": [{"value": 2}]},
        "held": {"node": {"value": 3}},
        "other": {"value": 4},
    }
    record = await run_tool_call(tools, "f", json.dumps(sent))
    assert record.status == "ok", record.content
    root, held, other = got[0]
    assert (root.kids[0].value, held.node.value, other.value) == (2, 3, 4)
    record = await run_tool_call(
        tools, "f", json.dumps({**sent, "root": {"value": 1, "kids": [{"value": "x"}]}})
    )
    assert record.status == "invalid_arguments"
    assert "$.root.kids[0].value" in record.content


async def test_deep_recursion_in_large_arguments_is_checked_off_the_loop_too() -> None:
    # over 8 KiB, arguments are parsed, validated and converted in a worker thread
    node: dict[str, Any] = {"name": "leaf", "when": "2024-01-01", "kids": []}
    for _ in range(60):  # 120 JSON levels, under max_json_depth=128
        node = {"name": "n", "when": "2024-01-01", "kids": [node]}
    node["name"] = "x" * 20_000
    record, got = await run_one(Branch, json.dumps({"x": node}), InputBudget(max_json_depth=128))
    assert record.status == "ok", record.content[:300]
    depth = 0
    while got.kids:
        got, depth = got.kids[0], depth + 1
    assert (depth, got.name) == (60, "leaf")


async def test_a_path_argument_is_whatever_the_model_wrote() -> None:
    # docs/tools.md: a Path argument is not a permission; agentloop neither resolves nor confines it
    record, got = await run_one(pathlib.Path, "../../etc/passwd")
    assert record.status == "ok"
    assert got == pathlib.Path("../../etc/passwd")
    assert not got.is_absolute()


@dataclasses.dataclass
class Dated:
    at: dt.date


@dataclasses.dataclass
class Counted:
    at: int  # the same key as Dated: only the value's type tells them apart, in depth


@pytest.mark.parametrize(
    ("annotation", "sent", "expected"),
    [
        (Dated | Counted, {"at": 3}, Counted(3)),
        (Dated | Counted, {"at": "2024-01-02"}, Dated(dt.date(2024, 1, 2))),
        (list[Point | Tree], [[1], {"value": 2, "kids": []}], [Point(1), {"value": 2, "kids": []}]),
        (Tree | Branch, {"name": "a", "when": "2024-01-02"}, Branch("a", dt.date(2024, 1, 2))),
        (dt.datetime | str, "tomorrow", "tomorrow"),  # both strings: the parse decides
        (Decimal | bytes, "12", Decimal("12")),  # the first member that takes it
    ],
    ids=repr,
)
async def test_a_union_converts_with_the_member_the_value_belongs_to(
    annotation: Any, sent: Any, expected: Any
) -> None:
    record, got = await run_one(annotation, sent)
    assert record.status == "ok", record.content
    assert got == expected
    assert type(got) is type(expected)


def test_the_example_in_docs_tools_md_runs_as_written() -> None:
    # A doc example is a claim: copied into a fresh module it must register (it once used an
    # undefined `tools`), and the model must be asked for each parameter it shows.
    import re
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "tools.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    namespace: dict[str, object] = {"__name__": "docs_tools_example"}
    exec(compile(blocks[0], "docs/tools.md", "exec"), namespace)
    (definition,) = namespace["tools"].definitions  # type: ignore[attr-defined]
    properties = definition["function"]["parameters"]["properties"]
    assert set(properties) == {"amount", "memo", "wait", "attachment", "report", "at", "tree"}
