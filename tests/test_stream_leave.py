"""Leaving `Agent.stream` early: no tool call whose `ToolCallStarted` the consumer did not go past
ever starts, on both backends.

README: a tool call starts only once your loop body for its `ToolCallStarted` has finished and
asked for the next event; `break` out of the `async for` and no further call starts, even while
you stay in the `async with` block (which cancels the run when it ends). Before, the run went on
up to 32 events ahead of a consumer that had stopped reading: the calls of a step, and an inner
agent's, started behind its back.

"Behind its back" is observed without sleeping: `anyio.wait_all_tasks_blocked()` returns only once
the loop's task is parked (a scripted model never waits on I/O).
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from agentloop import (
    Agent,
    FluxClient,
    RunFinished,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, FunctionModel, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


def noting_tools(ran: list[str]) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def act(name: str) -> str:
        ran.append(name)  # before its first wait: a started call is seen at once
        await anyio.lowlevel.checkpoint()
        return name

    return tools


async def test_breaking_on_a_tool_call_then_staying_in_the_block_starts_no_call(
    router: FakeFluxRouter,
) -> None:
    """The exact repro: three calls in one answer, the consumer breaks on the first's
    ToolCallStarted and goes on awaiting inside the block: none of them may run."""
    ran: list[str] = []
    router.add(
        tool_calls(*(call("act", {"name": n}, id=f"c{n}") for n in "abc")),
        text("done"),
    )
    seen: list[Any] = []
    async with FluxClient(base_url=router.base_url, api_key="k") as client:
        agent = Agent(client=client, tools=noting_tools(ran))
        async with agent.stream("go") as events:
            async for event in events:
                seen.append(event)
                if isinstance(event, ToolCallStarted):
                    break
            await anyio.wait_all_tasks_blocked()  # the run goes as far as it can without us
            assert ran == []
    assert ran == [] and len(router.requests) == 1
    assert not any(isinstance(e, ToolCallFinished | RunFinished) for e in seen)


async def test_breaking_before_any_tool_call_starts_none() -> None:
    ran: list[str] = []
    model = ScriptedModel([tool_calls(*(call("act", {"name": n}) for n in "ab")), text("done")])
    async with Agent(client=model, tools=noting_tools(ran)).stream("go") as events:
        async for _ in events:
            break  # the first event (RunStarted)
        await anyio.wait_all_tasks_blocked()
    assert ran == []


async def test_a_call_waits_while_the_body_for_its_event_awaits() -> None:
    """The body for a ToolCallStarted may ask a human (await) before deciding: the call has not
    started meanwhile, and starts once the body asks for the next event."""
    ran: list[str] = []
    model = ScriptedModel([tool_calls(call("act", {"name": "a"})), text("done")])
    async with Agent(client=model, tools=noting_tools(ran)).stream("go") as events:
        async for event in events:
            if isinstance(event, ToolCallStarted):
                await anyio.wait_all_tasks_blocked()
                assert ran == []  # still deciding
    assert ran == ["a"] and events.result is not None and events.result.output == "done"


async def test_calls_a_consumer_goes_past_still_run_concurrently_in_order() -> None:
    """The gate does not serialise a step's calls: two calls that need each other finish."""
    both = [anyio.Event(), anyio.Event()]
    tools = ToolRegistry()

    @tools.tool
    async def meet(i: int) -> int:
        both[i].set()
        await both[1 - i].wait()  # deadlocks unless both run at once
        return i

    model = ScriptedModel([tool_calls(call("meet", {"i": 0}), call("meet", {"i": 1})), text("done")])
    seen: list[Any] = []
    with anyio.fail_after(30):  # a bound for a hang, not a timing assertion
        async with Agent(client=model, tools=tools).stream("go") as events:
            async for event in events:
                seen.append(event)
    kinds = [(type(e).__name__, getattr(e, "tool_call_id", None) or getattr(e, "record", None)) for e in seen]
    started = [e.tool_call_id for e in seen if isinstance(e, ToolCallStarted)]
    finished = [e.record.id for e in seen if isinstance(e, ToolCallFinished)]
    assert len(started) == 2 and sorted(finished) == sorted(started), kinds
    for cid in started:  # each call: Started before its Finished
        first = next(
            i for i, e in enumerate(seen) if isinstance(e, ToolCallStarted) and e.tool_call_id == cid
        )
        last = next(i for i, e in enumerate(seen) if isinstance(e, ToolCallFinished) and e.record.id == cid)
        assert first < last
    assert events.result is not None and events.result.output == "done"


async def test_an_inner_agents_call_waits_for_the_outer_consumer_too() -> None:
    ran: list[str] = []
    inner = Agent(
        client=ScriptedModel([tool_calls(call("act", {"name": "inner"})), text("inner done")]),
        tools=noting_tools(ran),
        name="worker",
    )
    outer = Agent(
        client=ScriptedModel([tool_calls(call("worker", {"input": "x"})), text("done")]),
        tools=[inner.as_tool()],
    )
    async with outer.stream("go") as events:
        async for event in events:
            if isinstance(event, ToolCallStarted) and event.parent_call_id is not None:
                break  # the inner run's call: it must not start
        await anyio.wait_all_tasks_blocked()
    assert ran == []


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=examples(25), deadline=None)
@given(stop_at=st.integers(0, 40), calls=st.integers(1, 4), steps=st.integers(1, 3))
def test_only_calls_whose_event_the_consumer_went_past_ever_run(
    backend: str, stop_at: int, calls: int, steps: int
) -> None:
    """Break on the `stop_at`-th event (or read all): every call that ran had its ToolCallStarted
    before the event broken on (a step's calls are announced together and start once the consumer
    went past the last of them); reading all, every call ran."""

    async def main() -> None:
        ran: list[str] = []

        def script(messages: list[dict[str, Any]], _tools: Any) -> Any:
            done = sum(1 for m in messages if m["role"] == "assistant")
            if done >= steps:
                return "done"
            return [call("act", {"name": f"s{done}c{i}"}) for i in range(calls)]

        agent = Agent(client=FunctionModel(script), tools=noting_tools(ran))
        passed: list[str] = []  # the calls whose ToolCallStarted the consumer went past
        async with agent.stream("go") as events:
            i = 0
            async for event in events:
                if i == stop_at:
                    break
                i += 1
                if isinstance(event, ToolCallStarted):
                    passed.append(json.loads(event.arguments)["name"])
                if isinstance(event, TextDelta):
                    await anyio.lowlevel.checkpoint()  # a consumer that awaits now and then
            else:
                assert sorted(ran) == sorted(passed) and len(ran) == calls * steps  # read all: all ran
            await anyio.wait_all_tasks_blocked()
            assert set(ran) <= set(passed)  # no call beyond the consumer
        assert set(ran) <= set(passed)

    anyio.run(main, backend=backend)
