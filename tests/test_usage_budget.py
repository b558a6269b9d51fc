"""A router's usage report cannot walk a run past `RunLimits(max_total_tokens=...)` (round-3
outside-in finding): on both wires, streamed and not, a count is counted however large, and a
count that is not one (negative, a bool, text, NaN) stops a run with a token budget with
`APIResponseError` instead of being counted as 0. Without a budget nothing can be walked past:
the count is 0, one WARNING per answer names the field, and the good answer is kept.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
import pytest
from helpers import examples
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentloop import (
    Agent,
    APIResponseError,
    FluxClient,
    RetryPolicy,
    RunLimits,
    TokenLimitExceeded,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, call, raw, text, tool_calls

KEY = "sk-usage-test"
NO_RETRY = RetryPolicy(max_retries=0)


def lookup_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def lookup(key: str) -> str:
        """Look a key up."""
        return key

    return tools


async def play(router: FakeFluxRouter, wire: str, stream: bool, limit: int | None) -> Any:
    """One run against `router`; returns the result or the AgentloopError it raised."""
    url = router.anthropic_url if wire == "anthropic" else router.base_url
    async with FluxClient(base_url=url, api_key=KEY, retry=NO_RETRY) as client:
        agent = Agent(client=client, tools=lookup_tools(), limits=RunLimits(max_total_tokens=limit))
        try:
            if not stream:
                return await agent.run("go")
            async with agent.stream("go") as events:
                async for _ in events:
                    pass
                return events.result
        except (TokenLimitExceeded, APIResponseError) as e:
            return e


WAYS = [(w, s) for w in ("openai", "anthropic") for s in (False, True)]


# --- the exact repros ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("wire", "stream"), WAYS)
async def test_a_huge_count_trips_the_budget(wire: str, stream: bool) -> None:
    """10**30 used to be read as the float 1e30 and counted as 0: the run went on."""
    async with FakeFluxRouter() as router:
        router.add(
            tool_calls(call("lookup", {"key": "a"}), usage={"prompt_tokens": 10**30, "completion_tokens": 1}),
            text("unreached"),
        )
        out = await play(router, wire, stream, limit=1000)
        assert isinstance(out, TokenLimitExceeded), out
        assert out.result.usage.total_tokens >= 10**29
        assert len(router.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(("wire", "stream"), WAYS)
@pytest.mark.parametrize("bad", [-(10**6), True, "lots", [1], 2.5e-1 - 1])
async def test_a_count_that_is_not_one_stops_the_run_typed(wire: str, stream: bool, bad: Any) -> None:
    """Negative, bool, text, list: refused with APIResponseError naming the field, never counted as 0."""
    async with FakeFluxRouter() as router:
        router.add(
            tool_calls(call("lookup", {"key": "a"}), usage={"prompt_tokens": 5, "completion_tokens": bad}),
            text("unreached"),
        )
        out = await play(router, wire, stream, limit=1000)
        assert isinstance(out, APIResponseError), out
        assert "token usage" in str(out) and ("output_tokens" in str(out) or "completion_tokens" in str(out))
        assert len(router.requests) == 1  # nothing after it: no retry, no second step


@pytest.mark.anyio
async def test_a_total_below_its_parts_is_not_believed() -> None:
    """OpenAI `total_tokens` smaller than prompt + completion: the budget reads the larger."""
    async with FakeFluxRouter() as router:
        usage = {"prompt_tokens": 900, "completion_tokens": 200, "total_tokens": 1}
        router.add(tool_calls(call("lookup", {"key": "a"}), usage=usage), text("unreached"))
        out = await play(router, "openai", False, limit=1000)
        assert isinstance(out, TokenLimitExceeded) and out.result.usage.total_tokens == 1100


@pytest.mark.anyio
async def test_nan_in_a_body_is_a_typed_error() -> None:
    body = (
        '{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},'
        '"finish_reason":"stop"}],"usage":{"prompt_tokens":NaN,"completion_tokens":1}}'
    )
    async with FakeFluxRouter() as router:
        router.add(raw(200, body))
        out = await play(router, "openai", False, limit=1000)
        assert isinstance(out, APIResponseError)


@pytest.mark.anyio
async def test_a_later_smaller_stream_report_does_not_lower_the_count() -> None:
    """OpenAI chunks may each carry usage; a later, smaller one must not undo an earlier one."""
    chunk = '{{"id":"c","object":"chat.completion.chunk","choices":{choices},"usage":{usage}}}'
    calls = '[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"lookup","arguments":"{\\"key\\":\\"a\\"}"}}]},"finish_reason":"tool_calls"}]'
    frames = [
        chunk.format(choices=calls, usage='{"prompt_tokens":5000,"completion_tokens":5}'),
        chunk.format(choices="[]", usage='{"prompt_tokens":1,"completion_tokens":1}'),
    ]
    body = "".join(f"data: {f}\n\n" for f in frames) + "data: [DONE]\n\n"
    async with FakeFluxRouter() as router:
        router.add(raw(200, body, content_type="text/event-stream"), text("unreached"))
        out = await play(router, "openai", True, limit=1000)
        assert isinstance(out, TokenLimitExceeded) and out.result.usage.total_tokens == 5005
        assert len(router.requests) == 1


# --- the property ----------------------------------------------------------------------------

COUNTS = st.one_of(
    st.integers(0, 2000),
    st.integers(-5, 10**31),
    st.floats(-10, 10**20, allow_nan=False, allow_infinity=False),
    st.none(),
    st.booleans(),
    st.sampled_from(["7", [], {}]),
)


def counted(v: Any) -> int | None:
    """What a count is worth once through JSON (orjson reads ints past 64 bits as floats); None: refused."""
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        return None
    return math.ceil(float(v)) if isinstance(v, float) or v >= 2**63 else v


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(
    max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(st.tuples(COUNTS, COUNTS), min_size=1, max_size=4),
    way=st.sampled_from(WAYS),
    limit=st.integers(1, 5000),
)
@example(steps=[(0, 0)] * 4, way=("openai", False), limit=5000)  # found: four equal steps were a loop
def test_no_usage_report_passes_the_budget_silently(
    backend: str, steps: list[tuple[Any, Any]], way: tuple[str, bool], limit: int
) -> None:
    async def main() -> None:
        async with FakeFluxRouter() as router:
            for i, (p, c) in enumerate(steps):  # a key per step: four equal calls would be a loop
                router.add(
                    tool_calls(
                        call("lookup", {"key": f"a{i}"}), usage={"prompt_tokens": p, "completion_tokens": c}
                    )
                )
            router.add(text("done", usage={"prompt_tokens": 0, "completion_tokens": 0}))
            out = await play(router, *way, limit=limit)
        # the model: each request's tokens in order; a refused count ends the run at its request.
        # A streamed Anthropic answer reports output_tokens=1 in message_start (as Anthropic does),
        # and later reports never lower it.
        floor = 1 if way == ("anthropic", True) else 0
        total, sent = 0, 0
        for p, c in steps:
            sent += 1
            cp, cc = counted(p), counted(c)
            if cp is None or cc is None:
                assert isinstance(out, APIResponseError), (steps, out)
                assert len(router.requests) == sent
                return
            total += cp + max(cc, floor)
            if total >= limit:  # the next request is never sent
                assert isinstance(out, TokenLimitExceeded), (steps, out)
                assert out.result.usage.total_tokens == total  # counted, never lowered
                assert len(router.requests) == sent
                return
        assert not isinstance(out, Exception), (steps, out)
        assert out.output == "done" and total < limit and out.usage.total_tokens == total + floor

    anyio.run(main, backend=backend)


@pytest.mark.anyio
async def test_a_scripted_model_refuses_the_same_usage_typed_under_a_budget() -> None:
    from agentloop.testing import ScriptedModel

    model = ScriptedModel([text("x", usage={"prompt_tokens": -1, "completion_tokens": 1})])
    with pytest.raises(APIResponseError, match=r"usage\.prompt_tokens is -1"):
        await Agent(client=model, limits=RunLimits(max_total_tokens=100)).run("go")


# --- without a budget: counted as 0, a warning, the run goes on --------------------------------

GARBAGE = [-(10**6), True, "sk-looks-like-a-secret", [1], -1.5e300]  # (NaN: not JSON, refused by the parser)


def usage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The `problems` field of each "token usage not readable" warning."""
    return [
        r.problems
        for r in caplog.records
        if r.getMessage().startswith("token usage not readable, counted as 0:")
    ]  # type: ignore[attr-defined]


