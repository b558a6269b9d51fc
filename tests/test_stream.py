"""Streaming over the wire (OpenAI SSE), end to end against the real-HTTP fake router, both backends.

The loop is the one of `Agent.run`; `FluxClient` streams when the caller gives it `emit`
(`Agent.stream`), assembles the deltas leniently (wire-notes.md quirks) and retries a stream only
while nothing of it has reached the caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentloop import (
    Agent,
    APIConnectionError,
    APIResponseError,
    FluxClient,
    ModelRequest,
    RetryPolicy,
    RunFinished,
    RunStarted,
    StepFinished,
    TextDelta,
    ToolCallDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, call, drop_after, raw, stream_error, text, tool_calls

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_delay=0.001, max_delay=0.005)


def weather_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def get_weather(city: str) -> dict:
        """Get the current weather for a city."""
        return {"city": city, "temp_c": 21}

    return tools


@pytest.fixture
async def client(router: FakeFluxRouter) -> AsyncIterator[FluxClient]:
    async with FluxClient(base_url=router.base_url, api_key="test-key-123456", retry=FAST) as c:
        yield c


async def collect(agent: Agent, prompt: str = "Weather in Lisbon and Porto?") -> list[Any]:
    seen: list[Any] = []
    async with agent.stream(prompt) as events:
        async for event in events:
            seen.append(event)
    return seen


async def request_events(client: FluxClient, **kw: Any) -> tuple[Any, list[Any]]:
    """One `FluxClient.request` with an emit that records what it is handed."""
    seen: list[Any] = []

    async def emit(event: Any) -> None:
        seen.append(event)

    req = ModelRequest(
        model="flux-auto", messages=[{"role": "user", "content": "hi"}], tools=[], run_id="r1", step=1
    )
    turn = await client.request(req, emit, **kw)
    return turn, seen


def two_calls(**kw: Any) -> Any:
    return tool_calls(
        call("get_weather", {"city": "Lisbon"}, id="call_a"),
        call("get_weather", {"city": "Porto"}, id="call_b"),
        **kw,
    )


async def test_streamed_round_trip_with_parallel_calls_event_order(
    router: FakeFluxRouter, client: FluxClient
) -> None:
    router.add(two_calls(), text("Lisbon 21, Porto 21."))
    events = await collect(Agent(client=client, tools=weather_tools()))

    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "RunStarted" and kinds[-1] == "RunFinished"
    first_step_end = kinds.index("StepFinished")
    step_one = kinds[1 : first_step_end + 1]
    # deltas (as they arrive) → the calls start → finish → the step ends
    last_delta = max(i for i, k in enumerate(step_one) if k == "ToolCallDelta")
    assert last_delta < step_one.index("ToolCallStarted")
    assert step_one[last_delta + 1] == "ModelResponded"  # the answer is complete before any call runs
    assert sorted(step_one[last_delta + 2 :]) == sorted(
        ["ToolCallStarted"] * 2 + ["ToolCallFinished"] * 2 + ["StepFinished"]
    )
    # step two: the text arrives in several deltas, then the run finishes
    tail = kinds[first_step_end + 1 :]
    assert tail.count("TextDelta") == 3 and tail[-1] == "RunFinished"

    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert {d.index for d in deltas} == {0, 1}
    for i, city in ((0, "Lisbon"), (1, "Porto")):
        mine = [d for d in deltas if d.index == i]
        assert [d.name for d in mine] == ["get_weather"] + [None] * (len(mine) - 1)  # the name once
        assert "".join(d.arguments_delta for d in mine) == f'{{"city":"{city}"}}'
        assert all(d.step == 1 and d.run_id == events[0].run_id for d in mine)
    text_deltas = [e for e in events if isinstance(e, TextDelta)]
    assert "".join(d.text for d in text_deltas) == "Lisbon 21, Porto 21." and {
        d.step for d in text_deltas
    } == {2}

    result = events[-1].result
    assert isinstance(events[-1], RunFinished) and result.output == "Lisbon 21, Porto 21."
    assert result.usage.requests == 2 and result.usage.total_tokens == 30  # usage chunks after the finish
    assert result.messages[1]["tool_calls"] == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Lisbon"}'},
        },
        {
            "id": "call_b",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Porto"}'},
        },
    ]
    assert [r.content for r in result.tool_calls] == [
        '{"city":"Lisbon","temp_c":21}',
        '{"city":"Porto","temp_c":21}',
    ]
    for req in router.requests:
        assert req.stream and req.json["stream_options"] == {"include_usage": True}
        assert req.headers["accept"] == "text/event-stream"
    # the conversation sent back is canonical, exactly as in a non-streamed run
    assert [m["role"] for m in router.requests[1].json["messages"]] == ["user", "assistant", "tool", "tool"]


@pytest.mark.parametrize(
    "quirks",
    [("no_done",), ("repeat_ids",), ("interleave",), ("keepalive",), ("usage_after_finish",),
     ("no_done", "repeat_ids", "interleave", "keepalive")],
)  # fmt: skip
async def test_stream_quirks_assemble_the_same_message(
    router: FakeFluxRouter, client: FluxClient, quirks: tuple[str, ...]
) -> None:
    router.add(two_calls(content="Checking.", quirks=quirks))
    turn, seen = await request_events(client)
    assert turn.streamed and turn.finish_reason == "tool_calls"
    assert turn.message["content"] == "Checking."
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in turn.tool_calls] == [
        ("call_a", "get_weather", '{"city":"Lisbon"}'),
        ("call_b", "get_weather", '{"city":"Porto"}'),
    ]
    names = [(d.index, d.name) for d in seen if isinstance(d, ToolCallDelta) and d.name is not None]
    assert sorted(names) == [(0, "get_weather"), (1, "get_weather")]  # announced once each
    assert turn.usage.total_tokens == 15
    assert len(router.requests) == 1


async def test_deltas_reach_the_caller_while_the_answer_is_still_streaming(
    router: FakeFluxRouter, client: FluxClient
) -> None:
    router.add(text("one two three", chunk_delay=0.005))
    in_flight_at_first_delta: list[int] = []

    async def emit(event: Any) -> None:
        if not in_flight_at_first_delta:
            in_flight_at_first_delta.append(router.in_flight)

    req = ModelRequest(
        model="flux-auto", messages=[{"role": "user", "content": "hi"}], tools=[], run_id="r", step=1
    )
    turn = await client.request(req, emit)
    assert in_flight_at_first_delta == [1]  # the server was still sending when the first delta arrived
    assert turn.message["content"] == "one two three" and router.in_flight == 0


async def test_error_event_before_any_delta_is_retried(router: FakeFluxRouter, client: FluxClient) -> None:
    router.add(text("hello", quirks=[stream_error(1)]), text("hello"))
    turn, seen = await request_events(client)
    assert turn.message["content"] == "hello" and "".join(e.text for e in seen) == "hello"
    assert len(router.requests) == 2


async def test_error_event_after_deltas_is_a_typed_error_not_retried(
    router: FakeFluxRouter, client: FluxClient
) -> None:
    router.add(
        text("a long answer", quirks=[stream_error(3, {"message": "upstream died", "type": "server_error"})])
    )
    with pytest.raises(APIResponseError, match="upstream died") as info:
        await request_events(client)
    assert "server_error" in str(info.value) and info.value.request_id == "req_fake1"
    assert len(router.requests) == 1


async def test_invalid_request_error_event_is_not_retried(router: FakeFluxRouter, client: FluxClient) -> None:
    router.add(
        text("x", quirks=[stream_error(0, {"message": "context too long", "type": "invalid_request_error"})])
    )
    with pytest.raises(APIResponseError, match="context too long"):
        await request_events(client)
    assert len(router.requests) == 1


async def test_connection_drop_before_any_delta_is_retried(
    router: FakeFluxRouter, client: FluxClient
) -> None:
    router.add(two_calls(quirks=[drop_after(1)]), two_calls())  # only the role chunk, then the drop
    turn, seen = await request_events(client)
    assert len(turn.tool_calls) == 2 and len(router.requests) == 2
    assert {d.index for d in seen} == {0, 1}  # the deltas of the second attempt only


async def test_connection_drop_during_stream_is_not_retried(
    router: FakeFluxRouter, client: FluxClient
) -> None:
    router.add(text("partial answer here", quirks=[drop_after(3)]), text("never asked for"))
    with pytest.raises(APIConnectionError, match="already been streamed") as info:
        await request_events(client)
    assert "test-key-123456" not in str(info.value)
    assert len(router.requests) == 1


async def test_stream_that_ends_cleanly_but_early_is_a_connection_error(
    router: FakeFluxRouter, client: FluxClient
) -> None:
    body = 'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    router.add(*[raw(200, body, content_type="text/event-stream")] * 3)
    with pytest.raises(APIConnectionError, match="before the answer was complete"):
        await request_events(client)
    assert len(router.requests) == 1  # "Hel" had been emitted


async def test_server_that_ignores_stream_true_still_works(
    router: FakeFluxRouter, client: FluxClient
) -> None:
    body = '{"choices":[{"index":0,"message":{"role":"assistant","content":"plain"},"finish_reason":"stop"}]}'
    router.add(raw(200, body))
    events = await collect(Agent(client=client))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert [d.text for d in deltas] == ["plain"]  # emitted whole by the loop (turn.streamed is False)
    assert events[-1].result.output == "plain"


async def test_stream_false_option_sends_plain_requests(router: FakeFluxRouter) -> None:
    router.add(two_calls(), text("Done."))
    async with FluxClient(base_url=router.base_url, api_key="k", stream=False) as plain:
        events = await collect(Agent(client=plain, tools=weather_tools()))
    assert not any(isinstance(e, ToolCallDelta) for e in events)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Done."]
    assert all(not r.stream and "stream_options" not in r.json for r in router.requests)


async def test_run_without_emit_never_streams(router: FakeFluxRouter, client: FluxClient) -> None:
    router.add(text("ok"))
    result = await Agent(client=client).run("hi")
    assert result.output == "ok" and not router.requests[0].stream


async def test_streamed_empty_name_and_bad_arguments_are_answered_not_crashed(
    router: FakeFluxRouter, client: FluxClient
) -> None:
    router.add(tool_calls(call("", {"city": "Lisbon"}), call("get_weather", '{"city": "Li')), text("sorry"))
    events = await collect(Agent(client=client, tools=weather_tools()))
    records = events[-1].result.tool_calls
    assert [r.status for r in records] == ["unknown_tool", "invalid_arguments"]
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    # every call gets Started then Finished, even one refused before it runs (issue #13)
    assert sorted((e.name, e.arguments) for e in started) == [
        ("", '{"city":"Lisbon"}'),
        ("get_weather", '{"city": "Li'),
    ]
    assert isinstance(events[0], RunStarted) and any(isinstance(e, StepFinished) for e in events)
    assert len([e for e in events if isinstance(e, ToolCallFinished)]) == 2
