"""Python function -> OpenAI function-tool definition, plus a binder from validated JSON args to kwargs.

All reflection happens once, in `function_schema()`. The returned `bind` is a closure over precomputed
converters, so the per-call cost is nothing (fast path) or one dict copy plus the needed conversions.
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from .. import _json
from .._exceptions import ToolDefinitionError
from .build import Defs, Item, object_schema
from .constraints import field_default, is_field_info
from .hints import lazy, parse_doc, type_hints
from .parts import NO, Unsupported

__all__ = ["FunctionSchema", "function_schema"]

_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# Room left under the codec's depth limit for the request around a schema ({"tools": [{"function":
# {"parameters": ...}}]}): a deeper schema could be registered but never sent.
_SCHEMA_DEPTH = _json.MAX_DEPTH - 10


@dataclass(frozen=True, slots=True)
class FunctionSchema:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    is_async: bool
    bind: Callable[[dict[str, Any]], dict[str, Any]]  # validated JSON args -> kwargs for fn


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
    target, fixed = fn, set[str]()
    while isinstance(target, functools.partial):  # partials carry partial's docstring, not the function's
        fixed |= target.keywords.keys()  # bound by the developer: never the model's to send (or override)
        target = target.func
    if name is None:
        name = getattr(target, "__name__", None) or type(target).__name__
    name = _checked_name(name)
    # what carries the code, docstring and annotations: the function, a class's __init__, an object's __call__
    attr = "__init__" if isinstance(target, type) else "__call__"
    code = target if inspect.isroutine(target) else getattr(target, attr)
    is_async = inspect.iscoroutinefunction(code) or _wraps_async(code)
    if inspect.isasyncgenfunction(code) or inspect.isgeneratorfunction(code):
        collect = "[x async for x in gen(...)]" if inspect.isasyncgenfunction(code) else "list(gen(...))"
        raise ToolDefinitionError(
            f"Tool {name!r} is a generator function: a tool call has one result, and the generator "
            "object it returns cannot be sent to the model. Collect the items and return them "
            f"(e.g. `return {collect}`)."
        )
    doc_desc, param_docs = parse_doc(inspect.getdoc(target) or inspect.getdoc(code))
    if code is not target:  # a class's or callable object's "Args:" may sit on __init__ / __call__
        param_docs = {**parse_doc(inspect.getdoc(code))[1], **param_docs}
    description = doc_desc if description is None else description
    if parameters is not None:  # the user's own schema: trust it, only check that it is a schema at all
        parameters = _check_explicit(name, parameters)
        return FunctionSchema(name, description, parameters, is_async, _identity)
    fills: dict[str, Callable[[], Any]] = {}
    items = _items(fn, code, name, (skip_params, frozenset(fixed)), fills)
    try:
        defs = Defs()  # the recursive types' $defs, at the root of the parameters schema
        schema, conv = object_schema(items, param_docs, (defs,))
        schema = defs.attach(schema)
    except Unsupported as e:
        raise _unsupported(name, e) from None
    bind = conv or _identity
    return FunctionSchema(name, description, schema, is_async, _filled(bind, fills) if fills else bind)


# A decorator's `def wrapper(*args, **kwargs)` without functools.wraps hides the tool's signature.
_WRAPPER_HINT = (
    " The signature is only (*args, **kwargs): if a decorator made it, decorate its wrapper with "
    "@functools.wraps(fn) so that the tool's own parameters show."
)


def _looks_like_a_wrapper(sig: inspect.Signature) -> bool:
    kinds = [p.kind for p in sig.parameters.values()]
    return kinds == [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]


def _wraps_async(code: Any) -> bool:
    """A sync wrapper (`@functools.wraps`) around an async function returns its coroutine: awaited as
    an async tool it works; run in a thread as a sync one, it was never awaited."""
    try:
        inner = inspect.unwrap(code)
    except ValueError:  # a __wrapped__ cycle
        return False
    return inner is not code and inspect.iscoroutinefunction(inner)


def _checked_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        fixed = re.sub(r"[^a-zA-Z0-9_-]", "_", str(name)[:64]) or "my_tool"
        raise ToolDefinitionError(  # cut: an MCP server names its tools, and a name may be huge
            f"Tool name {(name[:80] if isinstance(name, str) else name)!r} is invalid: names must be 1-64 "
            f"characters of a-z, A-Z, 0-9, '_' or '-'. Pass a valid name explicitly, e.g. name={fixed!r}."
        )
    return name


def _check_explicit(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The user's own schema, checked to be sendable JSON and a JSON Schema; the tool's own copy."""
    parameters = check_sendable(name, parameters)
    try:
        lazy("jsonschema").Draft202012Validator.check_schema(parameters)
    except lazy("jsonschema").exceptions.SchemaError as e:
        raise ToolDefinitionError(
            f"Tool {name!r}: the explicit parameters= schema is not a valid JSON Schema: {e.message}"
        ) from None
    return parameters