@pytest.mark.anyio
@pytest.mark.parametrize(("wire", "stream"), WAYS)
@pytest.mark.parametrize("bad", GARBAGE, ids=repr)
async def test_without_a_budget_a_count_that_is_not_one_is_zero_and_a_warning(
    wire: str, stream: bool, bad: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The exact repro: the same answers as above, no budget; was an APIResponseError, the good
    answer lost over accounting."""
    async with FakeFluxRouter() as router:
        router.add(
            tool_calls(call("lookup", {"key": "a"}), usage={"prompt_tokens": 5, "completion_tokens": bad}),
            text("done", usage={"prompt_tokens": 7, "completion_tokens": 2}),
        )
        with caplog.at_level(logging.WARNING, logger="agentloop"):
            out = await play(router, wire, stream, limit=None)
    assert not isinstance(out, Exception), out
    assert out.output == "done" and len(router.requests) == 2
    floor = 1 if (wire, stream) == ("anthropic", True) else 0  # message_start's output_tokens=1
    assert out.usage.prompt_tokens == 12 and out.usage.completion_tokens == 2 + floor  # the bad one: 0
    (warning,) = usage_warnings(caplog)  # one answer, one warning
    field = "output_tokens" if wire == "anthropic" else "completion_tokens"
    assert f"usage.{field} is" in warning and "sk-looks" not in warning  # named; text never shown
    assert len(warning) < 600  # the value clipped


@pytest.mark.anyio
async def test_a_stream_repeating_bad_reports_warns_once_and_never_lowers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chunk = '{{"id":"c","object":"chat.completion.chunk","choices":{choices},"usage":{usage}}}'
    answer = '[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]'
    frames = [
        chunk.format(choices=answer, usage='{"prompt_tokens":50,"completion_tokens":5}'),
        *[chunk.format(choices="[]", usage='{"prompt_tokens":-1,"completion_tokens":"x"}')] * 20,
    ]
    body = "".join(f"data: {f}\n\n" for f in frames) + "data: [DONE]\n\n"
    async with FakeFluxRouter() as router:
        router.add(raw(200, body, content_type="text/event-stream"))
        with caplog.at_level(logging.WARNING, logger="agentloop"):
            out = await play(router, "openai", True, limit=None)
    assert out.output == "hi" and out.usage.total_tokens == 55  # the later garbage lowers nothing
    (warning,) = usage_warnings(caplog)
    assert "usage.prompt_tokens is -1" in warning and "usage.completion_tokens is a JSON str" in warning


@pytest.mark.anyio
async def test_an_outer_budget_refuses_an_inner_agents_unreadable_usage() -> None:
    """A nested run has no budget of its own, the run above it has: the budget cannot be enforced."""
    from agentloop.testing import ScriptedModel

    inner = Agent(client=ScriptedModel([text("x", usage={"prompt_tokens": "many"})]), name="inner")
    outer_model = ScriptedModel([tool_calls(call("ask", {"input": "go"})), text("done")])
    outer = Agent(
        client=outer_model,
        tools=[inner.as_tool(name="ask", description="ask")],
        limits=RunLimits(max_total_tokens=10_000),
    )
    result = await outer.run("go")
    (record,) = result.tool_calls
    assert record.status != "ok" and "usage.prompt_tokens is a JSON str" in record.content
    unbudgeted = Agent(client=ScriptedModel([text("x", usage={"prompt_tokens": "many"})]), name="inner")
    free = Agent(
        client=ScriptedModel([tool_calls(call("ask", {"input": "go"})), text("done")]),
        tools=[unbudgeted.as_tool(name="ask", description="ask")],
    )
    (record,) = (await free.run("go")).tool_calls
    assert (record.status, record.content) == ("ok", "x")
