"""The one JSON codec: parsing, hashing (loop guard), journaling and sending all go through here.

orjson when it is installed (3-10x faster on the hot path), stdlib json otherwise. `dumps`
returns bytes (what goes on the wire); `dumps_str` returns text (tool-message content);
`canonical` returns the sorted-key text the loop guard compares. All three raise `TypeError` /
`ValueError` for values that are not JSON-encodable, like the stdlib. The bytes `dumps` returns
take no more memory than their length (orjson's own may take 16x: see `dumps`).

Depth: `MAX_DEPTH` is the deepest nesting any value may have anywhere in the runtime. It is
below orjson's encoder limit (a value parsed here can always be encoded again: hashed,
journaled, sent back) and far below Python's recursion limit (nothing recursive ever sees a
value deep enough to raise `RecursionError`). `loads` rejects deeper input with `DepthError`,
a `ValueError`; `InputBudget.max_json_depth` sets a smaller limit for tool-call arguments.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as _dt
import decimal
import json as _json
import math
import pathlib
import re
from collections.abc import Mapping
from typing import Any

from ._unicode import SurrogateError, lone_surrogate, not_unicode, sendable

__all__ = [
    "dumps",
    "dumps_str",
    "canonical",
    "loads",
    "loads_exact",
    "object_in_text",
    "depth_exceeds",
    "DepthError",
    "SurrogateError",
    "lone_surrogate",
    "JSONDecodeError",
    "MAX_DEPTH",
    "MAX_VALUE_DEPTH",
    "jsonable",
    "plain",
    "dumps_result",
    "not_unicode",
    "sendable",
]

JSONDecodeError = ValueError  # both codecs raise a ValueError subclass on bad input
_LONG_INT = re.compile(r"\d{19}")  # 19+ digits may not fit in 64 bits

# orjson's encoder refuses values nested 254 deep; 200 leaves room for the envelope around a
# value (request body → messages → message → tool call → arguments). Every `loads` enforces
# it unless given a smaller `max_depth`; the check costs one C pass (`count`) for input with fewer
# brackets than the limit, which is nearly all of it.
MAX_DEPTH = 200
# The deepest value inside a document: tool-call arguments travel back to the model inside a
# request body (body → messages → message → content → block → input: 6 levels and more), so the
# deepest arguments any budget accepts leave that envelope room under MAX_DEPTH.
MAX_VALUE_DEPTH = 128


class DepthError(ValueError):
    """JSON nested deeper than the limit; the message names the limit."""


try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson has no wheel
    # Typed as the module so the orjson branch below checks against its stubs; None only marks absence.
    _orjson = None  # type: ignore[assignment]

if _orjson is not None:
    _OPT = _orjson.OPT_NON_STR_KEYS
    _OPT_SORTED = _orjson.OPT_NON_STR_KEYS | _orjson.OPT_SORT_KEYS

    _exact = _json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    _exact_sorted = _json.JSONEncoder(
        ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=True
    )

    def _encode(obj: Any) -> bytes:
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

    def dumps(obj: Any) -> bytes:
        # orjson >= 3.12 returns its whole working buffer: at least 4 KB and often 8-16x the text
        # (it sets the length without shrinking the allocation). A request body lives as long as
        # the model takes to answer, so a copy of the right size is kept instead: ~0.05 µs for a
        # small body, ~1 µs for 50 KB, against 4 KB-1 MB held per waiting run (issue #19).
        return b"".join((_encode(obj), b""))

    def dumps_str(obj: Any) -> str:
        return _encode(obj).decode()

    def canonical(obj: Any) -> str:
        try:
            return _orjson.dumps(obj, option=_OPT_SORTED).decode()
        except _orjson.JSONEncodeError as e:
            if "64-bit" not in str(e):
                raise TypeError(str(e)) from None
        try:  # an integer beyond 64 bits (exact since loads_exact): the stdlib writes it
            return _exact_sorted.encode(obj)
        except (TypeError, ValueError) as e:
            raise TypeError(str(e)) from None

    _loads = _orjson.loads

else:  # pragma: no cover
    _encoder = _json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    _sorted_encoder = _json.JSONEncoder(
        ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=True
    )

    def dumps_str(obj: Any) -> str:
        return _encoder.encode(obj)

    def dumps(obj: Any) -> bytes:
        return _encoder.encode(obj).encode()

    def canonical(obj: Any) -> str:
        return _sorted_encoder.encode(obj)

    _loads = _json.loads


def loads(data: bytes | bytearray | memoryview | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON; raise `DepthError` (a `ValueError`) for a value nested deeper than `max_depth`."""
    try:
        value = _loads(data)
    except RecursionError:  # pragma: no cover - stdlib fallback on pathological input
        raise DepthError(f"the JSON is nested deeper than {max_depth} levels (arrays and objects)") from None
    except ValueError as e:
        if "depth limit" in str(e):  # orjson's own limit (1024): the same error as ours
            raise DepthError(
                f"the JSON is nested deeper than {max_depth} levels (arrays and objects)"
            ) from None
        if "surrogate" in str(e):  # orjson: "no low surrogate in string", "invalid high surrogate..."
            _raise_surrogate(data, max_depth)
        raise
    if _brackets(data) > max_depth and depth_exceeds(value, max_depth):
        raise DepthError(f"the JSON is nested deeper than {max_depth} levels (arrays and objects)")
    return value


