"""RunLimits (steps, tool calls, tokens, timeout / deadline) and loop detection, on asyncio and trio.

Every limit raises its own RunLimitExceeded subclass whose `.result` is a valid conversation:
each tool call of the assistant messages has its tool message.
"""

from __future__ import annotations

import time
from dataclasses import FrozenInstanceError

import anyio
import pytest
from helpers import assert_valid_conversation

from agentloop import (
    Agent,
    ConfigurationError,
    FluxClient,
    LoopDetected,
    RunLimitExceeded,
    RunLimits,
    StepLimitExceeded,
    TimeLimitExceeded,
    TokenLimitExceeded,
    ToolCallLimitExceeded,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


def counting_tools() -> tuple[ToolRegistry, list[str]]:
    tools = ToolRegistry()
    calls: list[str] = []

    @tools.tool
    async def lookup(key: str) -> str:
        """Look a key up."""
        calls.append(key)
        return f"value of {key}"

    @tools.tool
    async def hang() -> str:
        """Never returns."""
        await anyio.sleep_forever()
        return "unreachable"

    return tools, calls


def test_run_limits_is_frozen_and_validated() -> None:
    limits = RunLimits(max_tool_calls=3)
    with pytest.raises(FrozenInstanceError):
        limits.max_tool_calls = 4  # type: ignore[misc]
    for bad in (
        {"max_steps": 0},
        {"max_tool_calls": -1},
        {"max_total_tokens": True},
        {"timeout": 0},
        {"loop_threshold": 1},
    ):
        with pytest.raises(ConfigurationError):
            RunLimits(**bad)  # type: ignore[arg-type]
    assert issubclass(StepLimitExceeded, RunLimitExceeded) and StepLimitExceeded.stop_reason == "max_steps"
    agent = Agent(client=ScriptedModel(), max_steps=4, limits=RunLimits(max_tool_calls=2))
    assert agent.limits == RunLimits(max_steps=4, max_tool_calls=2) and agent.max_steps == 4


async def test_step_limit_from_run_limits() -> None:
    tools, _ = counting_tools()
    model = ScriptedModel(
        [tool_calls(call("lookup", {"key": "a"})), tool_calls(call("lookup", {"key": "b"}))]
    )
    agent = Agent(client=model, tools=tools, limits=RunLimits(max_steps=2))
    with pytest.raises(StepLimitExceeded) as info:
        await agent.run("go")
    assert info.value.result.stop_reason == "max_steps" and info.value.result.steps == 2
    assert_valid_conversation(info.value.result)


async def test_max_tool_calls_runs_what_fits_and_skips_the_rest() -> None:
    tools, executed = counting_tools()
    model = ScriptedModel(
        [
            tool_calls(call("lookup", {"key": "a"}), call("lookup", {"key": "b"})),
            tool_calls(call("lookup", {"key": "c"}), call("lookup", {"key": "d"})),
            text("never asked"),
        ]
    )
    agent = Agent(client=model, tools=tools, limits=RunLimits(max_tool_calls=3))
    with pytest.raises(ToolCallLimitExceeded, match="max_tool_calls=3") as info:
        await agent.run("go")
    partial = info.value.result
    assert sorted(executed) == ["a", "b", "c"]
    assert [r.status for r in partial.tool_calls] == ["ok", "ok", "ok", "skipped"]
    assert partial.stop_reason == "max_tool_calls" and partial.steps == 2
    assert "budget" in partial.messages[-1]["content"]
    assert len(model.requests) == 2
    assert_valid_conversation(partial)


async def test_max_tool_calls_exactly_spent_lets_the_model_answer() -> None:
    tools, executed = counting_tools()
    model = ScriptedModel([tool_calls(call("lookup", {"key": "a"})), text("done")])
    result = await Agent(client=model, tools=tools, limits=RunLimits(max_tool_calls=1)).run("go")
    assert result.output == "done" and executed == ["a"]


async def test_token_limit_stops_before_the_next_request() -> None:
    tools, _ = counting_tools()
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    model = ScriptedModel([tool_calls(call("lookup", {"key": k}), usage=usage) for k in "abcd"])
    agent = Agent(client=model, tools=tools, limits=RunLimits(max_total_tokens=30))
    with pytest.raises(TokenLimitExceeded, match="max_total_tokens=30") as info:
        await agent.run("go")
    partial = info.value.result
    assert len(model.requests) == 2
    assert partial.usage.total_tokens == 30 and partial.stop_reason == "max_total_tokens"
    assert [r.status for r in partial.tool_calls] == ["ok", "ok"]  # the tools of the last step ran
    assert_valid_conversation(partial)


async def test_token_limit_over_http(fake_router: FakeFluxRouter, flux_client: FluxClient) -> None:
    tools, _ = counting_tools()
    fake_router.add(
        tool_calls(call("lookup", {"key": "a"}), usage={"prompt_tokens": 90, "completion_tokens": 20}),
        text("unreached"),
    )
    agent = Agent(client=flux_client, tools=tools, limits=RunLimits(max_total_tokens=100))
    with pytest.raises(TokenLimitExceeded) as info:
        await agent.run("go")
    assert info.value.result.usage.total_tokens == 110
    assert len(fake_router.requests) == 1


async def test_timeout_cancels_tools_and_keeps_the_partial_result() -> None:
    tools, executed = counting_tools()
    model = ScriptedModel(
        [tool_calls(call("lookup", {"key": "a"})), tool_calls(call("lookup", {"key": "b"}), call("hang"))]
    )
    agent = Agent(client=model, tools=tools)
    with pytest.raises(TimeLimitExceeded, match=r"timeout=0\.05 s") as info:
        await agent.run("go", limits=RunLimits(timeout=0.05))
    partial = info.value.result
    assert executed == ["a", "b"]
    assert [r.status for r in partial.tool_calls] == ["ok", "ok", "cancelled"]
    assert partial.stop_reason == "timeout" and partial.steps == 2
    assert_valid_conversation(partial)


async def test_deadline_in_the_past_stops_before_any_request() -> None:
    model = ScriptedModel([text("unreached")])
    agent = Agent(client=model, limits=RunLimits(deadline=time.time() - 1))
    with pytest.raises(TimeLimitExceeded, match="deadline=") as info:
        await agent.run("go")
    assert info.value.result.steps == 0 and info.value.result.messages[-1]["role"] == "user"


async def test_timeout_in_stream_mode() -> None:
    tools, _ = counting_tools()
    model = ScriptedModel([tool_calls(call("hang"))])
    agent = Agent(client=model, tools=tools, limits=RunLimits(timeout=0.05))
    with pytest.raises(TimeLimitExceeded):
        async with agent.stream("go") as events:
            async for _ in events:
                pass


async def test_loop_detection_warns_then_the_model_recovers() -> None:
    tools, executed = counting_tools()
    same = call("lookup", {"key": "a"})
    model = ScriptedModel(
        [
            tool_calls(same),
            tool_calls(call("lookup", '{"key": "a"}')),  # same arguments, different spelling
            tool_calls(same),
            text("the value is 'value of a'"),
        ]
    )
    result = await Agent(client=model, tools=tools).run("go")
    assert result.stop_reason == "final"
    assert executed == ["a", "a"]  # the third identical call was not run
    assert [r.status for r in result.tool_calls] == ["ok", "ok", "loop_detected"]
    assert "3 times in a row" in result.tool_calls[-1].content
    assert model.requests[3]["messages"][-1]["content"] == result.tool_calls[-1].content


async def test_loop_that_persists_stops_the_run() -> None:
    tools, executed = counting_tools()
    model = ScriptedModel([tool_calls(call("lookup", {"key": "a"})) for _ in range(6)])
    agent = Agent(client=model, tools=tools)
    with pytest.raises(LoopDetected) as info:
        await agent.run("go")
    partial = info.value.result
    assert partial.stop_reason == "loop_detected" and partial.steps == 4
    assert executed == ["a", "a"]
    assert [r.status for r in partial.tool_calls] == ["ok", "ok", "loop_detected", "loop_detected"]
    assert_valid_conversation(partial)


async def test_identical_calls_in_one_message_count_once_and_detection_can_be_off() -> None:
    # A burst (roll four dice) is not a loop: the model has seen none of the results yet.
    tools, executed = counting_tools()
    burst = tool_calls(*[call("lookup", {"key": "x"}) for _ in range(4)])
    result = await Agent(client=ScriptedModel([burst, text("ok")]), tools=tools).run("go")
    assert [r.status for r in result.tool_calls] == ["ok"] * 4 and executed == ["x"] * 4
    executed.clear()
    again = [burst, burst, burst, text("ok")]  # the third step of the same burst is a loop
    result = await Agent(client=ScriptedModel(again), tools=tools).run("go")
    assert [r.status for r in result.tool_calls] == ["ok"] * 8 + ["loop_detected"] * 4
    executed.clear()
    off = Agent(client=ScriptedModel(again), tools=tools, limits=RunLimits(loop_threshold=None))
    result = await off.run("go")
    assert executed == ["x"] * 12 and result.output == "ok"


async def test_different_arguments_reset_the_streak() -> None:
    tools, executed = counting_tools()
    script = [tool_calls(call("lookup", {"key": k})) for k in "aabaab"] + [text("done")]
    result = await Agent(client=ScriptedModel(script), tools=tools, max_steps=10).run("go")
    assert executed == list("aabaab") and result.output == "done"
