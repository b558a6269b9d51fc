"""Empty answers and empty prompts, through the public API on both wires (review of 2 Dec).

Each test is the exact repro of what the review found (the docstring says what happened before).
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from wirehelp import WIRES, make_client, run_or_stream

from agentloop import Agent, APIResponseError, ConversationError
from agentloop.testing import FakeFluxRouter, call, raw, text, tool_calls

pytestmark = pytest.mark.anyio


# --- 1. an empty user text on the Anthropic wire ----------------------------------------------


@pytest.mark.parametrize("how", ["run", "stream"])
@pytest.mark.parametrize(
    "messages",
    [
        None,  # agent.run("")
        [
            {"role": "user", "content": " \n\t"}
        ],  # blank: "text content blocks must contain non-whitespace text"
        [{"role": "user", "content": [{"type": "text", "text": ""}]}],
        [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "text", "text": ""}]}],
    ],
)
async def test_an_empty_user_text_is_refused_before_any_request_on_the_anthropic_wire(
    how: str, messages: Any
) -> None:
    """Before: the empty text went out as `{"type": "text", "text": ""}`, which Anthropic refuses
    with a 400 ("text content blocks must be non-empty") that named nothing of the caller's."""
    async with FakeFluxRouter([text("ok")]) as router, make_client(router, "anthropic") as client:
        agent = Agent(client=client, model="m")
        with pytest.raises(ConversationError, match=r"messages\[0\].*(empty|blank) text.*Anthropic") as info:
            await run_or_stream(agent, how, "" if messages is None else "go", messages=messages)
        assert router.model_requests == []
    if messages is not None and len(messages[0]["content"]) == 2:
        assert "content[1]" in str(info.value)


async def test_an_empty_user_text_still_goes_out_on_the_openai_wire() -> None:
    # OpenAI takes "" as a user message: that wire is unchanged.
    async with FakeFluxRouter([text("ok")]) as router, make_client(router, "openai") as client:
        result = await Agent(client=client, model="m").run("")
        assert result.output == "ok"
        assert router.model_requests[0].json["messages"][-1] == {"role": "user", "content": ""}


@pytest.mark.parametrize("content", ["", None, "\n\n"])
async def test_an_assistant_turn_with_empty_text_and_calls_goes_on_without_an_empty_block(
    content: Any,
) -> None:
    """An assistant message with "" / None content and tool calls (the caller's, and the run's own)
    still goes out on the Anthropic wire, its empty text dropped (refused there too)."""

    def echo(x: str) -> str:
        return x

    earlier = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": content,
         "tool_calls": [{"id": "c0", "type": "function", "function": {"name": "echo", "arguments": '{"x": "a"}'}}]},
        {"role": "tool", "tool_call_id": "c0", "content": "a"},
    ]  # fmt: skip
    replies = [tool_calls(call("echo", {"x": "b"}), content=content), text("done")]
    async with FakeFluxRouter(replies) as router, make_client(router, "anthropic") as client:
        result = await Agent(client=client, model="m", tools=[echo]).run("go", messages=earlier)
        assert result.output == "done"
        for request in router.model_requests:
            for m in request.json["messages"]:
                for block in m["content"]:
                    assert block.get("type") != "text" or block["text"].strip(), request.json


# --- 2. an empty final answer ------------------------------------------------------------------

EMPTY_FINALS = {
    "openai": [
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": None},
        {"role": "assistant"},
    ],
    "anthropic": [[{"type": "text", "text": ""}], []],
}


def _empty_body(wire: str, shape: Any) -> bytes:
    if wire == "openai":
        choice = {"index": 0, "message": shape, "finish_reason": "stop"}
        return json.dumps({"id": "x", "choices": [choice]}).encode()
    body = {"id": "m", "type": "message", "role": "assistant", "content": shape, "stop_reason": "end_turn"}
    return json.dumps(body).encode()


def _empty_stream(wire: str, shape: Any) -> bytes:
    if wire == "openai":
        delta = {k: v for k, v in shape.items() if k != "role"}
        chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", **delta}}]},
                  {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]  # fmt: skip
        return b"".join(b"data: %s\n\n" % json.dumps(c).encode() for c in chunks) + b"data: [DONE]\n\n"
    events = [{"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}}]
    for i, block in enumerate(shape):
        events += [{"type": "content_block_start", "index": i, "content_block": block},
                   {"type": "content_block_stop", "index": i}]  # fmt: skip
    events += [{"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 0}},
               {"type": "message_stop"}]  # fmt: skip
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events)


CASES = [(wire, shape) for wire, shapes in EMPTY_FINALS.items() for shape in shapes]


@pytest.mark.parametrize(("how", "streamed"), [("run", False), ("stream", False), ("stream", True)])
@pytest.mark.parametrize(("wire", "shape"), CASES, ids=[f"{w}-{i}" for i, (w, _) in enumerate(CASES)])
async def test_an_empty_final_answer_is_an_empty_str_on_every_wire(
    wire: str, shape: Any, streamed: bool, how: str
) -> None:
    """Before: `output` was "" or None by wire and shape (OpenAI "" → "", null → None; Anthropic
    an empty text block or no block → None), and the stored `{"content": null}` without calls
    was sent back as it was on the next turn. Now: "" and `content: ""`, and a next run over the
    stored messages sends them on either wire."""
    reply = (
        raw(200, _empty_stream(wire, shape), content_type="text/event-stream")
        if streamed
        else raw(200, _empty_body(wire, shape))
    )
    async with FakeFluxRouter([reply, text("again")]) as router, make_client(router, wire) as client:
        agent = Agent(client=client, model="m")
        result = await run_or_stream(agent, how, "hi")
        assert result.output == "" and result.stop_reason == "final"
        assert result.messages[-1]["role"] == "assistant" and result.messages[-1]["content"] == ""
        follow = await agent.run("more", messages=result.messages)
        assert follow.output == "again"
        sent = router.model_requests[-1].json["messages"]
        if wire == "openai":
            assert {"role": "assistant", "content": ""} in sent
            assert all(m.get("content") is not None for m in sent if not m.get("tool_calls"))
        else:  # the empty answer is dropped (Anthropic refuses empty text), roles still alternate
            assert [m["role"] for m in sent] == ["user"] and sent[0]["content"][-1]["text"] == "more"


@pytest.mark.parametrize("wire", WIRES)
async def test_an_empty_answer_under_an_output_type_that_allows_text_is_still_an_empty_str(wire: str) -> None:
    # output_type=str (text allowed): the same "" as without one.
    async with FakeFluxRouter([raw(200, _empty_body(wire, EMPTY_FINALS[wire][-1]))]) as router:
        async with make_client(router, wire) as client:
            result = await Agent(client=client, model="m", output_type=str).run("hi")
    assert result.output == ""


# --- 3. an Anthropic delta for a block that was never started ----------------------------------


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events)


_START = {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}}
_END = (
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
    {"type": "message_stop"},
)
_TEXT0 = (
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}},
    {"type": "content_block_stop", "index": 0},
)


