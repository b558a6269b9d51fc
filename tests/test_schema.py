"""Tests for agentloop._schema (the package): function -> OpenAI tool schema, and the JSON-args binder."""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import datetime as dt
import enum
import functools
import uuid
from collections.abc import Sequence
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    TypedDict,
)

import pytest
from jsonschema import Draft202012Validator

from agentloop import ToolDefinitionError
from agentloop._schema import FunctionSchema, function_schema  # internal unit under test

# --- module-level types used by the tools below -------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mixed(enum.Enum):
    A = "a"
    B = 2


@dataclasses.dataclass
class Point:
    """A point.

    Attributes:
        x: horizontal
        y: vertical
    """

    x: int
    y: int = 0


@dataclasses.dataclass
class Shape:
    name: str
    origin: Point
    vertices: list[Point] = dataclasses.field(default_factory=list)
    color: Color = Color.RED
    tags: set[str] = dataclasses.field(default_factory=set)
    named: dict[str, Point] = dataclasses.field(default_factory=dict)
    anchor: Point | None = None
    computed: int = dataclasses.field(default=0, init=False)


class Movie(TypedDict, total=False):
    title: Required[str]
    year: int
    color: Color


class Review(TypedDict):
    movie: Movie
    stars: int
    note: NotRequired[str]
    where: NotRequired[Point]


@dataclasses.dataclass
class Node:
    value: int
    children: list[Node]


class Opaque:
    pass


class Context:
    """Stands in for a registry-injected object."""


def props(fs: FunctionSchema) -> dict[str, Any]:
    return fs.parameters["properties"]


def check(fs: FunctionSchema) -> Draft202012Validator:
    Draft202012Validator.check_schema(fs.parameters)
    return Draft202012Validator(fs.parameters)


# --- type mapping -------------------------------------------------------------------------------------


def t_scalars(s: str, i: int, f: float, b: bool, n: None, a: Any, u, o: object) -> None: ...
def t_containers(
    li: list[int],
    seq: Sequence[str],
    abc_seq: cabc.Sequence[float],
    st: set[int],
    fs: frozenset[str],
    tup: tuple[int, str],
    var: tuple[int, ...],
    empty: tuple[()],
    mapping: dict[str, float],
    bare_list: list,
    bare_dict: dict,
    bare_tuple: tuple,
    any_map: dict[str, Any],
) -> None: ...
def t_choices(
    lit: Literal["a", "b"],
    lit_mixed: Literal["a", 1],
    color: Color,
    level: Level,
    mixed: Mixed,
    lit_num: Literal[1, 2],
    lit_enum: Literal[Color.RED],
) -> None: ...
def t_optional(
    o1: str | None,
    o2: int | None,
    o3: list[int] | None,
    u: int | str,
    u3: int | str | None,
    oc: Color | None,
    of: dt.datetime | None,
) -> None: ...
def t_formats(when: dt.datetime, day: dt.date, at: dt.time, ident: uuid.UUID) -> None: ...
def t_nested(shape: Shape, review: Review, movies: list[Movie]) -> None: ...


ALL_GENERATED = [t_scalars, t_containers, t_choices, t_optional, t_formats, t_nested]


@pytest.mark.parametrize("fn", ALL_GENERATED, ids=lambda f: f.__name__)
def test_every_generated_schema_is_valid_json_schema(fn: Any) -> None:
    fs = function_schema(fn)
    Draft202012Validator.check_schema(fs.parameters)
    assert fs.parameters["type"] == "object"
    assert fs.parameters["additionalProperties"] is False
    assert set(fs.parameters["required"]) == set(props(fs))


def test_scalars() -> None:
    p = props(function_schema(t_scalars))
    assert p["s"] == {"type": "string"}
    assert p["i"] == {"type": "integer"}
    assert p["f"] == {"type": "number"}
    assert p["b"] == {"type": "boolean"}
    assert p["n"] == {"type": "null"}
    assert p["a"] == {} and p["u"] == {} and p["o"] == {}


