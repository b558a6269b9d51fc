"""JSON codec: orjson when it is installed (3-10x faster on the hot path), stdlib json otherwise.

`dumps` returns bytes (what goes on the wire); `dumps_str` returns text (tool-message content).
Both raise `TypeError` / `ValueError` for values that are not JSON-encodable, like the stdlib.
"""

from __future__ import annotations

import json as _json
import re
from typing import Any

__all__ = ["dumps", "dumps_str", "loads", "loads_exact", "JSONDecodeError"]

JSONDecodeError = ValueError  # both codecs raise a ValueError subclass on bad input
_LONG_INT = re.compile(r"\d{19}")  # 19+ digits may not fit in 64 bits

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson has no wheel
    _orjson = None

if _orjson is not None:
    _OPT = _orjson.OPT_NON_STR_KEYS

    _exact = _json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def dumps(obj: Any) -> bytes:
        try:
            return _orjson.dumps(obj, option=_OPT)
        except _orjson.JSONEncodeError as e:
            if "64-bit" not in str(e):
                raise TypeError(str(e)) from None
        # An integer beyond 64 bits is valid JSON that orjson cannot write: the stdlib can (rare path).
        try:
            return _exact.encode(obj).encode()
        except (TypeError, ValueError) as e:
            raise TypeError(str(e)) from None

    def dumps_str(obj: Any) -> str:
        return dumps(obj).decode()

    def loads(data: bytes | bytearray | memoryview | str) -> Any:
        return _orjson.loads(data)

    def loads_exact(data: str) -> Any:
        """`loads`, except that integers beyond 64 bits stay exact ints (orjson makes them floats)."""
        return _json.loads(data) if _LONG_INT.search(data) else _orjson.loads(data)

else:  # pragma: no cover
    _encoder = _json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def loads_exact(data: str) -> Any:
        return _json.loads(data)

    def dumps_str(obj: Any) -> str:
        return _encoder.encode(obj)

    def dumps(obj: Any) -> bytes:
        return _encoder.encode(obj).encode()

    def loads(data: bytes | bytearray | memoryview | str) -> Any:
        return _json.loads(data)
