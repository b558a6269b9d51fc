"""`TestModel(arguments={name: ...})` with a name no tool has is an error, not ignored (polish4, item 3).

Before: `TestModel(arguments={"get_wether": {...}})` (a typo) left `get_weather` on generated
arguments and the run passed, so the test checked something else than its author meant. The
check is made at a final answer against every tool the TestModel was offered so far, so one
TestModel still serves handoffs and agents used as tools (whose tools it meets mid-run).
"""

from __future__ import annotations

from typing import Any

import pytest

from agentloop import Agent, ConfigurationError, ToolRegistry
from agentloop.testing import TestModel

pytestmark = pytest.mark.anyio

pytest.importorskip(
    "hypothesis_jsonschema", reason="TestModel needs hypothesis-jsonschema (agentloop[testing])"
)


def weather_tools(seen: list[dict[str, Any]], name: str = "get_weather") -> ToolRegistry:
    tools = ToolRegistry()

    def get_weather(city: str, days: int = 1) -> str:
        seen.append({"city": city, "days": days})
        return f"{city}:{days}"

    tools.register(get_weather, name=name)
    return tools


async def test_a_misspelt_tool_name_is_an_error_naming_it() -> None:
    seen: list[dict[str, Any]] = []
    model = TestModel(arguments={"get_wether": {"city": "Paris"}})
    with pytest.raises(ConfigurationError) as e:
        await Agent(client=model, tools=weather_tools(seen)).run("go")
    message = str(e.value)
    assert "'get_wether'" in message and "Offered: get_weather" in message


async def test_a_known_name_is_used_and_raises_nothing() -> None:
    seen: list[dict[str, Any]] = []
    model = TestModel(arguments={"get_weather": {"city": "Paris", "days": 2}})
    result = await Agent(client=model, tools=weather_tools(seen)).run("go")
    assert seen == [{"city": "Paris", "days": 2}] and result.stop_reason == "final"


async def test_an_unknown_name_without_tools_at_all_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match=r"'anything'.*Offered: \(none\)"):
        await Agent(client=TestModel(arguments={"anything": {}})).run("hi")


async def test_a_subset_run_still_checks_the_names() -> None:
    model = TestModel(call_tools=[], arguments={"typo": {}})  # nothing called: the final answer at once
    with pytest.raises(ConfigurationError, match="'typo'"):
        await Agent(client=model, tools=weather_tools([])).run("go")


async def test_one_testmodel_shared_with_an_agent_tool_may_name_the_inner_tools() -> None:
    """The outer agent is never offered `inner_weather`; the inner agent (same TestModel) is."""
    seen: list[dict[str, Any]] = []
    model = TestModel(arguments={"inner_weather": {"city": "Oslo", "days": 5}})
    inner = Agent(client=model, tools=weather_tools(seen, "inner_weather"), name="inner")
    outer_tools = ToolRegistry()
    outer_tools.register(inner.as_tool(name="research", description="Research a topic."))
    result = await Agent(client=model, tools=outer_tools).run("go")
    assert [r.status for r in result.tool_calls] == ["ok"], [r.content for r in result.tool_calls]
    assert seen == [{"city": "Oslo", "days": 5}]


async def test_one_testmodel_shared_across_a_handoff_may_name_the_target_tools() -> None:
    model = TestModel(arguments={"billing_lookup": {"city": "x"}})
    billing = Agent(client=model, name="billing", tools=weather_tools([], "billing_lookup"))
    triage = Agent(client=model, name="triage", tools=weather_tools([], "triage_lookup"), handoffs=[billing])
    result = await triage.run("go")  # triage is never offered billing_lookup; billing is
    assert result.agent_name == "billing" and result.stop_reason == "final"


async def test_an_unknown_parameter_inside_is_reported_by_the_tool_validation() -> None:
    """Not this check's business: the arguments are sent as given and the tool refuses them."""
    seen: list[dict[str, Any]] = []
    model = TestModel(arguments={"get_weather": {"city": "Paris", "dayz": 2}})
    result = await Agent(client=model, tools=weather_tools(seen)).run("go")
    assert [r.status for r in result.tool_calls] == ["invalid_arguments"] and seen == []
    assert "dayz" in result.tool_calls[0].content
