"""Python type -> (JSON schema, converter from the validated JSON value to the Python value).

`build` recurses through a type once, at registration; the converter it returns is `None` when the
JSON value already is the Python value, so the common case costs nothing per call.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from .constraints import annotate
from .hints import lazy, parse_doc, type_hints
from .leaves import leaf
from .parts import (
    FORMATS,
    MAPPINGS,
    NO,
    SCALARS,
    SEQUENCES,
    SETS,
    Conv,
    Schema,
    Unsupported,
    alias_value,
    each,
    each_value,
    enum_schema,
    hashable,
    is_pydantic_model,
    json_value,
    pydantic_schema,
    strip_required,
    to_float,
    to_int,
)
from .shallow import may_match

__all__ = ["Defs", "Item", "build", "field_schema", "object_schema"]

Item = tuple[str, Any, bool, Any]  # (name, hint, required, default or NO)


class Defs:
    """The `$defs` of one root schema: the recursive types (a TypedDict, dataclass or NamedTuple that
    refers to itself), each defined once and referred to with `$ref`. It travels as the first item
    of `stack`, so every `build` below one root shares it, and nothing outlives the root's build."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}
        self.names: dict[Any, str] = {}
        self.cells: dict[Any, list[Conv]] = {}
        self.foreign: dict[tuple[str, str], str] = {}  # (pydantic's $defs text, its name) -> our name

    def ref(self, tp: Any) -> tuple[Schema, Conv]:
        """A reference to `tp`, whose schema and converter are still being built further up."""
        if tp not in self.names:
            base = re.sub(r"[^A-Za-z0-9_.-]", "_", getattr(tp, "__name__", "T"))  # Tree, Tree2 if taken
            name, n = base, 1
            while name in self.schemas or name in self.names.values():
                n += 1
                name = f"{base}{n}"
            self.names[tp] = name
            self.cells[tp] = [lambda v: v]
        cell = self.cells[tp]
        return {"$ref": f"#/$defs/{self.names[tp]}"}, lambda v: cell[0](v)

    def close(self, tp: Any, schema: Schema, conv: Conv | None) -> tuple[Schema, Conv | None]:
        """`tp` built: when it referred to itself, its schema moves to `$defs` and the refs get its converter."""
        name = self.names.get(tp)
        if name is None:
            return schema, conv
        self.schemas[name] = schema
        if conv is not None:
            self.cells[tp][0] = conv
        return {"$ref": f"#/$defs/{name}"}, conv

    def attach(self, schema: Schema) -> Schema:
        return {**schema, "$defs": dict(self.schemas)} if self.schemas else schema


def build(tp: Any, stack: tuple[Any, ...]) -> tuple[Schema, Conv | None]:
    """JSON schema for `tp` and a converter JSON value -> Python value (None when the JSON is already it).

    A root call (`stack` is `()`) returns a schema with the `$defs` of its recursive types."""
    if not stack:
        defs = Defs()
        schema, conv = build(tp, (defs,))
        return defs.attach(schema), conv
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        schema, conv = build(args[0], stack)
        return annotate(args[0], tp.__metadata__, schema, conv)
    if tp is Any or tp is object:
        return {}, None
    if tp is int:  # JSON Schema's "integer" accepts 1.0: the tool still gets the int it asked for
        return {"type": "integer"}, to_int  # returns its argument unchanged (no copy) for a real int
    if tp is float:  # and "number" accepts 2: the tool still gets the float it asked for
        return {"type": "number"}, to_float
    if isinstance(tp, type) and tp in SCALARS:
        return {"type": SCALARS[tp]}, None
    if isinstance(tp, type) and tp in FORMATS:
        fmt, parse = FORMATS[tp]
        return {"type": "string", "format": fmt}, parse
    if isinstance(tp, typing.NewType):
        return build(tp.__supertype__, stack)
    if (
        value := alias_value(tp, origin, args)
    ) is not None:  # `type X = ...`: built once, $ref'd if recursive
        if tp in stack:
            return stack[0].ref(tp)  # type: ignore[no-any-return]  # stack[0] is the root's Defs
        return stack[0].close(tp, *build(value, (*stack, tp)))  # type: ignore[no-any-return]
    if (known := leaf(tp)) is not None:
        return known
    if origin is Literal:
        members = {a.value: a for a in args if isinstance(a, enum.Enum)}
        return enum_schema(tp, [a.value if isinstance(a, enum.Enum) else a for a in args]), (
            (lambda v: members.get(v, v)) if members else None
        )
    if origin is Union or origin is types.UnionType:
        return _union(args, stack)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return enum_schema(tp, [m.value for m in tp]), tp
    if tp in stack:  # a type that refers to itself: a $ref to the $defs entry its outer build makes
        return stack[0].ref(tp)  # type: ignore[no-any-return]  # stack[0] is the root's Defs
    if is_pydantic_model(tp):
        return pydantic_schema(tp, stack[0])
    for is_kind, make in _RECORDS:
        if is_kind(tp):
            schema, conv = make(tp, (*stack, tp))
            return stack[0].close(tp, schema, conv)  # type: ignore[no-any-return]
    return _container(tp, origin or tp, args, stack)