@pytest.mark.parametrize(
    ("delta", "index"),
    [
        ({"type": "input_json_delta", "partial_json": '{"x": 1}'}, 1),
        ({"type": "text_delta", "text": " and more"}, 1),
        ({"type": "text_delta", "text": " and more"}, None),
        ({"type": "input_json_delta", "partial_json": "{}"}, [0]),
    ],
)
async def test_an_anthropic_delta_for_a_block_never_started_is_a_typed_error(delta: Any, index: Any) -> None:
    """Before: the delta (arguments or text for content block 1, never started) was dropped and
    the answer "ok" looked whole. Now it is the APIResponseError of a malformed stream, naming
    the index (retryable, like other malformed streams, while nothing has reached the caller)."""
    orphan = {"type": "content_block_delta", "index": index, "delta": delta}
    body = _sse(_START, *_TEXT0, orphan, *_END)
    reply = raw(200, body, content_type="text/event-stream")
    async with FakeFluxRouter(lambda _: reply) as router, make_client(router, "anthropic") as client:
        agent = Agent(client=client, model="m")
        with pytest.raises(
            APIResponseError, match=re.escape(f"{delta['type']} for content block index {index!r}")
        ) as info:
            await run_or_stream(agent, "stream", "hi")
        assert "never started" in str(info.value)


async def test_a_delta_for_a_started_block_of_another_kind_is_still_dropped() -> None:
    # A server tool's block (started, not a tool_use) streams input_json_delta: not an orphan,
    # not a call of ours: dropped, as unknown blocks are.
    server = (
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 1},
    )  # fmt: skip
    body = _sse(_START, *_TEXT0, *server, *_END)
    async with FakeFluxRouter([raw(200, body, content_type="text/event-stream")]) as router:
        async with make_client(router, "anthropic") as client:
            result = await run_or_stream(Agent(client=client, model="m"), "stream", "hi")
    assert result.output == "ok" and result.tool_calls == []


# --- 4. an event or a body nested deeper than the codec's bound --------------------------------


def _deep(n: int) -> str:
    return "[" * n + "]" * n


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("streamed", [False, True], ids=["body", "sse"])
async def test_json_nested_too_deep_says_so_and_names_the_bound(wire: str, streamed: bool) -> None:
    """Before: an SSE event nested past the codec's 200 levels was "an event whose data is not
    JSON", and the user went looking for a syntax error. Now both an event and a body say it is
    nested too deep, and that InputBudget.max_json_depth (the setting a user would try) does not
    raise this bound."""
    value = {"x": json.loads(_deep(300))}
    if not streamed:
        reply = raw(200, json.dumps(value))
    elif wire == "openai":
        reply = raw(200, b"data: %s\n\n" % json.dumps(value).encode(), content_type="text/event-stream")
    else:
        event = {"type": "content_block_delta", "index": 0, "delta": value}
        reply = raw(200, _sse(_START, event), content_type="text/event-stream")
    async with FakeFluxRouter(lambda _: reply) as router, make_client(router, wire) as client:
        with pytest.raises(APIResponseError) as info:
            await run_or_stream(Agent(client=client, model="m"), "stream" if streamed else "run", "hi")
    message = str(info.value)
    assert "nested too deep" in message and "nested deeper than 200 levels" in message
    assert "InputBudget.max_json_depth" in message and "not JSON" not in message


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ([{"type": "text", "text": ""}], "must be non-empty"),
        ("", "must be non-empty"),
        ([{"type": "text", "text": "\n"}], "non-whitespace"),
        ([{"type": "text", "text": " "}, {"type": "text", "text": "real"}], None),
    ],
)
async def test_the_fake_router_refuses_empty_anthropic_text_as_anthropic_does(
    content: Any, said: Any
) -> None:
    # So a client (or a test's raw request) that sends one fails its tests, not production.
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": content}]}
    async with FakeFluxRouter([text("ok")]) as router, httpx.AsyncClient() as http:
        response = await http.post(
            router.anthropic_url + "/v1/messages", json=body,
            headers={"x-api-key": "test-key-0123456789", "anthropic-version": "2023-06-01"},
        )  # fmt: skip
    if said is None:
        assert response.status_code == 200
    else:
        assert response.status_code == 400 and said in response.json()["error"]["message"]