def _items(
    fn: Callable[..., Any],
    code: Any,
    name: str,
    skip: tuple[frozenset[str], frozenset[str]],
    fills: dict[str, Any],
) -> list[Item]:
    """(name, hint, required, default) of each parameter the model fills in; `skip` is (the registry's
    injected names and types, a partial's bound keywords); `fills` gets the pydantic Field defaults."""
    skip_params, fixed = skip
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise ToolDefinitionError(
            f"Tool {name!r}: cannot read the signature of {fn!r} ({e}). Wrap it in a Python function "
            "or pass an explicit parameters= schema."
        ) from None
    hints = type_hints(code, f"tool {name!r}")
    _check_not_unbound(fn, sig, hints, name)
    _check_wrapper_accepts(fn, sig, name)
    items: list[Item] = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            star = "*" if p.kind is p.VAR_POSITIONAL else "**"
            raise ToolDefinitionError(
                f"Tool {name!r}: parameter {star}{p.name} is not supported; the model can only send named "
                "arguments. Replace it with explicit keyword parameters (e.g. a list or dict parameter)."
                + _WRAPPER_HINT
                * _looks_like_a_wrapper(sig)
            )
        hint = hints.get(p.name, Any)
        bare = hint.__origin__ if typing.get_origin(hint) is Annotated else hint
        if p.name in skip_params or getattr(bare, "__name__", None) in skip_params or p.name in fixed:
            continue  # injected by the registry, or bound by a partial: invisible to the model
        if p.kind is p.POSITIONAL_ONLY:
            raise ToolDefinitionError(
                f"Tool {name!r}: parameter {p.name!r} is positional-only (declared before '/'); tools are "
                "called with keyword arguments. Remove the '/' from the signature."
            )
        default = NO if p.default is p.empty else p.default
        if is_field_info(default):  # `x: int = Field(3, ge=0)`
            try:
                hint, default, fills[p.name] = field_default(hint, default)
            except Unsupported as e:
                e.path.insert(0, p.name)
                raise _unsupported(name, e) from None
        items.append((p.name, hint, default is NO and fills.get(p.name) is None, default))
    return items


def _check_not_unbound(fn: Any, sig: inspect.Signature, hints: dict[str, Any], name: str) -> None:
    first = next(iter(sig.parameters.values()), None)
    if (
        first is not None
        and first.name in ("self", "cls")
        and first.name not in hints
        and inspect.isfunction(fn)
    ):
        raise ToolDefinitionError(
            f"Tool {name!r}: its first parameter is {first.name!r}, so it looks like a method taken from "
            f"its class ({getattr(fn, '__qualname__', name)}); the model cannot send {first.name!r}. "
            "Register the bound method of an instance (e.g. `registry.register(service.method)`)."
        )


def _check_wrapper_accepts(fn: Any, sig: inspect.Signature, name: str) -> None:
    """A `functools.wraps` wrapper whose own signature differs from the function it wraps: the
    schema (from the wrapped function, as `inspect.signature` reads it) would ask the model for
    arguments the wrapper refuses, and every call would fail mid-run with a TypeError."""
    if not inspect.isroutine(fn) or getattr(fn, "__wrapped__", None) is None:
        return
    try:
        own = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in own.parameters.values()):
        return  # `*args, **kwargs`: passes whatever the wrapped function takes
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for p in sig.parameters.values():
        mine = own.parameters.get(p.name)
        if mine is None or mine.kind not in keyword:
            raise ToolDefinitionError(
                f"Tool {name!r}: it is a functools.wraps wrapper whose own signature {own} does not take "
                f"the wrapped function's parameter {p.name!r}. The schema comes from the wrapped "
                "function, so every call would fail. Give the wrapper `*args, **kwargs`, set its "
                "__signature__ to the signature it really has, or register the undecorated function."
            )


def _filled(conv: Callable[[dict[str, Any]], dict[str, Any]], fills: dict[str, Callable[[], Any]]) -> Any:
    """`conv`, then the defaults of pydantic `Field(...)` parameters the model left out."""

    def bind(args: dict[str, Any]) -> dict[str, Any]:
        out = conv(args)
        missing = [k for k in fills if k not in out]
        return {**out, **{k: fills[k]() for k in missing}} if missing else out

    return bind


def _unsupported(name: str, e: Unsupported) -> ToolDefinitionError:
    where = f"parameter {e.path[0]!r}" + (f" (at {'.'.join(e.path)})" if len(e.path) > 1 else "")
    return ToolDefinitionError(
        f"Tool {name!r}: {where} has type {getattr(e.tp, '__qualname__', None) or e.tp!r}, which "
        f"cannot be turned into a JSON schema: {e.why}. Use a supported type (str, int, float, bool, None, list, tuple, set, dict[str, T], "
        "Literal, Enum, Optional/Union, dataclass, TypedDict, datetime, date, time, UUID) or pass an "
        "explicit JSON schema with parameters=..."
    )


def check_sendable(name: str, parameters: Any) -> Any:
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
