"""Hypothesis strategies for tool signatures from agentloop's supported type grammar.

Shared by tests/test_signature_property.py (a modest in-suite run) and
benchmarks/fuzz_signatures.py (the long run). A drawn `Signature` builds a real function with
`exec` (a real `def` or `async def`, real annotations and defaults) whose body records the
keyword arguments it was called with, so a test can check what the tool actually received.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import itertools
import pathlib
import typing
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal, Optional, TypedDict, Union

from hypothesis import strategies as st

__all__ = ["FORMATS", "Signature", "signatures", "conforms", "to_draft7", "invalid_arguments"]

_names = itertools.count()
SCALARS: list[Any] = [
    str,
    int,
    float,
    bool,
    dt.datetime,
    dt.date,
    uuid.UUID,
    Decimal,
    dt.timedelta,
    bytes,
    pathlib.Path,
]
# Strings for the formats hypothesis-jsonschema has no strategy of its own for (what a model sends).
_ISO_DURATIONS = st.builds(
    lambda sign, d, h, m, s: f"{sign}P{d}DT{h}H{m}M{s}S",
    st.sampled_from(["", "-"]),
    st.integers(0, 10**6),
    st.integers(0, 100),
    st.integers(0, 100),
    st.decimals(0, 10**6, places=6).map(str),
)
FORMATS = {
    "uuid": st.uuids().map(str),
    "decimal": st.decimals(allow_nan=False, allow_infinity=False).map(str),
    "duration": _ISO_DURATIONS,
    "byte": st.binary(max_size=32).map(lambda b: base64.b64encode(b).decode()),
    "path": st.text(min_size=1, max_size=20).filter(lambda t: "\x00" not in t),
}
_DEFAULTS: dict[Any, Any] = {str: "x", int: 0, float: 0.5, bool: False}


def _fresh(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


literals = st.lists(
    st.sampled_from(["a", "b", "zz", 1, 2, -3, True]), min_size=1, max_size=3, unique=True
).map(
    lambda vals: Literal[tuple(vals)]  # type: ignore[misc]
)
enums = st.sampled_from([("red", "green"), (1, 2, 3), ("x",)]).map(
    lambda values: enum.Enum(_fresh("E"), [(f"m{i}", v) for i, v in enumerate(values)])
)
hashable_leaves = st.one_of(st.sampled_from(SCALARS), literals, enums)
try:  # Annotated constraints, as pydantic users write them (annotated_types comes with pydantic)
    import annotated_types as at
except ImportError:  # pragma: no cover
    leaves = hashable_leaves
else:
    constrained = st.one_of(
        st.integers(-5, 5).map(lambda n: Annotated[int, at.Ge(n)]),
        st.integers(0, 4).map(lambda n: Annotated[str, at.MaxLen(n)]),
        st.floats(-5, 5).map(lambda x: Annotated[float, at.Lt(x)]),
        st.integers(1, 3).map(lambda n: Annotated[list[int], at.MinLen(n)]),
    )
    leaves = st.one_of(hashable_leaves, constrained)


def _dataclass(fields: list[tuple[Any, bool]], frozen: bool) -> Any:
    spec = [
        (f"f{i}", Optional[tp], field(default=None))  # noqa: UP045 - as users write it if has_default else (f"f{i}", tp)
        for i, (tp, has_default) in enumerate(sorted(fields, key=lambda f: f[1]))  # defaults go last
    ]
    return dataclasses.make_dataclass(_fresh("D"), spec, frozen=frozen)


def _namedtuple(fields: list[Any]) -> Any:
    return typing.NamedTuple(_fresh("NT"), [(f"n{i}", tp) for i, tp in enumerate(fields)])  # type: ignore[misc]


def _typeddict(fields: list[Any], total: bool) -> Any:
    return TypedDict(_fresh("TD"), {f"k{i}": tp for i, tp in enumerate(fields)}, total=total)  # type: ignore[operator]


def types(depth: int) -> st.SearchStrategy[Any]:
    """A type of the grammar, nested at most `depth` levels."""
    if depth <= 0:
        return leaves
    inner = types(depth - 1)
    return st.one_of(
        leaves,
        inner.map(lambda t: list[t]),  # type: ignore[valid-type]
        inner.map(lambda t: tuple[t, ...]),  # type: ignore[valid-type]
        st.tuples(inner, inner).map(lambda ts: tuple[ts[0], ts[1]]),  # type: ignore[valid-type]
        hashable_leaves.map(lambda t: set[t]),  # type: ignore[valid-type]
        inner.map(lambda t: dict[str, t]),  # type: ignore[valid-type]
        inner.map(lambda t: Optional[t]),  # noqa: UP045 - this spelling is one of the grammar's cases
        inner.map(lambda t: t | None),  # the 3.10 spelling, a different object from Optional
        st.tuples(inner, inner).map(lambda ts: Union[ts]),  # noqa: UP007
        inner.map(lambda t: Annotated[t, "a description"]),
        st.builds(
            _dataclass, st.lists(st.tuples(inner, st.booleans()), min_size=1, max_size=3), st.booleans()
        ),
        st.builds(_typeddict, st.lists(inner, min_size=1, max_size=3), st.booleans()),
        st.builds(_namedtuple, st.lists(inner, min_size=1, max_size=3)),
    )


@dataclass
class Signature:
    params: list[tuple[str, Any, Any]]  # (name, annotation, default or _REQUIRED)
    is_async: bool
    received: list[dict[str, Any]] = field(default_factory=list)

    def build(self) -> Any:
        """A real function with this signature; each call appends its kwargs to `received`."""
        ns: dict[str, Any] = {"_record": self.received.append}
        parts = []
        for i, (name, tp, default) in enumerate(self.params):
            ns[f"T{i}"], ns[f"V{i}"] = tp, default
            parts.append(f"{name}: T{i}" + ("" if default is _REQUIRED else f" = V{i}"))
        src = (
            f"{'async ' if self.is_async else ''}def tool_fn({', '.join(parts)}):\n"
            "    _record(dict(locals()))\n"
            "    return 'ok'\n"
        )
        exec(src, ns)
        return ns["tool_fn"]

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}: {t!r}" + ("" if d is _REQUIRED else f" = {d!r}") for n, t, d in self.params)
        return f"{'async ' if self.is_async else ''}def tool_fn({shown})"


_REQUIRED = object()


@st.composite
def _param(draw: Any, i: int, depth: int) -> tuple[str, Any, Any]:
    # Each parameter gets its own nesting depth, so the everyday flat signatures
    # (`q: str, limit: int | None = None`) are drawn often, not only deep trees.
    tp = draw(types(draw(st.integers(0, depth))))
    kind = draw(st.sampled_from(["required", "none", "value"]))
    if kind == "none":
        return f"p{i}", Optional[tp], None  # noqa: UP045 - as users write it
    if kind == "value" and tp in _DEFAULTS:
        return f"p{i}", tp, _DEFAULTS[tp]
    return f"p{i}", tp, _REQUIRED


@st.composite
def signatures(draw: Any, depth: int = 3, max_params: int = 4) -> Signature:
    n = draw(st.integers(0, max_params))
    params = [draw(_param(i, depth)) for i in range(n)]
    params.sort(key=lambda p: p[2] is not _REQUIRED)  # a def wants required parameters first
    return Signature(params, draw(st.booleans()))


# --- checking what arrived ----------------------------------------------------------------------


def conforms(value: Any, tp: Any) -> bool:
    """Whether `value` is an instance of the annotation `tp`, recursively (as the tool expects)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return conforms(value, args[0])
    if tp is Any:
        return True
    if tp is type(None) or tp is None:
        return value is None
    if origin is Union or origin is __import__("types").UnionType:
        return any(conforms(value, a) for a in args)
    if origin is Literal:
        return any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in args)
    if tp is float:
        return type(value) in (int, float)
    if tp in (int, str, bool):
        return type(value) is tp
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return isinstance(value, tp)
    if tp is dt.date:
        return type(value) is dt.date
    if tp in (dt.datetime, uuid.UUID):
        return isinstance(value, tp)
    if tp in (Decimal, dt.timedelta, bytes):
        return type(value) is tp
    if isinstance(tp, type) and issubclass(tp, pathlib.PurePath):
        return isinstance(value, tp)
    if isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields"):  # NamedTuple
        hints = typing.get_type_hints(tp, include_extras=True)
        return type(value) is tp and all(conforms(getattr(value, f), hints[f]) for f in tp._fields)
    if origin is list:
        return type(value) is list and all(conforms(x, args[0]) for x in value)
    if origin is set:
        return type(value) is set and all(conforms(x, args[0]) for x in value)
    if origin is tuple:
        if type(value) is not tuple:
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(x, args[0]) for x in value)
        return len(value) == len(args) and all(conforms(x, a) for x, a in zip(value, args, strict=True))
    if origin is dict:
        return type(value) is dict and all(type(k) is str and conforms(x, args[1]) for k, x in value.items())
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        return type(value) is tp and all(
            conforms(getattr(value, f.name), hints[f.name]) for f in dataclasses.fields(tp)
        )
    if typing.is_typeddict(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        return (
            type(value) is dict
            and tp.__required_keys__ <= value.keys() <= hints.keys()
            and all(conforms(x, hints[k]) for k, x in value.items())
        )
    raise AssertionError(f"conforms() does not know {tp!r}")


# --- generating arguments -----------------------------------------------------------------------


def to_draft7(schema: Any) -> Any:
    """2020-12 `prefixItems` -> the draft-7 tuple form that hypothesis-jsonschema reads."""
    if isinstance(schema, list):
        return [to_draft7(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_draft7(v) for k, v in schema.items()}
    if "prefixItems" in out:
        out["items"], out["additionalItems"] = out.pop("prefixItems"), out.pop("items", True)
    return out


_WRONG = [None, True, 0, 1.5, "s", [], [1], {}, {"z": 1}]


@st.composite
def invalid_arguments(draw: Any, schema: dict[str, Any], valid: dict[str, Any]) -> Any:
    """Arguments (a dict or raw text) that the tool must reject; `valid` is a valid starting point."""
    kind = draw(st.sampled_from(["extra", "missing", "wrong", "not_object", "not_json"]))
    required = schema.get("required", [])
    props = list(schema.get("properties", {}))
    if kind == "missing" and required:
        name = draw(st.sampled_from(required))
        return {k: v for k, v in valid.items() if k != name}
    if kind == "wrong" and props:
        return {**valid, draw(st.sampled_from(props)): draw(st.sampled_from(_WRONG))}
    if kind == "not_object":
        return draw(st.sampled_from(["[1, 2]", '"text"', "3"]))
    if kind == "not_json":
        return draw(st.sampled_from(['{"p0": ', "{'p0': 1}", "nope"]))
    return {**valid, "unexpected_key": 1}
