"""Every caller mistake is refused at construction, naming the argument (issue #13 regressions).

Also: `Agent(tools=[...])` accepts functions, registries, `Tool`s and open MCP servers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import warm_fork

from agentloop import (
    Agent,
    ConfigurationError,
    FluxClient,
    RetryPolicy,
    RunLimits,
    ToolDefinitionError,
    ToolRegistry,
)
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


def get_weather(city: str) -> str:
    return f"sunny in {city}"


async def lookup(term: str, limit: int | None = None) -> str:
    return f"{term}:{limit}"


def agent(**options: Any) -> Agent:
    return Agent(client=options.pop("client", ScriptedModel([])), **options)


# --- tools as a list ----------------------------------------------------------------------------


async def test_tools_as_a_list_of_functions_runs() -> None:
    model = ScriptedModel(
        [tool_calls(call("get_weather", {"city": "Oslo"}), call("lookup", {"term": "x"})), text("ok")]
    )
    bot = Agent(client=model, tools=[get_weather, lookup])  # used to fail in run() with AttributeError
    assert bot.tools.names == ["get_weather", "lookup"]
    result = await bot.run("go")
    assert [r.content for r in result.tool_calls] == ["sunny in Oslo", "x:None"]


async def test_tools_list_mixes_functions_registries_and_tools() -> None:
    other = ToolRegistry()
    other.register(lookup)
    single = ToolRegistry().register(get_weather, name="weather")
    bot = agent(tools=[get_weather, other, single])
    assert bot.tools.names == ["get_weather", "lookup", "weather"]
    assert bot.tools["lookup"] is other["lookup"]  # the same Tool: nothing is re-derived


async def test_tools_list_takes_an_open_mcp_server() -> None:
    pytest.importorskip("mcp")
    from agentloop.mcp import MCPServer

    fixture = Path(__file__).parent / "mcp_server_fixture.py"
    executable, *args = warm_fork.command(fixture, ["stdio", "normal"], preload=warm_fork.MCP_FIXTURE_PRELOAD)
    async with MCPServer.stdio(executable, args) as server:  # forked warm: tests/warm_fork.py
        bot = agent(tools=[get_weather, server])
        assert bot.tools.names[0] == "get_weather"
        assert len(bot.tools) == 1 + len(server.tools) > 1


@pytest.mark.parametrize(
    ("tools", "match"),
    [
        (get_weather, r"list of tools.*tools=\[get_weather\]"),
        ("get_weather", "tools must be a ToolRegistry or a list"),
        (["get_weather"], r"tools\[0\].*pass the function itself"),
        ([get_weather, 42], r"tools\[1\]: 42 is not a tool"),
        ({"get_weather": get_weather}, "got dict"),
    ],
)
def test_anything_else_as_tools_is_a_configuration_error(tools: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        agent(tools=tools)


def test_duplicate_names_in_a_tools_list_are_a_definition_error() -> None:
    with pytest.raises(ToolDefinitionError, match=r"tools\[1\].*'get_weather' is already registered"):
        agent(tools=[get_weather, get_weather])


def test_a_closed_mcp_server_in_tools_is_refused() -> None:
    from agentloop import AgentloopError
    from agentloop.mcp import MCPServer

    with pytest.raises(AgentloopError, match="not open"):
        agent(tools=[MCPServer.stdio(sys.executable, ["-c", "pass"])])


# --- every other argument -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"model_settings": {"model": "x"}}, "may not set 'model'"),
        ({"model_settings": {"messages": []}}, "may not set 'messages'"),
        ({"model_settings": {"tools": []}}, "may not set 'tools'"),
        ({"model_settings": {"stream": False}}, "may not set 'stream'.*Agent.stream"),
        ({"model_settings": {"tool_choice": "auto"}}, "may not set 'tool_choice'"),
        ({"model_settings": {"n": 3}}, "exactly one choice"),
        ({"model_settings": {"temperature": object()}}, "JSON-encodable"),
        ({"model_settings": [("temperature", 1)]}, "model_settings must be a dict"),
        ({"max_steps": 5, "limits": RunLimits(max_steps=3)}, "max_steps=5 disagrees with limits"),
        ({"max_steps": 0}, "max_steps must be an integer >= 1"),
        ({"max_steps": True}, "max_steps must be an integer"),
        ({"limits": {"max_steps": 3}}, "limits must be a RunLimits"),
        ({"instructions": 123}, "instructions must be a str"),
        ({"format_tool_error": "x"}, "format_tool_error must be a callable"),
        ({"format_tool_error": lambda: "x"}, r"format_tool_error must accept 2 positional arguments"),
        ({"require_approval": lambda name: True}, "require_approval must accept 2"),
        ({"tool_choice": "required"}, "tool_choice='required'.*no tools"),
        ({"tool_choice": "get_weather"}, "not registered"),
        ({"max_concurrent_tools": "4"}, "max_concurrent_tools must be an integer"),
        ({"max_concurrent_tools": 0}, "max_concurrent_tools must be an integer >= 1"),
        ({"reset_tool_choice": "no"}, "reset_tool_choice must be True or False"),
        ({"observers": print}, "observers must be a list"),
        ({"journal": "runs.db"}, "journal must be a Journal"),
        ({"model": "  "}, "model must be a non-empty string"),
        ({"client": object()}, "client must implement the Model interface"),
    ],
)
def test_agent_refuses_mistakes_at_construction(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        agent(**options)


async def test_per_run_model_settings_follow_the_same_rules() -> None:
    bot = agent(client=ScriptedModel([text("hi")]))
    with pytest.raises(ConfigurationError, match="may not set 'messages'"):
        await bot.run("go", model_settings={"messages": []})
    assert (await bot.run("go", model_settings={"temperature": 0})).output == "hi"


def test_agreeing_settings_are_fine() -> None:
    assert agent(max_steps=3, limits=RunLimits(max_steps=3)).max_steps == 3
    assert agent(max_steps=4, limits=RunLimits(timeout=30)).limits == RunLimits(max_steps=4, timeout=30)
    assert agent(model_settings={"temperature": 0.1, "n": 1}).model_settings == {"temperature": 0.1, "n": 1}
    assert agent(tools=[get_weather], tool_choice="required").tool_choice == "required"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"timeout": -1}, "timeout must be a positive number"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": "30"}, "timeout must be a positive number"),
        ({"timeout": httpx.Timeout(5.0, connect=-1)}, "every part of the httpx.Timeout"),
        ({"total_timeout": "5"}, "total_timeout must be a positive number"),
        ({"total_timeout": True}, "total_timeout must be a positive number"),
        ({"max_tokens": 0}, "max_tokens must be an integer"),
        ({"stream": "yes"}, "stream must be True or False"),
        ({"retry": 3}, "retry must be a RetryPolicy"),
        ({"headers": {"Authorization": "Bearer x"}}, "headers may not set Authorization"),
        ({"headers": {"x-trace": 1}}, "headers must be a dict of str to str"),
        ({"http_client": object()}, "http_client must be an httpx.AsyncClient"),
        ({"transport": 42}, "transport must be"),
        ({"max_connections": 0}, "max_connections must be an integer"),
        ({"base_url": 8080}, "base_url must be a str"),
    ],
)
def test_flux_client_refuses_mistakes_at_construction(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        FluxClient(api_key="test", **options)


async def test_flux_client_transport_and_http_client_disagree() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(ConfigurationError, match="transport= and http_client= disagree"):
            FluxClient(api_key="test", http_client=http, transport="aiohttp")


@pytest.mark.parametrize("key", ["sk-secret\n", "sk secret", 12345])
def test_a_malformed_api_key_is_refused_without_showing_it(key: Any) -> None:
    with pytest.raises(ConfigurationError, match="api_key must be") as info:
        FluxClient(api_key=key)
    assert "secret" not in str(info.value) and "12345" not in str(info.value)


def test_valid_client_options_still_construct() -> None:
    client = FluxClient(
        api_key="test", timeout=httpx.Timeout(5.0), total_timeout=30, retry=RetryPolicy(), max_tokens=10
    )
    assert client.total_timeout == 30


# --- ToolRegistry and register / tool -----------------------------------------------------------


@pytest.mark.parametrize(
    ("call_", "match"),
    [
        (lambda r: r.register(get_weather, sandbox="docker"), "unknown sandbox mode"),
        (lambda r: r.register("get_weather"), "must be a callable"),
        (lambda r: r.register(get_weather, name="has space"), "is invalid"),
        (lambda r: r.register(get_weather, parameters={"type": "array"}), "type 'object'"),
        (
            lambda r: r.register(get_weather, parameters={"type": "object", "properties": 3}),
            "not a valid JSON Schema",
        ),
        (lambda r: r.register(get_weather, sandbox="inline"), "needs an async function"),
        (lambda r: r.register(get_weather, description=42), "description must be a str"),
        (lambda r: r.register(get_weather, limits={"timeout": 1}), "limits must be a Limits"),
        (lambda r: r.register(get_weather, idempotent="yes"), "idempotent must be True or False"),
        (lambda r: r.register(get_weather, requires_approval=1), "requires_approval must be True or False"),
        (lambda r: r.tool(name="x", sandbox="thread", color="red"), "unknown option 'color'"),
    ],
)
def test_register_refuses_mistakes(call_: Any, match: str) -> None:
    with pytest.raises((ToolDefinitionError, TypeError), match=match):
        call_(ToolRegistry())


def test_registry_refuses_bad_defaults() -> None:
    with pytest.raises(ToolDefinitionError, match="unknown sandbox mode"):
        ToolRegistry(sandbox="docker")
    with pytest.raises(ToolDefinitionError, match="limits must be a Limits"):
        ToolRegistry(limits=5)