def loads_exact(data: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """`loads`, except that integers beyond 64 bits stay exact ints (orjson reads them as floats).

    For a tool's arguments: an `int` parameter must not receive 99999999999999991611392 for
    99999999999999999999999. Text with a run of 19+ digits (rare) goes through the stdlib parser,
    under the same depth limit.
    """
    value = loads(data, max_depth=max_depth)  # checks the JSON and its depth first
    # then, rarely, again with the stdlib parser, which keeps long ints exact (the depth is
    # known to be bounded, so its recursion is too)
    return _json.loads(data) if _LONG_INT.search(data) else value


def object_in_text(value: Any, *, max_depth: int = MAX_DEPTH, exact: bool = False) -> Any:
    """A decoded tool-call argument value, one level of double encoding undone: when `value` is a
    str holding a JSON object's text, that object; anything else (another str, an array's text, an
    object's text encoded once more) is returned unchanged, for the caller to refuse as before.

    Some models send `"arguments": "\"{\\\"city\\\": ...}\""`: the object's JSON text, encoded
    again as a JSON string. Unwrapping exactly one level, and only into an object, cannot turn
    a valid call into another: a tool's arguments are always an object, never a string.
    `DepthError` when the object is nested deeper than `max_depth`, as for arguments sent once."""
    if not isinstance(value, str) or not value.lstrip().startswith("{"):
        return value
    try:
        inner = loads_exact(value, max_depth=max_depth) if exact else loads(value, max_depth=max_depth)
    except (DepthError, SurrogateError):
        raise
    except ValueError:
        return value
    return inner if isinstance(inner, dict) else value


def _raise_surrogate(data: bytes | bytearray | memoryview | str, max_depth: int) -> None:
    """Raise `SurrogateError` when `data` is JSON whose only fault is a lone surrogate escape
    (else return: the caller re-raises the parser's own error). Only on that error path."""
    try:  # the stdlib reads the escape; NaN / Infinity, which it also reads, stay refused
        value = _json.loads(bytes(data) if isinstance(data, memoryview) else data, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return  # not JSON for another reason as well
    if _brackets(data) > max_depth and depth_exceeds(value, max_depth):
        return  # (refused as too deep by the caller's own check, had orjson read it)
    where = lone_surrogate(value)
    if where is not None:
        raise SurrogateError(where, value) from None


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _brackets(data: bytes | bytearray | memoryview | str) -> int:
    """An upper bound of the nesting depth, in C: the number of opening brackets."""
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    b = bytes(data)
    return b.count(b"[") + b.count(b"{")


def depth_exceeds(value: Any, limit: int) -> bool:
    """True when `value` has more than `limit` levels of nested lists and dicts.

    Level by level (no recursion, so no depth can overflow the stack), stopping as soon as the
    limit is passed; the cost is one look at each container's members.
    """
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for c in level:
            members = c.values() if type(c) is dict else c
            below += [v for v in members if type(v) is dict or type(v) is list]
        level = below
    return False


def duration(td: _dt.timedelta) -> str:
    """ISO 8601 duration, as pydantic writes one: 'PT1H30M', 'P2DT0.5S', '-PT1S', 'PT0S'."""
    us = td // _dt.timedelta(microseconds=1)
    sign, us = ("-", -us) if us < 0 else ("", us)
    days, us = divmod(us, 86_400_000_000)
    hours, us = divmod(us, 3_600_000_000)
    minutes, us = divmod(us, 60_000_000)
    secs = f"{us // 1_000_000}.{us % 1_000_000:06d}".rstrip("0").rstrip(".") if us else ""
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M")) if n) + (f"{secs}S" if secs else "")
    text = (f"{days}D" if days else "") + (f"T{time}" if time else "")
    return f"{sign}P{text or 'T0S'}"


def _text_form(value: Any) -> Any:
    """The JSON form of a type orjson cannot write (the same forms tool arguments of that type take),
    or `value` itself."""
    if isinstance(value, decimal.Decimal):
        return str(value) if value.is_finite() else value  # NaN/Infinity: no JSON form, the encoder says so
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, _dt.timedelta):
        return duration(value)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, float) and type(value) is not float:  # numpy.float64 (pandas' mean()...)
        return float(value)
    return value


