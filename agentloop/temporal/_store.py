"""The conversation store: how a long conversation stays out of Temporal's history.

Temporal records every activity input in the workflow history, and caps payloads (~2 MB) and
history size. Sending the whole conversation with every model request would grow the history by
the conversation's full length at every step (quadratic in the number of steps). Instead the
conversation is *content-addressed*: each message is a node `(parent digest, message)` and its
digest is `sha256(parent digest + canonical JSON of the message)`, so a digest names a whole
conversation prefix, exactly.

- The workflow knows the digest of the prefix the worker has already seen and sends only the
  messages after it (the delta: normally just the step's tool results). The model activity's own
  answer is stored by the activity, so it is not sent back either.
- The store lives in the worker process (bounded, least recently used nodes go first). A worker
  that does not have the prefix (restarted, or another worker) raises `ReferenceMissing`; the
  workflow then sends the whole conversation once, and deltas again after that.

The digest function is pure (hashlib and json), so workflow code can use it deterministically.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any

__all__ = [
    "ROOT",
    "digest_of",
    "chain",
    "tools_digest",
    "ConversationStore",
    "REFERENCE_MISSING",
    "index_of",
    "refer",
    "resolve",
]

ROOT = ""  # the digest of the empty conversation
REFERENCE_MISSING = "ReferenceMissing"  # the ApplicationError type a store miss is reported with


def canonical(message: Any) -> bytes:
    return json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(parent: str, message: Any) -> str:
    h = hashlib.sha256(parent.encode())
    h.update(b"\x00")
    h.update(canonical(message))
    return h.hexdigest()[:40]


def tools_digest(definitions: list[dict[str, Any]]) -> str:
    """The digest of a request's `tools` array (pure: the workflow computes it too)."""
    data = json.dumps(definitions, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()[:40]


def chain(parent: str, messages: list[Any]) -> str:
    """The digest of `parent`'s conversation followed by `messages`."""
    for m in messages:
        parent = digest_of(parent, m)
    return parent


def index_of(sources: list[Any]) -> dict[bytes, int]:
    """Each message of `sources` by its canonical JSON (the first of equal ones), for `refer`."""
    where: dict[bytes, int] = {}
    for n, m in enumerate(sources):
        where.setdefault(canonical(m), n)
    return where


def refer(messages: list[Any], where: dict[bytes, int]) -> list[Any]:
    """`messages` with each one equal to a message of the sources `where` indexes given as its index
    there (an int), the others as `{"message": m}`: what a user function's result is recorded as.
    A processor mostly returns messages it was given; the workflow has them, so only new ones cross."""
    out: list[Any] = []
    for m in messages:
        n = where.get(canonical(m))
        out.append(n if n is not None else {"message": m})
    return out


def resolve(items: list[Any], sources: list[Any]) -> list[Any]:
    """`refer`'s inverse, in the workflow: indexes become the workflow's own messages again."""
    return [sources[x] if isinstance(x, int) else x["message"] for x in items]


class ConversationStore:
    """Content-addressed conversation prefixes, bounded by `max_bytes` (LRU). One per worker."""

    __slots__ = ("_bytes", "_nodes", "_tools", "hits", "max_bytes", "misses")

    MAX_TOOL_SETS = 64  # tools arrays kept by digest (one per agent of the runs in flight, typically)

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self._nodes: OrderedDict[str, tuple[str, Any, int]] = OrderedDict()
        # tools arrays that are not the worker's own registry (an agent's subset, plus its
        # final_result / transfer / agent tools), sent once by the workflow and then by digest
        self._tools: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._bytes = 0
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def put(self, parent: str, message: Any) -> str:
        """Store `message` after `parent`'s conversation; return the new prefix's digest."""
        data = canonical(message)
        h = hashlib.sha256(parent.encode())
        h.update(b"\x00")
        h.update(data)
        digest = h.hexdigest()[:40]
        if digest in self._nodes:
            self._nodes.move_to_end(digest)
            return digest
        self._nodes[digest] = (parent, message, len(data))
        self._bytes += len(data)
        while self._bytes > self.max_bytes and len(self._nodes) > 1:
            _, (_, _, size) = self._nodes.popitem(last=False)
            self._bytes -= size
        return digest

    def extend(self, parent: str, messages: list[Any]) -> str:
        for m in messages:
            parent = self.put(parent, m)
        return parent

    def conversation(self, digest: str) -> list[Any] | None:
        """The whole conversation `digest` names, or None when any part of it is not here."""
        out: list[Any] = []
        nodes = self._nodes
        while digest != ROOT:
            node = nodes.get(digest)
            if node is None:
                self.misses += 1
                return None
            nodes.move_to_end(digest)
            out.append(node[1])
            digest = node[0]
        out.reverse()
        self.hits += 1
        return out

    def put_tools(self, digest: str, tools: list[dict[str, Any]]) -> None:
        self._tools[digest] = tools
        self._tools.move_to_end(digest)
        while len(self._tools) > self.MAX_TOOL_SETS:
            self._tools.popitem(last=False)

    def tools(self, digest: str) -> list[dict[str, Any]] | None:
        found = self._tools.get(digest)
        if found is not None:
            self._tools.move_to_end(digest)
        return found