def test_containers() -> None:
    p = props(function_schema(t_containers))
    assert p["li"] == {"type": "array", "items": {"type": "integer"}}
    assert p["seq"] == {"type": "array", "items": {"type": "string"}}
    assert p["abc_seq"] == {"type": "array", "items": {"type": "number"}}
    assert p["st"] == {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
    assert p["fs"] == {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    assert p["tup"] == {
        "type": "array",
        "prefixItems": [{"type": "integer"}, {"type": "string"}],
        "minItems": 2,
        "maxItems": 2,
    }
    assert p["var"] == {"type": "array", "items": {"type": "integer"}}
    assert p["empty"] == {"type": "array", "minItems": 0, "maxItems": 0}
    assert p["mapping"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert p["bare_list"] == {"type": "array"}
    assert p["bare_dict"] == {"type": "object"}
    assert p["bare_tuple"] == {"type": "array"}
    assert p["any_map"] == {"type": "object"}


def test_literal_and_enum() -> None:
    p = props(function_schema(t_choices))
    assert p["lit"] == {"type": "string", "enum": ["a", "b"]}
    assert p["lit_mixed"] == {"enum": ["a", 1]}
    assert p["lit_num"] == {"type": "integer", "enum": [1, 2]}
    assert p["color"] == {"type": "string", "enum": ["red", "green"]}
    assert p["level"] == {"type": "integer", "enum": [1, 2]}
    assert p["mixed"] == {"enum": ["a", 2]}
    assert p["lit_enum"] == {"type": "string", "enum": ["red"]}


def test_optional_and_unions() -> None:
    p = props(function_schema(t_optional))
    assert p["o1"] == {"type": ["string", "null"]}
    assert p["o2"] == {"type": ["integer", "null"]}
    assert p["o3"] == {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]}
    assert p["u"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert p["u3"] == {"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]}
    assert p["oc"] == {"anyOf": [{"type": "string", "enum": ["red", "green"]}, {"type": "null"}]}
    assert p["of"] == {"type": ["string", "null"], "format": "date-time"}


def test_formats() -> None:
    p = props(function_schema(t_formats))
    assert p["when"] == {"type": "string", "format": "date-time"}
    assert p["day"] == {"type": "string", "format": "date"}
    assert p["at"] == {"type": "string", "format": "time"}
    assert p["ident"] == {"type": "string", "format": "uuid"}


def test_dataclass_nesting() -> None:
    shape = props(function_schema(t_nested))["shape"]
    point = {
        "type": "object",
        "properties": {
            "x": {"description": "horizontal", "type": "integer"},
            "y": {"description": "vertical", "type": "integer", "default": 0},
        },
        "required": ["x"],
        "additionalProperties": False,
    }
    assert shape["type"] == "object" and shape["additionalProperties"] is False
    assert shape["required"] == ["name", "origin"]  # default_factory fields are optional too
    assert "computed" not in shape["properties"]  # init=False fields are not arguments
    sp = shape["properties"]
    assert sp["origin"] == point
    assert sp["vertices"] == {"type": "array", "items": point}
    assert sp["color"] == {"type": "string", "enum": ["red", "green"], "default": "red"}
    assert sp["tags"] == {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    assert sp["named"] == {"type": "object", "additionalProperties": point}
    assert sp["anchor"] == {"anyOf": [point, {"type": "null"}], "default": None}


def test_typeddict_nesting_and_required_keys() -> None:
    p = props(function_schema(t_nested))
    review, movies = p["review"], p["movies"]
    assert review["required"] == ["movie", "stars"]
    assert set(review["properties"]) == {"movie", "stars", "note", "where"}
    movie = review["properties"]["movie"]
    assert movie["required"] == ["title"]  # total=False, title is Required
    assert movie["properties"]["year"] == {"type": "integer"}
    assert movie["additionalProperties"] is False
    assert movies == {"type": "array", "items": movie}


# --- docstrings, Annotated, defaults ------------------------------------------------------------------


def google(city: str, days: int = 3) -> str:
    """Get the weather forecast.

    Uses the public forecast service.

    Args:
        city: Name of the city.
        days (int): How many days
            to forecast.

    Returns:
        The forecast.
    """
    return ""


def numpy_style(city: str, days: int = 3) -> str:
    """Get the weather forecast.

    Uses the public forecast service.

    Parameters
    ----------
    city : str
        Name of the city.
    days : int, optional
        How many days to forecast.

    Returns
    -------
    str
        The forecast.
    """
    return ""


def sphinx_style(city: str, days: int = 3) -> str:
    """Get the weather forecast.

    Uses the public forecast service.

    :param city: Name of the city.
    :param int days: How many days to forecast.
    :returns: The forecast.
    """
    return ""


@pytest.mark.parametrize("fn", [google, numpy_style, sphinx_style], ids=lambda f: f.__name__)
def test_docstring_styles(fn: Any) -> None:
    fs = function_schema(fn)
    # the parameters section is taken out; the rest stays as written (Returns included: polish4)
    assert fs.description.startswith("Get the weather forecast.\n\nUses the public forecast service.\n\n")
    assert fs.description.endswith("The forecast.") and "city" not in fs.description
    p = props(fs)
    assert p["city"] == {"description": "Name of the city.", "type": "string"}
    assert p["days"]["description"].split() == "How many days to forecast.".split()
    assert p["days"]["type"] == "integer" and p["days"]["default"] == 3
    assert fs.parameters["required"] == ["city"]
    Draft202012Validator.check_schema(fs.parameters)


def test_no_docstring_gives_empty_description() -> None:
    def bare(x: int) -> None: ...

    fs = function_schema(bare)
    assert fs.description == ""
    assert props(fs)["x"] == {"type": "integer"}


def test_annotated_description_wins_and_other_metadata_is_ignored() -> None:
    def f(
        a: Annotated[str, "from annotated"],
        b: Annotated[int, object(), 42, "second"] = 1,
        c: list[Annotated[int, "an item"]] | None = None,
        d: Annotated[float, 3.5] = 0.5,
    ) -> None:
        """Doc.

        Args:
            a: from docstring
            d: from docstring
        """

    p = props(function_schema(f))
    assert p["a"] == {"type": "string", "description": "from annotated"}
    assert p["b"] == {"type": "integer", "description": "second", "default": 1}
    assert p["c"]["anyOf"][0] == {"type": "array", "items": {"type": "integer", "description": "an item"}}
    assert p["d"] == {"description": "from docstring", "type": "number", "default": 0.5}


def test_explicit_name_and_description_override() -> None:
    fs = function_schema(google, name="weather-v2", description="Custom.")
    assert (fs.name, fs.description) == ("weather-v2", "Custom.")


def test_defaults_and_required() -> None:
    def f2(
        a: int,
        b: str = "x",
        c: Color = Color.GREEN,
        d: tuple[int, int] = (1, 2),
        e: int | None = None,
        f: dt.date = dt.date(2024, 1, 2),
        h: float = float("nan"),
        i: list[int] = [1, 2],  # noqa: B006
        j: set[int] = frozenset({1}),
        *,
        k: bool,
        m: Any = object(),  # noqa: B008 - a default that is not JSON is the point of this signature
    ) -> None: ...

    fs = function_schema(f2)
    p = props(fs)
    assert fs.parameters["required"] == ["a", "k"]
    assert "default" not in p["a"]
    assert p["b"]["default"] == "x"
    assert p["c"]["default"] == "green"
    assert p["d"]["default"] == [1, 2]
    assert p["e"]["default"] is None
    assert p["f"]["default"] == "2024-01-02"
    assert p["i"]["default"] == [1, 2]
    for key in ("h", "j", "m"):  # NaN, sets, arbitrary objects: not JSON, so no "default"
        assert "default" not in p[key]
    Draft202012Validator.check_schema(fs.parameters)


# --- explicit parameters ------------------------------------------------------------------------------


def test_explicit_parameters_are_passed_through_untouched() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}

    def search(*args: Any, **kwargs: Any) -> None:  # would be rejected if generated
        """Search things."""

    fs = function_schema(search, parameters=schema)
    assert (
        fs.parameters == schema and fs.parameters is not schema
    )  # its own copy: a reused template cannot change it
    assert fs.description == "Search things."
    args = {"q": "x"}
    assert fs.bind(args) is args


def test_explicit_parameters_must_be_a_valid_schema() -> None:
    with pytest.raises(ToolDefinitionError, match="not a valid JSON Schema"):
        function_schema(google, parameters={"type": "objekt"})


# --- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["has space", "", "x" * 65, "dots.not.ok", "ünïcode"])
def test_bad_name(bad: str) -> None:
    with pytest.raises(ToolDefinitionError, match=r"invalid.*name="):
        function_schema(google, name=bad)


def test_lambda_needs_an_explicit_name() -> None:
    with pytest.raises(ToolDefinitionError, match="<lambda>"):
        function_schema(lambda x: x)
    assert function_schema(lambda x: x, name="echo").name == "echo"


def test_var_args_rejected() -> None:
    def f(a: int, *rest: int) -> None: ...
    def g(a: int, **extra: int) -> None: ...

    with pytest.raises(ToolDefinitionError, match=r"\*rest"):
        function_schema(f)
    with pytest.raises(ToolDefinitionError, match=r"\*\*extra"):
        function_schema(g)


def test_positional_only_rejected() -> None:
    def f(a: int, /, b: int) -> None: ...

    with pytest.raises(ToolDefinitionError, match="positional-only"):
        function_schema(f)


def test_unsupported_type_names_parameter_and_type_and_suggests_parameters() -> None:
    def f(ok: int, thing: Opaque) -> None: ...

    with pytest.raises(ToolDefinitionError) as info:
        function_schema(f)
    msg = str(info.value)
    assert "'thing'" in msg and "Opaque" in msg and "parameters=" in msg


def test_unsupported_type_deep_inside_names_the_path() -> None:
    @dataclasses.dataclass
    class Holder:
        inner: list[Opaque]

    def f(holder: Holder) -> None: ...

    with pytest.raises(ToolDefinitionError, match=r"parameter 'holder' \(at holder\.inner\).*Opaque"):
        function_schema(f)


def test_non_string_dict_keys_rejected() -> None:
    def f(m: dict[int, str]) -> None: ...

    with pytest.raises(ToolDefinitionError, match="key type must be str"):
        function_schema(f)


def test_non_json_enum_values_rejected() -> None:
    class Weird(enum.Enum):
        A = (1, 2)

    def f(w: Weird) -> None: ...

    with pytest.raises(ToolDefinitionError, match="Weird"):
        function_schema(f)


def test_unresolvable_annotation_is_a_tool_definition_error() -> None:
    def f(x: DoesNotExist) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ToolDefinitionError, match="DoesNotExist"):
        function_schema(f)


# --- local types, callables, skip_params --------------------------------------------------------------


def test_types_local_to_the_defining_function_resolve() -> None:
    # this module uses `from __future__ import annotations`, so these annotations are strings
    class Mode(enum.Enum):
        FAST = "fast"

    @dataclasses.dataclass
    class Opts:
        mode: Mode
        level: int = 1

    def f(opts: Opts, modes: list[Mode]) -> None: ...

    fs = function_schema(f)
    assert props(fs)["opts"]["properties"]["mode"] == {"type": "string", "enum": ["fast"]}
    assert fs.bind({"opts": {"mode": "fast"}, "modes": ["fast"]}) == {
        "opts": Opts(mode=Mode.FAST),
        "modes": [Mode.FAST],
    }


def test_is_async_detection() -> None:
    async def a(x: int) -> None: ...
    def s(x: int) -> None: ...

    class AsyncCallable:
        async def __call__(self, x: int) -> None:
            """Do it async."""

    class SyncCallable:
        """Class doc."""

        def __call__(self, x: int) -> None: ...

    assert function_schema(a).is_async is True
    assert function_schema(s).is_async is False
    assert function_schema(functools.partial(a, x=1), name="p").is_async is True
    ac = function_schema(AsyncCallable())
    assert ac.is_async is True and ac.name == "AsyncCallable" and ac.description == "Do it async."
    sc = function_schema(SyncCallable(), name="sync")
    assert sc.is_async is False and sc.description == "Class doc."
    assert props(sc) == {"x": {"type": "integer"}}


def test_partial_keeps_the_function_doc_and_remaining_params() -> None:
    part = functools.partial(google, "Paris")
    fs = function_schema(part)
    assert fs.name == "google"
    assert fs.description.startswith("Get the weather forecast.")
    assert list(props(fs)) == ["days"]


def test_skip_params_by_name_and_by_class_name() -> None:
    def f(query: str, ctx: Context, run: Annotated[Context, "x"], deps: Any = None) -> None: ...

    fs = function_schema(f, skip_params=frozenset({"Context", "deps"}))
    assert list(props(fs)) == ["query"]
    assert fs.parameters["required"] == ["query"]
    args = {"query": "q"}
    assert fs.bind(args) is args


# --- bind ---------------------------------------------------------------------------------------------


def test_bind_fast_path_returns_the_same_dict() -> None:
    for fn, args in [
        (google, {"city": "x"}),
        (sphinx_style, {"city": "x", "days": 2}),
        (t_scalars, {"s": "x"}),
    ]:
        assert function_schema(fn).bind(args) is args

    class Simple(TypedDict):
        n: int
        tags: list[str]

    def plain(a: list[int], b: dict[str, Any], c: Literal["x"], d: Simple, e: str | None = None) -> None: ...

    args2 = {"a": [1], "b": {}, "c": "x", "d": {"n": 1, "tags": []}}
    assert function_schema(plain).bind(args2) is args2


def test_bind_enum_tuple_set_formats() -> None:
    def f(
        color: Color,
        level: Level,
        lit: Literal[Color.GREEN],
        tup: tuple[int, Color],
        var: tuple[str, ...],
        st: set[Color],
        fz: frozenset[int],
        when: dt.datetime,
        day: dt.date,
        at: dt.time,
        ident: uuid.UUID,
        plain: int = 0,
    ) -> None: ...

    uid = uuid.uuid4()
    args = {
        "color": "red",
        "level": 2,
        "lit": "green",
        "tup": [1, "green"],
        "var": ["a", "b"],
        "st": ["red", "green"],
        "fz": [1, 2],
        "when": "2024-05-06T07:08:09+00:00",
        "day": "2024-05-06",
        "at": "07:08:09",
        "ident": str(uid),
        "plain": 5,
    }
    snapshot = dict(args)
    out = function_schema(f).bind(args)
    assert args == snapshot  # the input dict is not mutated
    assert out == {
        "color": Color.RED,
        "level": Level.HIGH,
        "lit": Color.GREEN,
        "tup": (1, Color.GREEN),
        "var": ("a", "b"),
        "st": {Color.RED, Color.GREEN},
        "fz": frozenset({1, 2}),
        "when": dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC),
        "day": dt.date(2024, 5, 6),
        "at": dt.time(7, 8, 9),
        "ident": uid,
        "plain": 5,
    }
    assert isinstance(out["tup"], tuple) and isinstance(out["st"], set) and isinstance(out["fz"], frozenset)


def test_bind_nested_dataclasses() -> None:
    fs = function_schema(t_nested)
    out = fs.bind(
        {
            "shape": {
                "name": "tri",
                "origin": {"x": 1},
                "vertices": [{"x": 1, "y": 2}, {"x": 3}],
                "color": "green",
                "tags": ["a", "a"],
                "named": {"top": {"x": 9}},
                "anchor": None,
            },
            "review": {"movie": {"title": "M", "color": "red"}, "stars": 5, "where": {"x": 4}},
            "movies": [{"title": "N"}],
        }
    )
    shape = out["shape"]
    assert shape == Shape(
        name="tri",
        origin=Point(1),
        vertices=[Point(1, 2), Point(3)],
        color=Color.GREEN,
        tags={"a"},
        named={"top": Point(9)},
        anchor=None,
    )
    assert isinstance(shape.tags, set)
    # TypedDicts stay dicts, but values inside them are still converted
    assert out["review"] == {"movie": {"title": "M", "color": Color.RED}, "stars": 5, "where": Point(4)}
    assert type(out["review"]) is dict
    assert out["movies"] == [{"title": "N"}]

    with_anchor = fs.bind({"shape": {"name": "s", "origin": {"x": 0}, "anchor": {"x": 2}}})
    assert with_anchor["shape"].anchor == Point(2)


def test_bind_optional_none_and_missing() -> None:
    def f(p: Point | None = None, c: Color | None = None, when: dt.datetime | None = None) -> None: ...

    fs = function_schema(f)
    assert fs.bind({"p": None, "c": None, "when": None}) == {"p": None, "c": None, "when": None}
    assert fs.bind({}) == {}
    assert fs.bind({"c": "red"}) == {"c": Color.RED}


def test_bind_union_picks_the_matching_member() -> None:
    def f(v: int | Point | list[Color] | None) -> None: ...

    fs = function_schema(f)
    Draft202012Validator.check_schema(fs.parameters)
    assert fs.bind({"v": 3}) == {"v": 3}
    assert fs.bind({"v": {"x": 1}}) == {"v": Point(1)}
    assert fs.bind({"v": ["red"]}) == {"v": [Color.RED]}
    assert fs.bind({"v": None}) == {"v": None}


# --- generated schemas accept good and reject bad arguments -------------------------------------------


def test_generated_schema_validates_sample_arguments() -> None:
    v = check(function_schema(t_nested))
    good = {
        "shape": {"name": "s", "origin": {"x": 1}, "vertices": [{"x": 2, "y": 3}], "color": "red"},
        "review": {"movie": {"title": "t", "year": 1999}, "stars": 4},
        "movies": [],
    }
    assert v.is_valid(good)
    bad = [
        {**good, "extra": 1},  # additionalProperties false
        {k: good[k] for k in ("shape", "review")},  # missing required
        {**good, "shape": {**good["shape"], "color": "blue"}},  # not in enum
        {**good, "shape": {**good["shape"], "origin": {"x": "1"}}},  # wrong nested type
        {**good, "review": {"movie": {"year": 1999}, "stars": 4}},  # TypedDict Required key missing
        {**good, "shape": {**good["shape"], "origin": {"x": 1, "z": 2}}},  # nested extra key
    ]
    for args in bad:
        assert not v.is_valid(args), args


def test_container_schema_validates_sample_arguments() -> None:
    v = check(function_schema(t_containers))
    good = {
        "li": [1],
        "seq": ["a"],
        "abc_seq": [1.5, 2],
        "st": [1, 2],
        "fs": [],
        "tup": [1, "a"],
        "var": [],
        "empty": [],
        "mapping": {"k": 1.0},
        "bare_list": [None],
        "bare_dict": {},
        "bare_tuple": [1, "x"],
        "any_map": {"k": None},
    }
    assert v.is_valid(good)
    for key, value in [
        ("st", [1, 1]),  # uniqueItems
        ("tup", [1]),  # too short
        ("tup", [1, "a", 2]),  # too long
        ("tup", ["a", 1]),  # wrong order
        ("empty", [1]),
        ("mapping", {"k": "x"}),
        ("li", [True, "x"]),
    ]:
        assert not v.is_valid({**good, key: value}), (key, value)


def test_optional_schema_validates_sample_arguments() -> None:
    v = check(function_schema(t_optional))
    good = {"o1": None, "o2": 3, "o3": None, "u": "x", "u3": None, "oc": "red", "of": "2024-01-01T00:00:00Z"}
    assert v.is_valid(good)
    assert v.is_valid({**good, "o1": "s", "o3": [1], "oc": None, "of": None})
    for key, value in [("o1", 1), ("u", None), ("oc", "blue"), ("o3", [None])]:
        assert not v.is_valid({**good, key: value}), (key, value)
