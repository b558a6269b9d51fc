"""`Annotated[T, ...]` metadata: descriptions, and constraints that are enforced, never dropped.

Understood: a plain string (the description), `annotated_types` constraints (`Gt`, `Ge`, `Lt`,
`Le`, `MultipleOf`, `MinLen`, `MaxLen`, and the groups `Interval`, `Len`; `doc()`), and pydantic's
`Field(...)` (description, title, examples, the same constraints, `pattern`). A constraint becomes
a JSON Schema keyword when the JSON value *is* the Python value (an int, a str, a list), so the
model sees it and the validator enforces it; on a converted type (a Decimal, a timedelta, a date)
it is checked on the converted value, and a violation is fed back to the model like any other.

A constraint agentloop cannot enforce (`Predicate`, `Timezone`, a pydantic alias...) is a
`ToolDefinitionError` at registration: silently accepting -1 for `Annotated[int, Ge(0)]` is how a
tool ends up deleting the wrong row. Metadata of other libraries (markers) is left alone.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from .parts import NO, Conv, Schema, Unsupported, to_float, to_int

__all__ = ["annotate", "field_default", "is_field_info"]

# annotated_types name -> (its attribute, the JSON Schema keyword for a number, the check)
_BOUNDS: dict[str, tuple[str, str, Callable[[Any, Any], bool]]] = {
    "Gt": ("gt", "exclusiveMinimum", operator.gt),
    "Ge": ("ge", "minimum", operator.ge),
    "Lt": ("lt", "exclusiveMaximum", operator.lt),
    "Le": ("le", "maximum", operator.le),
}
_LENGTHS = {"string": ("minLength", "maxLength"), "array": ("minItems", "maxItems"),
            "object": ("minProperties", "maxProperties")}  # fmt: skip
_NOT_CONSTRAINTS = frozenset({"Strict"})  # pydantic's: JSON types are checked strictly already


def _origin(m: Any) -> str:
    return type(m).__module__.split(".")[0]


def _flatten(metadata: Iterable[Any], info: dict[str, Any]) -> list[Any]:
    """The constraints in `metadata`, groups and pydantic's FieldInfo opened; texts go to `info`."""
    out: list[Any] = []
    for m in metadata:
        if isinstance(m, str):
            info.setdefault("description", m)
        elif is_field_info(m):
            out += _flatten(_field_info(m, info), info)
        elif type(m).__name__ in ("DocInfo", "Doc") and isinstance(getattr(m, "documentation", None), str):
            info.setdefault("description", m.documentation)  # annotated_types.doc(), typing_extensions.Doc
        elif _origin(m) == "annotated_types" and hasattr(m, "__iter__"):  # GroupedMetadata: Interval, Len
            out += _flatten(m, info)
        elif _origin(m) in ("annotated_types", "pydantic") and type(m).__name__ not in _NOT_CONSTRAINTS:
            out.append(m)
    return out


def is_field_info(v: Any) -> bool:
    return _origin(v) == "pydantic" and type(v).__name__ == "FieldInfo"


def field_default(hint: Any, fi: Any) -> tuple[Any, Any, Callable[[], Any] | None]:
    """`def f(x: int = Field(3, ge=0))`, as PydanticAI users write it: the hint with the Field's
    metadata, the default (or `NO`), and what makes the default for a call that leaves `x` out
    (the function's own default is the FieldInfo object, which the tool must never receive)."""
    meta = [m for m in (fi.description,) if m is not None]
    for attr in ("alias", "validation_alias", "discriminator"):
        if getattr(fi, attr, None) is not None:
            raise Unsupported(fi, f"pydantic Field({attr}=...) has no meaning for a tool parameter here")
    annotated = Annotated[(hint, *meta, *fi.metadata)] if meta or fi.metadata else hint
    if fi.default_factory is not None:
        return annotated, NO, fi.default_factory
    if repr(fi.default) == "PydanticUndefined" or fi.default is Ellipsis:
        return annotated, NO, None
    default = fi.default
    return annotated, default, lambda: default


