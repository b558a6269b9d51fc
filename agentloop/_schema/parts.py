"""The leaves of a type's schema: scalar tables, enums, pydantic models, defaults, converters.

Nothing here recurses into another type's schema (that is `build.py`), so these pieces stand alone.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import datetime as dt
import decimal
import enum
import math
import pathlib
import sys
import types
import typing
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal, NotRequired, Required, Union

from .. import _json

__all__ = [
    "FORMATS",
    "MAPPINGS",
    "NO",
    "SCALARS",
    "SEQUENCES",
    "SETS",
    "Conv",
    "Schema",
    "Unsupported",
    "each",
    "each_value",
    "enum_schema",
    "hashable",
    "is_pydantic_model",
    "json_value",
    "pydantic_schema",
    "strip_required",
    "to_float",
    "to_int",
]

Schema = dict[str, Any]
Conv = Callable[[Any], Any]
SCALARS: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}
FORMATS: dict[Any, tuple[str, Conv]] = {
    dt.datetime: ("date-time", dt.datetime.fromisoformat),
    dt.date: ("date", dt.date.fromisoformat),
    dt.time: ("time", dt.time.fromisoformat),
    uuid.UUID: ("uuid", uuid.UUID),
}
SEQUENCES = (list, cabc.Sequence, cabc.MutableSequence, cabc.Collection, cabc.Iterable)
SETS = (set, frozenset, cabc.Set, cabc.MutableSet)
MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)
NO = object()  # "no JSON form" / "no default" sentinel


class Unsupported(Exception):
    """Internal: raised deep inside a type; `path` is filled in on the way up to name the parameter."""

    def __init__(self, tp: Any, why: str) -> None:
        super().__init__(why)
        self.tp, self.why = tp, why
        self.path: list[str] = []


def each(conv: Conv) -> Conv:
    """Convert a list's items; the same list back when no item changed (the common all-int case)."""

    def conv_list(v: list[Any]) -> list[Any]:
        out = [conv(x) for x in v]
        return v if all(a is b for a, b in zip(out, v, strict=True)) else out

    return conv_list


def each_value(conv: Conv) -> Conv:
    def conv_dict(v: dict[str, Any]) -> dict[str, Any]:
        out = {k: conv(x) for k, x in v.items()}
        return v if all(out[k] is x for k, x in v.items()) else out

    return conv_dict


def to_int(v: Any) -> Any:
    return int(v) if type(v) is float else v


def to_float(v: Any) -> Any:
    """A JSON number as the float a `float` parameter asked for: the model's `2` arrives as `2.0`
    (as pydantic does). A bool is not a JSON number, so the schema refuses it before this runs."""
    if type(v) is not int:
        return v
    try:
        return float(v)
    except OverflowError:
        raise ValueError(f"an integer of {len(str(v))} digits is too large for a float") from None


