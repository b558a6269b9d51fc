"""A fast acceptance check for the most common tool schemas: an object of scalar fields, arrays
of them, and objects of those (dataclasses, TypedDicts), without `$ref` or combinators.

jsonschema stays the authority. For a schema of the shape `{"type": "object", "properties":
{name: {"type": <scalar>, "enum"?: [strings], ...annotations}}, "required": [...],
"additionalProperties": false}` (a field may also be an array of such fields, or an object of
this same shape) this builds a plain-Python check that is *sound for
acceptance*: whenever it says valid, jsonschema would too. When it says invalid (or the schema
has another shape) the cached jsonschema validator decides and words the errors. The common
case, valid arguments, then costs a dict walk instead of a validator descent (~12 µs a call).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

__all__ = ["compile_fast_check"]

# Keys that never affect validity: descriptions, titles, defaults, examples. "format" and the
# content keywords are annotations too in Draft 2020-12 unless a format checker is asked for, and
# the tool validator (`validate.py`) asks for none: a date-time string is parsed by its converter.
_ANNOTATIONS = frozenset(
    {
        "description",
        "title",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",
        "contentEncoding",
        "contentMediaType",
    }
)


def _is_str(v: Any) -> bool:
    return type(v) is str


def _is_int(v: Any) -> bool:
    return type(v) is int  # bool is excluded on purpose: True is not an integer in JSON schema


def _is_number(v: Any) -> bool:
    return type(v) is int or type(v) is float


def _is_bool(v: Any) -> bool:
    return type(v) is bool


def _is_null(v: Any) -> bool:
    return v is None


_SCALARS: dict[str, Callable[[Any], bool]] = {
    "string": _is_str,
    "integer": _is_int,
    "number": _is_number,
    "boolean": _is_bool,
    "null": _is_null,
}


def _array_check(schema: dict[str, Any]) -> Callable[[Any], bool] | None:
    """`{"type": "array", "items": <scalar field>}` (list[int], list[str], ...): one pass over the
    items, ~50x faster than jsonschema's descent, which matters for a megabyte-sized argument."""
    if not set(schema) <= _ANNOTATIONS | {"type", "items"} or not isinstance(schema.get("items"), dict):
        return None
    item = _field_check(schema["items"])
    if item is None:
        return None
    return lambda v: type(v) is list and all(map(item, v))


# Bounds as Annotated constraints write them (`Ge(0)`, `MaxLen(3)`): value (or length) op bound passes.
_NUMBER_BOUNDS = {"minimum": operator.ge, "maximum": operator.le,
                  "exclusiveMinimum": operator.gt, "exclusiveMaximum": operator.lt}  # fmt: skip
_LENGTH_BOUNDS = {"minLength": operator.ge, "maxLength": operator.le}


def _with_bounds(schema: dict[str, Any], keys: set[str]) -> Callable[[Any], bool] | None:
    """The check of `schema` without `keys`, and the bounds: numeric ones apply to numbers (not
    bools) only, lengths to strings only, as in JSON Schema."""
    base = _field_check({k: v for k, v in schema.items() if k not in keys})
    numbers = [(_NUMBER_BOUNDS[k], schema[k]) for k in keys if k in _NUMBER_BOUNDS]
    lengths = [(_LENGTH_BOUNDS[k], schema[k]) for k in keys if k in _LENGTH_BOUNDS]
    if base is None or not all(type(b) in (int, float) and b == b for _, b in numbers):
        return None
    if not all(type(b) is int and b >= 0 for _, b in lengths):
        return None

    def bounded(v: Any) -> bool:
        if not base(v):
            return False
        if type(v) is int or type(v) is float:
            return all(op(v, b) for op, b in numbers)
        if type(v) is str:
            return all(op(len(v), b) for op, b in lengths)
        return True

    return bounded


def _field_check(schema: Any) -> Callable[[Any], bool] | None:
    if isinstance(schema, dict) and (
        bounds := schema.keys() & (_NUMBER_BOUNDS.keys() | _LENGTH_BOUNDS.keys())
    ):
        return _with_bounds(schema, bounds)
    if isinstance(schema, dict) and schema.get("type") == "array":
        return _array_check(schema)
    if isinstance(schema, dict) and schema.get("type") == "object":  # a dataclass or TypedDict
        inner = compile_fast_check(schema)
        return None if inner is None else (lambda v: type(v) is dict and inner(v))
    if not isinstance(schema, dict) or not set(schema) <= _ANNOTATIONS | {"type", "enum"}:
        return None
    kind = schema.get("type")
    if kind is None and "enum" not in schema:
        return None
    if isinstance(kind, list):  # {"type": ["integer", "null"]}: what `int | None` becomes
        return _any_of_types(kind) if "enum" not in schema else None
    if kind is not None and not isinstance(kind, str):
        return None
    type_ok = _SCALARS.get(kind) if kind is not None else None
    if kind is not None and type_ok is None:
        return None
    enum = schema.get("enum")
    if enum is not None:
        # Only string enums: Python's `in` would let True match 1, which JSON schema does not.
        if not isinstance(enum, list) or not enum or not all(type(e) is str for e in enum):
            return None
        allowed = frozenset(enum)
        if type_ok is None or type_ok is _is_str:
            return lambda v: type(v) is str and v in allowed
        return None
    return type_ok


def _any_of_types(kinds: list[Any]) -> Callable[[Any], bool] | None:
    """The check for a list of scalar type names, or None when one of them is not a scalar name."""
    if not kinds or not all(isinstance(k, str) and k in _SCALARS for k in kinds):
        return None
    checks = tuple(_SCALARS[k] for k in dict.fromkeys(kinds))
    if len(checks) == 1:
        return checks[0]
    return lambda v: any(check(v) for check in checks)


def compile_fast_check(schema: dict[str, Any]) -> Callable[[dict[str, Any]], bool] | None:
    """A fast acceptance check for `schema`, or None when the schema is not of the simple shape."""
    if not set(schema) <= _ANNOTATIONS | {"type", "properties", "required", "additionalProperties"}:
        return None
    if schema.get("type") != "object" or schema.get("additionalProperties") is not False:
        return None
    props = schema.get("properties", {})
    required = schema.get("required", [])
    if not isinstance(props, dict) or not isinstance(required, list) or not set(required) <= set(props):
        return None
    checks: dict[str, Callable[[Any], bool]] = {}
    for name, sub in props.items():
        check = _field_check(sub)
        if check is None:
            return None
        checks[name] = check
    need = frozenset(required)
    n_required = len(need)

    def fast_check(args: dict[str, Any]) -> bool:
        if n_required and not need <= args.keys():
            return False
        for key, value in args.items():
            check = checks.get(key)
            if check is None or not check(value):
                return False
        return True

    return fast_check