def _container(
    tp: Any, container: Any, args: tuple[Any, ...], stack: tuple[Any, ...]
) -> tuple[Schema, Conv | None]:
    """Arrays (sequences, sets, tuples) and objects (str-keyed mappings)."""
    if container in SETS and args and not hashable(args[0]):
        raise Unsupported(
            tp, "set items must be hashable; use list[...] for items that are lists, dicts or mutable objects"
        )
    if container in SEQUENCES or container in SETS:
        return _array(container, args, stack)
    if container is tuple:
        return _tuple(tp, args, stack)
    if container in MAPPINGS:
        if args and args[0] is not str:
            raise Unsupported(tp, "JSON object keys are strings, so the key type must be str")
        schema, conv = build(args[1], stack) if args else ({}, None)
        return {"type": "object", **({"additionalProperties": schema} if schema else {})}, (
            each_value(conv) if conv else None
        )
    raise Unsupported(tp, "it is not a JSON-compatible type")


def _array(container: Any, args: tuple[Any, ...], stack: tuple[Any, ...]) -> tuple[Schema, Conv | None]:
    schema: Schema = {"type": "array"}
    conv = None
    if args:
        schema["items"], conv = build(args[0], stack)
    if container in SEQUENCES:
        return schema, each(conv) if conv else None
    schema["uniqueItems"] = True
    factory = frozenset if container is frozenset else set
    if conv is None:
        return schema, factory
    item = conv  # a name the lambda can close over with its narrowed type
    return schema, lambda v: factory(map(item, v))


def _tuple(tp: Any, args: tuple[Any, ...], stack: tuple[Any, ...]) -> tuple[Schema, Conv | None]:
    if tp is tuple or (len(args) == 2 and args[1] is Ellipsis):
        schema, conv = build(args[0], stack) if args else ({}, None)
        return {"type": "array", **({"items": schema} if schema else {})}, (
            (lambda v: tuple(map(conv, v))) if conv else tuple
        )
    built = [build(a, stack) for a in args]
    convs = [c for _, c in built]
    schema = {"type": "array", "prefixItems": [s for s, _ in built]} if built else {"type": "array"}
    schema.update(minItems=len(built), maxItems=len(built))  # prefixItems may not be empty
    if not any(convs):
        return schema, tuple
    return schema, lambda v: tuple(
        c(x) if c else x for c, x in zip(convs, v, strict=True)
    )  # min/maxItems fixed the length


