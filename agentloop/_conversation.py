"""Checking what the caller hands to an Agent: its conversation and its tool_choice."""

from __future__ import annotations

from typing import Any

from ._exceptions import ConfigurationError, ConversationError
from ._tools import ToolRegistry

__all__ = ["ToolChoice", "normalize_tool_choice", "check_conversation"]

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
