"""Text that is not valid Unicode: a lone surrogate (half of a UTF-16 pair), as `surrogateescape`
decoding makes of undecodable bytes or as JSON's `"\\ud800"` escape reads. No UTF-8 text (a request
body, a journal row) can hold one, so where one comes in is found and said, or it is replaced.
Below the JSON codec (`_json` re-exports these), which raises `SurrogateError`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SurrogateError", "lone_surrogate", "not_unicode", "sendable"]


class SurrogateError(ValueError):
    """JSON text that is valid JSON but holds a lone surrogate escape (`"\\ud800"`): half of a UTF-16
    pair, not a character. orjson refuses it (its message read as "not JSON"); the stdlib reads it
    into a str no UTF-8 codec can write again (request body, journal). The message says what and
    where; `value` is the document as the stdlib read it (lone surrogates kept), for a caller that
    can still use the rest (a wire whose tool-call arguments hold one: fed back to the model)."""

    def __init__(self, problem: str, value: Any) -> None:
        super().__init__(problem)
        self.problem = problem  # "a lone surrogate ('\\ud800') at $.content"
        self.value = value


def lone_surrogate(value: Any) -> str | None:
    """Where the first str (key or value) holding a lone surrogate is in `value`, as
    "a lone surrogate ('\\ud800') at $.a[0]", or None. Level by level, no recursion."""
    level: list[tuple[str, Any]] = [("$", value)]
    while level:
        below: list[tuple[str, Any]] = []
        for path, v in level:
            if isinstance(v, str):
                if (at := _lone(v)) is not None:
                    return f"a lone surrogate ({v[at]!r}) at {path}"
            elif isinstance(v, dict):
                for k, item in v.items():
                    if isinstance(k, str) and (at := _lone(k)) is not None:
                        return f"a lone surrogate ({k[at]!r}) in a key at {path}"
                    below.append((f"{path}.{k}" if k.isidentifier() else f"{path}[{k!r}]", item))
            elif isinstance(v, list):
                below += [(f"{path}[{i}]", item) for i, item in enumerate(v)]
        level = below
    return None


def _lone(text: str) -> int | None:
    """The index of the first lone surrogate in `text`, or None (valid Unicode)."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def sendable(text: str) -> str:
    """`text` with lone surrogates (a tool's str, an exception message) replaced by U+FFFD:
    no JSON codec can send them, and the next model request would fail with a raw TypeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def not_unicode(what: str, text: str) -> str | None:
    """Why `text` cannot be sent, if it holds a lone surrogate (as `surrogateescape` decoding makes
    of undecodable bytes): UTF-8, so a request body or a journal row, cannot carry one, and the
    codec's raw TypeError came out of the first request (or UnicodeEncodeError out of the journal,
    which left its transaction open for the next run). None when it is valid Unicode."""
    at = _lone(text)
    if at is None:
        return None
    return (
        f"{what} is not valid Unicode: a lone surrogate ({text[at]!r}) at index {at}, which "
        "cannot be sent; decode such text with errors='replace' rather than 'surrogateescape'"
    )