def _union(args: tuple[Any, ...], stack: tuple[Any, ...]) -> tuple[Schema, Conv | None]:
    NoneType = type(None)
    built = [build(a, stack) for a in args if a is not NoneType]
    nullable = len(built) < len(args)
    if len(built) == 1:  # Optional[T]
        schema, conv = built[0]
        if nullable:
            if isinstance(schema.get("type"), str) and set(schema) <= {"type", "format"}:
                schema = {**schema, "type": [schema["type"], "null"]}
            else:
                schema = {"anyOf": [schema, {"type": "null"}]}
            if conv is not None:
                inner = conv
                conv = lambda v: None if v is None else inner(v)  # noqa: E731
        return schema, conv
    schema = {"anyOf": [s for s, _ in built] + ([{"type": "null"}] if nullable else [])}
    if not any(c for _, c in built):
        return schema, None
    # Which member a value belongs to is only known from its shape: the members its top could match
    # (`may_match`, cheap), and among several of those the first whose schema accepts it in depth.
    # Each member's validator sees the root's $defs (the same dict, filled in once the root is built),
    # so a member that is a recursive type's $ref resolves; validators are built here, once.
    defs = stack[0].schemas
    validator = lazy("jsonschema").Draft202012Validator
    choices = [(s, validator({**s, "$defs": defs}).is_valid, c) for s, c in built]

    def conv_union(v: Any) -> Any:
        possible = [(accepts, c) for s, accepts, c in choices if may_match(s, defs, v)]
        if type(v) is int and len(possible) > 1:  # `float | int` given 2: the int (exact type first)
            possible.sort(key=lambda p: p[1] is not to_int)
        if len(possible) == 1:  # the value passed the whole schema: this member is the one
            c = possible[0][1]
            return v if c is None else c(v)
        failed: Exception | None = None
        for accepts, c in possible:
            if accepts(v):
                if c is None:
                    return v
                try:  # e.g. `datetime | str` given "tomorrow": the schema accepts it, the parse does not
                    return c(v)
                except (TypeError, ValueError) as e:
                    failed = failed or e
        if failed is not None:
            raise failed
        return v

    return schema, conv_union


def object_schema(
    items: list[Item], docs: dict[str, str], stack: tuple[Any, ...]
) -> tuple[Schema, Conv | None]:
    """Object schema from (name, hint, required, default) items; converter fixes only the keys that need it."""
    props: Schema = {}
    required: list[str] = []
    convs: list[tuple[str, Conv]] = []
    for key, hint, is_required, default in items:
        props[key], conv = field_schema(key, hint, default, docs, stack)
        if is_required:
            required.append(key)
        if conv is not None:
            convs.append((key, conv))
    schema = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    return schema, (_fix_keys(tuple(convs)) if convs else None)


def field_schema(
    key: str, hint: Any, default: Any, docs: dict[str, str], stack: tuple[Any, ...]
) -> tuple[Schema, Conv | None]:
    """One field's schema, with its docstring description and its default when it has a JSON form.
    A field whose default is None takes None (`_implicitly_optional`): a function's parameter, a
    dataclass's or a NamedTuple's field alike."""
    if default is None:
        hint = _implicitly_optional(hint)
    try:
        schema, conv = build(hint, stack)
    except Unsupported as e:
        e.path.insert(0, key)
        raise
    if "description" not in schema and key in docs:  # Annotated description wins over the docstring
        schema = {"description": docs[key], **schema}
    if default is not NO and (value := json_value(default)) is not NO:
        schema = {**schema, "default": value}
    return schema, conv


_NULLABLE_ORIGINS = (typing.Union, types.UnionType, typing.Literal)


def _implicitly_optional(hint: Any) -> Any:
    """`limit: int = None` (PEP 484's implicit Optional, common in real code; also a dataclass
    field `tags: list[str] = None`) as `int | None`: the schema advertised `"default": null`
    beside `"type": "integer"`, so a model that sent the default back was told `None is not of
    type 'integer'`. The field's own default says it takes None."""
    bare = hint.__origin__ if typing.get_origin(hint) is Annotated else hint
    if bare is Any or bare is object or bare is None or bare is type(None):
        return hint
    members = typing.get_args(bare) if typing.get_origin(bare) in _NULLABLE_ORIGINS else ()
    if None in members or type(None) in members:
        return hint
    return typing.Optional[hint]  # noqa: UP045 - hint is a runtime object, `|` may not apply to it


