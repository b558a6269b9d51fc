"""Property: thinking blocks survive the Anthropic wire's round trip. A canonical assistant message
encoded into a request, then answered back as those very blocks (whole, or streamed cut into any
pieces), decodes to the same message: blocks in order, text and signatures unchanged."""

from __future__ import annotations

import itertools
import json
from typing import Any

from helpers import examples
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agentloop import ModelRequest, ThinkingDelta
from agentloop._wire.anthropic import AnthropicStream, AnthropicWire  # internal unit under test

# Any text JSON can carry (no lone surrogates: no codec sends them).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
THINKING = st.builds(lambda t, s: {"type": "thinking", "thinking": t, "signature": s}, TEXT, TEXT)
UNSIGNED = st.builds(lambda t: {"type": "thinking", "thinking": t}, TEXT)
REDACTED = st.builds(lambda d: {"type": "redacted_thinking", "data": d}, TEXT)
BLOCKS = st.lists(st.one_of(THINKING, UNSIGNED, REDACTED), min_size=1, max_size=5)


def assistant(blocks: list[dict[str, Any]], text: str, calls: int) -> dict[str, Any]:
    text = "" if text.isspace() else text  # blank text is not sent (the wire refuses it): none comes back
    assume(text or calls)  # thinking alone answers nothing: such a message is not sent (by design)
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [
            {"id": f"toolu_{i}", "type": "function", "function": {"name": "f", "arguments": f'{{"i":{i}}}'}}
            for i in range(calls)
        ]
    message["thinking_blocks"] = blocks
    return message


def sent_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The assistant content blocks the Anthropic wire sends for `message`."""
    messages = [{"role": "user", "content": "q"}, message]
    messages += [
        {"role": "tool", "tool_call_id": c["id"], "content": "r"} for c in message.get("tool_calls", ())
    ]
    body = AnthropicWire().body(ModelRequest("m", messages, [], settings={"thinking": {"type": "enabled"}}))
    assert body["messages"][1]["role"] == "assistant"
    blocks: list[dict[str, Any]] = body["messages"][1]["content"]
    return blocks


def answer(blocks: list[dict[str, Any]]) -> bytes:
    stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    return json.dumps({"id": "msg_1", "type": "message", "model": "m", "content": blocks, "stop_reason": stop,
                       "usage": {"input_tokens": 1, "output_tokens": 1}}).encode()  # fmt: skip


def stream_events(blocks: list[dict[str, Any]], cut: Any) -> list[tuple[str, str]]:
    """Anthropic's stream for `blocks`, each text / signature / JSON cut into drawn pieces."""
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {"id": "msg_1", "model": "m"}}]
    for i, b in enumerate(blocks):
        kind = b["type"]
        if kind == "thinking":
            start = {"type": "thinking", "thinking": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in cut(b["thinking"])]
            if "signature" in b:
                deltas += [{"type": "signature_delta", "signature": p} for p in cut(b["signature"]) or [""]]
        elif kind == "tool_use":
            start, deltas = (
                {**b, "input": {}},
                [
                    {"type": "input_json_delta", "partial_json": p}
                    for p in cut(json.dumps(b["input"], separators=(",", ":")))
                ],
            )
        elif kind == "text":
            start, deltas = (
                {"type": "text", "text": ""},
                [{"type": "text_delta", "text": p} for p in cut(b["text"])],
            )
        else:
            start, deltas = b, []
        events.append({"type": "content_block_start", "index": i, "content_block": start})
        events += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": i})
    events += [{"type": "message_delta", "delta": {"stop_reason": "end_turn"}}, {"type": "message_stop"}]
    return [(e["type"], json.dumps(e)) for e in events]


@settings(max_examples=examples(100), deadline=None)
@given(blocks=BLOCKS, text=TEXT, calls=st.integers(0, 2))
def test_decode_of_encode_keeps_the_blocks(blocks: list[dict[str, Any]], text: str, calls: int) -> None:
    message = assistant(blocks, text, calls)
    sent = sent_blocks(message)
    assert sent[: len(blocks)] == blocks  # first, unchanged
    back = AnthropicWire.decode(answer(sent)).message
    assert back == message


@settings(max_examples=examples(100), deadline=None)
@given(blocks=BLOCKS, text=TEXT, calls=st.integers(0, 2), data=st.data())
def test_the_streamed_answer_decodes_to_the_same_message(
    blocks: list[dict[str, Any]], text: str, calls: int, data: st.DataObject
) -> None:
    message = assistant(blocks, text, calls)

    def cut(s: str) -> list[str]:
        points = sorted(data.draw(st.sets(st.integers(1, max(1, len(s) - 1)), max_size=3))) if s else []
        edges = [0, *(p for p in points if p < len(s)), len(s)]
        return [s[a:b] for a, b in itertools.pairwise(edges) if b > a]

    assembler = AnthropicStream("run", 1, None)
    deltas, failure = assembler.feed_all(stream_events(sent_blocks(message), cut))
    assert failure is None
    assert assembler.result().message == message
    thought = "".join(b["thinking"] for b in blocks if b["type"] == "thinking")
    assert "".join(d.text for d in deltas if isinstance(d, ThinkingDelta)) == thought
