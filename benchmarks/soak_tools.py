"""The soak's "process"-sandboxed tool: importable by "module:qualname" from a fresh process."""

from __future__ import annotations


def word_count(text: str) -> int:
    """Count the words of a text (runs in a fresh child process of the sandbox)."""
    return len(text.split())


def refuse(text: str) -> int:
    """A sandboxed tool that raises (its call's outcome is "raised", the run goes on)."""
    raise ValueError(f"cannot count {text!r}")


def hang(text: str) -> int:
    """A sandboxed tool that never returns: its timeout (or the run's deadline) kills its process."""
    import threading

    threading.Event().wait()
    return 0