def _fix_keys(fixes: tuple[tuple[str, Conv], ...]) -> Conv:
    def conv_object(d: dict[str, Any]) -> dict[str, Any]:
        out = d  # copied on the first change: never mutate the caller's dict, never copy for nothing
        for k, c in fixes:
            if k in d:
                old = d[k]
                new = c(old)
                if new is not old:
                    if out is d:
                        out = dict(d)
                    out[k] = new
        return out

    return conv_object


def _dataclass(cls: type, stack: tuple[Any, ...]) -> tuple[Schema, Conv]:
    hints = type_hints(cls, f"dataclass {cls.__qualname__}")
    items = [
        (
            f.name,
            hint.type if isinstance(hint, dataclasses.InitVar) else hint,
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            NO if f.default is dataclasses.MISSING else f.default,
        )
        for f, hint in _init_fields(cls, hints)
    ]
    schema, conv = object_schema(items, parse_doc(cls.__dict__.get("__doc__"))[1], stack)
    return schema, (lambda v: cls(**conv(v))) if conv else (lambda v: cls(**v))


def _init_fields(cls: type, hints: dict[str, Any]) -> list[tuple[dataclasses.Field[Any], Any]]:
    """The parameters of the dataclass's `__init__`, in order: its init fields and its `InitVar`s.
    `dataclasses.fields()` leaves the InitVars out, and a required one left out of the schema made
    the tool uncallable: the model could not send it, and every call failed "missing argument"."""
    regular = {f.name for f in dataclasses.fields(cls)}
    out = []
    for f in cls.__dataclass_fields__.values():  # type: ignore[attr-defined]
        hint = hints.get(f.name, Any)
        if f.init and (f.name in regular or isinstance(hint, dataclasses.InitVar)):
            out.append((f, hint))
    return out


def _typeddict(cls: Any, stack: tuple[Any, ...]) -> tuple[Schema, Conv | None]:
    hints = type_hints(cls, f"TypedDict {cls.__qualname__}")
    items = []
    for key, hint in hints.items():
        hint, req = strip_required(hint)
        # __required_keys__ is right for inherited keys; explicit (Not)Required wins because string
        # annotations can hide it from __required_keys__ on 3.11
        items.append((key, hint, key in cls.__required_keys__ if req is None else req, NO))
    return object_schema(
        items, parse_doc(cls.__dict__.get("__doc__"))[1], stack
    )  # stays a dict; only its values get converted


def _namedtuple(cls: Any, stack: tuple[Any, ...]) -> tuple[Schema, Conv]:
    """A NamedTuple is a JSON array of its fields in order (pydantic's form); trailing fields with
    defaults may be left out."""
    hints = type_hints(cls, f"NamedTuple {cls.__qualname__}")
    defaults = getattr(cls, "_field_defaults", {})
    docs = parse_doc(cls.__dict__.get("__doc__"))[1]
    built = [field_schema(f, hints.get(f, Any), defaults.get(f, NO), docs, stack) for f in cls._fields]
    convs = [c for _, c in built]
    required = sum(1 for f in cls._fields if f not in defaults)
    schema: Schema = {"type": "array", "minItems": required, "maxItems": len(built)}
    if built:  # prefixItems may not be empty
        schema["prefixItems"] = [{"title": f, **s} for f, (s, _) in zip(cls._fields, built, strict=True)]

    def conv_namedtuple(v: list[Any]) -> Any:  # min/maxItems bound the length; defaults fill the rest
        return cls(*[c(x) if c else x for c, x in zip(convs, v, strict=False)])

    return schema, conv_namedtuple


def _is_dataclass(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _is_namedtuple(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields")


_RECORDS: tuple[tuple[Callable[[Any], bool], Callable[..., tuple[Schema, Conv | None]]], ...] = (
    (_is_dataclass, _dataclass),
    (typing.is_typeddict, _typeddict),
    (_is_namedtuple, _namedtuple),
)
