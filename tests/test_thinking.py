"""Anthropic extended thinking with tools, from the outside: the blocks an answer thinks with go
back with the next request exactly (signatures included), whole and streamed, after a pause
resumed from the journal, and never over the OpenAI wire. The fake router refuses a request that
drops or alters them as Anthropic does (400), so these tests fail on a client that loses them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentloop import (
    Agent,
    APIResponseError,
    BadRequestError,
    ConversationError,
    FluxClient,
    RetryPolicy,
    RunFinished,
    RunPaused,
    RunResult,
    SQLiteJournal,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolRegistry,
)
from agentloop.testing import (
    FakeFluxRouter,
    Reply,
    call,
    redacted_thinking,
    text,
    thinking,
    tool_calls,
)

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_delay=0.001, max_delay=0.005, max_retries=0)
THINK = {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048}
STREAMS = [pytest.param(True, id="streamed"), pytest.param(False, id="whole")]

FIRST = thinking("The user wants the weather.\nI should call get_weather for Lisbon — «quoted» 🌦")
HIDDEN = redacted_thinking("EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP")
SECOND = thinking("21 °C: a short answer will do.")


def weather_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def get_weather(city: str) -> dict[str, Any]:
        """Get the current weather for a city."""
        return {"city": city, "temp_c": 21}

    return tools


@pytest.fixture
async def router() -> AsyncIterator[FakeFluxRouter]:
    async with FakeFluxRouter() as r:
        yield r


def client_for(router: FakeFluxRouter, stream: bool, **options: Any) -> FluxClient:
    return FluxClient(base_url=router.anthropic_url, api_key="k", retry=FAST, stream=stream, **options)


async def run(
    agent: Agent[Any, Any], stream: bool, prompt: str | None = None, **options: Any
) -> RunResult[Any]:
    """`agent.run`, or `agent.stream` (the one way an answer comes over the wire streamed)."""
    if not stream:
        return await agent.run(prompt, **options)
    async with agent.stream(prompt, **options) as events:
        finished = [e async for e in events if isinstance(e, RunFinished | RunPaused)]
    return finished[-1].result


def script() -> list[Reply]:
    return [
        tool_calls(call("get_weather", {"city": "Lisbon"}), content="Checking.").with_thinking(FIRST, HIDDEN),
        text("Sunny, 21 °C.").with_thinking(SECOND),
    ]


def assistant_content(router: FakeFluxRouter, request: int, message: int = 1) -> list[dict[str, Any]]:
    body = router.model_requests[request].json
    content: list[dict[str, Any]] = body["messages"][message]["content"]
    assert body["messages"][message]["role"] == "assistant"
    return content


# --- the tool loop ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMS)
async def test_a_tool_loop_with_thinking_sends_the_exact_blocks_back_first(
    router: FakeFluxRouter, stream: bool
) -> None:
    router.add(*script())
    async with client_for(router, stream) as client:
        agent = Agent(client=client, tools=weather_tools(), model_settings=THINK)
        result = await run(agent, stream, "Weather in Lisbon?")
    assert result.output == "Sunny, 21 °C."
    assert router.model_requests[0].json["thinking"] == THINK["thinking"]
    content = assistant_content(router, 1)
    assert content[:2] == [FIRST.block(), HIDDEN.block()]  # first, in order, byte for byte
    assert [b["type"] for b in content[2:]] == ["text", "tool_use"]
    # the canonical conversation keeps them (LiteLLM's field), the final answer's too
    answers = [m for m in result.messages if m["role"] == "assistant"]
    assert answers[0]["thinking_blocks"] == [FIRST.block(), HIDDEN.block()]
    assert answers[1]["thinking_blocks"] == [SECOND.block()]


async def test_without_the_blocks_the_router_answers_400_as_anthropic_does(router: FakeFluxRouter) -> None:
    """The fake's rule, so the test above fails on a client that drops the blocks."""
    router.add(text("never sent"))
    conversation = [
        {"role": "user", "content": "Weather in Lisbon?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "21"},
    ]
    async with client_for(router, False) as client:
        agent = Agent(client=client, tools=weather_tools(), model_settings=THINK)
        with pytest.raises(BadRequestError, match=r"must start with a thinking block"):
            await agent.run(messages=conversation)
        conversation[1]["thinking_blocks"] = [FIRST.block()]
        result = await agent.run(messages=conversation)
    assert result.output == "never sent"


@pytest.mark.parametrize("stream", STREAMS)
async def test_an_altered_block_is_refused_like_a_bad_signature(router: FakeFluxRouter, stream: bool) -> None:
    router.add(*script())
    async with client_for(router, stream) as client:
        agent = Agent(client=client, tools=weather_tools(), model_settings=THINK)
        result = await run(agent, stream, "Weather in Lisbon?")
        history = result.all_messages()
        history[1]["thinking_blocks"][0] = {**FIRST.block(), "thinking": FIRST.thinking + " "}
        router.add(text("never sent"))
        with pytest.raises(BadRequestError, match=r"Invalid `signature` in `thinking` block"):
            await run(agent, stream, "And Porto?", messages=history)


@pytest.mark.parametrize("stream", STREAMS)
async def test_thinking_arrives_as_thinking_deltas_before_the_answer(
    router: FakeFluxRouter, stream: bool
) -> None:
    router.add(*script())
    async with client_for(router, stream) as client:
        agent = Agent(client=client, tools=weather_tools(), model_settings=THINK)
        async with agent.stream("Weather in Lisbon?") as events:
            seen = [e async for e in events if isinstance(e, ThinkingDelta | TextDelta | ToolCallDelta)]
    for step, thought in ((1, FIRST), (2, SECOND)):
        mine = [e for e in seen if e.step == step]
        kinds = [type(e) for e in mine]
        first_other = next(i for i, k in enumerate(kinds) if k is not ThinkingDelta)
        assert ThinkingDelta not in kinds[first_other:]  # all the thinking comes first
        assert "".join(e.text for e in mine if isinstance(e, ThinkingDelta)) == thought.thinking
        if stream:
            assert kinds.count(ThinkingDelta) > 1  # as it arrives, in pieces


async def test_a_pause_resumed_from_the_journal_sends_the_blocks_back(
    router: FakeFluxRouter, tmp_path: Path
) -> None:
    router.add(script()[0])
    async with client_for(router, True) as client:
        agent = Agent(
            client=client,
            tools=weather_tools(),
            model_settings=THINK,
            journal=SQLiteJournal(tmp_path / "runs.db"),
            require_approval=lambda name, args: True,
        )
        paused = await run(agent, True, "Weather in Lisbon?", run_id="think-1")
    assert paused.stop_reason == "approval_required"
    router.add(script()[1])
    async with client_for(router, False) as client:  # another client, journal opened again
        again = Agent(
            client=client,
            tools=weather_tools(),
            model_settings=THINK,
            journal=SQLiteJournal(tmp_path / "runs.db"),
            require_approval=lambda name, args: True,
        )
        result = await again.resume("think-1", approvals={paused.pending[0].id: True})
    assert result.output == "Sunny, 21 °C."
    assert len(router.model_requests) == 2
    assert assistant_content(router, 1)[:2] == [FIRST.block(), HIDDEN.block()]


# --- the OpenAI wire ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMS)
async def test_a_thinking_conversation_moves_to_the_openai_wire_without_the_blocks(
    router: FakeFluxRouter, stream: bool
) -> None:
    router.add(*script())
    async with client_for(router, stream) as client:
        agent = Agent(client=client, tools=weather_tools(), model_settings=THINK)
        history = (await run(agent, stream, "Weather in Lisbon?")).all_messages()
    router.add(text("Cloudy."))
    async with FluxClient(base_url=router.base_url, api_key="k", retry=FAST, stream=stream) as client:
        result = await run(
            Agent(client=client, tools=weather_tools()), stream, "And Porto?", messages=history
        )
    assert result.output == "Cloudy."  # the fake, as OpenAI, refuses a message with thinking_blocks
    sent = router.model_requests[-1].json["messages"]
    assert not any("thinking_blocks" in m for m in sent)
    assert history[1]["thinking_blocks"] == [FIRST.block(), HIDDEN.block()]  # the caller's list untouched
    # and back on the Anthropic wire, the blocks are still there to send
    assert result.all_messages()[1]["thinking_blocks"] == [FIRST.block(), HIDDEN.block()]


# --- hostile answers ----------------------------------------------------------------------------


def anthropic_body(*blocks: dict[str, Any]) -> str:
    import json

    content = [*blocks, {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "X"}}]
    return json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": content,
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
    )


