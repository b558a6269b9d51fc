"""The Anthropic Messages wire's answers, whole and streamed, as canonical `ModelTurn`s (the
request side is `anthropic_request.py`; `anthropic.py` joins the two as `AnthropicWire`).

`text` blocks are joined into `content`, `tool_use` blocks become `tool_calls` with `arguments` =
the JSON of `input`; `thinking` / `redacted_thinking` blocks are kept in order on the message's
`thinking_blocks` (`thinking.py`), and the blocks' order as `thinking_layout` when the thinking
was interleaved; unknown blocks are dropped. `stop_reason` maps to OpenAI finish
reasons. Streams: `message_start`, `content_block_start/delta/stop` (`text_delta`,
`input_json_delta`, `thinking_delta` and `signature_delta`: thinking text as `ThinkingDelta`
events), `message_delta`, `message_stop`, `ping`, `error`; a `text_delta` / `input_json_delta`
for a block index never started is an `APIResponseError` (its text or arguments belong nowhere).
A `tool_use` start whose `input` is already filled (a router's way; Anthropic's is `{}`) gives the
arguments when no `input_json_delta` brings any; when deltas do, they are the arguments, as
Anthropic's SDK reads a stream (never the two joined).
A value of the wrong JSON type where a block, its index, a call's id or name, or a delta's text
belongs is a malformed answer (`shapes.py`), never dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import _json
from .._events import ThinkingDelta
from .._exceptions import APIResponseError
from .._retry import Failure
from .._types import ModelTurn, Usage
from .._usage import note, tokens
from .assembler import NO_EVENTS, StreamAssembler, ToolSlot
from .body import preview
from .shapes import block_problem, index_problem, shown, value_problem
from .thinking import THINKING_KEY, BlockOrder, Layout, ThinkingSlot, canonical_block, keep_layout
from .thinking import is_kind as is_thinking

__all__ = ["AnthropicStream", "bad_thinking", "parse_message", "tool_inputs"]

_MESSAGE_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    }
)
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls", "max_tokens": "length",
           "pause_turn": "stop", "refusal": "content_filter"}  # fmt: skip


# --- response: Anthropic → canonical ----------------------------------------------------------


def parse_message(data: Any, *, request_id: str | None = None, status: int = 200) -> ModelTurn:
    """A decoded Messages body (sent with the 2xx `status`) → `ModelTurn`."""
    if not isinstance(data, dict):
        raise APIResponseError(
            f"the endpoint answered {status} with a JSON {type(data).__name__} instead of a message object",
            body=preview(data),
            request_id=request_id,
        )
    content = data.get("content")
    if data.get("type") == "error" or (not isinstance(content, list) and data.get("error") is not None):
        error = data.get("error")
        detail = error.get("message") if isinstance(error, dict) else error
        raise APIResponseError(
            f"the endpoint answered {status} with an error instead of a message: {detail}",
            body=preview(data),
            request_id=request_id,
        )
    if not isinstance(content, list):
        raise APIResponseError(
            f"the endpoint answered {status} with a message that has no content list",
            body=preview(data),
            request_id=request_id,
        )
    stop, problems = data.get("stop_reason"), list[str]()
    return ModelTurn(
        message=_message(content, data, request_id, status),
        usage=_usage(data.get("usage"), problems),
        finish_reason=_FINISH.get(stop, stop) if isinstance(stop, str) else None,
        model=data.get("model") if isinstance(data.get("model"), str) else None,
        request_id=request_id or data.get("id"),
        usage_problems=tuple(problems),
    )


def tool_inputs(data: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """Where this wire's tool-call arguments are in a message body: (the tool_use block, "input")."""
    content = data.get("content") if isinstance(data, dict) else None
    for block in content if isinstance(content, list) else ():
        if isinstance(block, dict) and block.get("type") == "tool_use" and "input" in block:
            yield block, "input"


