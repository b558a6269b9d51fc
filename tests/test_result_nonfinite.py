"""A tool's float NaN / ±infinity reaches the model as "NaN" / "Infinity" / "-Infinity", never null.

The exact repro: `{"mean": math.nan}` was sent as `{"mean":null}` (orjson's encoding): the model
was told the tool had no value when it said NaN. The content stays valid JSON, in every sandbox
mode and over both wires; a real None is still null.
"""

from __future__ import annotations

import json
import math
from typing import Any

import nonfinite_tools as nt
import pytest
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from agentloop import Agent, FluxClient, Limits, ToolRegistry, run_tool_call
from agentloop.testing import FakeFluxRouter, call, text, tool_calls

pytestmark = pytest.mark.anyio

STATS = {"mean": "NaN", "max": "-Infinity", "min": "Infinity", "n": 0, "spread": None, "ok": 1.5}


def tool_contents(router: FakeFluxRouter, wire: str) -> list[str]:
    """The tool results the model received in the last request, in the wire's own form."""
    messages = router.requests[-1].json["messages"]
    if wire == "openai":
        return [m["content"] for m in messages if m["role"] == "tool"]
    blocks = [b for m in messages if isinstance(m["content"], list) for b in m["content"]]
    return [b["content"] for b in blocks if b.get("type") == "tool_result"]


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@pytest.mark.parametrize("mode", ["thread", "process"])  # inline: the property below
async def test_non_finite_floats_reach_the_model_as_strings(wire: str, mode: str) -> None:
    tools = ToolRegistry(limits=Limits(timeout=30))
    tools.register(nt.stats, sandbox=mode)
    tools.register(nt.reading, sandbox=mode)
    tools.register(nt.bare, sandbox=mode)
    async with FakeFluxRouter() as router:
        router.add(tool_calls(call("stats", {}), call("reading", {}), call("bare", {})), text("done"))
        url = router.anthropic_url if wire == "anthropic" else router.base_url
        async with FluxClient(base_url=url, api_key="k") as client:
            result = await Agent(client=client, tools=tools).run("go")
        sent = tool_contents(router, wire)
    assert result.output == "done" and [r.status for r in result.tool_calls] == ["ok"] * 3
    assert [json.loads(c) for c in sent] == [STATS, {"mean": "NaN", "note": None}, "Infinity"]
    assert [r.content for r in result.tool_calls] == sent


async def test_the_isolated_sandbox_writes_them_the_same() -> None:
    tools = ToolRegistry(limits=Limits(timeout=30))
    tools.register(nt.stats, sandbox="isolated")
    record = await run_tool_call(tools, "stats", {})
    if record.status == "crashed" and "isolated" in record.content:  # pragma: no cover - machine-dependent
        pytest.skip(f"the isolated sandbox cannot run here: {record.content[:200]}")
    assert (record.status, json.loads(record.content)) == ("ok", STATS)


FLOATS = st.floats(allow_nan=True, allow_infinity=True)
VALUES = st.recursive(
    st.one_of(FLOATS, st.none(), st.integers(-5, 5), st.text(max_size=3)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=12,
)


def expected(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, list):
        return [expected(v) for v in value]
    if isinstance(value, dict):
        return {k: expected(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=examples(25), deadline=None)
@given(value=VALUES)
def test_any_result_reads_back_as_the_tool_said(backend: str, value: Any) -> None:
    import anyio

    tools = ToolRegistry()

    async def give() -> Any:
        return value

    tools.register(give)

    async def main() -> None:
        record = await run_tool_call(tools, "give", {})
        assert record.status == "ok"
        if isinstance(value, str):
            assert record.content == value  # a str is sent as is
        else:
            assert json.loads(record.content) == expected(value)  # valid JSON; NaN never null

    anyio.run(main, backend=backend)
