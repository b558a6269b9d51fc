"""Anthropic wire, streamed: a `tool_use` block whose `content_block_start` already carries a
filled `input` (a router may send the call whole; Anthropic sends `input: {}` and the JSON in
`input_json_delta`s). Alone, the filled input is the arguments. With deltas as well, the deltas
are the arguments, as Anthropic's SDK reads a stream: the two were joined into
`{"x":"a"}{"x": "a"}` and the call refused as not JSON. The streamed `ToolCallDelta` fragments
join to exactly the arguments the call ran with.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentloop import Agent, FluxClient, RetryPolicy, ToolCallDelta, ToolRegistry
from agentloop.testing import FakeFluxRouter, raw, text

pytestmark = pytest.mark.anyio


def answer(start_input: dict[str, Any], deltas: list[str]) -> Any:
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {"id": "m", "model": "m", "content": []}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "t1", "name": "echo", "input": start_input}}),
    ]  # fmt: skip
    for piece in deltas:
        delta = {"type": "input_json_delta", "partial_json": piece}
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}}))
    events.append(("message_stop", {"type": "message_stop"}))
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    return raw(200, body, content_type="text/event-stream")


CASES = {
    "filled, no delta": ({"x": "whole"}, [], "whole"),
    "filled, an empty delta": ({"x": "whole"}, [""], "whole"),
    "filled, the same in deltas": ({"x": "a"}, ['{"x": ', '"a"}'], "a"),
    "filled, other deltas": ({"x": "a"}, ["", '{"x": "b"}'], "b"),
    "empty, deltas (Anthropic's way)": ({}, ["", '{"x": "c"}'], "c"),
}


@pytest.mark.parametrize(("start", "deltas", "want"), list(CASES.values()), ids=list(CASES))
async def test_a_filled_start_input_and_deltas_give_one_set_of_arguments(
    start: dict[str, Any], deltas: list[str], want: str
) -> None:
    seen: list[str] = []
    tools = ToolRegistry()

    @tools.tool
    async def echo(x: str) -> str:
        """Echo x."""
        seen.append(x)
        return x

    fragments: list[str] = []
    async with FakeFluxRouter([answer(start, deltas), text("done")]) as router:
        retry = RetryPolicy(max_retries=0)
        async with FluxClient(base_url=router.anthropic_url, api_key="test-key-0123456789", retry=retry) as c:
            async with Agent(client=c, tools=tools, model="m").stream("hi") as events:
                async for event in events:
                    if isinstance(event, ToolCallDelta):
                        fragments.append(event.arguments_delta)
    (record,) = events.result.tool_calls
    assert (record.status, seen) == ("ok", [want])
    assert json.loads(record.raw_arguments) == {"x": want}
    assert "".join(fragments) == record.raw_arguments  # what a consumer showed is what ran
