"""A `require_approval` predicate that raises ends the run with a typed `RunError` naming the
tool and saying the predicate raised (round-3 outside-in finding: it was the predicate's own raw
exception). It stays fail-safe: no call of that step runs."""

from __future__ import annotations

from typing import Any

import pytest

from agentloop import Agent, AgentloopError, RunError, RunLimitExceeded, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


def tools_and_log() -> tuple[ToolRegistry, list[str]]:
    tools = ToolRegistry()
    ran: list[str] = []

    @tools.tool
    async def lookup(key: str) -> str:
        ran.append(f"lookup {key}")
        return key

    @tools.tool
    async def delete_file(path: str) -> str:
        ran.append(f"delete {path}")
        return "deleted"

    return tools, ran


def broken(name: str, args: dict[str, Any]) -> bool:
    if name.startswith("delete_"):
        raise KeyError("no policy for " + args["path"])
    return False


async def broken_async(name: str, args: dict[str, Any]) -> bool:
    return broken(name, args)


@pytest.mark.parametrize("predicate", [broken, broken_async])
@pytest.mark.parametrize("streamed", [False, True])
async def test_a_raising_predicate_is_a_typed_error_and_nothing_runs(predicate: Any, streamed: bool) -> None:
    tools, ran = tools_and_log()
    step = tool_calls(call("lookup", {"key": "a"}), call("delete_file", {"path": "/etc/x"}))
    model = ScriptedModel([step, text("unreached")])
    agent = Agent(client=model, tools=tools, require_approval=predicate)
    with pytest.raises(RunError, match="require_approval predicate raised KeyError") as info:
        if streamed:
            async with agent.stream("go") as events:
                async for _ in events:
                    pass
        else:
            await agent.run("go")
    assert not isinstance(info.value, RunLimitExceeded) and isinstance(info.value, AgentloopError)
    assert "'delete_file'" in str(info.value) and "no policy for /etc/x" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)  # the predicate's own error, kept for debugging
    assert ran == []  # fail-safe: not the call, not its step's other call
    assert len(model.requests) == 1
