"""Round-5 hostile tools (module-level so the "process" / "isolated" sandboxes can import them)."""

from __future__ import annotations


def raise_surrogate(text: str) -> None:
    """Raise with a lone surrogate in the message (what surrogateescape decoding of bytes makes)."""
    raise ValueError("cannot decode " + text + " \udcff")
