"""Tool-call id repair: every id in a conversation is non-empty, unique and safe for every provider.

`flux-auto` may route consecutive steps of one conversation to different providers, and an id
minted by one must be accepted by the next (OpenAI rejects empty ids, Anthropic requires
`^[a-zA-Z0-9_-]+$`, Mistral exactly 9 alphanumerics). Valid ids are kept as they are; empty,
duplicated or unsafe ones are replaced by 9 random alphanumerics, which every provider accepts.
The repair happens before the assistant message enters the conversation, so a bad id is never
stored and replayed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import Any

__all__ = ["IdRegistry", "new_run_id", "repair_tool_call_ids"]

_SAFE_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}").fullmatch
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _mint() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(9))


def new_run_id() -> str:
    return "run_" + secrets.token_hex(8)


class IdRegistry:
    """The tool-call ids of one conversation (`messages`: the list the run appends to)."""

    __slots__ = ("_messages", "_seen")

    def __init__(self, messages: Iterable[dict[str, Any]] = ()) -> None:
        # The set is built at the first repair, from the conversation as it is then: a run that
        # waits on its first answer holds no set (216 B and a GC-tracked object per waiting run).
        self._messages = messages
        self._seen: set[str] | None = None

    def _ids(self) -> set[str]:
        seen: set[str] = set()
        for m in self._messages:
            for tc in m.get("tool_calls") or ():
                if isinstance(tc, dict) and isinstance(tc.get("id"), str):
                    seen.add(tc["id"])
        self._seen, self._messages = seen, ()
        return seen

    def repair(self, tool_calls: list[dict[str, Any]]) -> None:
        """Rewrite, in place, the ids of one assistant message's tool calls where needed.

        Called before the message is appended, so its tool messages are built from the repaired
        ids and the pairing stays exact.
        """
        seen = self._seen if self._seen is not None else self._ids()
        for tc in tool_calls:
            cid = tc.get("id")
            if not isinstance(cid, str) or cid in seen or not _SAFE_ID(cid):
                cid = _mint()
                while cid in seen:  # pragma: no cover - 62**9 ids; a collision is astronomically rare
                    cid = _mint()
                tc["id"] = cid
            seen.add(cid)


def repair_tool_call_ids(conversation: Iterable[dict[str, Any]], tool_calls: list[dict[str, Any]]) -> None:
    """Rewrite, in place, the ids of `tool_calls` (one assistant message's, about to join
    `conversation`) that are empty, already used in the conversation or unsafe for a provider.

    The loop does this for every answer it gets. A `Model` that answers somewhere randomness is
    not allowed next to it (Temporal's workflow, which is replayed) repairs the ids where it is
    allowed (the model activity), so that the loop's own repair finds nothing to change.
    """
    IdRegistry(conversation).repair(tool_calls)
