"""Where an answer's thinking blocks sit among its text and tool_use blocks, sent back.

With interleaved thinking an Anthropic answer can think between its other blocks:
[thinking A, text, thinking B, text, tool_use]. Anthropic's prefix check on thinking blocks fails
when "a thinking block between others was left out or moved", and a block's prefix is everything
before it, the text of its own message included (platform.claude.com, preserved thinking / prefix
checks): a 400, or the block silently dropped, depending on the model.

Regression: the canonical message kept one `content` text and `thinking_blocks` without their
places, so the Anthropic wire sent such an answer back as [A, B, text + text, tool_use]. Now its
order is kept in `thinking_layout` and the wire sends it back as it came, streamed or not, after
a resume from the journal; an answer that thinks only first is unchanged (no layout).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import (
    Agent,
    ConversationError,
    FluxClient,
    RetryPolicy,
    RunFinished,
    SQLiteJournal,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, raw, text, thinking

pytestmark = pytest.mark.anyio
THINK = {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048}
A, B = thinking("A").block(), thinking("B: 21 °C 🌦").block()  # signed as the fake signs what it sends
CALL = {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"city": "Lisbon"}}
INTERLEAVED = [
    A,
    {"type": "text", "text": "Let me check. "},
    B,
    {"type": "text", "text": "Checking é."},
    CALL,
]
STREAMS = [pytest.param(True, id="streamed"), pytest.param(False, id="whole")]


@pytest.fixture
async def router() -> AsyncIterator[FakeFluxRouter]:
    async with FakeFluxRouter() as r:
        yield r


def _whole(content: list[dict[str, Any]]) -> bytes:
    return json.dumps({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": content,
        "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1},
    }).encode()  # fmt: skip


def _event(kind: str, **fields: Any) -> bytes:
    return b"event: %b\ndata: %b\n\n" % (kind.encode(), json.dumps({"type": kind, **fields}).encode())


def _streamed(content: list[dict[str, Any]]) -> bytes:
    """The same answer as Anthropic streams it: each block started empty, then its deltas."""
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [],
               "usage": {"input_tokens": 1, "output_tokens": 0}}  # fmt: skip
    out = [_event("message_start", message=message)]
    for i, b in enumerate(content):
        if b["type"] == "text":
            out.append(_event("content_block_start", index=i, content_block={"type": "text", "text": ""}))
            for piece in (b["text"][:3], b["text"][3:]):  # a text in two pieces
                out.append(
                    _event("content_block_delta", index=i, delta={"type": "text_delta", "text": piece})
                )
        elif b["type"] == "thinking":
            start = {"type": "thinking", "thinking": ""}
            out.append(_event("content_block_start", index=i, content_block=start))
            delta = {"type": "thinking_delta", "thinking": b["thinking"]}
            out.append(_event("content_block_delta", index=i, delta=delta))
            delta = {"type": "signature_delta", "signature": b["signature"]}
            out.append(_event("content_block_delta", index=i, delta=delta))
        else:
            start = {**b, "input": {}}
            out.append(_event("content_block_start", index=i, content_block=start))
            delta = {"type": "input_json_delta", "partial_json": json.dumps(b["input"])}
            out.append(_event("content_block_delta", index=i, delta=delta))
        out.append(_event("content_block_stop", index=i))
    out.append(_event("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 5}))
    out.append(_event("message_stop"))
    return b"".join(out)


def _answer(content: list[dict[str, Any]], stream: bool) -> Any:
    if stream:
        return raw(200, _streamed(content), content_type="text/event-stream")
    return raw(200, _whole(content))


def _agent(client: FluxClient, **options: Any) -> Agent[Any, Any]:
    tools = ToolRegistry()

    @tools.tool
    async def look(city: str) -> str:
        """Look."""
        return f"seen {city}"

    return Agent(client=client, tools=tools, model_settings=THINK, **options)


def _client(router: FakeFluxRouter, stream: bool) -> FluxClient:
    retry = RetryPolicy(max_retries=0)
    return FluxClient(base_url=router.anthropic_url, api_key="k", retry=retry, stream=stream)


async def _run(agent: Agent[Any, Any], stream: bool, *args: Any, **options: Any) -> Any:
    if not stream:
        return await agent.run(*args, **options)
    async with agent.stream(*args, **options) as events:
        return [e async for e in events if isinstance(e, RunFinished)][-1].result


async def _sent_back(router: FakeFluxRouter, content: list[dict[str, Any]], stream: bool) -> Any:
    router.add(_answer(content, stream), text("done"))
    async with _client(router, stream) as client:
        result = await _run(_agent(client), stream, "go")
    assert result.output == "done"
    turn = router.requests[1].json["messages"][1]
    assert turn["role"] == "assistant"
    return turn["content"], result.messages[1]


@pytest.mark.parametrize("stream", STREAMS)
async def test_thinking_first_goes_back_exactly_and_keeps_no_layout(
    router: FakeFluxRouter, stream: bool
) -> None:
    content = [A, B, {"type": "text", "text": "Let me check."}, CALL]
    sent, stored = await _sent_back(router, content, stream)
    assert sent == content
    assert "thinking_layout" not in stored


@pytest.mark.parametrize("stream", STREAMS)
async def test_interleaved_thinking_goes_back_in_its_place(router: FakeFluxRouter, stream: bool) -> None:
    sent, stored = await _sent_back(router, INTERLEAVED, stream)
    assert sent == INTERLEAVED
    assert stored["content"] == "Let me check. Checking é."  # the canonical text is still one text
    assert stored["thinking_layout"] == ["thinking", 14, "thinking", 11, "tool_use"]


async def test_the_layout_survives_a_resume_from_the_journal(router: FakeFluxRouter, tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "j.db")
    router.add(_answer(INTERLEAVED, False), text("done"))
    async with _client(router, False) as client:
        agent = _agent(client, journal=journal, require_approval=lambda name, arguments: True)
        paused = await agent.run("go", run_id="r1")
        assert paused.stop_reason == "approval_required"
        result = await agent.resume("r1", approvals={paused.pending[0].id: True})
    journal.close()
    assert result.output == "done"
    assert router.requests[-1].json["messages"][1]["content"] == INTERLEAVED


async def test_a_layout_that_no_longer_fits_falls_back_to_thinking_first(router: FakeFluxRouter) -> None:
    # a caller's edit of the text (a history policy, a redaction): the default order, never garbage
    _, stored = await _sent_back(router, INTERLEAVED, False)
    edited = {**stored, "content": "Checked."}
    router.add(text("again"))
    async with _client(router, False) as client:
        result = await _agent(client).run("more", messages=[{"role": "user", "content": "go"}, edited,
                                                          {"role": "tool", "tool_call_id": "toolu_1", "content": "x"}])  # fmt: skip
    assert result.output == "again"
    assert router.requests[-1].json["messages"][1]["content"] == [
        A,
        B,
        {"type": "text", "text": "Checked."},
        CALL,
    ]


async def test_the_openai_wire_never_sends_the_layout(router: FakeFluxRouter) -> None:
    _, stored = await _sent_back(router, INTERLEAVED, False)
    router.add(text("fine"))
    tool = {"role": "tool", "tool_call_id": "toolu_1", "content": "x"}
    async with FluxClient(base_url=router.base_url, api_key="k", stream=False) as client:
        result = await Agent(client=client).run(
            "more", messages=[{"role": "user", "content": "go"}, stored, tool]
        )
    assert result.output == "fine"
    sent = router.requests[-1].json["messages"][1]
    assert "thinking_layout" not in sent and "thinking_blocks" not in sent


@pytest.mark.parametrize("layout", [["thinking", -1], "thinking", [1.5], ["text"], {"a": 1}])
async def test_a_malformed_layout_in_a_callers_conversation_is_refused(layout: Any) -> None:
    message = {"role": "assistant", "content": "x", "thinking_blocks": [A], "thinking_layout": layout}
    agent = Agent(client=FluxClient(base_url="http://127.0.0.1:9/anthropic", api_key="k"))
    with pytest.raises(ConversationError, match="thinking_layout"):
        await agent.run("go", messages=[{"role": "user", "content": "hi"}, message])


def _blocks() -> Any:
    """An answer as Anthropic could send it with interleaved thinking: thinking first, then any mix
    of thinking, non-blank text and tool_use blocks, with at least one tool_use."""
    words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
    block = st.one_of(
        words.map(lambda t: thinking(t).block()),
        words.filter(lambda t: not t.isspace()).map(lambda t: {"type": "text", "text": t}),
        st.just("tool_use"),
    )
    return st.tuples(words, st.lists(block, max_size=6)).map(
        lambda parts: [thinking(parts[0]).block(), *parts[1], "tool_use"]
    ).map(lambda bs: [
        {"type": "tool_use", "id": f"toolu_{i}", "name": "look", "input": {"city": str(i)}} if b == "tool_use" else b
        for i, b in enumerate(bs)
    ])  # fmt: skip


@pytest.mark.parametrize("stream", STREAMS)
@settings(
    max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=_blocks())
async def test_any_interleaving_goes_back_as_it_came(stream: bool, content: list[dict[str, Any]]) -> None:
    async with FakeFluxRouter() as router:
        sent, _ = await _sent_back(router, content, stream)
    assert sent == content