def _field_info(fi: Any, info: dict[str, Any]) -> list[Any]:
    for attr in ("alias", "validation_alias", "discriminator", "default_factory"):
        if getattr(fi, attr, None) is not None:
            raise Unsupported(fi, f"pydantic Field({attr}=...) has no meaning for a tool parameter here")
    if repr(getattr(fi, "default", None)) != "PydanticUndefined":
        raise Unsupported(
            fi, "a default inside Annotated[..., Field(default=...)] is not used; write `= value`"
        )
    for attr in ("description", "title", "examples"):
        if getattr(fi, attr, None) is not None:
            info.setdefault(attr, getattr(fi, attr))
    return list(fi.metadata)


def annotate(
    tp: Any, metadata: Iterable[Any], schema: Schema, conv: Conv | None
) -> tuple[Schema, Conv | None]:
    """`schema` and `conv` of `Annotated[tp, *metadata]`."""
    info: dict[str, Any] = {}
    checks: list[tuple[Callable[[Any], bool], str]] = []
    schema = dict(schema)
    native = conv is None or conv is to_int or conv is to_float  # the JSON value is the Python value
    try:
        for m in _flatten(metadata, info):
            check = _apply(m, schema, native)
            if check is not None:
                checks.append(check)
    except Unsupported as e:
        e.tp = tp  # "parameter 'x' has type int, ...: agentloop cannot enforce Predicate(...)"
        raise
    schema = {**schema, **info}  # the Annotated description wins over the inner type's
    if not checks:
        return schema, conv
    return schema, _checked(conv, tuple(checks))


def _apply(m: Any, schema: Schema, native: bool) -> tuple[Callable[[Any], bool], str] | None:
    """Put constraint `m` into `schema` when the schema can say it; else the check of the converted value."""
    name, kind = type(m).__name__, schema.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind}
    if name in _BOUNDS:
        attr, keyword, op = _BOUNDS[name]
        bound = getattr(m, attr)
        if kinds <= {"integer", "number", "null"} and _json_number(bound):  # JSON numbers stay numbers
            schema[keyword] = bound
            return None
        return (lambda v: op(v, bound)), f"must be {keyword_text(keyword)} {bound}"
    if name == "MultipleOf":
        if (
            native
            and kinds <= {"integer", "number", "null"}
            and _json_number(m.multiple_of)
            and m.multiple_of > 0
        ):
            schema["multipleOf"] = m.multiple_of
            return None
        return (lambda v: v % m.multiple_of == 0), f"must be a multiple of {m.multiple_of}"
    if name in ("MinLen", "MaxLen"):
        limit = m.min_length if name == "MinLen" else m.max_length
        if isinstance(kind, str) and kind in _LENGTHS and (native or kind != "string"):
            schema[_LENGTHS[kind][name == "MaxLen"]] = limit
            return None
        op = operator.ge if name == "MinLen" else operator.le
        return (
            lambda v: op(_length(v), limit)
        ), f"must have {'at least' if name == 'MinLen' else 'at most'} {limit} items"
    fields = getattr(m, "__dict__", {})
    if name == "_PydanticGeneralMetadata" and set(fields) == {"pattern"} and kind == "string" and native:
        schema["pattern"] = fields["pattern"]  # compiled with RE2 at registration (validate.py)
        return None
    raise Unsupported(
        m, f"agentloop cannot enforce the constraint {m!r} on a tool argument; check it in the tool"
    )


def _length(v: Any) -> int:
    return len(v) if hasattr(v, "__len__") else len(str(v))  # a Path: the length of its text


def keyword_text(keyword: str) -> str:
    return {"exclusiveMinimum": ">", "minimum": ">=", "exclusiveMaximum": "<", "maximum": "<="}[keyword]


def _json_number(v: Any) -> bool:
    return type(v) is int or (type(v) is float and math.isfinite(v))


def _checked(conv: Conv | None, checks: tuple[tuple[Callable[[Any], bool], str], ...]) -> Conv:
    def conv_checked(v: Any) -> Any:
        value = conv(v) if conv is not None else v
        if value is None:  # Optional[...]: the constraint is on the value, when there is one
            return value
        for ok, what in checks:
            try:
                passed = ok(value)
            except (TypeError, ArithmeticError):
                passed = False
            if not passed:
                raise ValueError(f"{str(v)[:60]!r} {what}")
        return value

    return conv_checked
