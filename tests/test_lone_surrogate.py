"""A model answer holding a lone surrogate escape (`"\\ud800"`: half of a UTF-16 pair), on both
wires, streamed or not. It IS JSON, and the error said the body was "not JSON". Now:

- in the answer's text it is an `APIResponseError` saying what it is and where (no UTF-8 text can
  hold it: the answer could be neither journaled nor sent back) and to retry / report it;
- in a tool call's arguments (sent as text, or as an object: Anthropic's `input`) the call ends as
  `invalid_arguments` saying so, like any other arguments the model can fix; the sibling call runs
  and the run goes on.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from wirehelp import WIRES, run_or_stream

from agentloop import Agent, APIResponseError, FluxClient, RetryPolicy, ToolRegistry
from agentloop.testing import FakeFluxRouter, raw, text

pytestmark = pytest.mark.anyio

LONE = "\ud800"  # json.dumps writes it as the escape \ud800, as a router would


def client(router: FakeFluxRouter, wire: str) -> FluxClient:
    url = router.base_url if wire == "openai" else router.anthropic_url
    return FluxClient(base_url=url, api_key="test-key-0123456789", retry=RetryPolicy(max_retries=0))


def sse(events: list[tuple[str | None, dict[str, Any] | str]]) -> str:
    out = []
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        out.append(f"{head}data: {data if isinstance(data, str) else json.dumps(data)}\n\n")
    return "".join(out)


def openai_answer(message: dict[str, Any], streamed: bool) -> Any:
    if not streamed:
        choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}
        return raw(200, json.dumps({"id": "c", "model": "m", "choices": [choice]}))
    delta: dict[str, Any] = {"role": "assistant", **message}
    for i, c in enumerate(delta.get("tool_calls", ())):
        c["index"] = i
    chunks = [{"id": "c", "choices": [{"index": 0, "delta": delta}]}]
    chunks.append({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return raw(200, sse([(None, c) for c in chunks] + [(None, "[DONE]")]), content_type="text/event-stream")


def anthropic_answer(blocks: list[dict[str, Any]], streamed: bool) -> Any:
    if not streamed:
        body = {"id": "m", "type": "message", "role": "assistant", "model": "m", "content": blocks}
        return raw(200, json.dumps({**body, "stop_reason": "end_turn"}))
    events: list[tuple[str | None, dict[str, Any] | str]] = [
        ("message_start", {"type": "message_start", "message": {"id": "m", "model": "m", "content": []}})
    ]
    for i, b in enumerate(blocks):
        if b["type"] == "text":
            start, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": b["text"]}
        else:
            start = {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(b["input"])}
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": i, "content_block": start})
        )
        events.append(("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return raw(200, sse(events), content_type="text/event-stream")


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("how", ["run", "stream"])
async def test_a_lone_surrogate_in_the_answer_text_is_named_not_called_not_json(wire: str, how: str) -> None:
    streamed = how == "stream"
    if wire == "openai":
        answer, where = openai_answer({"content": "ok " + LONE}, streamed), "content"
    else:
        answer, where = anthropic_answer([{"type": "text", "text": "ok " + LONE}], streamed), "text"
    async with FakeFluxRouter([answer]) as router, client(router, wire) as c:
        with pytest.raises(APIResponseError) as info:
            await run_or_stream(Agent(client=c, model="m"), how, "hi")
    message = str(info.value)
    assert "not JSON" not in message
    assert "a lone surrogate ('\\ud800') at $." in message and where in message
    assert "half of a UTF-16 pair" in message and "retry" in message


def tools_seen(seen: list[str]) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def echo(x: str) -> str:
        """Echo x."""
        seen.append(x)
        return x

    return tools


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("how", ["run", "stream", "object"])
async def test_a_lone_surrogate_in_arguments_is_invalid_arguments_fed_back(wire: str, how: str) -> None:
    """`object`: the arguments as an object in a whole answer (Anthropic's `input`; some OpenAI
    routers): the body's parse met the escape before the dispatcher could."""
    streamed = how == "stream"
    bad, good = {"x": "a" + LONE}, {"x": "fine"}
    if wire == "openai":
        args = (bad, good) if how == "object" else (json.dumps(bad), json.dumps(good))
        calls = [
            {"id": f"c{i}", "type": "function", "function": {"name": "echo", "arguments": a}}
            for i, a in enumerate(args)
        ]
        answer = openai_answer({"content": None, "tool_calls": calls}, streamed)
    else:
        blocks = [
            {"type": "tool_use", "id": f"c{i}", "name": "echo", "input": a} for i, a in enumerate((bad, good))
        ]
        answer = anthropic_answer(blocks, streamed)
    seen: list[str] = []
    async with FakeFluxRouter([answer, text("done")]) as router, client(router, wire) as c:
        agent = Agent(client=c, tools=tools_seen(seen), model="m")
        result = await run_or_stream(agent, "run" if how == "object" else how, "hi")
    assert result.output == "done"
    assert seen == ["fine"]  # the sibling ran; the bad call never reached the tool
    first, second = result.tool_calls
    assert (first.status, second.status) == ("invalid_arguments", "ok")
    assert "a lone surrogate ('\\ud800') at $.x" in first.content and "not a character" in first.content
    assert "\\ud800" in first.content  # the model is shown what it sent, as an escape (sendable)
    assert "lone surrogate" in json.dumps(router.requests[1].json)  # fed back to the model
