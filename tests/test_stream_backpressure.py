"""`Agent.stream`'s event buffer: back-pressure, order, errors and leaving early, on both backends.

README: the run is never more than 32 events ahead of its consumer; a consumer that stops
reading stops the run. "Stopped" is observed without sleeping: `anyio.wait_all_tasks_blocked()`
returns only once the loop's task is parked (a scripted model never waits on I/O, so a loop
that did not wait for its consumer would run to its end first).
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from agentloop import (
    Agent,
    APIResponseError,
    Event,
    FluxClient,
    InputBudget,
    RunFailed,
    RunFinished,
    StepFinished,
    TextDelta,
    ToolCallStarted,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, FunctionModel, call, raw

pytestmark = pytest.mark.anyio

AHEAD = 32  # README: "at most 32 events ahead of its consumer"
STEPS = 60  # tool steps before the final answer: ~5 events each, far more than the buffer holds


def ticking_agent(observed: list[Event], ran: list[int], steps: int = STEPS) -> tuple[Agent, FunctionModel]:
    """An agent whose model calls `tick` `steps` times, then answers "done"; an observer records
    every event as the loop emits it (observers see an event before the stream does)."""
    tools = ToolRegistry()

    @tools.tool
    async def tick(n: int) -> int:
        ran.append(n)
        return n

    def script(messages: list[dict[str, Any]], _tools: Any) -> Any:
        done = sum(1 for m in messages if m["role"] == "tool")
        return "done" if done >= steps else [call("tick", {"n": done})]

    model = FunctionModel(script)
    agent = Agent(client=model, tools=tools, max_steps=steps + 1, observers=[observed.append])
    return agent, model


def sse_text(pieces: list[str], error: str | None = None) -> bytes:
    """An OpenAI stream carrying `pieces` as text deltas, then its end or an error event."""
    chunks: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    if error is not None:
        chunks.append({"error": {"message": error, "type": "invalid_request_error"}})
    else:
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


async def test_a_consumer_that_stops_reading_stops_the_run() -> None:
    observed: list[Event] = []
    ran: list[int] = []
    agent, model = ticking_agent(observed, ran)
    consumed: list[Event] = []
    async with agent.stream("go") as events:
        consumed.append(await events.__anext__())
        await anyio.wait_all_tasks_blocked()  # the loop runs until it has to wait for us
        ahead = len(observed) - len(consumed)
        requests_while_stopped, ran_while_stopped = len(model.requests), len(ran)
        assert 0 < ahead <= AHEAD + 1  # the buffer, plus the one event the loop waits to hand over
        assert ran_while_stopped < STEPS // 4 and requests_while_stopped < STEPS // 4

        await anyio.wait_all_tasks_blocked()  # still stopped: nothing moved while we did not read
        assert (len(observed), len(model.requests), len(ran)) == (
            ahead + 1,
            requests_while_stopped,
            ran_while_stopped,
        )
        async for event in events:  # reading again lets the run go on, to its end
            consumed.append(event)
    assert consumed == observed  # every event, once, in the order the loop emitted them
    assert isinstance(consumed[-1], RunFinished) and consumed[-1].result.output == "done"
    assert ran == list(range(STEPS)) and len(model.requests) == STEPS + 1


async def test_a_slow_consumer_slows_the_run_one_event_at_a_time() -> None:
    """Read, then let the loop run until it is parked, and again: it never gets further than the
    buffer's size ahead of what was read."""
    observed: list[Event] = []
    ran: list[int] = []
    agent, _ = ticking_agent(observed, ran, steps=15)
    read = 0
    async with agent.stream("go") as events:
        async for _event in events:
            read += 1
            await anyio.wait_all_tasks_blocked()
            assert len(observed) - read <= AHEAD + 1
    assert read == len(observed) and ran == list(range(15))


async def test_leaving_while_the_run_waits_for_room_cancels_it() -> None:
    observed: list[Event] = []
    ran: list[int] = []
    agent, model = ticking_agent(observed, ran)
    async with agent.stream("go") as events:
        await events.__anext__()
        await anyio.wait_all_tasks_blocked()  # the loop is parked on a full buffer
        requests = len(model.requests)
    # The block has ended, so its task group has: no task of the run is left. Nothing moves on.
    await anyio.wait_all_tasks_blocked()
    assert len(model.requests) == requests and len(ran) < STEPS
    assert not any(isinstance(e, RunFinished) for e in observed)