def _message(content: list[Any], data: Any, request_id: str | None, status: int) -> dict[str, Any]:
    """The content blocks → the canonical assistant message (texts joined, calls, thinking)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    kinds: Layout = []  # the blocks' order, for thinking_layout (thinking.py)
    for block in content:
        problem = block_problem(block)
        if problem is not None:  # dropped, it lost a call or a text without a word
            raise APIResponseError(
                f"the endpoint answered {status} with {problem}; this is a router or proxy fault, retry "
                "later or report it with the request id",
                body=preview(data),
                request_id=request_id,
            )
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
            kinds.append(len(block["text"]))
        elif kind == "tool_use":
            calls.append(_call(block.get("id"), block.get("name"), block.get("input")))
            kinds.append(kind)
        elif is_thinking(kind):
            thinking.append(_thinking(block, data, request_id, status))
            kinds.append("thinking")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message[THINKING_KEY] = thinking
        keep_layout(message, kinds)
    return message


def _thinking(block: dict[str, Any], data: Any, request_id: str | None, status: int) -> dict[str, Any]:
    out = canonical_block(block)
    if isinstance(out, str):
        raise APIResponseError(
            bad_thinking(f"answered {status} with {out}"), body=preview(data), request_id=request_id
        )
    return out


def bad_thinking(what: str) -> str:
    return (
        f"the endpoint {what}: it cannot be sent back as the Anthropic wire requires when the "
        "conversation goes on; this is a router or proxy fault, retry later or report it with the request id"
    )


def _call(cid: Any, name: Any, value: Any) -> dict[str, Any]:
    if value is None:
        args = "{}"
    elif isinstance(value, str):  # not an object: kept, so the dispatcher reports it as invalid
        args = value if value.strip() else "{}"
    else:
        try:
            args = _json.dumps_str(value)
        except (TypeError, ValueError):  # not encodable: kept as text the dispatcher refuses as not JSON
            args = f"<tool_use input that cannot be encoded as JSON: {type(value).__name__}>"
    return {
        "id": cid if isinstance(cid, str) else "",
        "type": "function",
        "function": {"name": name if isinstance(name, str) else "", "arguments": args},
    }


def _delta_problem(delta: Any) -> str | None:
    """What is wrong with the shape of a `content_block_delta`'s delta, or None (a delta of a kind
    not known here is not checked: it is dropped)."""
    if type(delta) is not dict:
        return f"a content_block_delta whose `delta` is {shown(delta)}, not an object"
    kind = delta.get("type")
    if type(kind) is not str:
        return f"a content_block_delta whose delta's `type` is {shown(kind)}, not a string"
    if kind == "text_delta":
        return value_problem("text", delta.get("text"), str, owner="a text_delta")
    if kind == "input_json_delta":
        return value_problem("partial_json", delta.get("partial_json"), str, owner="an input_json_delta")
    return None


def _usage(raw: Any, problems: list[str], base: Usage | None = None) -> Usage:
    """Anthropic usage → Usage; cache reads / writes count as prompt tokens and are also kept apart.

    A count that is not one counts as 0 and is noted in `problems` (`_usage.tokens`); a later
    report in a stream (`base`: message_delta, whose counts are cumulative) never lowers an
    earlier one."""
    if raw is None:
        return base or Usage(requests=1)
    if not isinstance(raw, dict):
        note(problems, f"usage is a JSON {type(raw).__name__}, not an object")
        return base or Usage(requests=1)
    read = tokens(raw.get("cache_read_input_tokens"), "cache_read_input_tokens", problems)
    write = tokens(raw.get("cache_creation_input_tokens"), "cache_creation_input_tokens", problems)
    p = tokens(raw.get("input_tokens"), "input_tokens", problems) + read + write
    c = tokens(raw.get("output_tokens"), "output_tokens", problems)
    if base is not None:  # message_delta: input may be absent
        if p < base.prompt_tokens:
            p, read, write = base.prompt_tokens, base.cache_read_tokens, base.cache_write_tokens
        c = max(c, base.completion_tokens)
    return Usage(1, p, c, p + c, read, write)


class AnthropicStream(StreamAssembler):
    """Messages stream events → deltas and a `ModelTurn` (see `_stream.py`)."""

    __slots__ = ("blocks", "initial", "opened", "order", "started", "thinking")

    def __init__(self, run_id: str | None, step: int, request_id: str | None) -> None:
        super().__init__(run_id, step, request_id)
        self.blocks: dict[int, int] = {}  # content block index → tool-call ordinal
        self.started: set[Any] = set()  # every content block index started (any type)
        self.thinking: dict[int, ThinkingSlot] = {}  # content block index → thinking block
        self.order = BlockOrder()  # for thinking_layout (thinking.py)
        # tool-call ordinal → the JSON of an `input` its start already carried (a router's way, not
        # Anthropic's): the arguments only if no input_json_delta brings any (as Anthropic's SDK
        # reads a stream); sent as a fragment when the block stops. Fragments appended to it made
        # `{"x":1}{"x":1}`, refused as not JSON.
        self.initial: dict[int, str] = {}
        self.opened = False  # a message_start came (its message is what a body's is)

    def feed(self, event: str, data: str) -> tuple[Any, ...]:
        if not data or event == "ping":
            return NO_EVENTS
        obj = self.parse(data)
        if not isinstance(obj, dict):
            return NO_EVENTS
        kind = obj.get("type") or event
        if kind == "error" or event == "error":
            raise self.error(obj.get("error", obj))
        if type(kind) is not str or kind not in _MESSAGE_EVENTS:  # (a list or an object: unhashable)
            return NO_EVENTS  # a router's own events: not part of the answer (nor proof the stream is alive)
        self.chunks += 1
        if kind == "content_block_delta":
            return self._block_delta(obj)
        if kind == "content_block_start":
            return self._block_start(obj)
        if kind == "content_block_stop":
            return self._block_stop(obj.get("index"))
        self._message_event(kind, obj)
        return NO_EVENTS

    def _block_delta(self, obj: dict[str, Any]) -> tuple[Any, ...]:
        delta: Any = obj.get("delta")
        problem = _delta_problem(delta)
        if problem is not None:  # dropped, it lost the text or the arguments it carried
            raise self.malformed(problem, obj)
        dkind = delta["type"]
        if dkind == "text_delta" or dkind == "input_json_delta":
            index = obj.get("index")
            if type(index) is not int or index not in self.started:  # (unhashable, even)
                raise self._unstarted(dkind, index)
        if dkind == "text_delta":
            piece = delta.get("text")
            self.order.text(obj["index"], piece)
            return (self.text_delta(piece),) if piece else NO_EVENTS
        if dkind == "input_json_delta":  # a started block that is not a tool_use (server tools): dropped
            ordinal = self.blocks.get(obj.get("index"))  # type: ignore[arg-type]
            piece = delta.get("partial_json")
            if ordinal is None or piece is None:
                return NO_EVENTS
            if piece:  # the deltas are the arguments: an input the start carried is dropped
                self.initial.pop(ordinal, None)
            ev = self.tool_delta(ordinal, self.slots[ordinal], piece)
            return (ev,) if ev is not None else NO_EVENTS
        if dkind == "thinking_delta" or dkind == "signature_delta":
            return self._thinking_delta(obj.get("index"), dkind, delta)
        return NO_EVENTS  # citations_delta, ...

    def _unstarted(self, kind: str, index: Any) -> Failure:
        # A delta for no block: its text or arguments belong nowhere, and dropping them silently
        # made a malformed answer look whole. A typed error, like every malformed stream.
        return Failure(
            APIResponseError(
                f"the stream carried a {kind} for content block index {preview(index, 40)}, which was "
                "never started (no content_block_start); this is a router or proxy fault, retry later "
                "or report it with the request id",
                request_id=self.request_id,
            ),
            retryable=True,
        )

    def _thinking_delta(self, index: Any, kind: str, delta: dict[str, Any]) -> tuple[Any, ...]:
        thinking = self.thinking
        if type(index) is not int:  # (unhashable, even): the last block opened, if any
            index = max(thinking) if thinking else None
        slot = thinking.get(index)
        if slot is None:  # a delta without its block's start: the block is opened here
            slot = self._open_thinking(index, {"type": "thinking"})
        try:
            if kind == "signature_delta":
                slot.add_signature(delta.get("signature"))
                return NO_EVENTS
            piece = delta.get("thinking")
            slot.add_text(piece)
        except ValueError as e:
            raise self._bad_thinking(str(e)) from None
        return (ThinkingDelta(self.run_id, self.step, piece),) if piece else NO_EVENTS

    def _open_thinking(self, index: Any, block: dict[str, Any]) -> ThinkingSlot:
        if type(index) is not int:
            index = max(self.thinking, default=-1) + 1
        try:
            slot = self.thinking[index] = ThinkingSlot(block)
        except ValueError as e:
            raise self._bad_thinking(str(e)) from None
        return slot

    def _bad_thinking(self, what: str) -> Failure:
        return Failure(
            APIResponseError(bad_thinking(f"streamed {what}"), request_id=self.request_id), retryable=True
        )

    def _block_stop(self, index: Any) -> tuple[Any, ...]:
        ordinal = self.blocks.get(index) if type(index) is int else None
        if ordinal is None or ordinal not in self.initial:
            return NO_EVENTS
        ev = self.tool_delta(ordinal, self.slots[ordinal], self.initial.pop(ordinal))
        return (ev,) if ev is not None else NO_EVENTS

    def answered(self) -> bool:  # a message_start or a block is one (as a body's content list is)
        return self.opened or bool(self.started) or super().answered()

    def result(self) -> ModelTurn:
        for ordinal, args in self.initial.items():  # (a block that never stopped)
            self.slots[ordinal].args.append(args)
        self.initial.clear()
        turn = super().result()
        if self.thinking:
            blocks = []
            for index in sorted(self.thinking):
                block = self.thinking[index].block()
                if isinstance(block, str):
                    raise self._bad_thinking(block)
                blocks.append(block)
            turn.message[THINKING_KEY] = blocks
            keep_layout(turn.message, self.order.kinds())
        return turn

    def _block_start(self, obj: dict[str, Any]) -> tuple[Any, ...]:
        block: Any = obj.get("content_block")
        index = obj.get("index")
        problem = index_problem(index, "a content_block_start") or block_problem(block)
        if problem is not None:  # (dropped, it lost a call or a text; an unhashable index raised TypeError)
            raise self.malformed(problem, obj)
        if index is not None:
            self.started.add(index)
            self.order.start(index, block)
        kind = block["type"]
        if kind == "tool_use":
            ordinal = len(self.slots)
            if index is not None:
                self.blocks[index] = ordinal
            slot = self.slots[ordinal] = ToolSlot()
            slot.id, slot.name = block.get("id") or "", block.get("name") or ""
            initial = block.get("input")  # Anthropic's is {}: the arguments come in input_json_delta
            if initial:
                self.initial[ordinal] = _call(None, None, initial)["function"]["arguments"]
            ev = self.tool_delta(ordinal, slot, "")
            return (ev,) if ev is not None else NO_EVENTS
        if kind == "text" and block.get("text"):
            self.order.text(index, block["text"])
            return (self.text_delta(block["text"]),)
        if is_thinking(kind):
            thought = self._open_thinking(index, block)
            if thought.text and thought.text[0]:  # a start that already carries text (not Anthropic's way)
                return (ThinkingDelta(self.run_id, self.step, thought.text[0]),)
        return NO_EVENTS

    def _message_event(self, kind: str, obj: dict[str, Any]) -> None:
        """message_start / message_delta / message_stop: ids, usage, the finish reason, the end."""
        if kind == "message_start":
            self.opened = True
            message = obj.get("message")
            if isinstance(message, dict):
                self.response_id = message.get("id") if isinstance(message.get("id"), str) else None
                self.model = message.get("model") if isinstance(message.get("model"), str) else None
                self.usage = _usage(message.get("usage"), self.usage_problems)
        elif kind == "message_delta":
            delta = obj.get("delta")
            stop = delta.get("stop_reason") if isinstance(delta, dict) else None
            if isinstance(stop, str):
                self.finish_reason = _FINISH.get(stop, stop)
            self.usage = _usage(obj.get("usage"), self.usage_problems, self.usage)
        elif kind == "message_stop":
            self.complete = self.ended = True
