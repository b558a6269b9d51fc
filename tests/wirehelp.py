"""Helpers shared by the feature tests: a client on either wire of the fake router, and readers
of the recorded request bodies that hide the wire's shape."""

from __future__ import annotations

from typing import Any

from agentloop import Agent, FluxClient, RetryPolicy, RunFinished, RunResult
from agentloop.testing import FakeFluxRouter

FAST = RetryPolicy(initial_delay=0.001, max_delay=0.005)
WIRES = ["openai", "anthropic"]


def make_client(router: FakeFluxRouter, wire: str) -> FluxClient:
    url = router.base_url if wire == "openai" else router.anthropic_url
    return FluxClient(base_url=url, api_key="test-key-0123456789", retry=FAST)


def system_text(body: dict[str, Any]) -> str | None:
    if "system" in body:
        return body["system"]
    first = body["messages"][0]
    return first["content"] if first["role"] == "system" else None


def tool_names(body: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] if "function" in t else t["name"] for t in body.get("tools", [])]


def tool_params(body: dict[str, Any], name: str) -> dict[str, Any]:
    for t in body.get("tools", []):
        if "function" in t and t["function"]["name"] == name:
            return t["function"]["parameters"]
        if t.get("name") == name:
            return t["input_schema"]
    raise KeyError(name)


def last_tool_result(body: dict[str, Any]) -> str:
    """The text of the last tool result the request sends back, whatever the wire."""
    for m in reversed(body["messages"]):
        if m["role"] == "tool":
            return m["content"]
        if m["role"] == "user" and isinstance(m["content"], list):
            results = [b for b in m["content"] if b.get("type") == "tool_result"]
            if results:
                return results[-1]["content"]
    raise AssertionError("no tool result in the request")


def last_user_text(body: dict[str, Any]) -> str:
    m = [m for m in body["messages"] if m["role"] == "user"][-1]
    if isinstance(m["content"], str):
        return m["content"]
    return "".join(b.get("text", "") for b in m["content"] if b.get("type") == "text")


async def run_or_stream(agent: Agent[Any, Any], how: str, prompt: str, **kwargs: Any) -> RunResult[Any]:
    """The same run through `Agent.run` or `Agent.stream` (the one loop, both ways)."""
    if how == "run":
        return await agent.run(prompt, **kwargs)
    result = None
    async with agent.stream(prompt, **kwargs) as events:
        async for event in events:
            if isinstance(event, RunFinished):
                result = event.result
    assert result is not None
    return result
