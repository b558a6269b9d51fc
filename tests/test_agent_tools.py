"""Agents as tools (issue 17, part 3): `inner.as_tool(...)` runs a whole agent as one tool call of
another run: through the same loop, sharing the outer run's deadline, budgets, event stream,
observers, OTel trace and journal. Over the real-HTTP fake router on both wires, through run and
stream, on asyncio and trio; plus the hostile cases (an agent calling itself, an inner run that
raises, the outer deadline mid-inner-run, a crash mid-inner-run). Approval pauses through the
nesting: tests/test_nested_approval.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from wirehelp import WIRES, last_tool_result, make_client, run_or_stream, system_text, tool_names, tool_params

from agentloop import (
    Agent,
    ConfigurationError,
    Event,
    RunLimits,
    RunStarted,
    SQLiteJournal,
    StepLimitExceeded,
    TimeLimitExceeded,
    TokenLimitExceeded,
    ToolCallLimitExceeded,
    ToolDefinitionError,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, call, text, tool_calls

pytestmark = pytest.mark.anyio


@pytest.fixture
async def router() -> AsyncIterator[FakeFluxRouter]:
    async with FakeFluxRouter() as r:
        yield r


def research_agent(client: Any, **kwargs: Any) -> Agent[Any, Any]:
    tools = ToolRegistry()

    @tools.tool
    async def search(q: str) -> str:
        """Search the web."""
        return f"results for {q}"

    return Agent(client=client, tools=tools, name="research", instructions="You research.", **kwargs)


def outer_agent(client: Any, inner: Agent[Any, Any], **kwargs: Any) -> Agent[Any, Any]:
    tools = ToolRegistry()
    tools.register(inner.as_tool(name="research", description="Research a topic."))
    return Agent(client=client, tools=tools, instructions="You answer.", **kwargs)


def valid_conversation(messages: list[dict[str, Any]]) -> None:
    """Every tool call has its tool message, and every tool message its call."""
    calls = [c["id"] for m in messages for c in m.get("tool_calls") or ()]
    results = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert sorted(calls) == sorted(results)


# --- the nested run --------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("how", ["run", "stream"])
async def test_the_inner_run_is_nested_in_the_outer_one(router: FakeFluxRouter, wire: str, how: str) -> None:
    router.add(
        tool_calls(call("research", {"input": "green tea"}, id="call_out")),
        tool_calls(call("search", {"q": "green tea"}, id="call_in")),
        text("Green tea is good."),
        text("Research says: green tea is good."),
    )
    seen: list[Event] = []
    async with make_client(router, wire) as client:
        outer = outer_agent(client, research_agent(client), observers=[seen.append])
        result = await run_or_stream(outer, how, "Is green tea good?")
    assert result.output == "Research says: green tea is good."
    # the outer model sees one tool taking {"input": str}; the inner run has its own instructions and tools
    first, inner1, inner2, last = (r.json for r in router.requests)
    assert tool_names(first) == ["research"]
    assert tool_params(first, "research")["properties"]["input"]["type"] == "string"
    assert system_text(inner1) == "You research." and tool_names(inner1) == ["search"]
    assert last_tool_result(inner2) == "results for green tea"
    assert last_tool_result(last) == "Green tea is good."
    # usage: the outer result counts all four requests, once
    assert result.usage.requests == 4
    assert result.tool_calls[0].name == "research" and result.tool_calls[0].status == "ok"
    # events: the inner run's, nested under the outer call
    inner_events = [e for e in seen if e.parent_call_id == "call_out"]
    outer_events = [e for e in seen if e.parent_call_id is None]
    assert {e.run_id for e in outer_events} == {result.run_id}
    inner_ids = {e.run_id for e in inner_events}
    assert len(inner_ids) == 1 and inner_ids != {result.run_id}
    started = [e for e in inner_events if isinstance(e, RunStarted)]
    assert len(started) == 1 and started[0].parent_run_id == result.run_id
    names = [type(e).__name__ for e in inner_events]
    assert names[0] == "RunStarted" and names[-1] == "RunFinished" and "ToolCallFinished" in names


async def test_the_inner_events_reach_the_outer_stream_in_order(router: FakeFluxRouter) -> None:
    router.add(
        tool_calls(call("research", {"input": "x"}, id="call_out")),
        text("inner answer"),
        text("outer answer"),
    )
    async with make_client(router, "openai") as client:
        outer = outer_agent(client, research_agent(client))
        async with outer.stream("q") as events:
            kinds = [(type(e).__name__, e.parent_call_id) async for e in events]
    start = kinds.index(("ToolCallStarted", None))
    end = kinds.index(("ToolCallFinished", None))
    nested = kinds[start + 1 : end]
    assert nested and all(p == "call_out" for _, p in nested)  # between the outer call's start and end
    assert kinds[-1] == ("RunFinished", None)


async def test_an_observer_on_both_agents_sees_each_event_once(router: FakeFluxRouter) -> None:
    router.add(tool_calls(call("research", {"input": "x"})), text("inner"), text("outer"))
    seen: list[Event] = []
    async with make_client(router, "openai") as client:
        inner = research_agent(client, observers=[seen.append])
        await outer_agent(client, inner, observers=[seen.append]).run("q")
    assert len(seen) == len(set(map(id, seen)))
    assert sum(isinstance(e, RunStarted) for e in seen) == 2  # the outer run's and the inner run's


async def test_deps_reach_the_inner_runs_tools(router: FakeFluxRouter) -> None:
    from agentloop import RunContext

    tools = ToolRegistry()

    @tools.tool
    async def whoami(ctx: RunContext[dict[str, str]]) -> str:
        return ctx.deps["user"]

    router.add(
        tool_calls(call("helper", {"input": "who?"})),
        tool_calls(call("whoami", {})),
        text("ann"),
        text("ann"),
    )
    async with make_client(router, "openai") as client:
        helper = Agent(client=client, tools=tools, name="helper")
        outer_tools = ToolRegistry()
        outer_tools.register(helper.as_tool())
        result = await Agent(client=client, tools=outer_tools).run("q", deps={"user": "ann"})
    assert last_tool_result(router.requests[2].json) == "ann" and result.output == "ann"


async def test_a_structured_inner_output_reaches_the_outer_model_as_json(router: FakeFluxRouter) -> None:
    router.add(
        tool_calls(call("extract", {"input": "x"})),
        tool_calls(call("final_result", {"name": "Ann", "age": 3})),
        text("done"),
    )
    from dataclasses import dataclass

    @dataclass
    class Person:
        name: str
        age: int

    async with make_client(router, "openai") as client:
        extract = Agent(client=client, name="extract", output_type=Person, output_mode="tool")
        tools = ToolRegistry()
        tools.register(extract.as_tool())
        await Agent(client=client, tools=tools).run("q")
    assert json.loads(last_tool_result(router.requests[2].json)) == {"name": "Ann", "age": 3}


# --- budgets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_an_agent_used_as_its_own_tool_is_bounded_by_the_outer_step_budget(wire: str) -> None:
    async with FakeFluxRouter(lambda req: tool_calls(call("myself", {"input": "again"}))) as router:
        async with make_client(router, wire) as client:
            tools = ToolRegistry()
            agent = Agent(
                client=client, tools=tools, name="myself", limits=RunLimits(max_steps=4, loop_threshold=None)
            )
            tools.register(agent.as_tool())
            with pytest.raises(StepLimitExceeded) as e:
                await agent.run("go")
    assert len(router.requests) == 4  # the outer run's 4 model requests, nested ones included
    assert e.value.result.steps == 1 and e.value.result.usage.requests == 4
    valid_conversation(e.value.result.messages)
    assert e.value.result.tool_calls[0].status == "raised"  # the inner run stopped on the shared budget


async def test_an_agent_used_as_its_own_tool_without_budgets_stops_at_the_depth_limit() -> None:
    refusals: list[str] = []

    def handler(req: Any) -> Any:
        last = req.json["messages"][-1]
        if last["role"] == "tool":  # the deepest run was refused; then each run answers its caller
            if "nested 17 deep" in last["content"]:
                refusals.append(last["content"])
            return text("stopped")
        return tool_calls(call("myself", {"input": "again"}))

    async with FakeFluxRouter(handler) as router, make_client(router, "openai") as client:
        tools = ToolRegistry()
        agent = Agent(
            client=client, tools=tools, name="myself", limits=RunLimits(max_steps=None, loop_threshold=None)
        )
        tools.register(agent.as_tool())
        result = await agent.run("go")
    assert result.output == "stopped"
    assert len(router.requests) == 34  # 17 runs (depths 0..16), each a call and then an answer
    assert len(refusals) == 1 and "AgentToolError" in refusals[0]


async def test_inner_tool_calls_count_against_the_outer_max_tool_calls(router: FakeFluxRouter) -> None:
    router.add(
        tool_calls(call("research", {"input": "x"})),
        tool_calls(call("search", {"q": "a"}), call("search", {"q": "b"})),  # 2 + the outer call > 2
    )
    async with make_client(router, "openai") as client:
        outer = outer_agent(client, research_agent(client), limits=RunLimits(max_tool_calls=2))
        router.add(tool_calls(call("research", {"input": "y"})))  # the outer model tries again
        with pytest.raises(ToolCallLimitExceeded) as e:
            await outer.run("q")
    assert len(router.requests) == 3
    told = last_tool_result(router.requests[2].json)  # the inner run stopped on the outer budget
    assert "ToolCallLimitExceeded" in told and "budget of max_tool_calls=2" in told and "outer run" in told
    first, second = e.value.result.tool_calls
    assert first.status == "raised" and second.status == "skipped"
    valid_conversation(e.value.result.messages)


async def test_inner_tokens_count_against_the_outer_max_total_tokens(router: FakeFluxRouter) -> None:
    # every fake reply reports 10 prompt + 5 completion tokens
    router.add(tool_calls(call("research", {"input": "x"})), tool_calls(call("search", {"q": "a"})))
    async with make_client(router, "openai") as client:
        outer = outer_agent(client, research_agent(client), limits=RunLimits(max_total_tokens=30))
        with pytest.raises(TokenLimitExceeded) as e:
            await outer.run("q")
    assert len(router.requests) == 2  # the inner run stopped once the outer had used 30 tokens
    assert e.value.result.usage.total_tokens == 30
    assert "TokenLimitExceeded" in e.value.result.tool_calls[0].content


# --- failures, cancellation, approval --------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_an_inner_run_that_raises_is_a_tool_error_for_the_outer_model(
    router: FakeFluxRouter, wire: str
) -> None:
    router.add(
        tool_calls(call("research", {"input": "x"})),
        tool_calls(call("search", {"q": "a"})),  # the inner agent may make one request only
        text("I could not research it."),
    )
    async with make_client(router, wire) as client:
        outer = outer_agent(client, research_agent(client, max_steps=1))
        result = await outer.run("q")
    assert result.output == "I could not research it."
    record = result.tool_calls[0]
    assert record.status == "raised" and "StepLimitExceeded" in record.content
    assert "StepLimitExceeded" in last_tool_result(router.requests[2].json)


async def test_the_outer_deadline_cancels_the_inner_run_and_its_tools(router: FakeFluxRouter) -> None:
    started, cancelled = anyio.Event(), []
    tools = ToolRegistry()

    @tools.tool
    async def slow() -> str:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append(True)
        return "never"

    router.add(tool_calls(call("worker", {"input": "x"}, id="call_out")), tool_calls(call("slow", {})))
    async with make_client(router, "openai") as client:
        inner = Agent(client=client, tools=tools, name="worker")
        outer_tools = ToolRegistry()
        outer_tools.register(inner.as_tool())
        outer = Agent(client=client, tools=outer_tools, limits=RunLimits(timeout=3))
        with pytest.raises(TimeLimitExceeded) as e:
            await outer.run("q")
    assert started.is_set() and cancelled == [True]
    partial = e.value.result
    assert partial.tool_calls[0].id == "call_out" and partial.tool_calls[0].status == "cancelled"
    valid_conversation(partial.messages)
    assert partial.usage.requests == 2  # the inner request counted in the outer result


async def test_leaving_the_outer_stream_cancels_the_inner_run(router: FakeFluxRouter) -> None:
    """The inner run's tool is running (the consumer went past its ToolCallStarted: a call waits
    for that, tests/test_stream_leave.py); the outer stream's block ends: the tool is cancelled."""
    cancelled: list[bool] = []
    started = anyio.Event()
    tools = ToolRegistry()

    @tools.tool
    async def slow() -> str:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append(True)
        return "never"

    router.add(tool_calls(call("worker", {"input": "x"})), tool_calls(call("slow", {})))
    async with make_client(router, "openai") as client:
        inner = Agent(client=client, tools=tools, name="worker")
        outer_tools = ToolRegistry()
        outer_tools.register(inner.as_tool())
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as leave:

                async def leave_once_started() -> None:
                    await started.wait()
                    leave.cancel()  # the stream's block ends (as a deadline around it would)

                tg.start_soon(leave_once_started)
                async with Agent(client=client, tools=outer_tools).stream("q") as events:
                    async for _ in events:
                        pass
    assert started.is_set() and cancelled == [True]


