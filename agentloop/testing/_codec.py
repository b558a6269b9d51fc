"""The testing kit's JSON: the standard library's, written compactly as agentloop writes it.

The fake router is a stand-in for a real server, so it does not borrow the client's codec: a bug
there must not be mirrored here. A real router writes compact JSON; so does this (no spaces, no
`\\u` escapes for non-ASCII text), which keeps tool-call arguments byte-identical to what a
`ScriptedModel` turn would carry.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "dumps_str", "loads"]

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps_str(obj: Any) -> str:
    return _ENCODER.encode(obj)


def dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


def loads(data: bytes | bytearray | str) -> Any:
    return json.loads(data)
