"""A `float` parameter gets a float when the model sends a JSON integer (`2` is a valid JSON number).

Regression: the tool got the int 2 where its annotation said float (pydantic gives 2.0), so
`x.is_integer()`, `type(x) is float` or a float-only library call failed in the user's tool. Every
place a float can sit is converted (Optional, list, dict values, tuple items, dataclass and
TypedDict fields); a bool is never a number, so it is refused, not made 1.0; an int too large for
a float is an argument error the model is told about, never a crash. A union that also has `int`
keeps an int an int (the exact type first, as pydantic's smart mode).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional, TypedDict

import anyio
import pytest
from helpers import examples, registry_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import Agent, RunFinished, ToolRegistry, run_tool_call
from agentloop.testing import ScriptedModel, call, text, tool_calls

SETTINGS = settings(
    max_examples=examples(30), deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@dataclasses.dataclass
class Point:
    x: float
    label: str = ""


class Reading(TypedDict):
    value: float
    count: int


def send(annotation: Any, raw: str | dict[str, Any], backend: str) -> tuple[Any, list[Any]]:
    got: list[Any] = []
    tools = registry_for(annotation, got)

    async def main() -> Any:
        return await run_tool_call(tools, "f", raw)

    return anyio.run(main, backend=backend), got


def floats_only(value: Any) -> bool:
    """Whether every number in `value` is a float (and no bool became one)."""
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return type(value) is float
    if isinstance(value, (list, tuple)):
        return all(floats_only(v) for v in value)
    if isinstance(value, dict):
        return all(floats_only(v) for v in value.values())
    return dataclasses.is_dataclass(value) and type(value.x) is float  # type: ignore[union-attr]


# (annotation, how n is sent, what the tool must get)
SHAPES: list[tuple[Any, Any, Any]] = [
    (float, lambda n: n, lambda n: float(n)),
    (Optional[float], lambda n: n, lambda n: float(n)),  # noqa: UP045  (the spelling users write)
    (float | None, lambda n: n, lambda n: float(n)),
    (list[float], lambda n: [n, n + 1], lambda n: [float(n), float(n + 1)]),
    (dict[str, float], lambda n: {"a": n}, lambda n: {"a": float(n)}),
    (tuple[float, ...], lambda n: [n], lambda n: (float(n),)),
    (list[Optional[float]], lambda n: [n, None], lambda n: [float(n), None]),  # noqa: UP045
    (Point, lambda n: {"x": n}, lambda n: Point(float(n))),
    (float | str, lambda n: n, lambda n: float(n)),
]


@pytest.mark.parametrize(("annotation", "encode", "expect"), SHAPES, ids=[str(s[0]) for s in SHAPES])
@SETTINGS
@given(n=st.integers(-(2**53), 2**53), backend=st.sampled_from(["asyncio", "trio"]))
def test_a_json_integer_arrives_as_a_float(
    annotation: Any, encode: Any, expect: Any, n: int, backend: str
) -> None:
    record, got = send(annotation, json.dumps({"x": encode(n)}), backend)
    assert record.status == "ok", record.content
    assert got == [expect(n)]
    value = got[0]
    if isinstance(value, dict):
        assert all(type(v) is float for v in value.values())
    else:
        assert floats_only(value), value


@SETTINGS
@given(n=st.integers(-(2**53), 2**53), count=st.integers(-5, 5), backend=st.sampled_from(["asyncio", "trio"]))
def test_a_typeddict_float_field_is_a_float_and_its_int_field_an_int(
    n: int, count: int, backend: str
) -> None:
    record, got = send(Reading, json.dumps({"x": {"value": n, "count": count}}), backend)
    assert record.status == "ok", record.content
    assert got == [{"value": float(n), "count": count}]
    assert type(got[0]["value"]) is float and type(got[0]["count"]) is int


@SETTINGS
@given(n=st.integers(-(2**53), 2**53), backend=st.sampled_from(["asyncio", "trio"]))
def test_a_union_with_int_keeps_an_int(n: int, backend: str) -> None:
    for annotation in (int | float, float | int):
        record, got = send(annotation, json.dumps({"x": n}), backend)
        assert record.status == "ok", record.content
        assert got == [n] and type(got[0]) is int, annotation
    record, got = send(float | int, json.dumps({"x": n + 0.5}), backend)
    assert got == [n + 0.5] and type(got[0]) is float


@pytest.mark.parametrize("annotation", [float, Optional[float], list[float]])  # noqa: UP045
@pytest.mark.parametrize("sent", [True, False])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_bool_never_becomes_a_float(annotation: Any, sent: bool, backend: str) -> None:
    value: Any = [sent] if annotation == list[float] else sent
    record, got = send(annotation, json.dumps({"x": value}), backend)
    assert record.status == "invalid_arguments" and got == [], record.content


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@given(n=st.one_of(st.integers(2**1024, 2**1100), st.integers(-(2**1100), -(2**1024))))
@settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_an_integer_too_large_for_a_float_is_an_argument_error(backend: str, n: int) -> None:
    # refused by the JSON parser (text or parsed arguments, which are sent as text); the converter
    # refuses it too (ValueError, not OverflowError) should a value ever reach it
    for sent in (f'{{"x": {n}}}', {"x": n}):
        record, got = send(float, sent, backend)
        assert record.status == "invalid_arguments" and got == [], record.content


def _agent(seen: list[Any]) -> Agent[Any, Any]:
    tools = ToolRegistry()

    @tools.tool
    def scale(x: float, factor: float = 1.5) -> str:
        """Scale x."""
        seen.append((x, factor))
        return x.hex()  # a float-only method: an int has none

    model = ScriptedModel([tool_calls(call("scale", {"x": 2, "factor": 3})), text("done")])
    return Agent(client=model, tools=tools)


@pytest.mark.anyio
async def test_the_repro_through_agent_run() -> None:
    seen: list[Any] = []
    result = await _agent(seen).run("scale 2")
    assert seen == [(2.0, 3.0)] and all(type(v) is float for v in seen[0])
    assert [m["content"] for m in result.messages if m["role"] == "tool"] == [(2.0).hex()]


@pytest.mark.anyio
async def test_the_repro_through_agent_stream() -> None:
    seen: list[Any] = []
    finished = []
    async with _agent(seen).stream("scale 2") as events:
        async for event in events:
            if isinstance(event, RunFinished):
                finished.append(event.result.output)
    assert finished == ["done"]
    assert seen == [(2.0, 3.0)] and all(type(v) is float for v in seen[0])
