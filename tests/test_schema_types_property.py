"""Property tests for Decimal, timedelta, bytes, paths, NamedTuple and recursive types (from outside).

Values are generated, encoded as a model would send them (JSON text), run through the public
`run_tool_call`, and the tool must receive an equal value of the right type; arguments that are
wrong for the type come back as `invalid_arguments`, never as an exception. The fast acceptance
check and jsonschema must agree on random arguments for random schemas of the supported types.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import pathlib
from decimal import Decimal
from typing import Any, NamedTuple, TypedDict

import anyio
import pytest
from helpers import examples, registry_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator
from signature_grammar import FORMATS, to_draft7, types

from agentloop import ToolDefinitionError, ToolRegistry, run_tool_call

BACKENDS = st.sampled_from(["asyncio", "trio"])  # each example runs its own event loop, on either
SETTINGS = settings(
    max_examples=examples(30), deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


class Pt(NamedTuple):
    x: int
    when: dt.date
    note: str = ""


class Tree(TypedDict):
    value: Decimal
    kids: list[Tree]


def send(annotation: Any, raw: str, backend: str = "asyncio") -> tuple[Any, list[Any]]:
    got: list[Any] = []
    tools = registry_for(annotation, got)

    async def main() -> Any:
        return await run_tool_call(tools, "f", raw)

    return anyio.run(main, backend=backend), got


# --- a value, as the model would write it --------------------------------------------------------

finite_decimals = st.decimals(allow_nan=False, allow_infinity=False)


def duration_text(td: dt.timedelta) -> str:
    us = td // dt.timedelta(microseconds=1)
    sign, us = ("-", -us) if us < 0 else ("", us)
    return f"{sign}P{us // 86_400_000_000}DT{Decimal(us % 86_400_000_000) / 1_000_000}S"


ENCODINGS: list[tuple[Any, st.SearchStrategy[Any], Any]] = [
    # (annotation, values, value -> its JSON form)
    (Decimal, finite_decimals, str),
    (Decimal, st.integers(-(10**40), 10**40).map(Decimal), int),
    (
        Decimal,
        st.floats(allow_nan=False, allow_infinity=False).map(lambda f: Decimal(repr(f))),
        lambda d: json.loads(str(d)) if "E" not in str(d) else float(d),
    ),
    (dt.timedelta, st.timedeltas(), duration_text),
    (
        dt.timedelta,
        st.timedeltas(),
        lambda td: td.total_seconds() if not td.microseconds else duration_text(td),
    ),
    (bytes, st.binary(max_size=200), lambda b: base64.b64encode(b).decode()),
    (pathlib.Path, FORMATS["path"].map(pathlib.Path), str),
    (
        Pt,
        st.builds(Pt, st.integers(), st.dates(), st.text(max_size=5)),
        lambda p: [p.x, p.when.isoformat(), p.note],
    ),
]


@pytest.mark.parametrize(
    ("annotation", "values", "encode"), ENCODINGS, ids=lambda v: getattr(v, "__name__", "")[:12]
)
@SETTINGS
@given(data=st.data())
def test_tool_receives_an_equal_value_of_the_type(
    annotation: Any, values: Any, encode: Any, data: Any
) -> None:
    value = data.draw(values)
    record, got = send(annotation, json.dumps({"x": encode(value)}), data.draw(BACKENDS))
    assert record.status == "ok", record.content
    assert got == [value]
    assert type(got[0]) is type(value)


@st.composite
def trees(draw: Any, depth: int = 4) -> dict[str, Any]:
    kids = draw(st.lists(trees(depth - 1), max_size=2)) if depth > 0 else []
    return {"value": draw(finite_decimals), "kids": kids}


def tree_json(t: dict[str, Any]) -> dict[str, Any]:
    return {"value": str(t["value"]), "kids": [tree_json(k) for k in t["kids"]]}


@SETTINGS
@given(tree=trees(), backend=BACKENDS)
def test_a_recursive_typeddict_arrives_converted_at_every_level(tree: dict[str, Any], backend: str) -> None:
    record, got = send(Tree, json.dumps({"x": tree_json(tree)}), backend)
    assert record.status == "ok", record.content
    assert got == [tree]


# --- hostile: anything JSON for these types ends as an answer to the model ---------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["NaN", "Infinity", "1e999999999", "P1M", "PT", "====", "\x00", "9" * 5000]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@pytest.mark.parametrize("annotation", [Decimal, dt.timedelta, bytes, pathlib.Path, Pt, Tree], ids=str)
@SETTINGS
@given(value=json_values, backend=BACKENDS)
def test_any_json_value_is_taken_or_fed_back(annotation: Any, value: Any, backend: str) -> None:
    record, got = send(annotation, json.dumps({"x": value}), backend)
    assert record.status in ("ok", "invalid_arguments"), record.content
    assert (record.status == "ok") == (len(got) == 1)
    if record.status == "invalid_arguments":
        assert record.content.startswith("Invalid arguments for tool 'f'")


# --- the fast path agrees with jsonschema -----------------------------------------------------------


@st.composite
def registered(draw: Any) -> Any:
    """A tool of random supported parameter types (1-3 parameters), or None when it is refused."""
    params = draw(st.lists(types(2), min_size=1, max_size=3))
    src = "def g(" + ", ".join(f"p{i}: T{i}" for i in range(len(params))) + "): pass"
    ns: dict[str, Any] = {f"T{i}": t for i, t in enumerate(params)}
    exec(src, ns)
    try:
        return ToolRegistry().register(ns["g"])
    except ToolDefinitionError:
        return None


def mutations(schema: dict[str, Any], valid: dict[str, Any]) -> st.SearchStrategy[Any]:
    props = list(schema.get("properties", {})) or ["p0"]
    return st.one_of(
        st.just(valid),
        st.builds(lambda k, v: {**valid, k: v}, st.sampled_from(props), json_values),
        st.builds(lambda k: {x: y for x, y in valid.items() if x != k}, st.sampled_from(props)),
        st.dictionaries(st.sampled_from([*props, "zz"]), json_values, max_size=4),
    )


@settings(max_examples=examples(15), deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(tool=registered(), data=st.data())
def test_fast_check_and_jsonschema_agree(tool: Any, data: Any) -> None:
    if tool is None:
        return
    schema = tool.parameters
    reference = Draft202012Validator(schema)
    valid = data.draw(from_schema(to_draft7(schema), custom_formats=FORMATS))
    for _ in range(3):
        args = data.draw(mutations(schema, valid))
        expected = reference.is_valid(args)
        if tool.fast_check is not None and tool.fast_check(args):
            assert expected, f"the fast check accepted what jsonschema refuses: {args!r}"
        assert (tool.validation_errors(args) == []) == expected, args


RECURSIVE = [Tree, Pt, Pt | None, list[Tree] | None, Tree | int]


@pytest.mark.parametrize("annotation", RECURSIVE, ids=str)
@settings(max_examples=examples(30), deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fast_check_agrees_on_recursive_unions_and_tuples(annotation: Any, data: Any) -> None:
    tool = registry_for(annotation, []).get("f")
    assert tool is not None and tool.fast_check is not None  # these shapes have a fast path now
    reference = Draft202012Validator(tool.parameters)
    value = data.draw(st.one_of(trees(3).map(tree_json), json_values, st.lists(json_values, max_size=4)))
    for args in ({"x": value}, {"x": [value]}, {"x": {"value": "1", "kids": [value]}}):
        expected = reference.is_valid(args)
        if tool.fast_check(args):
            assert expected, f"the fast check accepted what jsonschema refuses: {args!r}"
        assert (tool.validation_errors(args) == []) == expected, args
