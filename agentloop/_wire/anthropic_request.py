"""The Anthropic wire's request side: canonical (OpenAI chat) messages → Anthropic `messages`.

Split from `anthropic.py` (which keeps the wire class, answers and streams) so each stays a
readable size; the rules are listed in `anthropic.py`'s docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import _json
from .._exceptions import ConversationError
from .thinking import LAYOUT_KEY, THINKING_KEY, in_layout, thinking_out

__all__ = ["InputMemo", "encode_messages", "tool_choice", "tool_definition"]

_SYSTEM_ROLES = frozenset({"system", "developer"})
_NOT_CARRIED = frozenset({"input_audio", "file"})  # OpenAI content parts with no Anthropic block here


def encode_messages(
    messages: list[dict[str, Any]],
    tool_errors: Any = None,
    parse_input: Callable[[Any], dict[str, Any]] | None = None,
) -> tuple[str | None, list[dict[str, Any]]]:
    """Canonical messages → (`system` text or None, Anthropic `messages`).

    It runs over the whole conversation at every step, so it is one pass: consecutive messages of
    the same role are merged as they are made (the wire alternates roles). `parse_input` turns a
    call's arguments text into its `input` object (default `_input`; the wire passes its memo)."""
    parse = parse_input or _input
    system: list[str] = []
    out: list[dict[str, Any]] = []
    last_role: Any = None
    last: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role == "tool":
            call_id = m.get("tool_call_id")
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": call_id,
                "content": _text(m.get("content")),
            }
            if tool_errors and call_id in tool_errors:
                block["is_error"] = True
            blocks = [block]
            role = "user"
        elif role == "assistant":
            blocks = _assistant_blocks(m, parse)
            if not blocks:
                continue  # (thinking alone answers nothing: not sent)
        elif role in _SYSTEM_ROLES:
            text = _text(m.get("content"))
            if text:
                system.append(text)
            continue
        else:  # user
            blocks = _user_blocks(i, m.get("content"))
            role = "user"
        if role == last_role:
            last.extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
            last_role, last = role, blocks
    return ("\n\n".join(system) or None), out


def _assistant_blocks(m: dict[str, Any], parse: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """An assistant message's blocks: its thinking first, unchanged (the wire's rule), then its
    text and tool_use blocks; or, for an answer that thought between its blocks, in the order it
    came (`thinking_layout`, thinking.py), while that still fits the message."""
    text = _text(m.get("content"))
    calls = [
        {"type": "tool_use", "id": tc.get("id"), "name": (tc.get("function") or {}).get("name"),
         "input": parse((tc.get("function") or {}).get("arguments"))}
        for tc in m.get("tool_calls") or ()
    ]  # fmt: skip
    if not calls and (not text or text.isspace()):
        return []  # (thinking alone answers nothing: not sent)
    thinking = thinking_out(m[THINKING_KEY]) if THINKING_KEY in m else []
    if LAYOUT_KEY in m:
        ordered = in_layout(m[LAYOUT_KEY], thinking, text, calls)
        if ordered is not None:
            return ordered
    if text and not text.isspace():  # empty or blank text is refused by the wire: dropped
        calls.insert(0, {"type": "text", "text": text})
    return thinking + calls


class InputMemo:
    """`_input` with a memo, one per wire: every request re-sends each earlier call's arguments as
    an object, so without it a step re-parses the arguments of the whole history. Keyed by the
    arguments text (immutable); the objects are only serialized, never changed. Bounded: texts
    up to 16 KiB, 4096 of them, cleared when full."""

    __slots__ = ("_memo",)

    def __init__(self) -> None:
        self._memo: dict[str, dict[str, Any]] = {}

    def __call__(self, arguments: Any) -> dict[str, Any]:
        if not isinstance(arguments, str) or len(arguments) > 16384:
            return _input(arguments)
        memo = self._memo
        value = memo.get(arguments)
        if value is None:
            if len(memo) >= 4096:
                memo.clear()
            value = memo[arguments] = _input(arguments)
        return value


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return "" if content is None else str(content)


def _user_blocks(i: int, content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        text = _text(content)
        if not text or text.isspace():
            raise _empty_text(f"messages[{i}] is a user message with {'blank' if text else 'empty'} text")
        return [{"type": "text", "text": text}]
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in _NOT_CARRIED:
            raise ConversationError(
                f"messages[{i}] content[{j}] is a part of type {kind!r}, which the Anthropic wire cannot "
                "carry (it was dropped before: the model never saw it); send text or image_url parts, "
                "or use wire='openai'"
            )
        if kind == "text":
            text = part.get("text", "")
            if not text:
                raise _empty_text(f"messages[{i}] content[{j}] is a text part with empty text")
            blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                blocks.append(
                    {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
                )
            else:
                blocks.append({"type": "image", "source": {"type": "url", "url": url}})
    return blocks


def _empty_text(what: str) -> ConversationError:
    # Anthropic answers 400 "text content blocks must be non-empty" (and "... must contain
    # non-whitespace text" for a message whose only text is blank): refused here, before any
    # request, naming the message (an assistant's empty or blank text is dropped instead: see above)
    return ConversationError(
        f"{what}, which the Anthropic wire refuses (text content blocks must be non-empty, and a "
        "message's only text must not be whitespace); send some text, or leave the message (or part) out"
    )


def _input(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str) and arguments.strip():
        try:  # deeper than any budget accepts: the call was refused, and the body must stay encodable
            value = _json.loads(arguments, max_depth=_json.MAX_VALUE_DEPTH)
            value = _json.object_in_text(value, max_depth=_json.MAX_VALUE_DEPTH)  # encoded twice
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}


def tool_definition(definition: dict[str, Any]) -> dict[str, Any]:
    fn = definition.get("function", definition)
    tool: dict[str, Any] = {"name": fn["name"]}
    if fn.get("description"):
        tool["description"] = fn["description"]
    tool["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    return tool


def tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None or choice == "auto":
        return None if choice is None else {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if name:
            return {"type": "tool", "name": name}
    if isinstance(choice, str):
        return {"type": "tool", "name": choice}
    return None