async def test_the_events_before_an_error_all_reach_the_consumer_then_the_error() -> None:
    """The loop fails while the consumer is behind: the buffered events are still delivered, in
    order, and the loop's own exception (not a group) ends the iteration."""
    pieces = [f"p{i} " for i in range(10)]
    answer = raw(200, sse_text(pieces, error="boom"), content_type="text/event-stream")
    async with FakeFluxRouter([answer]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k") as client:
            observed: list[Event] = []
            consumed: list[Event] = []
            agent = Agent(client=client, observers=[observed.append])
            with pytest.raises(APIResponseError, match="boom"):
                async with agent.stream("hi") as events:
                    first = await events.__anext__()
                    consumed.append(first)
                    await anyio.wait_all_tasks_blocked()  # let the run fail while we do not read
                    async for event in events:
                        consumed.append(event)
    assert consumed == observed[:-1] and isinstance(observed[-1], RunFailed)  # RunFailed: observers only
    assert [e.text for e in consumed if isinstance(e, TextDelta)] == pieces
    assert len(router.model_requests) == 1  # part of the answer was streamed: not retried


async def test_time_a_full_buffer_waits_for_the_consumer_is_not_idleness() -> None:
    """README: time in the consumer does not count toward `stream_idle_timeout`, also when the
    answer has more deltas than the buffer holds (the client then waits on the consumer)."""
    pieces = [f"w{i} " for i in range(3 * AHEAD)]
    answer = raw(200, sse_text(pieces), content_type="text/event-stream")
    async with FakeFluxRouter([answer]) as router:
        budget = InputBudget(stream_idle_timeout=0.2)
        async with FluxClient(base_url=router.base_url, api_key="k", input_budget=budget) as client:
            slow_once = True
            async with Agent(client=client).stream("hi") as events:
                async for event in events:
                    if isinstance(event, TextDelta) and slow_once:
                        slow_once = False
                        await anyio.sleep(0.6)  # a slow consumer (the behaviour under test), not a wait
                    last = event
    assert isinstance(last, RunFinished) and last.result.output == "".join(pieces)
    assert len(router.model_requests) == 1  # not cut and retried


async def test_two_streams_interleave_without_sharing_events() -> None:
    observed_a: list[Event] = []
    observed_b: list[Event] = []
    agent_a, _ = ticking_agent(observed_a, [], steps=10)
    agent_b, _ = ticking_agent(observed_b, [], steps=12)
    consumed: dict[str, list[Event]] = {"a": [], "b": []}
    async with agent_a.stream("go") as events_a, agent_b.stream("go") as events_b:
        for _ in range(40):
            for key, events in (("a", events_a), ("b", events_b)):
                try:
                    consumed[key].append(await events.__anext__())
                except StopAsyncIteration:
                    pass
        async for event in events_a:
            consumed["a"].append(event)
        async for event in events_b:
            consumed["b"].append(event)
    assert consumed["a"] == observed_a and consumed["b"] == observed_b
    for seen, steps in ((consumed["a"], 10), (consumed["b"], 12)):
        assert sum(isinstance(e, StepFinished) for e in seen) == steps
        assert sum(isinstance(e, ToolCallStarted) for e in seen) == steps
        assert isinstance(seen[-1], RunFinished) and seen[-1].result.output == "done"


async def test_a_consumer_cancelled_while_it_waits_for_events_ends_the_run_cleanly() -> None:
    """The consumer's wait for the next event is cancelled from outside (here: a tool of the run
    itself cancels the scope the consumer iterates in, while the consumer waits for events, and
    then emits more): the stream ends without an error, the run is cancelled, nothing is left
    waiting, and the scope says it caught the cancellation."""
    tools = ToolRegistry()
    scope = anyio.CancelScope()
    ran: list[int] = []

    @tools.tool
    async def stop(n: int) -> int:
        ran.append(n)
        scope.cancel()  # the consumer is parked waiting for events right now
        return n

    model = FunctionModel(lambda messages, _t: [call("stop", {"n": len(messages)})])
    agent = Agent(client=model, tools=tools, max_steps=5)
    seen: list[Event] = []
    with scope:
        async with agent.stream("go") as events:
            async for event in events:
                seen.append(event)
    await anyio.wait_all_tasks_blocked()
    assert scope.cancelled_caught and ran == [1]
    assert seen and not any(isinstance(e, (RunFinished, RunFailed)) for e in seen)
