"""Checking what the caller hands to an Agent: its conversation and its tool_choice."""

from __future__ import annotations

from typing import Any

from .. import _json
from .._exceptions import ConfigurationError, ConversationError
from .._tools.registry import ToolRegistry
from .._types import sendable
from .._wire.thinking import LAYOUT_KEY, THINKING_KEY, canonical_block, is_kind, layout_problem

__all__ = [
    "ToolChoice",
    "normalize_tool_choice",
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
            + ("; to force some tool call, Anthropic's 'any' is spelt 'required' here" * (name == "any"))
        )
    return choice


def check_conversation(messages: Any) -> list[dict[str, Any]]:
    """Validate the caller's conversation (cheaply) and return a shallow copy the run may extend.

    Each message must be one the OpenAI chat format accepts (the canonical form both wires
    translate from): a known role, content of the kind that role takes, tool calls and tool
    messages with their ids, and JSON-encodable. Sent as it was, a malformed one was refused by
    the provider with a 400 naming nothing of the caller's."""
    if not isinstance(messages, list):
        raise ConversationError(
            f"messages must be a list of chat-format dicts, got {type(messages).__name__}"
        )
    out = list(messages)
    for i, m in enumerate(messages):
        _check_message(i, m)
        if "tool_calls" in m and not m["tool_calls"]:
            # None or [] (an SDK's `message.model_dump()`): no calls; OpenAI refuses both forms
            out[i] = {k: v for k, v in m.items() if k != "tool_calls"}
    return out


