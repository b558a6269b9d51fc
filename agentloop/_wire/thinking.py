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

Where the blocks sat: with interleaved thinking an answer can think between its other blocks
([thinking, text, thinking, text, tool_use]); Anthropic's prefix check fails when a thinking block
is moved, and a block's prefix includes the text before it in its own message. Such an answer's
order is kept in a second extension field, `thinking_layout` (agentloop's own): one item per
content block, "thinking" (the next of `thinking_blocks`), "tool_use" (the next of `tool_calls`)
or an int (a text block of that many characters of `content`, in order). An answer in the
default order (its thinking, one text, its tool_use blocks) has none. The Anthropic wire follows the layout when it
still fits the message (else the default order); the OpenAI wire strips it with the blocks.

A block's text is untrusted model output like the rest of the answer: it is bounded by the HTTP
budgets (`InputBudget.max_response_bytes`, and `max_sse_line_bytes` per streamed event). A
block whose present fields are not text is refused as a typed error where it is decoded: it
could not be sent back as the wire requires, so the next request would fail less clearly.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LAYOUT_KEY",
    "THINKING_KEY",
    "BlockOrder",
    "Layout",
    "keep_layout",
    "ThinkingSlot",
    "canonical_block",
    "in_layout",
    "is_kind",
    "layout",
    "layout_problem",
    "thinking_out",
    "without_thinking",
]

THINKING_KEY = "thinking_blocks"
LAYOUT_KEY = "thinking_layout"
_EXTENSIONS = (THINKING_KEY, LAYOUT_KEY)
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
            raise ValueError(f"thinking whose `thinking` is {type(piece).__name__}, not text")

    def add_signature(self, piece: Any) -> None:
        if isinstance(piece, str):
            self.signature = [*(self.signature or ()), piece]
        elif piece is not None:
            raise ValueError(f"thinking whose `signature` is {type(piece).__name__}, not text")

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
    """The messages without the extension fields (the same list when none has them): for a wire
    whose providers refuse a message property they do not know (OpenAI answers 400)."""
    for m in messages:  # (a plain loop: ~3 µs per 100 messages, the cheapest scan measured)
        if THINKING_KEY in m or LAYOUT_KEY in m:
            return [{k: v for k, v in m.items() if k not in _EXTENSIONS} for m in messages]
    return messages


Layout = list[str | int]


def layout(kinds: Layout) -> Layout | None:
    """An answer's blocks in order ("thinking", "tool_use", a text's length) → its `thinking_layout`,
    or None when the default order says it: thinking blocks, at most one text, tool_use blocks."""
    i, n = 0, len(kinds)
    while i < n and kinds[i] == THINKING:
        i += 1
    if i < n and isinstance(kinds[i], int):
        i += 1
    while i < n and kinds[i] == "tool_use":
        i += 1
    return kinds if i < n else None


def keep_layout(message: dict[str, Any], kinds: Layout) -> None:
    """Put an answer's `thinking_layout` on its message when its thinking was interleaved."""
    order = layout(kinds)
    if order is not None:
        message[LAYOUT_KEY] = order


_ORDERED: dict[str, str | int] = {"text": 0, "tool_use": "tool_use", THINKING: THINKING, REDACTED: THINKING}


class BlockOrder:
    """A streamed answer's blocks by index, for its layout: kind, and a text's length so far."""

    __slots__ = ("_kinds",)

    def __init__(self) -> None:
        self._kinds: dict[int, str | int] = {}

    def start(self, index: int, block: dict[str, Any]) -> None:
        """A started block: its index and its type checked already (`shapes.block_problem`)."""
        if block["type"] in _ORDERED:
            self._kinds[index] = _ORDERED[block["type"]]

    def text(self, index: Any, piece: Any) -> None:
        before = self._kinds.get(index) if type(index) is int else None
        if isinstance(before, int) and isinstance(piece, str):
            self._kinds[index] = before + len(piece)

    def kinds(self) -> Layout:
        return [self._kinds[i] for i in sorted(self._kinds)]


def layout_problem(value: Any) -> str | None:
    """What is wrong with a caller's `thinking_layout`, or None."""
    if isinstance(value, list) and all(
        v in (THINKING, "tool_use") or (type(v) is int and v >= 0) for v in value
    ):
        return None
    return f'a list of "thinking", "tool_use" and text lengths (ints >= 0), got {value!r:.200}'


def in_layout(
    order: Any, thinking: list[dict[str, Any]], text: str, calls: list[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """The message's blocks in its answer's order, or None when the layout no longer fits it (a
    caller changed the message: the default order then). Blank text blocks are left out, as the
    wire leaves out blank text."""
    if layout_problem(order) is not None:
        return None
    taken = {THINKING: iter(thinking), "tool_use": iter(calls)}
    out, at = [], 0
    for item in order:
        if isinstance(item, int):
            piece, at = text[at : at + item], at + item
            if piece and not piece.isspace():
                out.append({"type": "text", "text": piece})
            continue
        block = next(taken[item], None)
        if block is None:
            return None
        out.append(block)
    if at != len(text) or any(next(rest, None) is not None for rest in taken.values()):
        return None
    return out