def test_an_agent_tool_cannot_be_sandboxed() -> None:
    from agentloop.testing import ScriptedModel

    agent = Agent(client=ScriptedModel([]), name="inner")
    with pytest.raises(ToolDefinitionError, match="runs inline"):
        ToolRegistry().register(agent.as_tool(), sandbox="process")
    tool = ToolRegistry(sandbox="thread").register(agent.as_tool())
    assert tool.sandbox == "inline" and tool.idempotent
    with pytest.raises(ConfigurationError, match="tool name"):
        Agent(client=ScriptedModel([])).as_tool()


def test_temporal_takes_agent_tools_and_handoffs_as_a_graph_of_agents() -> None:
    from agentloop.temporal._spec import agent_spec  # internal unit under test
    from agentloop.testing import ScriptedModel

    inner = Agent(client=ScriptedModel([]), name="inner")
    tools = ToolRegistry()
    tools.register(inner.as_tool())
    spec = agent_spec(Agent(client=ScriptedModel([]), tools=tools, handoffs=[inner]))
    # one node for `inner`, named by the agent tool and the handoff alike (tests/test_temporal_agents.py runs it)
    assert spec["agent_tools"] == [
        {"name": "inner", "description": tools.get("inner").description, "agent": "a1"}
    ]
    assert [h["agent"] for h in spec["handoffs"]] == ["a1"] and list(spec["agents"]) == ["a1"]


