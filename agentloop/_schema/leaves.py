"""Leaves whose JSON form is text (or a number) that must be parsed: Decimal, timedelta, bytes, paths.

Each is a (schema, converter) pair. The converter checks the text, and its `ValueError` is fed back
to the model as an invalid-arguments error, like a schema violation. The Decimal and bytes schemas
carry a `pattern` (checked with google-re2 in linear time, see `_tools/validate.py`), so that a
schema generator sends only text the converter takes.

Every converter bounds its own work: the text is already bounded by
`InputBudget.max_argument_bytes`, but a Decimal of a million digits, or a duration of 10**400
seconds, would still cost the *tool* (an `int(d)`) or overflow `timedelta`. Such values are refused
here, with a message that says what is accepted.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import pathlib
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "BYTES_SCHEMA",
    "DECIMAL_SCHEMA",
    "MAX_DECIMAL_DIGITS",
    "OWN_PATTERNS",
    "leaf",
    "to_decimal",
    "to_timedelta",
]

Schema = dict[str, Any]
Conv = Callable[[Any], Any]

# Digits and exponent of a Decimal argument, at most. The same figure as CPython's limit on int <-> str
# conversion (sys.int_info.default_max_str_digits), for the same reason: past it, `int(d)` or `str(d)`
# in the tool costs quadratic time.
MAX_DECIMAL_DIGITS = 4300
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# What the schema says of a Decimal sent as a string: exactly texts `to_decimal` converts, or fewer
# (ASCII digits; at most 3 exponent digits and 3,300 characters, so digits and exponent stay
# within MAX_DECIMAL_DIGITS), so every schema-valid argument converts (TestModel sent ""). The
# whitespace is spelled out: `\s` is Unicode whitespace to Python's `re` (what a schema generator
# such as TestModel's reads) and ASCII to RE2 (what the validator reads); TestModel sent a
# "\u3000"-padded number the validator then refused.
DECIMAL_SCHEMA: Schema = {
    "type": ["number", "string"],
    "format": "decimal",
    "pattern": r"^[ \t\n\r]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?[ \t\n\r]*$",
    "maxLength": MAX_DECIMAL_DIGITS - 1000,
}
# What the schema says of bytes: standard base64 with its padding (RFC 4648, section 4), exactly
# the texts `to_bytes` takes ("" is b""), in syntax RE2 (the validator's engine) and Python's `re`
# read alike. `b64decode(validate=True)` alone also took padding after a whole quantum ("QUJD=",
# "QUJD===") on 3.11 and refused it on others: `to_bytes` checks this pattern first, so the schema
# and the binder agree on every Python. (`$`: the end of the text to RE2 and to
# hypothesis-jsonschema; the binder uses `fullmatch`, which takes no trailing newline either.)
_BASE64_TEXT = r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
BYTES_SCHEMA = {
    "type": "string",
    "format": "byte",
    "contentEncoding": "base64",
    "pattern": f"^{_BASE64_TEXT}$",
}
_BASE64 = re.compile(_BASE64_TEXT)  # fixed-width groups: linear on a text of any length
# agentloop's own patterns, each to a Python `re` regex for the same texts, linear in the text's
# length. Without google-re2 (a platform with no wheel, PyPy), the validator checks these with
# `re` instead of refusing the schema, so a `bytes` or `Decimal` parameter registers everywhere;
# any other pattern still needs RE2 there. `\A...\Z`, not `^...$`: Python's `$` also matches
# before a final "\n" (RE2's does not), and "QUJD\n" must fail the schema. Base64: fixed-width
# groups. Decimal: `[0-9]+(?:\.[0-9]*)?` is the schema's `[0-9]+\.?[0-9]*` (the same texts)
# without its quadratic backtracking (two adjacent runs of digits could split "111...1x" n ways).
OWN_PATTERNS: dict[str, re.Pattern[str]] = {
    BYTES_SCHEMA["pattern"]: re.compile(rf"\A{_BASE64_TEXT}\Z"),
    DECIMAL_SCHEMA["pattern"]: re.compile(
        r"\A[ \t\n\r]*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?[ \t\n\r]*\Z"
    ),
}
_MAX_SECONDS = decimal.Decimal(dt.timedelta.max.total_seconds())  # 86399999999999.999999 > every duration
_DURATION = re.compile(
    r"(?P<sign>[-+])?P(?:(?P<W>\d+(?:[.,]\d+)?)W)?(?:(?P<D>\d+(?:[.,]\d+)?)D)?"
    r"(?:T(?:(?P<H>\d+(?:[.,]\d+)?)H)?(?:(?P<M>\d+(?:[.,]\d+)?)M)?(?:(?P<S>\d+(?:[.,]\d+)?)S)?)?"
)
_UNIT_SECONDS = {"W": 604800, "D": 86400, "H": 3600, "M": 60, "S": 1}
_DURATION_HELP = (
    "send an ISO 8601 duration such as 'PT1H30M', 'P2DT3H' or '-PT0.5S' (weeks, days, hours, minutes, "
    "seconds; no years or months, whose length varies), or a number of seconds"
)


def _exact(v: Any) -> decimal.Decimal:
    """A JSON number as a Decimal: exact for an int; for a float, the digits of its shortest repr,
    which are what the model wrote up to 15 significant digits (0.1 is Decimal("0.1"), not
    0.1000000000000000055...). More digits than a float holds must be sent as a string."""
    return decimal.Decimal(v) if isinstance(v, int) else decimal.Decimal(repr(v))


def to_decimal(v: Any) -> decimal.Decimal:
    """A JSON number or numeric string -> Decimal; non-finite and oversized values are refused."""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise TypeError(f"a decimal number must be a JSON number or a numeric string, got {type(v).__name__}")
    if isinstance(v, str):
        text = v.strip()
        if len(text) > MAX_DECIMAL_DIGITS + 20:
            raise ValueError(
                f"the decimal number is {len(text)} characters long; at most {MAX_DECIMAL_DIGITS} digits are accepted"
            )
        if not _DECIMAL.fullmatch(text):
            raise ValueError(
                f"{v[:40]!r} is not a decimal number; send digits with an optional sign, point and exponent, "
                "e.g. '12.50' or '-1.5e3' (NaN and Infinity are not accepted)"
            )
        d = decimal.Decimal(text)
    else:
        d = _exact(v)
    digits = len(d.as_tuple().digits)
    if digits > MAX_DECIMAL_DIGITS or abs(d.adjusted()) > MAX_DECIMAL_DIGITS:
        raise ValueError(
            f"the decimal number has {digits} digits and exponent {d.adjusted()}; at most "
            f"{MAX_DECIMAL_DIGITS} of each are accepted"
        )
    return d


def to_timedelta(v: Any) -> dt.timedelta:
    """An ISO 8601 duration string or a number of seconds -> timedelta (within timedelta's range)."""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise TypeError(f"a duration must be a string or a number of seconds, got {type(v).__name__}")
    if isinstance(v, str):
        seconds = _duration_seconds(v)
    elif len(str(v)) > 40:  # 40 digits of seconds are far beyond timedelta's range (15 digits)
        raise ValueError(f"the duration of {str(v)[:20]}... seconds is out of range; {_DURATION_HELP}")
    else:
        seconds = _exact(v)
    if abs(seconds) > _MAX_SECONDS:
        raise ValueError(
            f"the duration of {seconds:.6g} seconds is out of range (at most {dt.timedelta.max.days} days "
            "either way)"
        )
    micro = int((seconds * 1_000_000).to_integral_value(decimal.ROUND_HALF_EVEN))
    return dt.timedelta(microseconds=micro)


def _duration_seconds(text: str) -> decimal.Decimal:
    m = _DURATION.fullmatch(text.strip()) if len(text) <= 100 else None
    parts = {k: p for k, p in m.groupdict().items() if k != "sign" and p is not None} if m else {}
    if not parts or text.strip().endswith("T"):
        raise ValueError(f"{text[:40]!r} is not a duration; {_DURATION_HELP}")
    total = sum(
        (decimal.Decimal(p.replace(",", ".")) * _UNIT_SECONDS[k] for k, p in parts.items()),
        decimal.Decimal(0),
    )
    return -total if m and m["sign"] == "-" else total


def to_bytes(v: Any) -> bytes:
    if not isinstance(v, str):
        raise TypeError(f"bytes must be sent as a base64 string, got {type(v).__name__}")
    if _BASE64.fullmatch(v) is None:
        raise ValueError(
            f"{v[:40]!r} is not valid base64; send the bytes base64-encoded (A-Z a-z 0-9 + /, padded "
            "with '=' to a multiple of 4 characters, no whitespace)"
        )
    return base64.b64decode(v, validate=True)


def _path(cls: type[pathlib.PurePath]) -> Conv:
    def to_path(v: Any) -> pathlib.PurePath:
        if not isinstance(v, str):
            raise TypeError(f"a path must be a string, got {type(v).__name__}")
        if not v or "\x00" in v:  # "" would become "." (the working directory); NUL fails every open()
            raise ValueError("a path must be a non-empty string without NUL characters")
        return cls(v)

    return to_path


def leaf(tp: Any) -> tuple[Schema, Conv] | None:
    """The (schema, converter) of `tp` when it is one of these leaves, else None."""
    if not isinstance(tp, type):
        return None
    if tp is decimal.Decimal:
        return dict(DECIMAL_SCHEMA), to_decimal
    if tp is dt.timedelta:  # minimum/maximum bound the number of seconds (a string is left to the converter)
        bound = dt.timedelta.max.days * 86400
        return {
            "type": ["string", "number"],
            "format": "duration",
            "minimum": -bound,
            "maximum": bound,
        }, to_timedelta
    if tp is bytes or tp is bytearray:
        conv: Conv = to_bytes if tp is bytes else (lambda v: bytearray(to_bytes(v)))
        return dict(BYTES_SCHEMA), conv
    if issubclass(tp, pathlib.PurePath):
        try:
            tp("x")  # WindowsPath on POSIX (and the reverse) cannot be made: refuse it now, not per call
        except Exception:
            return None
        return {"type": "string", "format": "path", "minLength": 1}, _path(tp)  # "" is refused: say so
    return None