def anthropic_stream(*events: dict[str, Any]) -> str:
    import json

    start = {"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 1}}}
    end = [
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
        {"type": "message_stop"},
    ]
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in [start, *events, *end])


BAD_BLOCKS = [
    pytest.param({"type": "thinking", "thinking": 7, "signature": "s"}, "`thinking` is int", id="int-text"),
    pytest.param({"type": "thinking", "signature": "s"}, "`thinking` is NoneType", id="no-text"),
    pytest.param(
        {"type": "thinking", "thinking": "t", "signature": ["s"]}, "`signature` is list", id="list-sig"
    ),
    pytest.param({"type": "redacted_thinking", "data": {"x": 1}}, "`data` is dict", id="dict-data"),
]


@pytest.mark.parametrize(("block", "what"), BAD_BLOCKS)
async def test_a_thinking_block_that_is_not_text_is_a_typed_error(
    router: FakeFluxRouter, block: dict[str, Any], what: str
) -> None:
    from agentloop.testing import raw

    router.add(raw(200, anthropic_body(block)))
    async with client_for(router, False) as client:
        with pytest.raises(APIResponseError, match=what) as caught:
            await Agent(client=client, tools=weather_tools(), model_settings=THINK).run("q")
    assert "router or proxy fault" in caught.value.message
    assert len(router.model_requests) == 1  # no tool ran, nothing was sent on


