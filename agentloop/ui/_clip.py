"""What bounds a run page: each text clipped, all of a page's texts together, and entries the
journal read clipped (`SQLiteJournal.read_window(max_entry_bytes=...)`) shown as a summary.

A tool can return 32 MiB, a model can loop on a long answer: the page shows a bounded slice of
each text (and of the whole run), says how much it left out, and never the whole thing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._view import RunView

__all__ = ["FIELD_LIMIT", "PAGE_LIMIT", "clip", "Clipper", "clipped_entry"]

FIELD_LIMIT = 64 * 1024  # characters of one text (an argument, a result, a message, a traceback)
PAGE_LIMIT = 2 * 1024 * 1024  # characters of all the texts of one run page together


def clip(text: str, limit: int = FIELD_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… [{len(text) - limit:,} more characters not shown; the journal holds the whole text]"


def clipped_entry(data: Any) -> str | None:
    """The text shown for an entry read clipped (`{"$clipped": {"bytes": N, "head": text}}`), or
    None for any other data. The head is the entry's raw JSON text, shown as it is (escaped)."""
    c = data.get("$clipped") if isinstance(data, dict) and len(data) == 1 else None
    if not (isinstance(c, dict) and isinstance(c.get("bytes"), int) and isinstance(c.get("head"), str)):
        return None
    head = c["head"]
    return (
        f"[entry of {c['bytes']:,} bytes: too large to read whole here; its first "
        f"{len(head.encode('utf-8', 'replace')):,} bytes of raw JSON shown, the journal holds it all]\n{head}"
    )


class Clipper:
    """Clips every text of a view: each to FIELD_LIMIT, all together to PAGE_LIMIT (then short)."""

    def __init__(self) -> None:
        self.left = PAGE_LIMIT

    def text(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        out = clip(value, max(200, min(FIELD_LIMIT, self.left)))
        self.left -= len(out)
        return out

    def view(self, v: RunView) -> None:
        for s in v.steps:
            s.content = self.text(s.content)
            for c in s.calls:
                c.name, c.arguments = self.text(c.name), self.text(c.arguments)
                c.content, c.error, c.traceback = (
                    self.text(c.content),
                    self.text(c.error),
                    self.text(c.traceback),
                )
        for m in v.chat:
            m["content"], m["tool"] = self.text(m.get("content")), self.text(m.get("tool"))
            m["role"] = str(m.get("role"))[:40]  # a CSS class, from the journal
            m["calls"] = [self.text(c) for c in m.get("calls", [])]
        for p in v.pending:
            p["arguments"] = self.text(p["arguments"])
        for k in v.markers:
            k.text = self.text(k.text)
        v.error = self.text(v.error)
