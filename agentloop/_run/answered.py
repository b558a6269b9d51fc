"""The caller's conversation as a sequence of turns: every tool call answered before the next
message, and every tool message answering a call of the assistant message just before it.
Either break goes out as it was and every provider refuses it with a 400, while the fake router
took it, so it failed in production only (`conversation.py` checks each message on its own)."""

from __future__ import annotations

from typing import Any

from .._exceptions import ConversationError

__all__ = ["check_answered"]


def check_answered(messages: list[dict[str, Any]]) -> None:
    """Every tool call of the caller's conversation must have its tool message before the next
    message that is not one. Unanswered, it went out as it was: every provider rejects such a
    request (OpenAI: 400 "tool_calls must be followed by tool messages"), while the fake router
    accepted it, so it failed in production only. A paused run's messages end that way: those
    are continued with `Agent.resume`."""
    waiting: dict[str, int] = {}  # call id -> index of the assistant message that made it
    turn: set[str] = set()  # the calls of the assistant message the tool messages here follow
    for i, m in enumerate(messages):
        if m.get("role") == "tool":
            if m["tool_call_id"] not in turn:
                _stray_result(i, m["tool_call_id"])
            waiting.pop(m["tool_call_id"], None)
            continue
        if waiting:
            break
        turn = set()
        for call in m.get("tool_calls") or () if m.get("role") == "assistant" else ():
            cid = call.get("id")
            key = cid if isinstance(cid, str) else repr(cid)
            waiting[key] = i
            turn.add(key)
    if waiting:
        cid, i = next(iter(waiting.items()))
        raise ConversationError(
            f"messages[{i}] has tool call {cid[:80]!r} with no tool message answering it; providers "
            "refuse such a conversation. Add {'role': 'tool', 'tool_call_id': ..., 'content': ...} "
            "after it for each call, or drop the calls; a paused run (stop_reason "
            "'approval_required') is continued with agent.resume(result, approvals=...)"
        )


def _stray_result(i: int, cid: str) -> None:
    """A tool message answering no call of the assistant message before it (a slice such as
    `result.messages[-4:]` that cut a call off): every provider refused it with a 400."""
    raise ConversationError(
        f"messages[{i}] (role 'tool') answers tool call {cid[:80]!r}, which the assistant message "
        "just before it did not make; providers refuse such a conversation. A slice of a "
        "conversation must not cut a call from its result: start it at a user message, or keep it "
        "whole and pass history=History(keep_last=N) to send only the last N turns"
    )