BAD_STREAMS = [
    pytest.param(
        [{"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": 7}}],
        "`thinking` is int",
        id="int-delta",
    ),
    pytest.param(
        [
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": 1.5},
            },
        ],
        "`signature` is float",
        id="float-signature",
    ),
    pytest.param(
        [{"type": "content_block_start", "index": 0, "content_block": {"type": "redacted_thinking"}}],
        "`data` is NoneType",
        id="redacted-without-data",
    ),
]


@pytest.mark.parametrize(("events", "what"), BAD_STREAMS)
async def test_streamed_thinking_that_is_not_text_is_a_typed_error(
    router: FakeFluxRouter, events: list[dict[str, Any]], what: str
) -> None:
    from agentloop.testing import raw

    router.add(raw(200, anthropic_stream(*events), content_type="text/event-stream"))
    async with client_for(router, True) as client:
        with pytest.raises(APIResponseError, match=what):
            await run(Agent(client=client, tools=weather_tools(), model_settings=THINK), True, "q")


async def test_odd_but_valid_streamed_thinking_is_kept(router: FakeFluxRouter) -> None:
    """Deltas without a start, delta indexes that are no ints (a list, even), a start carrying text.
    (A START whose index is no position is a malformed stream: tests/test_wire_calls_shape_stream.py.)"""
    from agentloop.testing import raw

    events = [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "a"}},
        {"type": "content_block_delta", "index": [0], "delta": {"type": "thinking_delta", "thinking": "b"}},
        {
            "type": "content_block_delta",
            "index": None,
            "delta": {"type": "signature_delta", "signature": "s1"},
        },
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "thinking", "thinking": "c"},
        },
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "redacted_thinking", "data": "r"},
        },
        {"type": "content_block_start", "index": 3, "content_block": {"type": "text", "text": "done"}},
    ]
    router.add(raw(200, anthropic_stream(*events), content_type="text/event-stream"))
    async with client_for(router, True) as client:
        agent = Agent(client=client, tools=weather_tools(), model_settings=THINK)
        async with agent.stream("q") as stream:
            seen = [e async for e in stream]
    assert [e.text for e in seen if isinstance(e, ThinkingDelta)] == ["a", "b", "c"]
    (finished,) = [e for e in seen if isinstance(e, RunFinished)]
    assert finished.result.output == "done"
    assert finished.result.messages[-1]["thinking_blocks"] == [
        {"type": "thinking", "thinking": "ab", "signature": "s1"},
        {"type": "thinking", "thinking": "c"},
        {"type": "redacted_thinking", "data": "r"},
    ]


