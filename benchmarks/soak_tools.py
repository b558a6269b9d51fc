"""The soak's "process"-sandboxed tool: importable by "module:qualname" from a fresh process."""

from __future__ import annotations


def word_count(text: str) -> int:
    """Count the words of a text (runs in a fresh child process of the sandbox)."""
    return len(text.split())