def _check_message(i: int, m: Any) -> None:
    if not isinstance(m, dict):
        raise ConversationError(f"messages[{i}] must be a dict, got {type(m).__name__}")
    role = m.get("role")
    if type(role) is not str or role not in _ROLES:  # (a list is unhashable: not a frozenset's member)
        shown = repr(role[:60]) if type(role) is str else _kind(role)
        raise ConversationError(f"messages[{i}] has role {shown}; expected one of {sorted(_ROLES)}")
    if role == "tool" and not isinstance(m.get("tool_call_id"), str):
        raise ConversationError(
            f"messages[{i}] is a tool message without a string tool_call_id: send "
            "{'role': 'tool', 'tool_call_id': <the id of the call it answers>, 'content': '...'}"
        )
    _check_content(i, role, m)
    calls = m.get("tool_calls")
    if calls is not None:
        if not (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
            raise ConversationError(
                f"messages[{i}]['tool_calls'] must be a list of dicts ({_CALL_SHAPE}), got {type(calls).__name__}"
            )
        if role == "assistant":
            for j, call in enumerate(calls):
                _check_call(i, j, call)
    if THINKING_KEY in m:
        _check_thinking(i, m[THINKING_KEY])
    if LAYOUT_KEY in m and (problem := layout_problem(m[LAYOUT_KEY])):
        raise ConversationError(f"messages[{i}]['{LAYOUT_KEY}'] must be {problem} (an answer's block order)")
    try:  # what is sent must be JSON: else the first model request fails with a raw TypeError
        data = _json.dumps(m)
    except (TypeError, ValueError) as e:
        raise ConversationError(
            f"messages[{i}] cannot be sent as JSON ({e}); messages must hold only str, int, float, "
            "bool, None, lists and dicts with str keys, and text must be valid Unicode (no lone surrogates)"
        ) from None
    # and read back: a message nested 200 deep was sent and journaled, but no journal, RunResult
    # or stored conversation holding it could be read again (brackets first: one pass in C)
    if data.count(b"[") + data.count(b"{") > _DEPTH and _json.depth_exceeds(m, _DEPTH):
        raise ConversationError(
            f"messages[{i}] is nested deeper than {_DEPTH} levels (arrays and objects); a journal or a "
            "stored conversation could not read it back: send it flatter"
        )


def _check_thinking(i: int, blocks: Any) -> None:
    """`thinking_blocks` (the extension field, `_wire/thinking.py`): a list of blocks whose fields
    are text, or the Anthropic wire would send what the provider refuses, a step later."""
    for j, b in enumerate(blocks if isinstance(blocks, list) else [blocks]):
        problem = canonical_block(b) if isinstance(b, dict) and is_kind(b.get("type")) else "?"
        if isinstance(problem, str):
            raise ConversationError(
                f"messages[{i}]['thinking_blocks'][{j}] is not a thinking block: it must be "
                '{"type": "thinking", "thinking": str, "signature": str} or {"type": "redacted_thinking", '
                f'"data": str}}, in a list, as an answer of the Anthropic wire holds them; got {b!r:.200}'
            )


_DEPTH = _json.MAX_VALUE_DEPTH  # a message's nesting, the message itself level 1
_CALL_SHAPE = '{"id": ..., "type": "function", "function": {"name": ..., "arguments": "<JSON object text>"}}'
# Each content part type (OpenAI's chat format): the field it needs, of which type, and an example.
_PARTS: dict[str, tuple[str, Any, str]] = {
    "text": ("text", str, "{'type': 'text', 'text': '...'}"),
    "refusal": ("refusal", str, "{'type': 'refusal', 'refusal': '...'}"),
    "image_url": (
        "image_url",
        dict,
        "{'type': 'image_url', 'image_url': {'url': 'https://... or data:...'}}",
    ),
    "input_audio": (
        "input_audio",
        dict,
        "{'type': 'input_audio', 'input_audio': {'data': ..., 'format': 'wav'}}",
    ),
    "file": ("file", dict, "{'type': 'file', 'file': {'file_id': '...'}}"),
}
# The part types each role takes.
_ROLE_PARTS = {
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
}


# Anthropic Messages blocks in a conversation (one stored from the Anthropic SDK): the canonical
# form is OpenAI chat, whichever wire carries it; say so rather than only "not a valid part".
_ANTHROPIC_BLOCKS = frozenset(
    {"tool_use", "tool_result", "thinking", "redacted_thinking", "image", "document"}
)
_ANTHROPIC_HINT = (
    ". This looks like an Anthropic Messages block: messages= takes OpenAI chat format on both wires "
    "(an assistant's calls in 'tool_calls', each result a {'role': 'tool', 'tool_call_id': ...} "
    "message); the Anthropic wire converts it"
)


def _check_content(i: int, role: str, m: dict[str, Any]) -> None:
    """`content` as the role takes it: a str, or a non-empty list of content parts of the
    role's types; an assistant message may have none (its tool calls are the message)."""
    content = m.get("content")
    if isinstance(content, str) or (content is None and role == "assistant"):
        return
    kinds = _ROLE_PARTS.get(role, ("text",))
    examples = " or ".join(_PARTS[k][2] for k in kinds[:2])
    what = f"messages[{i}] (role {role!r})"
    if not isinstance(content, list) or not content:
        got = "no content" if "content" not in m else f"content {_kind(content)}"
        raise ConversationError(
            f"{what} has {got}; send a str, or a non-empty list of content parts like {examples}"
        )
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in kinds:  # (a tuple: compared, not hashed)
            got = _kind(part) if kind is None else f"a part of type {_kind(kind)}"
            hint = _ANTHROPIC_HINT if type(kind) is str and kind in _ANTHROPIC_BLOCKS else ""
            raise ConversationError(
                f"{what} content[{j}] is {got}; the parts of a message of role {role!r} are dicts of type "
                f"{list(kinds)}, like {examples}{hint}"
            )
        field, value_type, example = _PARTS[kind]
        value: Any = part.get(field)
        if not isinstance(value, value_type) or (
            kind == "image_url" and not isinstance(value.get("url"), str)
        ):
            raise ConversationError(
                f"{what} content[{j}] of type {kind!r} has no valid {field!r}; send {example}"
            )


def _check_call(i: int, j: int, call: dict[str, Any]) -> None:
    """An assistant message's tool call as the providers take it back."""
    fn = call.get("function")
    if (
        isinstance(call.get("id"), str)
        and call.get("type", "function") == "function"
        and isinstance(fn, dict)
        and isinstance(fn.get("name"), str)
        and fn["name"]
        and isinstance(fn.get("arguments"), str)
    ):
        return
    raise ConversationError(
        f"messages[{i}]['tool_calls'][{j}] is not a tool call as providers take it back: send {_CALL_SHAPE} "
        "(a str id, a non-empty str name, arguments as JSON text: json.dumps(arguments))"
    )


def _kind(value: Any) -> str:
    """A short description of a caller's value: never the repr of a container (a hostile one
    nests 1,000 deep) nor of a whole long text."""
    if isinstance(value, str):
        return f"{value[:60]!r} (str)"
    if value is None or isinstance(value, (bool, int, float)):
        return f"{value!r:.60} ({type(value).__name__})"
    if isinstance(value, (list, dict)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


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
        if isinstance(b, dict) and is_kind(b.get("type")):
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


# The name a call without one is stored under (the model was told it had none): providers refuse
# an empty function name in the history, and `run(messages=result.messages)` refused it too.
UNNAMED = "unnamed_call"


def history_message(message: dict[str, Any]) -> dict[str, Any]:
    """The assistant message as it enters the conversation: every call's arguments valid JSON
    object text, and every call named (`UNNAMED` for one the model sent without a name).

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
        raw, name = fn.get("arguments"), fn.get("name")
        text = _object_text(raw)
        named = isinstance(name, str) and name
        if text is not raw or not named:
            fixed = fixed if fixed is not None else list(calls)
            fixed[i] = {**c, "function": {**fn, "name": name if named else UNNAMED, "arguments": text}}
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
    try:
        if isinstance(raw, str):
            value = _json.loads(raw)
            inner = _json.object_in_text(value)  # encoded twice: the object it ran with
            return raw if isinstance(value, dict) else value if inner is not value else "{}"
        return _json.dumps_str(raw) if isinstance(raw, dict) else "{}"
    except (TypeError, ValueError):  # not JSON, too deep, not encodable
        return "{}"