async def test_a_block_without_a_signature_goes_back_as_it_came(router: FakeFluxRouter) -> None:
    """A router translating another provider's reasoning may send none: kept, sent back as it came,
    and Anthropic (here the fake) answers that it is missing: a typed error, never a crash."""
    from agentloop.testing import raw

    router.add(raw(200, anthropic_body({"type": "thinking", "thinking": "unsigned"})), text("never sent"))
    async with client_for(router, False) as client:
        with pytest.raises(BadRequestError, match=r"messages\.1\.content\.0\.signature: Field required"):
            await Agent(client=client, tools=weather_tools(), model_settings=THINK).run("q")
    assert assistant_content(router, 1)[0] == {"type": "thinking", "thinking": "unsigned"}


@pytest.mark.parametrize("stream", STREAMS)
async def test_huge_thinking_is_bounded_by_the_input_budget(router: FakeFluxRouter, stream: bool) -> None:
    from agentloop import InputBudget

    router.add(text("ok").with_thinking(thinking("x" * 300_000)))
    budget = InputBudget(max_response_bytes=128 * 1024, max_sse_line_bytes=64 * 1024)
    async with client_for(router, stream, input_budget=budget) as client:
        with pytest.raises(APIResponseError, match=r"max_sse_line_bytes|max_response_bytes"):
            await run(Agent(client=client, model_settings=THINK), stream, "q")


async def test_many_streamed_thinking_pieces_are_bounded_by_the_response_budget(
    router: FakeFluxRouter,
) -> None:
    from agentloop import InputBudget
    from agentloop.testing import raw

    piece = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "y" * 1000},
    }
    body = anthropic_stream(*[piece] * 400)  # 400 KB of thinking, each event small
    router.add(raw(200, body, content_type="text/event-stream"))
    budget = InputBudget(max_response_bytes=128 * 1024)
    async with client_for(router, True, input_budget=budget) as client:
        with pytest.raises(APIResponseError, match=r"max_response_bytes"):
            await run(Agent(client=client, model_settings=THINK), True, "q")


BAD_FIELDS = [
    pytest.param("not a list", id="str"),
    pytest.param([{"type": "thinking", "thinking": None, "signature": "s"}], id="none-text"),
    pytest.param([{"type": "other"}], id="unknown-type"),
    pytest.param([["thinking"]], id="list-item"),
]


@pytest.mark.parametrize("field", BAD_FIELDS)
async def test_a_malformed_thinking_blocks_field_in_the_callers_conversation_is_refused(
    router: FakeFluxRouter, field: Any
) -> None:
    conversation = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "thinking_blocks": field},
    ]
    async with client_for(router, False) as client:
        with pytest.raises(ConversationError, match=r"messages\[1\]\['thinking_blocks'\]"):
            await Agent(client=client).run("again", messages=conversation)
    assert router.model_requests == []


