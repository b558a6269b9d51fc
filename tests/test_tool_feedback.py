"""Everything that can go wrong with one tool call becomes that call's tool message; siblings survive."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

import anyio
import pytest

from agentloop import Agent, Limits, ToolDefinitionError, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


def registry() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @tools.tool
    async def explode(reason: str) -> str:
        raise RuntimeError(f"boom: {reason}")

    @tools.tool
    async def no_args() -> str:
        return "called with nothing"

    @tools.tool
    async def unencodable() -> object:
        return object()

    @tools.tool
    def sync_exit() -> str:
        raise SystemExit(3)

    return tools


async def run_calls(*calls, tools: ToolRegistry | None = None, **agent_options):
    model = ScriptedModel([tool_calls(*calls), text("done")])
    result = await Agent(client=model, tools=tools or registry(), **agent_options).run("go")
    return result, model


async def test_every_failure_is_fed_back_and_siblings_keep_their_results() -> None:
    result, model = await run_calls(
        call("add", {"a": 1, "b": 2}),
        call("nope", {}),
        call("", {"a": 1}),
        call("add", '{"a": 1,'),
        call("add", {"a": "one", "b": 2, "c": 3}),
        call("add", "[1, 2]"),
        call("explode", {"reason": "disk on fire"}),
        call("unencodable", {}),
        call("sync_exit", {}),
        call("add", {"a": 40, "b": 2}),
    )
    by_index = result.tool_calls
    statuses = [r.status for r in by_index]
    assert statuses == [
        "ok",
        "unknown_tool",
        "unknown_tool",
        "invalid_arguments",
        "invalid_arguments",
        "invalid_arguments",
        "raised",
        "invalid_result",
        "raised",
        "ok",
    ]
    contents = [r.content for r in by_index]
    assert contents[0] == "3" and contents[-1] == "42"
    assert "no tool named 'nope'" in contents[1] and "Available tools: add, explode" in contents[1]
    assert "has no function name" in contents[2]
    assert "not valid JSON" in contents[3]
    # every schema error, each with its JSON path
    assert "$.a: 'one' is not of type 'integer'" in contents[4]
    assert "Additional properties are not allowed ('c' was unexpected)" in contents[4]
    assert "must be a JSON object, got an array" in contents[5]
    assert contents[6] == "Tool 'explode' raised RuntimeError: boom: disk on fire"
    assert "cannot be encoded as JSON" in contents[7]
    assert "SystemExit" in contents[8]
    # the model received exactly these, in order, on the next request
    sent = model.requests[1]["messages"]
    assert [m["content"] for m in sent if m["role"] == "tool"] == contents
    assert result.output == "done"


@pytest.mark.parametrize("raw", ["", None, "null", "{}"])
async def test_empty_arguments_mean_no_arguments(raw: str | None) -> None:
    result, _ = await run_calls(call("no_args", raw))
    assert result.tool_calls[0].status == "ok"
    assert result.tool_calls[0].content == "called with nothing"


async def test_missing_required_argument_names_the_property() -> None:
    result, _ = await run_calls(call("add", {"a": 1}))
    assert result.tool_calls[0].status == "invalid_arguments"
    assert "$: 'b' is a required property" in result.tool_calls[0].content


async def test_already_parsed_object_arguments_are_accepted() -> None:
    from agentloop import ModelTurn, Usage

    turn = ModelTurn(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "p1", "type": "function", "function": {"name": "add", "arguments": '{"a":2,"b":3}'}}
            ],
        },
        Usage(1),
    )
    model = ScriptedModel([turn, text("ok")])
    result = await Agent(client=model, tools=registry()).run("go")
    assert result.tool_calls[0].content == "5"


async def test_error_formatter_hook_decides_what_is_revealed() -> None:
    def terse(tool_name: str, exc: BaseException) -> str:
        return f"{tool_name} failed; try something else"

    result, _ = await run_calls(call("explode", {"reason": "secret path /etc/x"}), format_tool_error=terse)
    assert result.tool_calls[0].content == "explode failed; try something else"
    assert "secret" not in result.tool_calls[0].content


async def test_str_results_are_sent_as_is_and_others_as_json() -> None:
    tools = ToolRegistry()

    class Color(enum.Enum):
        RED = "red"

    @dataclass
    class Point:
        x: int
        y: int

    @tools.tool
    async def as_text() -> str:
        return '{"not": "re-encoded"}'

    @tools.tool
    async def as_structure() -> dict:
        return {"point": Point(1, 2), "color": Color.RED, "none": None, "unicode": "Lisboa ☀"}

    result, _ = await run_calls(call("as_text", {}), call("as_structure", {}), tools=tools)
    assert result.tool_calls[0].content == '{"not": "re-encoded"}'
    assert json.loads(result.tool_calls[1].content) == {
        "point": {"x": 1, "y": 2},
        "color": "red",
        "none": None,
        "unicode": "Lisboa ☀",
    }


async def test_arguments_are_bound_to_python_types() -> None:
    tools = ToolRegistry()

    class Unit(enum.Enum):
        C = "celsius"
        F = "fahrenheit"

    @dataclass
    class Place:
        city: str
        country: str = "PT"

    seen: dict[str, object] = {}

    @tools.tool
    async def forecast(place: Place, unit: Unit = Unit.C, days: int = 1) -> str:
        seen.update(place=place, unit=unit, days=days)
        return "ok"

    result, _ = await run_calls(
        call("forecast", {"place": {"city": "Faro"}, "unit": "fahrenheit"}), tools=tools
    )
    assert result.tool_calls[0].status == "ok"
    assert seen == {"place": Place("Faro", "PT"), "unit": Unit.F, "days": 1}


async def test_inline_timeout_and_output_cap() -> None:
    tools = ToolRegistry()
    never = anyio.Event()

    @tools.tool(limits=Limits(timeout=0.05))
    async def slow() -> str:
        await never.wait()
        return "unreachable"

    @tools.tool(limits=Limits(output_bytes=100))
    async def chatty() -> str:
        return "x" * 10_000

    @tools.tool
    async def quick() -> str:
        return "fine"

    result, _ = await run_calls(call("slow", {}), call("chatty", {}), call("quick", {}), tools=tools)
    slow_r, chatty_r, quick_r = result.tool_calls
    assert slow_r.status == "timeout" and "timed out after 0.05 s" in slow_r.content
    assert chatty_r.status == "output_limit"
    assert (
        chatty_r.content.startswith("x" * 100)
        and "[output truncated: 10000 bytes, limit 100]" in chatty_r.content
    )
    assert quick_r.status == "ok"


async def test_max_concurrent_tools_caps_a_run() -> None:
    tools = ToolRegistry()
    running = 0
    peak = 0
    gate = anyio.Event()
    arrived = 0

    @tools.tool
    async def work(i: int) -> int:
        nonlocal running, peak, arrived
        running += 1
        arrived += 1
        peak = max(peak, running)
        if arrived >= 2:
            gate.set()
        await gate.wait()  # the first two wait for each other: the cap must admit exactly two
        running -= 1
        return i

    result, _ = await run_calls(
        *(call("work", {"i": i}) for i in range(6)), tools=tools, max_concurrent_tools=2
    )
    assert [r.content for r in result.tool_calls] == [str(i) for i in range(6)]
    assert peak == 2


def test_registration_errors_happen_at_registration() -> None:
    tools = ToolRegistry()

    @tools.tool
    async def twin() -> None: ...

    with pytest.raises(ToolDefinitionError, match="already registered"):
        tools.register(twin)
    with pytest.raises(ToolDefinitionError, match=r"(?i)valid JSON schema"):
        tools.register(
            lambda **kw: None, name="bad", parameters={"type": "object", "properties": {"x": {"type": 12}}}
        )
    with pytest.raises(ToolDefinitionError, match="type 'object'"):
        tools.register(lambda **kw: None, name="arr", parameters={"type": "array"})
    with pytest.raises(ToolDefinitionError, match="needs an async function"):
        tools.register(lambda: None, name="sync_inline", sandbox="inline")
    with pytest.raises(ToolDefinitionError, match="unknown sandbox mode"):
        tools.register(twin, name="other", sandbox="docker")  # type: ignore[arg-type]
    with pytest.raises(ToolDefinitionError):
        tools.register(lambda: None, name="has space")
    assert tools.names == ["twin"]  # nothing half-registered


def test_explicit_schema_is_sent_exactly() -> None:
    tools = ToolRegistry()
    schema = {
        "type": "object",
        "properties": {"q": {"type": "string", "minLength": 2}},
        "required": ["q"],
    }
    tool = tools.register(lambda q: q, name="search", description="Search.", parameters=schema)
    assert tools.definitions == [
        {"type": "function", "function": {"name": "search", "parameters": schema, "description": "Search."}}
    ]
    assert tool.validation_errors({"q": "x"}) == ["$.q: 'x' is too short"]
    assert tool.sandbox == "thread"
