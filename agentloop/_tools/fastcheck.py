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

Check = Callable[[Any], bool]

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


class _Refs:
    """The checks of one root's `$defs`, compiled on first use; a recursive type's check refers to
    itself through a cell (recursion bounded by the arguments' depth, `InputBudget.max_json_depth`).
    Also what every check of the root shares: the schema's compiled regexes."""

    def __init__(self, defs: Any, patterns: dict[str, Any]) -> None:
        self.defs = defs if isinstance(defs, dict) else {}
        self.patterns = patterns  # the validator's RE2-compiled regexes, by pattern text
        self.cells: dict[str, list[Check | None]] = {}
        self.failed = False  # a def with no fast check: the root gets none either

    def check(self, ref: Any) -> Check | None:
        name = ref[len("#/$defs/") :] if isinstance(ref, str) and ref.startswith("#/$defs/") else None
        if name is None or name not in self.defs:
            return None
        cell = self.cells.get(name)
        if cell is None:  # first use: compile it (a ref to itself inside finds the cell, filled below)
            cell = self.cells[name] = [None]
            cell[0] = _field_check(self.defs[name], self)
            if cell[0] is None:
                self.failed = True
                return None
        found = cell

        def by_ref(v: Any) -> bool:
            return found[0](v)  # type: ignore[misc]  # filled before any call

        return by_ref


def _array_check(schema: dict[str, Any], refs: _Refs) -> Check | None:
    """`{"type": "array", "items": <field>}` (list[int], list[Point], ...): one pass over the
    items, ~50x faster than jsonschema's descent, which matters for a megabyte-sized argument.
    Also a fixed tuple or NamedTuple: `prefixItems` with `minItems` / `maxItems`."""
    if "prefixItems" in schema:
        return _tuple_check(schema, refs)
    if not set(schema) <= _ANNOTATIONS | {"type", "items"} or not isinstance(schema.get("items"), dict):
        return None
    item = _field_check(schema["items"], refs)
    if item is None:
        return None
    return lambda v: type(v) is list and all(map(item, v))


def _tuple_check(schema: dict[str, Any], refs: _Refs) -> Check | None:
    prefix, least, most = schema.get("prefixItems"), schema.get("minItems", 0), schema.get("maxItems")
    if not set(schema) <= _ANNOTATIONS | {"type", "prefixItems", "minItems", "maxItems"}:
        return None
    if not isinstance(prefix, list) or type(least) is not int or type(most) is not int or most > len(prefix):
        return None  # items past the prefix would be unchecked here: leave it to jsonschema
    checks = [_field_check(p, refs) for p in prefix]
    if any(c is None for c in checks):
        return None
    fixed: list[Check] = checks  # type: ignore[assignment]
    return lambda v: (
        type(v) is list and least <= len(v) <= most and all(c(x) for c, x in zip(fixed, v, strict=False))
    )  # v may be shorter


# Bounds as Annotated constraints write them (`Ge(0)`, `MaxLen(3)`): value (or length) op bound passes.
_NUMBER_BOUNDS = {"minimum": operator.ge, "maximum": operator.le,
                  "exclusiveMinimum": operator.gt, "exclusiveMaximum": operator.lt}  # fmt: skip
_LENGTH_BOUNDS = {"minLength": operator.ge, "maxLength": operator.le}
_STRING_KEYS = _LENGTH_BOUNDS.keys() | {"pattern"}  # apply to strings only


def _with_bounds(schema: dict[str, Any], keys: set[str], refs: _Refs) -> Check | None:
    r"""The check of `schema` without `keys`, and the bounds: numeric ones apply to numbers (not
    bools) only, lengths and `pattern` to strings only, as in JSON Schema. A pattern is searched
    with the validator's own RE2 regex (`validate.collect_patterns`), never Python's `re`: `re`
    backtracks (`^(a+)+$` against a hostile 30-character argument blocks the loop for half a
    minute) and reads `\s` / `\d` as Unicode classes, so it would accept what the validator
    refuses."""
    base = _field_check({k: v for k, v in schema.items() if k not in keys}, refs)
    numbers = [(_NUMBER_BOUNDS[k], schema[k]) for k in keys if k in _NUMBER_BOUNDS]
    lengths = [(_LENGTH_BOUNDS[k], schema[k]) for k in keys if k in _LENGTH_BOUNDS]
    if base is None or not all(type(b) in (int, float) and b == b for _, b in numbers):
        return None
    if not all(type(b) is int and b >= 0 for _, b in lengths):
        return None
    search = None
    if "pattern" in keys:
        regex = refs.patterns.get(schema["pattern"]) if isinstance(schema["pattern"], str) else None
        if regex is None:
            return None  # jsonschema decides (and words the error)
        search = regex.search

    def bounded(v: Any) -> bool:
        if not base(v):
            return False
        if type(v) is int or type(v) is float:
            return all(op(v, b) for op, b in numbers)
        if type(v) is str:
            return all(op(len(v), b) for op, b in lengths) and (search is None or search(v) is not None)
        return True

    return bounded


def _field_check(schema: Any, refs: _Refs) -> Check | None:
    if not isinstance(schema, dict):
        return None
    if bounds := schema.keys() & (_NUMBER_BOUNDS.keys() | _STRING_KEYS):
        return _with_bounds(schema, bounds, refs)
    if "$ref" in schema or "anyOf" in schema:
        return _ref_or_any_of(schema, refs)
    if schema.get("type") == "array":
        return _array_check(schema, refs)
    if schema.get("type") == "object":  # a dataclass or TypedDict
        inner = _object_check(schema, refs)
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


def _ref_or_any_of(schema: dict[str, Any], refs: _Refs) -> Check | None:
    """`{"$ref": "#/$defs/X"}` (a recursive type) or `{"anyOf": [...]}` (a union, `X | None`):
    sound for acceptance as long as each part is, since anyOf accepts what any branch accepts."""
    if set(schema) <= _ANNOTATIONS | {"$ref"}:
        return refs.check(schema["$ref"])
    subs = schema.get("anyOf")
    if not set(schema) <= _ANNOTATIONS | {"anyOf"} or not isinstance(subs, list) or not subs:
        return None
    checks = [_field_check(sub, refs) for sub in subs]
    if any(c is None for c in checks):
        return None
    branches: tuple[Check, ...] = tuple(checks)  # type: ignore[arg-type]
    return lambda v: any(c(v) for c in branches)


def _any_of_types(kinds: list[Any]) -> Callable[[Any], bool] | None:
    """The check for a list of scalar type names, or None when one of them is not a scalar name."""
    if not kinds or not all(isinstance(k, str) and k in _SCALARS for k in kinds):
        return None
    checks = tuple(_SCALARS[k] for k in dict.fromkeys(kinds))
    if len(checks) == 1:
        return checks[0]
    return lambda v: any(check(v) for check in checks)


def compile_fast_check(
    schema: dict[str, Any], patterns: dict[str, Any] | None = None
) -> Callable[[dict[str, Any]], bool] | None:
    """A fast acceptance check for `schema`, or None when the schema is not of the simple shape.
    `patterns`: the validator's compiled regexes (`validate.collect_patterns`); a field with a
    `pattern` not among them gets no fast check."""
    if not isinstance(schema, dict):
        return None
    refs = _Refs(schema.get("$defs"), patterns or {})
    check = _object_check({k: v for k, v in schema.items() if k != "$defs"}, refs)
    return None if refs.failed else check


def _object_check(schema: dict[str, Any], refs: _Refs) -> Callable[[dict[str, Any]], bool] | None:
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
        check = _field_check(sub, refs)
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