def plain(value: Any, depth: int = 0) -> Any:
    """`value` with what orjson cannot write turned into JSON data: Decimal -> string, bytes -> base64,
    timedelta -> ISO 8601 duration, paths -> string, sets and tuple subclasses (NamedTuple) -> arrays,
    pydantic models -> their JSON data, what has a `tolist()` (numpy's scalars and arrays) -> its list
    or Python scalar. Anything else is left as it is (the encoder then names it).
    For a tool's return value, after a plain encode failed: the common case pays nothing."""
    if depth > MAX_DEPTH:  # let the encoder refuse it
        return value
    value = _text_form(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [plain(v, depth + 1) for v in value]
        if isinstance(value, (set, frozenset)):
            with contextlib.suppress(TypeError):  # a stable order when the items allow one
                items.sort()
        return items
    tolist = getattr(value, "tolist", None)  # numpy's scalars (int64, bool_) and arrays, array.array
    if callable(tolist) and not isinstance(value, type):
        return plain(tolist(), depth + 1)
    return value


def dumps_result(value: Any) -> str:
    """A tool's return value as JSON text: as is when the encoder can write it (the common case,
    one pass), else its `plain` form. Raises TypeError / ValueError when neither can be written.
    In the host (`encode_result`) and in a sandbox's child alike, so both send the same text.

    A float NaN / ±infinity (no JSON form) is written as the string "NaN" / "Infinity" /
    "-Infinity": orjson writes null, which told the model the tool had no value."""
    try:
        text = dumps_str(value)
        if "null" not in text or not _non_finite(value):  # (a C search; rarely true, then one C pass)
            return text
    except (TypeError, ValueError):  # Decimal, bytes, timedelta, a path, a set, a NamedTuple...
        pass  # (or, on the stdlib encoder, a NaN it refuses)
    value = plain(value)
    try:
        return dumps_str(_finite(value) if _non_finite(value) else value)
    except TypeError as e:  # orjson's own words named an option of its, not the value's problem
        if "OPT_NON_STR_KEYS" in str(e):
            raise TypeError("a dict key is not a str, int, float, bool or None (e.g. a tuple)") from None
        raise


def _finite(value: Any, depth: int = 0) -> Any:
    """`plain`'s output with each float NaN / ±infinity written as Python's json spells it, quoted."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
    if depth > MAX_DEPTH:  # let the encoder refuse it
        return value
    if isinstance(value, dict):
        return {k: _finite(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v, depth + 1) for v in value]
    return value


def _probe_default(value: Any) -> Any:
    """For `_nan_probe`: what orjson writes natively and the stdlib cannot, with the floats inside."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return None  # (datetime, UUID, enum...: no float of the tool's inside)


_nan_probe = _json.JSONEncoder(allow_nan=False, default=_probe_default)


def _non_finite(value: Any) -> bool:
    """Whether `value` holds a float NaN or infinity, in one pass of the stdlib's C encoder."""
    try:
        _nan_probe.encode(value)
    except ValueError as e:
        return "Out of range float" in str(e)
    except (TypeError, RecursionError):  # a key the stdlib cannot write: look no further
        return False
    return False


def jsonable(value: Any) -> Any:
    """An output as plain JSON data (journal, `to_json`): dataclasses and pydantic models included."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    value = _text_form(value)
    if isinstance(value, str):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "value") and type(value).__module__ != "builtins":  # Enum
        return jsonable(value.value)
    return str(value)
