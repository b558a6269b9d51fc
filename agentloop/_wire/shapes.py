"""The shape of a tool call as a router sends it, checked the same way whole and streamed.

Decoding is lenient where providers really differ (an id or a name missing or null, arguments
missing, null or an already-parsed object, a call without an `index` in a stream). A value of the
wrong JSON type is none of those: a call that is a string, a `function` that is a number, an
`arguments` that is a list. Such a value was dropped (the model's call lost, the run ended as if
the model had answered) or reached the loop as a nameless call; it is a malformed answer, the
router's fault, and the decoders raise it as an `APIResponseError` whose message names the field
and shows what was sent (`shown`).
"""

from __future__ import annotations

from typing import Any

from .. import _json

__all__ = ["MAX_INDEX", "call_problem", "index_problem", "shown", "value_problem"]

# A streamed `index` is a position in the message (a call's, or an Anthropic content block's), emitted on `ToolCallDelta.index`. No
# message holds 2**31 calls (each costs tens of bytes of a body bounded by max_response_bytes), and
# a larger number is one that consumers of the events (an int32 column, an OTel attribute) may not
# hold: such an index is garbage, not a position.
MAX_INDEX = 2**31 - 1

_KINDS = {str: "string", bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}


def shown(value: Any, limit: int = 80) -> str:
    """What the router sent, for a message: its JSON type and its text, cut to `limit` characters."""
    if value is None:
        return "a JSON null"
    kind = _KINDS.get(type(value), type(value).__name__)
    try:
        text = _json.dumps_str(value)
    except (TypeError, ValueError):  # (a float the parser made infinite, say)
        text = repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"a JSON {kind} {text}"


def value_problem(field: str, value: Any, *want: type, owner: str = "a tool call") -> str | None:
    """`owner`'s `field` holding `value` when only None or one of `want` may be there, or None
    when it fits."""
    if value is None or type(value) in want:
        return None
    names = " or ".join(("an " if _KINDS[t][0] in "aeiou" else "a ") + _KINDS[t] for t in want)
    return f"{owner} whose `{field}` is {shown(value)}, not {names}"


def call_problem(call: Any) -> str | None:
    """What is wrong with the shape of one OpenAI tool call (a whole one or a streamed fragment,
    whose `index` `index_problem` checks), or None. Nothing here is about the model's content: an
    empty name is an unknown tool and arguments that are not JSON are refused to the model."""
    if type(call) is not dict:
        return f"a tool call that is {shown(call)}, not an object"
    get = call.get
    fn = get("function")
    return (
        value_problem("id", get("id"), str)
        or value_problem("function", fn, dict)
        or (
            None
            if fn is None
            else value_problem("function.name", fn.get("name"), str)
            # an already-parsed object: a few providers send one (re-encoded as JSON text)
            or value_problem("function.arguments", fn.get("arguments"), str, dict)
        )
    )


def index_problem(index: Any, owner: str = "a tool call") -> str | None:
    """A streamed `index` that is neither missing (null: a call is placed by its id) nor a position."""
    if index is None or (type(index) is int and 0 <= index <= MAX_INDEX):
        return None
    return f"{owner} whose `index` is {shown(index)}, not a position in the message (0 to {MAX_INDEX})"


def block_problem(block: Any) -> str | None:
    """What is wrong with the shape of one Anthropic content block (in a whole message or a
    stream's `content_block_start`), or None. Blocks of a type not known here are not checked
    (they are dropped: server tools, citations); `input` is not checked either (whatever it holds
    goes to the dispatcher, which refuses arguments that are not an object to the model)."""
    if type(block) is not dict:
        return f"a content block that is {shown(block)}, not an object"
    kind = block.get("type")
    if type(kind) is not str:
        return f"a content block whose `type` is {shown(kind)}, not a string"
    if kind == "text":
        return value_problem("text", block.get("text"), str, owner="a text block")
    if kind == "tool_use":
        owner = "a tool_use block"
        return value_problem("id", block.get("id"), str, owner=owner) or value_problem(
            "name", block.get("name"), str, owner=owner
        )
    return None
