"""Checking what the caller hands to an Agent: its conversation and its tool_choice."""

from __future__ import annotations

from typing import Any

from .. import _json
from .._exceptions import ConfigurationError, ConversationError
from .._tools.registry import ToolRegistry
from .._types import sendable
from .._wire.thinking import KINDS as THINKING_KINDS
from .._wire.thinking import THINKING_KEY, canonical_block

__all__ = [
    "ToolChoice",
    "normalize_tool_choice",
    "check_answered",
    "check_conversation",
    "history_message",
    "history_message_async",
    "messages_to_json",
    "messages_from_json",
]

_FORMAT = "agentloop.messages/1"

ToolChoice = str | dict[str, Any]
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def normalize_tool_choice(choice: ToolChoice, tools: ToolRegistry) -> ToolChoice:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, str):
        name = choice
        choice = {"type": "function", "function": {"name": name}}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
    else:
        raise ConfigurationError(
            f"tool_choice must be 'auto', 'none', 'required', a tool name or "
            f"{{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}"
        )
    if name not in tools:
        raise ConfigurationError(
            f"tool_choice forces tool {name!r}, which is not registered; registered: {tools.names}"
        )
    return choice


def check_conversation(messages: Any) -> list[dict[str, Any]]:
    """Validate the caller's conversation (cheaply) and return a shallow copy the run may extend."""
    if not isinstance(messages, list):
        raise ConversationError(
            f"messages must be a list of chat-format dicts, got {type(messages).__name__}"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ConversationError(f"messages[{i}] must be a dict, got {type(m).__name__}")
        role = m.get("role")
        if role not in _ROLES:
            raise ConversationError(f"messages[{i}] has role {role!r}; expected one of {sorted(_ROLES)}")
        if role == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise ConversationError(f"messages[{i}] is a tool message without a string tool_call_id")
        calls = m.get("tool_calls")
        if calls is not None and not (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
            raise ConversationError(
                f"messages[{i}]['tool_calls'] must be a list of dicts "
                '({"id": ..., "type": "function", "function": {"name": ..., "arguments": "..."}}), '
                f"got {type(calls).__name__}"
            )
        if THINKING_KEY in m:
            _check_thinking(i, m[THINKING_KEY])
        try:  # what is sent must be JSON: else the first model request fails with a raw TypeError
            _json.dumps(m)
        except (TypeError, ValueError) as e:
            raise ConversationError(
                f"messages[{i}] cannot be sent as JSON ({e}); messages must hold only str, int, float, "
                "bool, None, lists and dicts with str keys, and text must be valid Unicode (no lone surrogates)"
            ) from None
    return list(messages)


def _check_thinking(i: int, blocks: Any) -> None:
    """`thinking_blocks` (the extension field, `_wire/thinking.py`): a list of blocks whose fields
    are text, or the Anthropic wire would send what the provider refuses, a step later."""
    for j, b in enumerate(blocks if isinstance(blocks, list) else [blocks]):
        problem = canonical_block(b) if isinstance(b, dict) and b.get("type") in THINKING_KINDS else "?"
        if isinstance(problem, str):
            raise ConversationError(
                f"messages[{i}]['thinking_blocks'][{j}] is not a thinking block: it must be "
                '{"type": "thinking", "thinking": str, "signature": str} or {"type": "redacted_thinking", '
                f'"data": str}}, in a list, as an answer of the Anthropic wire holds them; got {b!r:.200}'
            )


def messages_to_json(messages: list[dict[str, Any]]) -> str:
    """A whole conversation (e.g. `result.all_messages()`) as JSON text, to store and continue later."""
    from .. import _json

    return _json.dumps_str({"format": _FORMAT, "messages": check_conversation(messages)})


def messages_from_json(data: str | bytes) -> list[dict[str, Any]]:
    """The inverse of `messages_to_json`: pass the list to `Agent.run(prompt, messages=...)`.

    Raises `ConversationError` for text that is not a stored conversation (a plain JSON list of
    chat-format messages is accepted too).
    """
    from .. import _json

    try:
        value = _json.loads(data)
    except ValueError as e:
        raise ConversationError(f"stored conversation is not valid JSON ({e})") from None
    if isinstance(value, dict):
        if value.get("format") != _FORMAT:
            raise ConversationError(
                f"not a stored conversation: expected format {_FORMAT!r}, got {value.get('format')!r}"
            )
        value = value.get("messages")
    return check_conversation(value)


def sendable_answer(message: dict[str, Any]) -> dict[str, Any]:
    """A `Model`'s answer with lone surrogates in its text, call ids, names and arguments replaced
    by U+FFFD (as tool results are): a `Model` of the caller's can return them, and the journal,
    then the next request, would fail on them with a raw TypeError. The same dict when clean (an
    answer that came over HTTP always is; `str.isascii` keeps the check cheap)."""

    def fixed(value: Any) -> Any:
        return sendable(value) if isinstance(value, str) and not value.isascii() else value

    content = message.get("content")
    out = message if fixed(content) is content else {**message, "content": fixed(content)}
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        clean = [_sendable_call(c, fixed) for c in calls]
        if any(a is not b for a, b in zip(clean, calls, strict=True)):
            out = {**out, "tool_calls": clean}
    if THINKING_KEY in message:
        blocks = message[THINKING_KEY]
        thinking = _sendable_thinking(blocks, fixed)
        if thinking is not blocks:
            out = {**out, THINKING_KEY: thinking}
    return out


def _sendable_thinking(blocks: Any, fixed: Any) -> Any:
    """`thinking_blocks` of a caller's `Model`: its blocks of text, lone surrogates replaced (the
    signature no longer matches, but such text could never be sent); anything else is dropped, as
    a wire drops a block it does not know. The same list when it is so already (a wire's always is)."""
    clean = []
    for b in blocks if isinstance(blocks, list) else ():
        if isinstance(b, dict) and b.get("type") in THINKING_KINDS:
            block = canonical_block({k: fixed(v) for k, v in b.items()})
            if not isinstance(block, str):
                clean.append(block)
    return blocks if clean == blocks else clean


def _sendable_call(call: Any, fixed: Any) -> Any:
    if not isinstance(call, dict):
        return call
    fn = call.get("function")
    if (
        isinstance(fn, dict)
        and _clean(call.get("id"))
        and _clean(fn.get("name"))
        and _clean(fn.get("arguments"))
    ):
        return call  # the common case, without building the call's dicts to compare them
    new_fn = fn
    if isinstance(fn, dict):
        new_fn = {k: fixed(fn[k]) if k in ("name", "arguments") else fn[k] for k in fn}
        if all(new_fn[k] is fn[k] for k in fn):
            new_fn = fn
    call_id = fixed(call.get("id"))
    if new_fn is fn and call_id is call.get("id"):
        return call
    return {**call, "id": call_id, "function": new_fn}


def _clean(value: Any) -> bool:
    """Nothing `sendable` would change: not text, or ASCII text."""
    return not isinstance(value, str) or value.isascii()


def history_message(message: dict[str, Any]) -> dict[str, Any]:
    """The assistant message as it enters the conversation: every call's arguments valid JSON object text.

    `flux-auto` may send the next step to another provider, which translates the history; some
    reject every later request when an earlier call's arguments are not a JSON object. The
    model's own text stays on the call's record (`raw_arguments`) and in the error it is told.
    Valid object text is kept byte for byte; the message is copied only when a call changes.
    """
    calls = message.get("tool_calls")
    if not calls:
        return message
    fixed: list[dict[str, Any]] | None = None
    for i, c in enumerate(calls):
        fn = c.get("function") or {}
        raw = fn.get("arguments")
        text = _object_text(raw)
        if text is not raw:
            fixed = fixed if fixed is not None else list(calls)
            fixed[i] = {**c, "function": {**fn, "arguments": text}}
    return message if fixed is None else {**message, "tool_calls": fixed}


_THREAD_CHARS = 1024 * 1024  # arguments larger than this (all calls together) are checked off the loop


async def history_message_async(message: dict[str, Any]) -> dict[str, Any]:
    """`history_message`, in a worker thread when the calls' arguments are large: it parses
    each one, and a hostile 5 MB argument took ~250 ms of the event loop (every run stood still)."""
    calls = message.get("tool_calls") or ()
    size = sum(len(a) for c in calls if isinstance(a := (c.get("function") or {}).get("arguments"), str))
    if size <= _THREAD_CHARS:
        return history_message(message)
    import anyio.to_thread

    return await anyio.to_thread.run_sync(history_message, message, abandon_on_cancel=True)


def _object_text(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            value = _json.loads(raw)
        except ValueError:
            return "{}"
        return raw if isinstance(value, dict) else "{}"
    if isinstance(raw, dict):
        try:
            return _json.dumps_str(raw)
        except (TypeError, ValueError):
            return "{}"
    return "{}"


def check_answered(messages: list[dict[str, Any]]) -> None:
    """Every tool call of the caller's conversation must have its tool message before the next
    message that is not one. Unanswered, it went out as it was: every provider rejects such a
    request (OpenAI: 400 "tool_calls must be followed by tool messages"), while the fake router
    accepted it, so it failed in production only. A paused run's messages end that way: those
    are continued with `Agent.resume`."""
    waiting: dict[str, int] = {}  # call id -> index of the assistant message that made it
    for i, m in enumerate(messages):
        if m.get("role") == "tool":
            waiting.pop(m["tool_call_id"], None)
            continue
        if waiting:
            break
        for call in m.get("tool_calls") or () if m.get("role") == "assistant" else ():
            cid = call.get("id")
            waiting[cid if isinstance(cid, str) else repr(cid)] = i
    if waiting:
        cid, i = next(iter(waiting.items()))
        raise ConversationError(
            f"messages[{i}] has tool call {cid[:80]!r} with no tool message answering it; providers "
            "refuse such a conversation. Add {'role': 'tool', 'tool_call_id': ..., 'content': ...} "
            "after it for each call, or drop the calls; a paused run (stop_reason "
            "'approval_required') is continued with agent.resume(result, approvals=...)"
        )
