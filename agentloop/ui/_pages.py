"""A run's page is one window of its entries: which window a request asks for, and the pending calls.

A run of 100,000 calls is not one page: the page shows the entries `seq` in
`[(n - 1) * size + 1, n * size]` for its number n. The windows are fixed by `seq` (the journal
is append-only and numbers a run's entries 1, 2, 3...), so they never shift while the run
grows: a live page follows its own window, and an entry is on exactly one page. A call is on the
page of the model answer that asked for it; its outcome, when it was written after the page's
last entry, is read from the next AHEAD entries (a step's calls end close behind it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..abc import Entry, JournalEntry

__all__ = ["Window", "page_number", "pages_of", "pending_of", "AHEAD", "TAIL", "MAX_PAGE"]

AHEAD = 256  # entries after a page read for the outcomes of its calls
TAIL = 256  # a paused run's last entries: its `paused` entry and the decisions since
MAX_PAGE = 10**9  # a page number beyond this is not a page (and would overflow SQLite's integers)


@dataclass
class Window:
    """The entries a page shows, and the ones around it it reads."""

    entries: list[JournalEntry]
    before: float | None = None  # when the entry before the page was written (a step starts there)
    ahead: list[JournalEntry] = field(default_factory=list)  # outcomes of the page's calls
    tail: list[JournalEntry] = field(default_factory=list)  # the run's last entries (pending calls)
    first: bool = True  # the first page shows the run's starting messages


def page_number(text: str | None) -> int | None:
    """The `page=` of a run's URL: a number from 1 to MAX_PAGE, None when absent (ValueError else)."""
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or not 1 <= int(text) <= MAX_PAGE:
        raise ValueError(f"page must be a number from 1 to {MAX_PAGE}")
    return int(text)


def pages_of(last_seq: int, size: int) -> int:
    return max(1, -(-last_seq // size))


def pending_of(
    status: str, tail: list[JournalEntry]
) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
    """A paused run's pending calls, the decisions given since it paused, and an error text.

    Read from the run's last entries, as replay finds them: the last `paused` entry's calls
    whose outcome is not journaled after it."""
    if status != "paused":
        return [], {}, None
    at = next((i for i in range(len(tail) - 1, -1, -1) if tail[i].kind == Entry.PAUSED), None)
    if at is None:
        return [], {}, f"the run is paused but its last {len(tail)} entries hold no `paused` entry"
    after = tail[at + 1 :]
    done = {e.call_id for e in after if e.kind == Entry.TOOL_END}
    decisions: dict[str, Any] = {}
    for e in after:
        if e.kind == Entry.APPROVALS and isinstance(e.data, dict):
            decisions.update(e.data)
    pending = tail[at].data.get("pending") if isinstance(tail[at].data, dict) else None
    if not isinstance(pending, list) or not all(
        isinstance(p, dict) and isinstance(p.get("id"), str) for p in pending
    ):
        return [], {}, "the run's `paused` entry is damaged: its pending calls cannot be shown"
    return [p for p in pending if p["id"] not in done], decisions, None
