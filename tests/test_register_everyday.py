"""The everyday signatures register and run, through the public API (issue #13 regressions).

The schema tests call `function_schema()` directly; these go through `ToolRegistry.register`
and `Agent.run`, which is where `def search(q: str, limit: int | None = None)` used to crash.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import pytest
from jsonschema import Draft202012Validator

from agentloop import Agent, FluxClient, ToolDefinitionError, ToolRegistry
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


def search(q: str, limit: int | None = None) -> str:
    return f"{q}:{limit!r}"


def search_optional(q: str, limit: str | None = None) -> str:
    return f"{q}:{limit!r}"


def search_annotated(q: str, limit: Annotated[int | None, "How many results"] = None) -> str:
    return f"{q}:{limit!r}"


async def search_async(q: str, limit: float | None = None) -> str:
    return f"{q}:{limit!r}"


EVERYDAY = [search, search_optional, search_annotated, search_async]


@pytest.mark.parametrize("fn", EVERYDAY, ids=lambda f: f.__name__)
def test_optional_scalar_parameters_register(fn: Any) -> None:
    tool = ToolRegistry().register(fn)  # used to raise TypeError: unhashable type: 'list'
    Draft202012Validator.check_schema(tool.parameters)
    assert tool.validation_errors({"q": "x"}) == []
    assert tool.validation_errors({"q": "x", "limit": None}) == []
    assert tool.validation_errors({"q": "x", "limit": [1]}) != []


def test_fast_check_handles_type_lists_and_agrees_with_jsonschema() -> None:
    tool = ToolRegistry().register(search)
    assert tool.fast_check is not None  # `int | None` still gets the fast path
    validator = Draft202012Validator(tool.parameters)
    for args in (
        {"q": "a"},
        {"q": "a", "limit": 3},
        {"q": "a", "limit": None},
        {"q": "a", "limit": 2.0},
        {"q": "a", "limit": True},
        {"q": "a", "limit": "3"},
        {"limit": 1},
        {"q": "a", "x": 1},
    ):
        if tool.fast_check(args):
            assert validator.is_valid(args), args
        assert (tool.validation_errors(args) == []) == validator.is_valid(args), args


async def test_search_signature_runs_end_to_end_over_http() -> None:
    tools = ToolRegistry()
    for fn in EVERYDAY:
        tools.register(fn)
    script = [
        tool_calls(
            call("search", {"q": "a", "limit": 2}),
            call("search_optional", {"q": "b"}),
            call("search_annotated", {"q": "c", "limit": None}),
            call("search_async", {"q": "d", "limit": 1.5}),
            call("search", {"q": "e", "limit": 2.0}),  # JSON Schema's integer: arrives as the int 2
        ),
        text("done"),
    ]
    async with (
        FakeFluxRouter(script) as router,
        FluxClient(base_url=router.base_url, api_key="test") as client,
    ):
        result = await Agent(client=client, tools=tools).run("go")
    assert [r.content for r in result.tool_calls] == ["a:2", "b:None", "c:None", "d:1.5", "e:2"]
    assert result.output == "done"


def test_unresolvable_ref_is_refused_at_registration() -> None:
    def f(x: Any) -> None: ...

    bad = {"type": "object", "properties": {"x": {"$ref": "#/$defs/nope"}}}
    with pytest.raises(ToolDefinitionError, match=r"\$defs/nope"):
        ToolRegistry().register(f, parameters=bad)
    with pytest.raises(ToolDefinitionError, match="remote references are not fetched"):
        ToolRegistry().register(
            f, parameters={"type": "object", "properties": {"x": {"$ref": "https://example.com/x"}}}
        )


async def test_resolvable_refs_still_work_mid_run() -> None:
    def f(x: Any) -> str:
        return repr(x)

    good = {
        "type": "object",
        "$defs": {"n": {"type": "integer"}, "tree": {"type": "array", "items": {"$ref": "#/$defs/n"}}},
        "properties": {"x": {"$ref": "#/$defs/tree"}},
    }
    tools = ToolRegistry()
    tools.register(f, parameters=good)
    model = ScriptedModel([tool_calls(call("f", {"x": [1, 2]}), call("f", {"x": ["a"]})), text("ok")])
    result = await Agent(client=model, tools=tools).run("go")
    assert [r.status for r in result.tool_calls] == ["ok", "invalid_arguments"]


def test_set_of_unhashable_items_is_a_definition_error() -> None:
    def f(x: set[list[int]]) -> None: ...  # no value could ever be built for it

    with pytest.raises(ToolDefinitionError, match="hashable"):
        ToolRegistry().register(f)


async def test_union_falls_back_when_a_member_cannot_parse_the_value() -> None:
    def when(at: dt.datetime | str) -> str:
        return type(at).__name__

    tools = ToolRegistry()
    tools.register(when)
    model = ScriptedModel(
        [
            tool_calls(call("when", {"at": "2024-01-02T03:04:05"}), call("when", {"at": "tomorrow"})),
            text("ok"),
        ]
    )
    result = await Agent(client=model, tools=tools).run("go")
    assert [r.content for r in result.tool_calls] == ["datetime", "str"]


async def test_integers_beyond_64_bits_stay_exact_both_ways() -> None:
    # Found by benchmarks/fuzz_signatures.py: orjson reads 99999999999999999999999 as the float
    # 1e+23 (the int parameter then got 99999999999999991611392) and cannot write 2**70 at all.
    def double(n: int, counts: dict[str, int]) -> int:
        assert type(n) is int and all(type(v) is int for v in counts.values())
        return 2 * n + sum(counts.values())

    tools = ToolRegistry()
    tools.register(double)
    big = 99999999999999999999999
    script = [tool_calls(call("double", {"n": big, "counts": {"x": 2**70}})), text("done")]
    async with (
        FakeFluxRouter(script) as router,
        FluxClient(base_url=router.base_url, api_key="test") as client,
    ):
        result = await Agent(client=client, tools=tools).run("go")
    [record] = result.tool_calls
    assert record.status == "ok" and record.content == str(2 * big + 2**70)
