"""The testing kit's in-memory models: TestModel (schema-generated calls to every tool) and
FunctionModel (exact scripts), plus an example of a user testing their own agent with them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import sys
import uuid
from typing import Annotated, Any, Literal, TypedDict

import pytest

from agentloop import (
    Agent,
    BadRequestError,
    ConfigurationError,
    MissingDependencyError,
    ModelTurn,
    ToolRegistry,
    Usage,
)
from agentloop.testing import FunctionModel, TestModel, call, error, generate_arguments, text, tool_calls

pytestmark = pytest.mark.anyio

pytest.importorskip(
    "hypothesis_jsonschema", reason="TestModel needs hypothesis-jsonschema (agentloop[testing])"
)


# --- a registry with every kind of parameter the schema builder supports ---------------------------


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Level(enum.IntEnum):
    ONE = 1
    TWO = 2


@dataclasses.dataclass
class Address:
    street: str
    city: str
    zip_code: str | None = None


@dataclasses.dataclass
class Customer:
    name: str
    addresses: list[Address]
    priority: Priority = Priority.LOW


class Filters(TypedDict, total=False):
    tags: list[str]
    since: dt.date


def full_registry(seen: dict[str, dict[str, Any]]) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def create_ticket(
        customer: Customer,
        priority: Priority,
        channel: Literal["email", "phone", "chat"],
        level: Level,
        filters: Filters,
        due: dt.datetime,
        ref: uuid.UUID,
        span: tuple[int, str],
        labels: set[str],
        notes: Annotated[str, "Free text"] = "",
        assignee: str | None = None,
        weights: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        """Open a support ticket."""
        # the arguments arrive converted: this is what TestModel checks end to end
        assert isinstance(customer, Customer) and all(isinstance(a, Address) for a in customer.addresses)
        assert isinstance(customer.priority, Priority) and isinstance(priority, Priority)
        assert channel in ("email", "phone", "chat") and isinstance(level, Level)
        assert isinstance(due, dt.datetime) and isinstance(ref, uuid.UUID)
        assert isinstance(span, tuple) and isinstance(labels, set)
        seen["create_ticket"] = {"customer": customer, "priority": priority, "level": level, "span": span}
        return {"ticket": 1, "priority": priority.value}

    @tools.tool
    def lookup_order(order_id: int, include_items: bool = False) -> str:
        """Find an order (a sync tool: runs in a worker thread)."""
        seen["lookup_order"] = {"order_id": order_id}
        return f"order {order_id}"

    @tools.tool
    async def no_params() -> str:
        return "pong"

    async def raw_schema(**kwargs: Any) -> dict[str, Any]:
        seen["raw_schema"] = kwargs
        return kwargs

    tools.register(
        raw_schema,
        name="raw_schema",
        description="An explicit 2020-12 schema with tuple items, bounds and a pattern.",
        parameters={
            "type": "object",
            "properties": {
                "point": {
                    "type": "array",
                    "prefixItems": [{"type": "integer"}, {"type": "string"}],
                    "items": False,
                },
                "count": {"type": "integer", "minimum": 3, "maximum": 7},
                "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "kind": {"const": "fixed"},
            },
            "required": ["point", "count", "code", "kind"],
            "additionalProperties": False,
        },
    )
    return tools


async def test_testmodel_calls_every_tool_with_valid_arguments() -> None:
    seen: dict[str, dict[str, Any]] = {}
    tools = full_registry(seen)
    model = TestModel()
    result = await Agent(client=model, tools=tools).run("exercise everything")

    assert [(r.name, r.status) for r in result.tool_calls] == [
        ("create_ticket", "ok"),
        ("lookup_order", "ok"),
        ("no_params", "ok"),
        ("raw_schema", "ok"),
    ], [r.content for r in result.tool_calls]
    assert result.steps == 2 and result.stop_reason == "final"
    summary = json.loads(result.output)
    assert list(summary) == ["create_ticket", "lookup_order", "no_params", "raw_schema"]
    assert summary["no_params"] == "pong"
    assert summary["lookup_order"].startswith("order ")
    assert [name for name, _ in model.calls] == tools.names
    for name, args in model.calls:
        assert tools[name].validation_errors(args) == []
    raw = seen["raw_schema"]
    assert 3 <= raw["count"] <= 7 and len(raw["code"]) == 3 and raw["kind"] == "fixed"
    assert isinstance(raw["point"][0], int) and isinstance(raw["point"][1], str)


async def test_testmodel_is_deterministic_and_seedable() -> None:
    tools = full_registry({})
    first, second, other = TestModel(), TestModel(), TestModel(seed=3)
    for model in (first, second, other):
        result = await Agent(client=model, tools=tools).run("go")
        assert all(r.ok for r in result.tool_calls), [r.content for r in result.tool_calls]
    assert first.calls == second.calls
    assert first.calls != other.calls
    assert generate_arguments({"type": "object"}, seed=5) == generate_arguments({"type": "object"}, seed=5)


async def test_testmodel_subset_fixed_arguments_and_final_text() -> None:
    seen: dict[str, dict[str, Any]] = {}
    tools = full_registry(seen)
    model = TestModel(
        call_tools=["no_params", "lookup_order"],
        arguments={"lookup_order": {"order_id": 42}},
        final_text="all good",
    )
    result = await Agent(client=model, tools=tools).run("go")
    assert [r.name for r in result.tool_calls] == ["no_params", "lookup_order"]
    assert seen["lookup_order"] == {"order_id": 42} and "create_ticket" not in seen
    assert result.output == "all good"

    with pytest.raises(ConfigurationError, match="names tools the agent does not have: nope"):
        await Agent(client=TestModel(call_tools=["nope"]), tools=tools).run("go")
    with pytest.raises(ConfigurationError, match="call_tools must be 'all' or a list"):
        TestModel(call_tools="no_params")


async def test_testmodel_calls_again_after_each_new_user_message() -> None:
    tools = full_registry({})
    agent = Agent(client=TestModel(call_tools=["no_params"]), tools=tools)
    first = await agent.run("one")
    second = await agent.run("two", messages=first.messages)
    assert [r.name for r in second.tool_calls] == ["no_params"]
    assert json.loads(second.output) == {"no_params": "pong"}


async def test_testmodel_without_tools_just_answers() -> None:
    result = await Agent(client=TestModel()).run("hi")
    assert result.output == "{}" and result.tool_calls == []


async def test_unsatisfiable_schema_is_a_clear_error() -> None:
    tools = ToolRegistry()

    async def impossible(**kwargs: Any) -> str:
        return "never"

    tools.register(
        impossible,
        name="impossible",
        parameters={
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 1}},
            "required": ["n"],
        },
    )
    with pytest.raises(
        ConfigurationError, match=r"could not generate arguments .*TestModel\(call_tools=\[\.\.\.\]\)"
    ):
        await Agent(client=TestModel(), tools=tools).run("go")


async def test_missing_hypothesis_jsonschema_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hypothesis_jsonschema", None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'agentloop\[testing\]'") as info:
        generate_arguments({"type": "object"})
    assert isinstance(info.value, ImportError) and isinstance(info.value, ConfigurationError)


# --- FunctionModel --------------------------------------------------------------------------------


def weather_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def get_weather(city: str) -> dict[str, Any]:
        """Current weather for a city."""
        return {"city": city, "temp_c": 21}

    return tools


async def test_function_model_sync_script() -> None:
    seen_tools: list[list[str]] = []

    def script(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        seen_tools.append([t["function"]["name"] for t in tools])
        if messages[-1]["role"] == "user":
            return [call("get_weather", {"city": "Lisbon"}), ("get_weather", {"city": "Porto"})]
        temps = [json.loads(m["content"])["temp_c"] for m in messages if m["role"] == "tool"]
        return f"Both {temps[0]} C."

    model = FunctionModel(script)
    result = await Agent(client=model, tools=weather_tools()).run("Weather in Lisbon and Porto?")
    assert result.output == "Both 21 C."
    assert [r.arguments for r in result.tool_calls] == [{"city": "Lisbon"}, {"city": "Porto"}]
    assert seen_tools == [["get_weather"], ["get_weather"]]
    assert len(model.requests) == 2


async def test_function_model_async_and_every_return_form() -> None:
    answers: list[Any] = [
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        tool_calls(call("get_weather", {"city": "Rome"})),
        ModelTurn({"role": "assistant", "content": "turn"}, Usage(1, 1, 1, 2), "stop"),
    ]

    async def script(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        messages.append({"role": "user", "content": "fn cannot corrupt the run"})  # a copy
        return answers.pop(0)

    result = await Agent(client=FunctionModel(script), tools=weather_tools()).run("go")
    assert result.output == "turn"
    assert [r.arguments["city"] for r in result.tool_calls] == ["Oslo", "Rome"]
    assert all(m.get("content") != "fn cannot corrupt the run" for m in result.messages)


async def test_function_model_errors() -> None:
    with pytest.raises(BadRequestError):
        await Agent(client=FunctionModel(lambda m, t: error(400, "bad request")), tools=weather_tools()).run(
            "go"
        )
    with pytest.raises(ConfigurationError, match="fn returned None"):
        await Agent(client=FunctionModel(lambda m, t: None)).run("go")
    with pytest.raises(ConfigurationError, match="is not a tool call"):
        await Agent(client=FunctionModel(lambda m, t: [42])).run("go")
    with pytest.raises(ConfigurationError, match="needs a callable"):
        FunctionModel("not callable")  # type: ignore[arg-type]
    assert (await Agent(client=FunctionModel(lambda m, t: text("scripted"))).run("go")).output == "scripted"


# --- how a user tests their own agent (the README example) ------------------------------------------

# Their application code: an agent factory that takes any Model.


def build_support_agent(client: Any) -> Agent:
    tools = ToolRegistry()

    @tools.tool
    async def find_order(order_id: int) -> dict[str, Any]:
        """Look up an order by its number."""
        return {"order_id": order_id, "status": "shipped" if order_id % 2 else "packing"}

    @tools.tool
    async def refund(order_id: int, reason: Literal["damaged", "late", "other"]) -> str:
        """Refund an order."""
        return f"refund of order {order_id} ({reason}) started"

    return Agent(
        client=client, tools=tools, instructions="You are a support agent. Always look the order up first."
    )


async def test_every_tool_of_my_agent_works() -> None:
    # TestModel: every tool called with schema-valid arguments; a smoke test for schemas and code.
    result = await build_support_agent(TestModel()).run("anything")
    assert all(r.ok for r in result.tool_calls), [r.content for r in result.tool_calls]


async def test_my_agent_refunds_a_damaged_order() -> None:
    # FunctionModel: an exact script of what the model does, asserting on what the agent sends it.
    def model(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        assert messages[0] == {
            "role": "system",
            "content": "You are a support agent. Always look the order up first.",
        }
        done = [m for m in messages if m["role"] == "tool"]
        if not done:
            return [call("find_order", {"order_id": 7})]
        if len(done) == 1:
            assert json.loads(done[0]["content"])["status"] == "shipped"
            return [call("refund", {"order_id": 7, "reason": "damaged"})]
        return f"Done: {done[-1]['content']}."

    result = await build_support_agent(FunctionModel(model)).run("Order 7 arrived broken.")
    assert result.output == "Done: refund of order 7 (damaged) started."
    assert [r.name for r in result.tool_calls] == ["find_order", "refund"]


def test_generated_arguments_are_always_an_object() -> None:
    # mypy found it: a schema that admits other JSON values too ({} admits anything) could yield
    # a number or a list as the "arguments object" a tool call carries.
    for seed in range(4):
        assert isinstance(generate_arguments({}, seed=seed), dict)
        assert isinstance(generate_arguments({"type": ["integer", "object"]}, seed=seed), dict)
    with pytest.raises(ConfigurationError, match="could not generate arguments"):
        generate_arguments({"type": "integer"})