# --- journal ---------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_a_resumed_outer_run_resumes_the_inner_run(
    router: FakeFluxRouter, wire: str, tmp_path: Path
) -> None:
    journal = SQLiteJournal(tmp_path / "runs.db")
    crash = anyio.CancelScope()
    tools = ToolRegistry()
    crashed: list[bool] = []

    @tools.tool(idempotent=True)
    async def fetch(url: str) -> str:
        if not crashed:  # the process "dies" here, the first time
            crashed.append(True)
            crash.cancel()
            await anyio.sleep_forever()
        return "page text"

    router.add(
        tool_calls(call("reader", {"input": "read it"}, id="call_out")),
        tool_calls(call("fetch", {"url": "https://x"}, id="call_in")),
    )
    async with make_client(router, wire) as client:
        reader = Agent(client=client, tools=tools, name="reader")
        outer_tools = ToolRegistry()
        outer_tools.register(reader.as_tool())
        outer = Agent(client=client, tools=outer_tools, journal=journal)
        with crash:
            await outer.run("q", run_id="outer-1")
        assert crash.cancelled_caught and len(router.requests) == 2
        router.add(text("the page says hi"), text("done: hi"))
        result = await outer.resume("outer-1")
    assert result.output == "done: hi"
    assert len(router.requests) == 4  # the inner run's first answer was not requested again
    assert last_tool_result(router.requests[2].json) == "page text"  # the inner run went on from its fetch
    runs = {r.run_id for r in await journal.list_runs()}
    inner_ids = runs - {"outer-1"}
    assert len(inner_ids) == 1
    inner = await journal.load(inner_ids.pop())
    assert inner.header["parent_run_id"] == "outer-1" and inner.header["parent_call_id"] == "call_out"
    assert [e.kind for e in inner.entries].count("model") == 2 and "resumed" in [
        e.kind for e in inner.entries
    ]
    # resuming the finished outer run again returns it as it is, requesting nothing
    again = await outer.resume("outer-1")
    assert again.output == "done: hi" and len(router.requests) == 4


@pytest.mark.parametrize("failure", ["api", "loop"])
async def test_the_outer_tool_result_says_what_failed_in_the_inner_run(
    router: FakeFluxRouter, failure: str
) -> None:
    # An inner run's RunFailed event reaches only observers: the outer model must be told, in the
    # tool result, which error ended the inner run and why.
    from agentloop.testing import error

    router.add(tool_calls(call("research", {"input": "x"}, id="out")))
    if failure == "api":
        router.add(error(401, "bad key for the research route"))
    else:
        router.add(*(tool_calls(call("search", {"q": "same"})) for _ in range(3)))
    router.add(text("I could not research it."))
    async with make_client(router, "openai") as client:
        inner = research_agent(client, limits=RunLimits(loop_threshold=2))
        result = await outer_agent(client, inner).run("q")
    record = result.tool_calls[0]
    assert record.status == "raised" and result.output == "I could not research it."
    told = last_tool_result(router.requests[-1].json)
    assert told == record.content and told.startswith("Tool 'research' raised ")
    if failure == "api":
        assert "AuthenticationError" in told and "bad key for the research route" in told
    else:
        assert "LoopDetected" in told and "same tool with the same arguments" in told
