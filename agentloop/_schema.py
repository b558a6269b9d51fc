"""Python function -> OpenAI function-tool definition, plus a binder from validated JSON args to kwargs.

All reflection happens once, in `function_schema()`. The returned `bind` is a closure over precomputed
converters, so the per-call cost is nothing (fast path) or one dict copy plus the needed conversions.
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import dataclasses
import datetime as dt
import enum
import functools
import inspect
import math
import re
import sys
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, Required, Union

from . import _json
from ._exceptions import ToolDefinitionError

__all__ = ["FunctionSchema", "function_schema"]

Schema = dict[str, Any]
Conv = Callable[[Any], Any]
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_SCALARS: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}
_FORMATS: dict[Any, tuple[str, Conv]] = {
    dt.datetime: ("date-time", dt.datetime.fromisoformat),
    dt.date: ("date", dt.date.fromisoformat),
    dt.time: ("time", dt.time.fromisoformat),
    uuid.UUID: ("uuid", uuid.UUID),
}
_SEQUENCES = (list, cabc.Sequence, cabc.MutableSequence, cabc.Collection, cabc.Iterable)
_SETS = (set, frozenset, cabc.Set, cabc.MutableSet)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)
_NO = object()  # "no JSON form" / "no default" sentinel


@dataclass(frozen=True, slots=True)
class FunctionSchema:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    is_async: bool
    bind: Callable[[dict[str, Any]], dict[str, Any]]  # validated JSON args -> kwargs for fn


class _Unsupported(Exception):
    """Internal: raised deep inside a type; `path` is filled in on the way up to name the parameter."""

    def __init__(self, tp: Any, why: str) -> None:
        super().__init__(why)
        self.tp, self.why = tp, why
        self.path: list[str] = []


def _identity(args: dict[str, Any]) -> dict[str, Any]:
    return args


def function_schema(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    skip_params: frozenset[str] = frozenset(),
) -> FunctionSchema:
    """Build the tool definition of `fn`. Raises `ToolDefinitionError` for anything unusable."""
    target = fn
    while isinstance(target, functools.partial):  # partials carry partial's docstring, not the function's
        target = target.func
    if name is None:
        name = getattr(target, "__name__", None) or type(target).__name__
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        fixed = re.sub(r"[^a-zA-Z0-9_-]", "_", str(name)[:64]) or "my_tool"
        raise ToolDefinitionError(  # cut: an MCP server names its tools, and a name may be huge
            f"Tool name {(name[:80] if isinstance(name, str) else name)!r} is invalid: names must be 1-64 "
            f"characters of a-z, A-Z, 0-9, '_' or '-'. Pass a valid name explicitly, e.g. name={fixed!r}."
        )
    # what carries the code, docstring and annotations: the function, a class's __init__, an object's __call__
    attr = "__init__" if isinstance(target, type) else "__call__"
    code = target if inspect.isroutine(target) else getattr(target, attr)
    is_async = inspect.iscoroutinefunction(code)
    doc_desc, param_docs = _parse_doc(inspect.getdoc(target) or inspect.getdoc(code))
    description = doc_desc if description is None else description

    if parameters is not None:  # the user's own schema: trust it, only check that it is a schema at all
        parameters = _check_sendable(name, parameters)
        try:
            _lazy("jsonschema").Draft202012Validator.check_schema(parameters)
        except _lazy("jsonschema").exceptions.SchemaError as e:
            raise ToolDefinitionError(
                f"Tool {name!r}: the explicit parameters= schema is not a valid JSON Schema: {e.message}"
            ) from None
        return FunctionSchema(name, description, parameters, is_async, _identity)

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise ToolDefinitionError(
            f"Tool {name!r}: cannot read the signature of {fn!r} ({e}). Wrap it in a Python function "
            "or pass an explicit parameters= schema."
        ) from None
    hints = _type_hints(code, f"tool {name!r}")

    items: list[tuple[str, Any, bool, Any]] = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            star = "*" if p.kind is p.VAR_POSITIONAL else "**"
            raise ToolDefinitionError(
                f"Tool {name!r}: parameter {star}{p.name} is not supported; the model can only send named "
                "arguments. Replace it with explicit keyword parameters (e.g. a list or dict parameter)."
            )
        hint = hints.get(p.name, Any)
        bare = hint.__origin__ if typing.get_origin(hint) is Annotated else hint
        if p.name in skip_params or getattr(bare, "__name__", None) in skip_params:
            continue  # injected by the registry, invisible to the model
        if p.kind is p.POSITIONAL_ONLY:
            raise ToolDefinitionError(
                f"Tool {name!r}: parameter {p.name!r} is positional-only (declared before '/'); tools are "
                "called with keyword arguments. Remove the '/' from the signature."
            )
        items.append((p.name, hint, p.default is p.empty, _NO if p.default is p.empty else p.default))
    try:
        schema, conv = _object(items, param_docs, ())
    except _Unsupported as e:
        where = f"parameter {e.path[0]!r}" + (f" (at {'.'.join(e.path)})" if len(e.path) > 1 else "")
        raise ToolDefinitionError(
            f"Tool {name!r}: {where} has type {getattr(e.tp, '__qualname__', None) or e.tp!r}, which "
            f"cannot be turned into a JSON schema: {e.why}. Use a supported type (str, int, float, bool, None, list, tuple, set, dict[str, T], "
            "Literal, Enum, Optional/Union, dataclass, TypedDict, datetime, date, time, UUID) or pass an "
            "explicit JSON schema with parameters=..."
        ) from None
    return FunctionSchema(name, description, schema, is_async, conv or _identity)


# --- docstrings and type hints ------------------------------------------------------------------------


def _parse_doc(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description without the params section, {param: description}) for Google/NumPy/reST docstrings."""
    if not doc:
        return "", {}
    try:
        parsed = _lazy("docstring_parser").parse(doc)
    except _lazy("docstring_parser").ParseError:  # odd docstring: keep it whole rather than fail registration
        return doc.strip(), {}
    text = "\n\n".join(p for p in (parsed.short_description, parsed.long_description) if p)
    return text, {p.arg_name: p.description for p in parsed.params if p.description}


