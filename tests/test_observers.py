"""Observers see every event of every run (run and stream alike); a failing one never breaks a run."""

from __future__ import annotations

import logging

import pytest

from agentloop import Agent, ModelRequestStarted, ModelResponded, RunFinished, ToolCallFinished, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


def tools() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool
    async def ping(n: int) -> int:
        return n

    return registry


async def test_sync_and_async_observers_see_every_event_of_run() -> None:
    seen_sync: list[str] = []
    seen_async: list[str] = []

    def sync_observer(event: object) -> None:
        seen_sync.append(type(event).__name__)

    async def async_observer(event: object) -> None:
        seen_async.append(type(event).__name__)

    model = ScriptedModel([tool_calls(call("ping", {"n": 1}), call("ping", {"n": 2})), text("done")])
    agent = Agent(client=model, tools=tools(), observers=[sync_observer, async_observer])
    result = await agent.run("go")
    assert result.output == "done"
    assert seen_sync == seen_async
    assert seen_sync[0] == "RunStarted" and seen_sync[-1] == "RunFinished"
    assert seen_sync.count("ModelRequestStarted") == 2 and seen_sync.count("ModelResponded") == 2
    assert seen_sync.count("ToolCallFinished") == 2 and seen_sync.count("TextDelta") == 1


async def test_events_carry_usage_and_outcomes() -> None:
    events: list[object] = []
    model = ScriptedModel([tool_calls(call("ping", {"n": 7})), text("done")])
    await Agent(client=model, tools=tools(), observers=[events.append]).run("go")
    started = [e for e in events if isinstance(e, ModelRequestStarted)]
    responded = [e for e in events if isinstance(e, ModelResponded)]
    assert [(e.step, e.messages) for e in started] == [(1, 1), (2, 3)]
    assert [(e.step, e.tool_calls, e.finish_reason, e.usage.total_tokens) for e in responded] == [
        (1, 1, "tool_calls", 15),
        (2, 0, "stop", 15),
    ]
    finished = next(e for e in events if isinstance(e, ToolCallFinished))
    assert finished.record.status == "ok" and finished.record.content == "7"
    assert isinstance(events[-1], RunFinished) and events[-1].result.output == "done"


async def test_a_failing_observer_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: object) -> None:
        raise RuntimeError("telemetry backend down")

    kept: list[object] = []
    model = ScriptedModel([text("fine")])
    with caplog.at_level(logging.WARNING, logger="agentloop"):
        result = await Agent(client=model, observers=[broken, kept.append]).run("go")
    assert result.output == "fine"
    assert kept  # the next observer still got every event
    assert any("observer" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_observers_and_stream_get_the_same_events() -> None:
    observed: list[object] = []
    model = ScriptedModel([tool_calls(call("ping", {"n": 1})), text("done")])
    agent = Agent(client=model, tools=tools(), observers=[observed.append])
    streamed: list[object] = []
    async with agent.stream("go") as events:
        async for event in events:
            streamed.append(event)
    assert observed == streamed


async def test_calls_the_loop_settles_without_running_them_are_events_too() -> None:
    from agentloop import RunLimits, ToolCallLimitExceeded

    events: list[object] = []
    model = ScriptedModel(
        [tool_calls(call("ping", {"n": 1}), call("ping", {"n": 2}), call("ping", {"n": 3}))]
    )
    agent = Agent(client=model, tools=tools(), limits=RunLimits(max_tool_calls=2), observers=[events.append])
    with pytest.raises(ToolCallLimitExceeded):
        await agent.run("go")
    finished = [e.record.status for e in events if isinstance(e, ToolCallFinished)]
    assert sorted(finished) == ["ok", "ok", "skipped"]
    assert type(events[-1]).__name__ == "RunFailed" and isinstance(events[-1].error, ToolCallLimitExceeded)


async def test_an_approval_pause_is_an_event() -> None:
    registry = ToolRegistry()

    @registry.tool(requires_approval=True)
    async def pay(amount: int) -> str:
        return "paid"

    events: list[object] = []
    model = ScriptedModel([tool_calls(call("pay", {"amount": 3}))])
    result = await Agent(client=model, tools=registry, observers=[events.append]).run("pay")
    assert result.stop_reason == "approval_required"
    assert type(events[-1]).__name__ == "RunPaused" and events[-1].result is result
