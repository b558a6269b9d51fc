"""Extended thinking on the canonical assistant message: the `thinking_blocks` extension field.

The conversation is OpenAI chat format, which has no place for Anthropic's thinking. An
Anthropic answer's `thinking` / `redacted_thinking` blocks are kept, in their order, on the
canonical assistant message under `thinking_blocks` (LiteLLM's field and shapes, so a
conversation moves between the two libraries):

    {"type": "thinking", "thinking": "...", "signature": "..."}   # no "signature" key when none came
    {"type": "redacted_thinking", "data": "..."}

Why kept: with thinking enabled, Anthropic answers 400 to a request whose last assistant turn
(the one whose tool_use blocks the tool_result blocks answer) does not start with its thinking
blocks sent back unchanged, signatures included. The Anthropic wire sends them back first in
the assistant message's content (before text and tool_use); the OpenAI wire never sends the key
(OpenAI answers 400 to a message property it does not know).

A block's text is untrusted model output like the rest of the answer: it is bounded by the HTTP
budgets (`InputBudget.max_response_bytes`, and `max_sse_line_bytes` per streamed event). A
block whose present fields are not text is refused as a typed error where it is decoded: it
could not be sent back as the wire requires, so the next request would fail less clearly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["THINKING_KEY", "ThinkingSlot", "canonical_block", "is_kind", "thinking_out", "without_thinking"]

THINKING_KEY = "thinking_blocks"
THINKING, REDACTED = "thinking", "redacted_thinking"
KINDS = frozenset({THINKING, REDACTED})


def is_kind(kind: Any) -> bool:
    """A thinking block's type (a list or an object is none, and unhashable: not a set member)."""
    return type(kind) is str and kind in KINDS


def canonical_block(block: dict[str, Any]) -> dict[str, Any] | str:
    """An answer's `thinking` / `redacted_thinking` block → its canonical form, or what is wrong
    with it (a str). `signature` may be missing (or null): a router translating another
    provider's reasoning may send none; the block goes back as it came."""
    if block.get("type") == REDACTED:
        data = block.get("data")
        if not isinstance(data, str):
            return f"a redacted_thinking block whose `data` is {type(data).__name__}, not text"
        return {"type": REDACTED, "data": data}
    text, signature = block.get("thinking"), block.get("signature")
    if not isinstance(text, str):
        return f"a thinking block whose `thinking` is {type(text).__name__}, not text"
    if signature is None:
        return {"type": THINKING, "thinking": text}
    if not isinstance(signature, str):
        return f"a thinking block whose `signature` is {type(signature).__name__}, not text"
    return {"type": THINKING, "thinking": text, "signature": signature}


class ThinkingSlot:
    """One streamed thinking block: `content_block_start`, then `thinking_delta` and
    `signature_delta` pieces (a redacted block comes whole in its start)."""

    __slots__ = ("data", "redacted", "signature", "text")

    def __init__(self, start: dict[str, Any]) -> None:
        self.redacted = start.get("type") == REDACTED
        self.data: Any = None
        self.text: list[str] = []
        self.signature: list[str] | None = None  # None: no signature came (start nor delta)
        if self.redacted:
            self.data = start.get("data")  # checked by `block()`
            return
        self.add_text(start.get("thinking"))
        self.add_signature(start.get("signature"))

    def add_text(self, piece: Any) -> None:
        if isinstance(piece, str):
            self.text.append(piece)
        elif piece is not None:
            raise ValueError(f"streamed thinking whose `thinking` is {type(piece).__name__}, not text")

    def add_signature(self, piece: Any) -> None:
        if isinstance(piece, str):
            self.signature = [*(self.signature or ()), piece]
        elif piece is not None:
            raise ValueError(f"streamed thinking whose `signature` is {type(piece).__name__}, not text")

    def block(self) -> dict[str, Any] | str:
        if self.redacted:
            return canonical_block({"type": REDACTED, "data": self.data})
        out: dict[str, Any] = {"type": THINKING, "thinking": "".join(self.text)}
        if self.signature is not None:
            out["signature"] = "".join(self.signature)
        return out


def thinking_out(blocks: Any) -> list[dict[str, Any]]:
    """A canonical message's `thinking_blocks` → the Anthropic content blocks sent back first.

    The known fields are copied as they are (values unchanged: the signature covers them); a
    value that is not a list, an item that is not a dict or of another type is skipped (the
    caller's conversation is checked where it enters a run)."""
    if not isinstance(blocks, list):
        return []
    out: list[dict[str, Any]] = []
    for b in blocks:
        if not isinstance(b, dict):
            continue
        kind = b.get("type")
        if kind == THINKING:
            block = {"type": THINKING, "thinking": b.get("thinking")}
            if "signature" in b:
                block["signature"] = b["signature"]
            out.append(block)
        elif kind == REDACTED:
            out.append({"type": REDACTED, "data": b.get("data")})
    return out


def without_thinking(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages without the extension field (the same list when none has it): for a wire
    whose providers refuse a message property they do not know (OpenAI answers 400)."""
    for m in messages:  # (a plain loop: ~3 µs per 100 messages, the cheapest scan measured)
        if THINKING_KEY in m:
            return [
                {k: v for k, v in m.items() if k != THINKING_KEY} if THINKING_KEY in m else m
                for m in messages
            ]
    return messages
