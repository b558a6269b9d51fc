"""Empty answers and empty prompts, through the public API on both wires (review of 2 Dec).

Each test is the exact repro of what the review found (the docstring says what happened before).
"""

from __future__ import annotations

from typing import Any

import pytest
from wirehelp import make_client, run_or_stream

from agentloop import Agent, ConversationError
from agentloop.testing import FakeFluxRouter, call, text, tool_calls

pytestmark = pytest.mark.anyio


# --- 1. an empty user text on the Anthropic wire ----------------------------------------------


@pytest.mark.parametrize("how", ["run", "stream"])
@pytest.mark.parametrize(
    "messages",
    [
        None,  # agent.run("")
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
        with pytest.raises(ConversationError, match=r"messages\[0\].*empty text.*Anthropic") as info:
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


@pytest.mark.parametrize("content", ["", None])
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
                    assert block.get("type") != "text" or block["text"], request.json