def _type_hints(obj: Any, what: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except NameError:
        pass  # string annotation naming a local type (e.g. a class defined inside a test function)
    except Exception as e:
        raise ToolDefinitionError(f"Cannot evaluate the type annotations of {what}: {e}") from None
    # Fallback: closure cells, then locals of the calling frames (nearest first, skipping this module),
    # never shadowing the real globals, which get_type_hints would otherwise lose to localns.
    func = getattr(obj, "__func__", obj)
    globalns = getattr(func, "__globals__", None) or vars(sys.modules.get(obj.__module__, typing))
    localns: dict[str, Any] = {}
    code = getattr(func, "__code__", None)
    cells = getattr(func, "__closure__", None) or ()
    for var, cell in zip(code.co_freevars if code else (), cells, strict=True):  # one cell per free var
        with contextlib.suppress(ValueError):  # an empty cell
            localns[var] = cell.cell_contents
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_globals is not globals():
            for k, v in frame.f_locals.items():
                if k not in globalns:
                    localns.setdefault(k, v)
        frame = frame.f_back
    try:
        return typing.get_type_hints(obj, localns=localns, include_extras=True)
    except Exception as e:
        raise ToolDefinitionError(
            f"Cannot resolve the type annotations of {what}: {e}. Define the types where the function can "
            "see them (module level), or pass an explicit parameters= schema."
        ) from None


# --- type -> (schema, converter) ----------------------------------------------------------------------


def _build(tp: Any, stack: tuple[Any, ...]) -> tuple[Schema, Conv | None]:
    """JSON schema for `tp` and a converter JSON value -> Python value (None when the JSON is already it)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        schema, conv = _build(args[0], stack)
        desc = next((m for m in tp.__metadata__ if isinstance(m, str)), None)
        return ({**schema, "description": desc} if desc else schema), conv
    if tp is Any or tp is object:
        return {}, None
    if tp is int:  # JSON Schema's "integer" accepts 1.0: the tool still gets the int it asked for
        return {"type": "integer"}, _to_int  # returns its argument unchanged (no copy) for a real int
    if isinstance(tp, type) and tp in _SCALARS:
        return {"type": _SCALARS[tp]}, None
    if isinstance(tp, type) and tp in _FORMATS:
        fmt, parse = _FORMATS[tp]
        return {"type": "string", "format": fmt}, parse
    if isinstance(tp, typing.NewType):
        return _build(tp.__supertype__, stack)
    if origin is Literal:
        members = {a.value: a for a in args if isinstance(a, enum.Enum)}
        return _enum(tp, [a.value if isinstance(a, enum.Enum) else a for a in args]), (
            (lambda v: members.get(v, v)) if members else None
        )
    if origin is Union or origin is types.UnionType:
        return _union(args, stack)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum(tp, [m.value for m in tp]), tp
    if tp in stack:
        raise _Unsupported(tp, "it refers to itself, and recursive types are not supported")
    if _is_pydantic_model(tp):
        return _pydantic(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass(tp, (*stack, tp))
    if typing.is_typeddict(tp):
        return _typeddict(tp, (*stack, tp))
    container = origin or tp
    if container in _SETS and args and not _hashable(args[0]):
        raise _Unsupported(
            tp, "set items must be hashable; use list[...] for items that are lists, dicts or mutable objects"
        )
    if container in _SEQUENCES or container in _SETS:
        schema = {"type": "array"}
        conv = None
        if args:
            schema["items"], conv = _build(args[0], stack)
        if container in _SEQUENCES:
            return schema, _each(conv) if conv else None
        schema["uniqueItems"] = True
        factory = frozenset if container is frozenset else set
        if conv is None:
            return schema, factory
        item = conv  # a name the lambda can close over with its narrowed type
        return schema, lambda v: factory(map(item, v))
    if container is tuple:
        if tp is tuple or (len(args) == 2 and args[1] is Ellipsis):
            schema, conv = _build(args[0], stack) if args else ({}, None)
            return {"type": "array", **({"items": schema} if schema else {})}, (
                (lambda v: tuple(map(conv, v))) if conv else tuple
            )
        built = [_build(a, stack) for a in args]
        convs = [c for _, c in built]
        schema = {"type": "array", "prefixItems": [s for s, _ in built]} if built else {"type": "array"}
        schema.update(minItems=len(built), maxItems=len(built))  # prefixItems may not be empty
        if not any(convs):
            return schema, tuple
        return schema, lambda v: tuple(
            c(x) if c else x for c, x in zip(convs, v, strict=True)
        )  # min/maxItems fixed the length
    if container in _MAPPINGS:
        if args and args[0] is not str:
            raise _Unsupported(tp, "JSON object keys are strings, so the key type must be str")
        schema, conv = _build(args[1], stack) if args else ({}, None)
        return {"type": "object", **({"additionalProperties": schema} if schema else {})}, (
            _each_value(conv) if conv else None
        )
    raise _Unsupported(tp, "it is not a JSON-compatible type")


def _each(conv: Conv) -> Conv:
    """Convert a list's items; the same list back when no item changed (the common all-int case)."""

    def conv_list(v: list[Any]) -> list[Any]:
        out = [conv(x) for x in v]
        return v if all(a is b for a, b in zip(out, v, strict=True)) else out

    return conv_list


def _each_value(conv: Conv) -> Conv:
    def conv_dict(v: dict[str, Any]) -> dict[str, Any]:
        out = {k: conv(x) for k, x in v.items()}
        return v if all(out[k] is x for k, x in v.items()) else out

    return conv_dict


def _to_int(v: Any) -> Any:
    return int(v) if type(v) is float else v


def _hashable(tp: Any) -> bool:
    """Whether values converted for `tp` can be set members (decided from the type, at registration)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _hashable(args[0])
    if isinstance(tp, typing.NewType):
        return _hashable(tp.__supertype__)
    if origin is Union or origin is types.UnionType:
        return all(_hashable(a) for a in args)
    if origin is Literal or tp is Any or tp is object:  # Any: whatever arrives is the caller's choice
        return True
    if origin in (tuple, frozenset):
        return all(_hashable(a) for a in args if a is not Ellipsis)
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or _is_pydantic_model(tp)):
        return tp.__hash__ is not None
    if typing.is_typeddict(tp) or (origin or tp) in (*_SEQUENCES, *_SETS, *_MAPPINGS):
        return (origin or tp) is frozenset
    return isinstance(tp, type) and getattr(tp, "__hash__", None) is not None


def _is_pydantic_model(tp: Any) -> bool:
    # pydantic is never imported here: if the annotation is a pydantic model, pydantic is loaded already.
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(tp, type) and issubclass(tp, pydantic.BaseModel)


def _pydantic(model: Any) -> tuple[Schema, Conv]:
    """A pydantic model's own JSON schema (its $defs inlined, so it can sit anywhere) and its validation."""
    try:
        schema = model.model_json_schema()
    except Exception as e:
        raise _Unsupported(model, f"pydantic cannot build its JSON schema ({e})") from None
    defs = schema.pop("$defs", {})

    def inline(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [inline(x, seen) for x in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref[len("#/$defs/") :]
            if name in seen or name not in defs:
                raise _Unsupported(
                    model, f"it refers to {name} recursively, and recursive types are not supported"
                )
            rest = {k: inline(v, seen) for k, v in node.items() if k != "$ref"}
            return {**inline(defs[name], (*seen, name)), **rest}
        return {k: inline(v, seen) for k, v in node.items()}

    return inline(schema, ()), model.model_validate


def _enum(tp: Any, values: list[Any]) -> Schema:
    json_types = set()
    for v in values:
        if type(v) not in _SCALARS or (isinstance(v, float) and not math.isfinite(v)):
            raise _Unsupported(tp, f"its value {v!r} is not a JSON string, number, boolean or null")
        json_types.add(_SCALARS[type(v)])
    return {"type": json_types.pop(), "enum": values} if len(json_types) == 1 else {"enum": values}


def _union(args: tuple[Any, ...], stack: tuple[Any, ...]) -> tuple[Schema, Conv | None]:
    NoneType = type(None)
    built = [_build(a, stack) for a in args if a is not NoneType]
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
    # Which member a value belongs to is only known from its shape, so pick the first member schema that
    # accepts it; validators are built here, once.
    choices = [(_lazy("jsonschema").Draft202012Validator(s).is_valid, c) for s, c in built]

    def conv_union(v: Any) -> Any:
        failed: Exception | None = None
        for accepts, c in choices:
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


def _object(
    items: list[tuple[str, Any, bool, Any]], docs: dict[str, str], stack: tuple[Any, ...]
) -> tuple[Schema, Conv | None]:
    """Object schema from (name, hint, required, default) items; converter fixes only the keys that need it."""
    props: Schema = {}
    required: list[str] = []
    convs: list[tuple[str, Conv]] = []
    for key, hint, is_required, default in items:
        try:
            schema, conv = _build(hint, stack)
        except _Unsupported as e:
            e.path.insert(0, key)
            raise
        if "description" not in schema and key in docs:  # Annotated description wins over the docstring
            schema = {"description": docs[key], **schema}
        if default is not _NO and (value := _json_value(default)) is not _NO:
            schema = {**schema, "default": value}
        props[key] = schema
        if is_required:
            required.append(key)
        if conv is not None:
            convs.append((key, conv))
    schema = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    if not convs:
        return schema, None
    fixes = tuple(convs)

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

    return schema, conv_object


def _dataclass(cls: type, stack: tuple[Any, ...]) -> tuple[Schema, Conv]:
    hints = _type_hints(cls, f"dataclass {cls.__qualname__}")
    items = [
        (
            f.name,
            hints.get(f.name, Any),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            _NO if f.default is dataclasses.MISSING else f.default,
        )
        for f in dataclasses.fields(cls)
        if f.init
    ]
    schema, conv = _object(items, _parse_doc(cls.__dict__.get("__doc__"))[1], stack)
    return schema, (lambda v: cls(**conv(v))) if conv else (lambda v: cls(**v))


def _typeddict(cls: Any, stack: tuple[Any, ...]) -> tuple[Schema, Conv | None]:
    hints = _type_hints(cls, f"TypedDict {cls.__qualname__}")
    items = []
    for key, hint in hints.items():
        hint, req = _strip_required(hint)
        # __required_keys__ is right for inherited keys; explicit (Not)Required wins because string
        # annotations can hide it from __required_keys__ on 3.11
        items.append((key, hint, key in cls.__required_keys__ if req is None else req, _NO))
    return _object(
        items, _parse_doc(cls.__dict__.get("__doc__"))[1], stack
    )  # stays a dict; only its values get converted


def _strip_required(hint: Any) -> tuple[Any, bool | None]:
    origin = typing.get_origin(hint)
    if origin is Required or origin is NotRequired:
        return typing.get_args(hint)[0], origin is Required
    if origin is Annotated:
        inner, req = _strip_required(hint.__origin__)
        if req is not None:
            return Annotated[(inner, *hint.__metadata__)], req
    return hint, None


def _json_value(v: Any) -> Any:
    """`v` as plain JSON data for a schema "default", or `_NO` if it has no faithful JSON form."""
    if isinstance(v, enum.Enum):
        v = v.value
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else _NO
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (list, tuple)):
        out = [_json_value(x) for x in v]
        return _NO if any(x is _NO for x in out) else out
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        obj = {k: _json_value(x) for k, x in v.items()}
        return _NO if any(x is _NO for x in obj.values()) else obj
    return _NO


# Room left under the codec's depth limit for the request around a schema ({"tools": [{"function":
# {"parameters": ...}}]}): a deeper schema could be registered but never sent.
_SCHEMA_DEPTH = _json.MAX_DEPTH - 10


def _lazy(module: str) -> Any:  # jsonschema, docstring_parser: ~35 ms of imports paid at registration
    return __import__(module)  # rather than by `import agentloop`


def _check_sendable(name: str, parameters: Any) -> Any:
    """An explicit schema (yours, or an MCP server's) must be JSON that a request can carry: not
    nested past the codec's limit (jsonschema would hit a RecursionError first), str keys only."""
    if isinstance(parameters, dict) and _json.depth_exceeds(parameters, _SCHEMA_DEPTH):
        raise ToolDefinitionError(
            f"Tool {name!r}: the parameters schema is nested deeper than {_SCHEMA_DEPTH} levels; "
            "flatten it (use $defs and $ref for repeated parts)"
        )
    try:
        return _json.loads(_json.dumps(parameters))  # the tool's own copy: a reused template can't change it
    except (TypeError, ValueError) as e:
        raise ToolDefinitionError(
            f"Tool {name!r}: the parameters schema cannot be sent as JSON ({e}); use str keys and "
            "JSON values only"
        ) from None