async def test_a_callers_model_with_unsendable_thinking_is_cleaned_not_a_crash(tmp_path: Path) -> None:
    """Found attacking this change: lone surrogates in a custom Model's thinking_blocks reached
    the journal as a raw TypeError. Now they are replaced (as in the text) and junk is dropped."""
    from agentloop import ModelTurn, Usage
    from agentloop.testing import FunctionModel

    bad = [
        {"type": "thinking", "thinking": "bad \ud800", "signature": "s"},
        5,
        {"type": "redacted_thinking", "data": 1},
    ]
    answers = iter(
        [
            ModelTurn(
                message={
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{}"},
                        }
                    ],
                    "thinking_blocks": bad,
                },
                usage=Usage(requests=1),
            ),
            "done",
        ]
    )
    seen: list[list[dict[str, Any]]] = []

    def model(messages: list[dict[str, Any]], tools: Any) -> Any:
        seen.append(messages)
        return next(answers)

    agent = Agent(
        client=FunctionModel(model), tools=weather_tools(), journal=SQLiteJournal(tmp_path / "j.db")
    )
    result = await agent.run("q")
    assert result.output == "done"
    assert result.messages[1]["thinking_blocks"] == [
        {"type": "thinking", "thinking": "bad \ufffd", "signature": "s"}
    ]
    assert seen[1][1]["thinking_blocks"] == result.messages[1]["thinking_blocks"]


async def test_the_scripted_model_plays_thinking_as_the_wire_decodes_it() -> None:
    from agentloop.testing import ScriptedModel

    model = ScriptedModel(script())
    result = await Agent(client=model, tools=weather_tools()).run("q")
    assert result.messages[1]["thinking_blocks"] == [FIRST.block(), HIDDEN.block()]
    assert model.requests[1]["messages"][1]["thinking_blocks"] == [FIRST.block(), HIDDEN.block()]


# --- the fake router's rules, from a plain HTTP client ---------------------------------------------

TOOL_LOOP = [
    {"role": "user", "content": "q"},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "21"}]},
]
RULES = [
    pytest.param(
        {
            "max_tokens": 1024,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": TOOL_LOOP[:1],
        },
        "`max_tokens` must be greater than `thinking.budget_tokens`",
        id="budget",
    ),
    pytest.param(
        {"max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": TOOL_LOOP},
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`",
        id="tool-loop",
    ),
    pytest.param(
        {
            "max_tokens": 64,
            "messages": [
                TOOL_LOOP[0],
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "x"}, {"type": "redacted_thinking", "data": "d"}],
                },
            ],
        },
        "messages.1.content.0: If an assistant message contains any thinking blocks, the first block must be",
        id="thinking-not-first",
    ),
    pytest.param(
        {
            "max_tokens": 64,
            "messages": [
                TOOL_LOOP[0],
                {
                    "role": "assistant",
                    "content": [{"type": "redacted_thinking"}, {"type": "text", "text": "x"}],
                },
            ],
        },
        "messages.1.content.0.data: Field required",
        id="redacted-without-data",
    ),
]


@pytest.mark.parametrize(("body", "message"), RULES)
async def test_the_fake_router_refuses_what_anthropic_refuses(
    router: FakeFluxRouter, body: dict[str, Any], message: str
) -> None:
    import httpx

    router.add(text("never sent"))
    async with httpx.AsyncClient() as http:
        answer = await http.post(router.anthropic_url + "/v1/messages", json={"model": "m", **body})
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert answer.json()["error"]["message"].startswith(message)
    assert router.served == 0


async def test_the_fake_router_refuses_thinking_blocks_on_the_openai_wire(router: FakeFluxRouter) -> None:
    import httpx

    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "thinking_blocks": []},
    ]
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            router.base_url + "/chat/completions", json={"model": "m", "messages": messages}
        )
    assert answer.status_code == 400
    assert "'thinking_blocks' was unexpected" in answer.json()["error"]["message"]
