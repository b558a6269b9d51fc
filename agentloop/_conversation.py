"""Checking what the caller hands to an Agent: its conversation and its tool_choice."""

from __future__ import annotations

from typing import Any

from ._exceptions import ConfigurationError, ConversationError
from ._tools import ToolRegistry

__all__ = ["ToolChoice", "normalize_tool_choice", "check_conversation", "messages_to_json", "messages_from_json"]

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
        raise ConversationError(f"messages must be a list of chat-format dicts, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ConversationError(f"messages[{i}] must be a dict, got {type(m).__name__}")
        role = m.get("role")
        if role not in _ROLES:
            raise ConversationError(f"messages[{i}] has role {role!r}; expected one of {sorted(_ROLES)}")
        if role == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise ConversationError(f"messages[{i}] is a tool message without a string tool_call_id")
    return list(messages)


def messages_to_json(messages: list[dict[str, Any]]) -> str:
    """A whole conversation (e.g. `result.all_messages()`) as JSON text, to store and continue later."""
    from . import _json

    return _json.dumps_str({"format": _FORMAT, "messages": check_conversation(messages)})


def messages_from_json(data: str | bytes) -> list[dict[str, Any]]:
    """The inverse of `messages_to_json`: pass the list to `Agent.run(prompt, messages=...)`.

    Raises `ConversationError` for text that is not a stored conversation (a plain JSON list of
    chat-format messages is accepted too).
    """
    from . import _json

    try:
        value = _json.loads(data)
    except ValueError as e:
        raise ConversationError(f"stored conversation is not valid JSON ({e})") from None
    if isinstance(value, dict):
        if value.get("format") != _FORMAT:
            raise ConversationError(f"not a stored conversation: expected format {_FORMAT!r}, got {value.get('format')!r}")
        value = value.get("messages")
    return check_conversation(value)
