"""The Anthropic Messages wire: golden request bodies, both directions of the mapping, streamed and
plain round trips over the real-HTTP fake router, on asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentloop import (
    Agent,
    APIResponseError,
    FluxClient,
    ModelRequest,
    RetryPolicy,
    TextDelta,
    ToolCallDelta,
    ToolRegistry,
)
from agentloop._wire.anthropic import AnthropicWire, encode_messages  # internal unit under test
from agentloop.testing import (
    FakeFluxRouter,
    call,
    error,
    raw,
    stream_error,
    text,
    tool_calls,
    weather_handler,
)

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_delay=0.001, max_delay=0.005)
KEY = "sk-anthropic-test-0123456789"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def weather_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def get_weather(city: str) -> dict:
        """Get the current weather for a city."""
        if city == "Atlantis":
            raise LookupError("no such city")
        return {"city": city, "temp_c": 21}

    return tools


@pytest.fixture
async def router() -> AsyncIterator[FakeFluxRouter]:
    async with FakeFluxRouter(api_key=KEY) as r:
        yield r


@pytest.fixture
async def client(router: FakeFluxRouter) -> AsyncIterator[FluxClient]:
    async with FluxClient(base_url=router.anthropic_url, api_key=KEY, retry=FAST) as c:
        yield c


CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Lisbon and Porto?"},
    {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Lisbon"}'},
            },
            {
                "id": "toolu_2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Po'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "toolu_1", "content": '{"temp_c":21}'},
    {"role": "tool", "tool_call_id": "toolu_2", "content": "Invalid arguments for tool 'get_weather': ..."},
    {"role": "user", "content": "And in Faro?"},
]


def test_golden_request_body() -> None:
    req = ModelRequest(
        model="flux-auto",
        messages=CONVERSATION,
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        settings={"temperature": 0.2},
    )
    assert AnthropicWire().body(req) == {
        "model": "flux-auto",
        "max_tokens": 4096,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Lisbon and Porto?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Lisbon"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}},  # invalid JSON
                ],
            },
            {
                "role": "user",  # all results of the turn in ONE user message, before the text
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"temp_c":21}'},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": "Invalid arguments for tool 'get_weather': ...",
                    },
                    {"type": "text", "text": "And in Faro?"},
                ],
            },
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": "Get the current weather for a city.",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            }
        ],
        "tool_choice": {"type": "auto"},
        "temperature": 0.2,
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
        (None, None),
    ],
)
def test_tool_choice_mapping(choice: Any, expected: Any) -> None:
    req = ModelRequest(
        model="m", messages=[{"role": "user", "content": "x"}], tools=[WEATHER_TOOL], tool_choice=choice
    )
    assert AnthropicWire().body(req).get("tool_choice") == expected


def test_settings_mapping_and_max_tokens() -> None:
    settings = {"max_tokens": 100, "stop": "END", "parallel_tool_calls": False, "user": "u1", "top_k": 5}
    req = ModelRequest(
        model="m", messages=[{"role": "user", "content": "x"}], tools=[WEATHER_TOOL], settings=settings
    )
    body = AnthropicWire(max_tokens=999).body(req, stream=True)
    assert (
        body["max_tokens"] == 100
        and body["stop_sequences"] == ["END"]
        and body["metadata"] == {"user_id": "u1"}
    )
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert body["top_k"] == 5 and body["stream"] is True
    assert "stop" not in body and "user" not in body and "parallel_tool_calls" not in body
    no_tools = ModelRequest(
        model="m", messages=[{"role": "user", "content": "x"}], tools=[], tool_choice="auto"
    )
    assert AnthropicWire(max_tokens=999).body(no_tools) == {
        "model": "m", "max_tokens": 999, "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
    }  # fmt: skip


def test_is_error_for_failed_calls_and_developer_messages_lifted() -> None:
    system, messages = encode_messages(
        [{"role": "developer", "content": [{"type": "text", "text": "Be nice."}]}, *CONVERSATION[1:5]],
        tool_errors={"toolu_2"},
    )
    assert system == "Be nice."
    results = messages[-1]["content"]
    assert [b.get("is_error", False) for b in results] == [False, True]


async def test_headers_and_wire_selection(router: FakeFluxRouter, client: FluxClient) -> None:
    assert client.wire == "anthropic"
    router.add(text("hi"))
    await Agent(client=client).run("hello")
    req = router.requests[0]
    assert req.path == "/anthropic/v1/messages" and req.wire == "anthropic"
    # The router checked the key (api_key=KEY: a wrong one is a 401) and recorded it redacted.
    assert req.headers["x-api-key"] == "[redacted]" and req.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req.headers
    async with FluxClient(wire="anthropic", api_key="k") as default:
        assert default._url == "https://api.fluxrouter.ai/anthropic/v1/messages"
    assert KEY not in repr(client)


async def test_plain_round_trip_with_parallel_calls(router: FakeFluxRouter, client: FluxClient) -> None:
    router.add(
        tool_calls(call("get_weather", {"city": "Lisbon"}, id="toolu_a"), call("get_weather", {"city": "Atlantis"}, id="toolu_b"),
                   content="Let me check."),
        text("Lisbon is 21 °C."),
    )  # fmt: skip
    agent = Agent(client=client, tools=weather_tools(), instructions="Be brief.")
    result = await agent.run("Weather in Lisbon and Atlantis?")

    assert result.output == "Lisbon is 21 °C."
    assert result.usage.requests == 2 and result.usage.total_tokens == 30
    # result.messages stays canonical (OpenAI chat format)
    assert [m["role"] for m in result.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]
    assert result.messages[2] == {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {
                "id": "toolu_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Lisbon"}'},
            },
            {
                "id": "toolu_b",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Atlantis"}'},
            },
        ],
    }
    first, second = (r.json for r in router.requests)
    assert first["system"] == "Be brief." and first["max_tokens"] == 4096
    assert all(m["role"] != "system" for m in first["messages"])
    results = second["messages"][-1]
    assert results["role"] == "user" and [b["type"] for b in results["content"]] == [
        "tool_result",
        "tool_result",
    ]
    assert [b["tool_use_id"] for b in results["content"]] == ["toolu_a", "toolu_b"]
    assert "LookupError" in results["content"][1]["content"]


async def test_streamed_round_trip_with_parallel_calls(router: FakeFluxRouter, client: FluxClient) -> None:
    router.add(
        tool_calls(
            call("get_weather", {"city": "Lisbon"}),
            call("get_weather", {"city": "Porto"}),
            quirks=["keepalive"],
        ),
        text("Both 21 °C.", quirks=["keepalive"]),
    )
    events: list[Any] = []
    async with Agent(client=client, tools=weather_tools()).stream("Lisbon and Porto?") as stream:
        async for event in stream:
            events.append(event)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "RunStarted" and kinds[-1] == "RunFinished"
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    for i, city in ((0, "Lisbon"), (1, "Porto")):
        mine = [d for d in deltas if d.index == i]
        assert mine[0].name == "get_weather" and all(d.name is None for d in mine[1:])
        assert "".join(d.arguments_delta for d in mine) == f'{{"city":"{city}"}}'
    assert kinds.index("ToolCallDelta") < kinds.index("ToolCallStarted") < kinds.index("StepFinished")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Both 21 °C."
    result = events[-1].result
    assert result.output == "Both 21 °C." and result.usage.total_tokens == 30
    assert [c["function"]["arguments"] for c in result.messages[1]["tool_calls"]] == [
        '{"city":"Lisbon"}',
        '{"city":"Porto"}',
    ]
    assert all(r.stream for r in router.requests)


async def test_stream_error_event_before_and_after_deltas(router: FakeFluxRouter, client: FluxClient) -> None:
    router.add(text("hello", quirks=[stream_error(1)]), text("hello"))  # overloaded right after message_start
    events: list[Any] = []

    async def emit(e: Any) -> None:
        events.append(e)

    req = ModelRequest(model="m", messages=[{"role": "user", "content": "x"}], tools=[], run_id="r", step=1)
    turn = await client.request(req, emit)
    assert turn.message["content"] == "hello" and len(router.requests) == 2

    router.add(text("a b c d e f", quirks=[stream_error(4)]))
    with pytest.raises(APIResponseError, match="overloaded_error"):
        await client.request(req, emit)
    assert len(router.requests) == 3


async def test_overloaded_529_is_retried(router: FakeFluxRouter, client: FluxClient) -> None:
    router.add(error(529, "Overloaded", type="overloaded_error"), text("ok"))
    assert (await Agent(client=client).run("x")).output == "ok"
    assert len(router.requests) == 2


async def test_200_with_error_object_is_typed(router: FakeFluxRouter, client: FluxClient) -> None:
    router.add(raw(200, '{"type": "error", "error": {"type": "api_error", "message": "boom"}}'))
    with pytest.raises(APIResponseError, match="boom"):
        await Agent(client=client).run("x")


async def test_invalid_tool_input_from_the_model_is_answered(
    router: FakeFluxRouter, client: FluxClient
) -> None:
    router.add(tool_calls(call("get_weather", '{"city": "Lis')), text("sorry"))
    result = await Agent(client=client, tools=weather_tools()).run("x")
    assert result.tool_calls[0].status == "invalid_arguments"
    # replayed as a valid tool_use block ({} input) so the next request is not rejected
    assert router.requests[1].json["messages"][1]["content"][0]["input"] == {}


async def test_conversation_moves_between_wires() -> None:
    async with FakeFluxRouter(weather_handler) as router:
        async with FluxClient(base_url=router.base_url, api_key="k") as openai_client:
            first = await Agent(client=openai_client, tools=weather_tools()).run("Weather in Lisbon?")
        async with FluxClient(base_url=router.anthropic_url, api_key="k") as anthropic_client:
            second = await Agent(client=anthropic_client, tools=weather_tools()).run(
                "And in Porto?", messages=first.messages
            )
    assert first.output == "Lisbon: 21 °C" and second.output == "Porto: 21 °C"
    assert [r.wire for r in router.requests] == ["openai", "openai", "anthropic", "anthropic"]
    history = router.requests[2].json["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant", "user"]
    assert history[1]["content"][0]["type"] == "tool_use"


async def test_failed_calls_go_back_with_is_error_through_the_loop(
    router: FakeFluxRouter, client: FluxClient
) -> None:
    router.add(
        tool_calls(
            call("get_weather", {"city": "Atlantis"}, id="bad"),
            call("get_weather", {"city": "Lisbon"}, id="good"),
        ),
        text("Lisbon is 21."),
    )
    result = await Agent(client=client, tools=weather_tools()).run("Weather in Atlantis and Lisbon?")
    assert [r.status for r in result.tool_calls] == ["raised", "ok"]
    results_message = router.requests[1].json["messages"][-1]
    assert results_message["role"] == "user"
    blocks = {b["tool_use_id"]: b for b in results_message["content"]}
    assert blocks["bad"]["is_error"] is True and "LookupError" in str(blocks["bad"]["content"])
    assert not blocks["good"].get("is_error")


def test_the_arguments_memo_sends_what_a_fresh_parse_sends() -> None:
    """AnthropicWire parses each earlier call's arguments once (a memo keyed by the text); what it
    sends must equal a fresh conversion, step after step, bad and odd arguments included."""
    from agentloop._wire.anthropic_request import InputMemo  # internal unit under test

    args = ['{"x": 1}', '{"x": 1}', "not json", "", '["a list"]', '{"deep": {"a": [1, 2]}}', '{"x": 1}']
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    memo = InputMemo()
    for step, arguments in enumerate(args):
        one = {"id": f"c{step}", "type": "function", "function": {"name": "f", "arguments": arguments}}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [one]},
            {"role": "tool", "tool_call_id": f"c{step}", "content": "ok"},
        ]
        assert encode_messages(messages, None, memo) == encode_messages(messages)
    assert encode_messages(messages, None, memo)[1][1]["content"][0]["input"] == {"x": 1}