def hashable(tp: Any) -> bool:
    """Whether values converted for `tp` can be set members (decided from the type, at registration)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return hashable(args[0])
    if isinstance(tp, typing.NewType):
        return hashable(tp.__supertype__)
    if origin is Union or origin is types.UnionType:
        return all(hashable(a) for a in args)
    if origin is Literal or tp is Any or tp is object:  # Any: whatever arrives is the caller's choice
        return True
    if origin in (tuple, frozenset):
        return all(hashable(a) for a in args if a is not Ellipsis)
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or is_pydantic_model(tp)):
        return tp.__hash__ is not None
    if typing.is_typeddict(tp) or (origin or tp) in (*SEQUENCES, *SETS, *MAPPINGS):
        return (origin or tp) is frozenset
    return isinstance(tp, type) and getattr(tp, "__hash__", None) is not None


def is_pydantic_model(tp: Any) -> bool:
    # pydantic is never imported here: if the annotation is a pydantic model, pydantic is loaded already.
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(tp, type) and issubclass(tp, pydantic.BaseModel)


def pydantic_schema(model: Any, root: Any) -> tuple[Schema, Conv]:
    """A pydantic model's own JSON schema and its validation. Its $defs are inlined, so it can sit
    anywhere; a recursive one (which cannot be inlined) goes to the root's `$defs` (`root`, the
    build's `Defs`), once however often the model appears."""
    try:
        schema = model.model_json_schema()
    except Exception as e:
        raise Unsupported(model, f"pydantic cannot build its JSON schema ({e})") from None
    defs = schema.pop("$defs", {})
    root_defs: dict[str, Schema] = root.schemas
    renamed: dict[str, str] = {}  # pydantic's def name -> its name in the root $defs
    todo: list[str] = []

    def root_ref(name: str) -> Schema:
        key = (_json.canonical(_reachable(defs, name)), name)  # the same text: the same types
        if name not in renamed and key in root.foreign:
            renamed[name] = root.foreign[key]
        if name not in renamed:
            new, n = name, 1
            while new in root_defs:
                n += 1
                new = f"{name}{n}"
            root_defs[new] = {}  # reserved; filled below
            renamed[name] = root.foreign[key] = new
            todo.append(name)
        return {"$ref": f"#/$defs/{renamed[name]}"}

    def inline(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [inline(x, seen) for x in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[len("#/$defs/") :] in defs:
            name = ref[len("#/$defs/") :]
            rest = {k: inline(v, seen) for k, v in node.items() if k != "$ref"}
            if name in seen or name in renamed:  # recursive: refer to it in the root's $defs
                return {**root_ref(name), **rest}
            return {**inline(defs[name], (*seen, name)), **rest}
        return {k: inline(v, seen) for k, v in node.items()}

    out = inline(schema, ())
    while todo:
        name = todo.pop()
        root_defs[renamed[name]] = inline(defs[name], (name,))
    return out, model.model_validate


def _reachable(defs: dict[str, Any], name: str) -> dict[str, Any]:
    """The $defs entries `name` refers to, itself included, directly or not."""
    found: dict[str, Any] = {}
    todo = [name]
    while todo:
        n = todo.pop()
        if n in found or n not in defs:
            continue
        found[n] = defs[n]
        text = _json.dumps_str(defs[n])
        todo += [m for m in defs if f'"#/$defs/{m}"' in text]
    return found


def enum_schema(tp: Any, values: list[Any]) -> Schema:
    json_types = set()
    for v in values:
        if type(v) not in SCALARS or (isinstance(v, float) and not math.isfinite(v)):
            raise Unsupported(tp, f"its value {v!r} is not a JSON string, number, boolean or null")
        json_types.add(SCALARS[type(v)])
    return {"type": json_types.pop(), "enum": values} if len(json_types) == 1 else {"enum": values}


def strip_required(hint: Any) -> tuple[Any, bool | None]:
    origin = typing.get_origin(hint)
    if origin is Required or origin is NotRequired:
        return typing.get_args(hint)[0], origin is Required
    if origin is Annotated:
        inner, req = strip_required(hint.__origin__)
        if req is not None:
            return Annotated[(inner, *hint.__metadata__)], req
    return hint, None


def json_value(v: Any) -> Any:
    """`v` as plain JSON data for a schema "default", or `NO` if it has no faithful JSON form."""
    if isinstance(v, enum.Enum):
        v = v.value
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else NO
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (decimal.Decimal, dt.timedelta, bytes, bytearray, pathlib.PurePath)):
        text = _json.plain(v)  # the form an argument of that type takes (Decimal NaN stays: no form)
        return text if isinstance(text, str) else NO
    if isinstance(v, (list, tuple)):
        out = [json_value(x) for x in v]
        return NO if any(x is NO for x in out) else out
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        obj = {k: json_value(x) for k, x in v.items()}
        return NO if any(x is NO for x in obj.values()) else obj
    return NO


def alias_value(tp: Any, origin: Any, args: tuple[Any, ...]) -> Any:
    """The type a type alias stands for (`type Celsius = Annotated[float, ...]` of Python 3.12, or
    typing_extensions.TypeAliasType; a generic one with its arguments, `Pair[int]`), or None when
    `tp` is not an alias. Its value is read lazily, so a recursive alias names itself in it."""
    alias = origin if args else tp
    if type(alias).__name__ != "TypeAliasType" or not hasattr(alias, "__value__"):
        return None
    value = alias.__value__
    if isinstance(value, str):  # typing_extensions on 3.11: a recursive alias is spelt as a string
        raise Unsupported(tp, f"the value of type alias {alias.__name__} is the string {value!r}, which "
                          "cannot be resolved; use the `type` statement (Python 3.12+) or a plain type")  # fmt: skip
    if args:
        try:
            value = value[args]
        except TypeError as e:
            raise Unsupported(tp, f"cannot apply type alias {alias.__name__} to {args}: {e}") from None
    return value
