"""RunContext (issue 17, part 2): tools that take `ctx: RunContext[Deps]` get the run's deps and
metadata; the parameter never reaches the schema; sandboxed tools cannot take it. Over the
real-HTTP fake router on both wires, through run and stream, on asyncio and trio."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from wirehelp import WIRES, last_tool_result, make_client, run_or_stream, tool_params

from agentloop import Agent, RunContext, SQLiteJournal, ToolDefinitionError, ToolRegistry
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


@dataclass
class Deps:
    user: str
    db: dict[str, int]  # stands for a live object: a connection pool, a client


def context_tools(seen: list[RunContext[Deps]]) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def balance(ctx: RunContext[Deps], account: str) -> dict[str, Any]:
        """Look up an account balance.

        Args:
            account: the account name.
        """
        seen.append(ctx)
        return {"user": ctx.deps.user, "balance": ctx.deps.db[account]}

    @tools.tool
    def balance_sync(ctx: RunContext[Deps], account: str) -> int:  # a thread tool gets it too
        seen.append(ctx)
        return ctx.deps.db[account]

    return tools


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("how", ["run", "stream"])
async def test_tool_receives_deps_and_run_metadata(router: FakeFluxRouter, wire: str, how: str) -> None:
    seen: list[RunContext[Deps]] = []
    router.add(
        tool_calls(
            call("balance", {"account": "main"}, id="call_a"),
            call("balance_sync", {"account": "main"}, id="call_b"),
        ),
        text("You have 5."),
    )
    deps = Deps("ana", {"main": 5})
    async with make_client(router, wire) as client:
        agent = Agent[Deps, str](client=client, tools=context_tools(seen), deps_type=Deps)
        result = await run_or_stream(agent, how, "balance?", deps=deps, run_id="run-ctx")
    assert result.output == "You have 5."
    assert sorted(c.tool_call_id for c in seen) == ["call_a", "call_b"]
    for ctx in seen:
        assert ctx.deps is deps and ctx.run_id == "run-ctx" and ctx.step == 1 and ctx.retry == 0
        assert ctx.usage.requests == 1 and ctx.model == "flux-auto"
    assert {c.tool_name for c in seen} == {"balance", "balance_sync"}
    assert (
        result.messages[2]["content"] == '{"user":"ana","balance":5}' and result.messages[3]["content"] == "5"
    )
    # the context parameter is invisible to the model, on either wire
    params = tool_params(router.requests[0].json, "balance")
    assert params["properties"] == {"account": {"type": "string", "description": "the account name."}}
    assert params["required"] == ["account"]


@pytest.mark.parametrize("wire", WIRES)
async def test_the_model_cannot_forge_the_context(router: FakeFluxRouter, wire: str) -> None:
    seen: list[RunContext[Deps]] = []
    router.add(
        tool_calls(call("balance", {"account": "main", "ctx": {"deps": {"user": "mallory"}}})), text("no")
    )
    async with make_client(router, wire) as client:
        result = await Agent(client=client, tools=context_tools(seen)).run("x", deps=Deps("ana", {"main": 1}))
    assert seen == [] and result.tool_calls[0].status == "invalid_arguments"
    assert "ctx" in last_tool_result(router.requests[1].json)


async def test_retry_counts_earlier_failed_calls_of_the_same_tool() -> None:
    retries: list[int] = []
    tools = ToolRegistry()

    @tools.tool
    async def flaky(ctx: RunContext[None], attempt: int) -> str:
        retries.append(ctx.retry)
        if ctx.retry < 2:
            raise RuntimeError("try again")
        return "ok"

    # different arguments each time: the loop guard stops identical repeats
    model = ScriptedModel([tool_calls(call("flaky", {"attempt": i})) for i in range(3)] + [text("done")])
    result = await Agent(client=model, tools=tools).run("go")
    assert retries == [0, 1, 2] and [r.status for r in result.tool_calls] == ["raised", "raised", "ok"]


async def test_concurrent_runs_never_see_each_others_deps() -> None:
    """What contextvars get wrong across threads and tasks: each run's tools see its own deps."""
    seen: dict[str, list[str]] = {}
    tools = ToolRegistry()

    @tools.tool
    def whoami(ctx: RunContext[str]) -> str:  # thread tool: contextvars would not follow it reliably
        seen.setdefault(ctx.run_id, []).append(ctx.deps)
        return ctx.deps

    def script(request: Any) -> Any:
        done = any(m["role"] == "tool" for m in request.messages)
        return text("bye") if done else tool_calls(call("whoami"), call("whoami"))

    agent = Agent(client=ScriptedModel(script), tools=tools)
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(lambda i=i: agent.run("who?", deps=f"user-{i}", run_id=f"r{i}"))
    assert seen == {f"r{i}": [f"user-{i}", f"user-{i}"] for i in range(20)}


async def test_no_deps_gives_none() -> None:
    got: list[Any] = []
    tools = ToolRegistry()

    @tools.tool
    async def peek(ctx: RunContext) -> str:  # bare RunContext works too
        got.append(ctx.deps)
        return "x"

    await Agent(client=ScriptedModel([tool_calls(call("peek")), text("ok")]), tools=tools).run("go")
    assert got == [None]


@pytest.mark.parametrize("mode", ["process", "isolated"])
def test_sandboxed_tools_cannot_take_a_context(mode: str) -> None:
    tools = ToolRegistry()

    def sandboxed(ctx: RunContext[Deps], n: int) -> int:
        return n

    with pytest.raises(ToolDefinitionError, match="never pickles"):
        tools.register(sandboxed, sandbox=mode)  # type: ignore[arg-type]
    assert "sandboxed" not in tools


def test_only_the_first_parameter_is_the_context() -> None:
    tools = ToolRegistry()

    def late(n: int, ctx: RunContext[Deps]) -> int:  # not first: an ordinary (unsupported) parameter
        return n

    with pytest.raises(ToolDefinitionError):
        tools.register(late)


async def test_resumed_run_gets_deps_again(tmp_path: Any) -> None:
    seen: list[Any] = []
    tools = ToolRegistry()

    @tools.tool(requires_approval=True)
    async def pay(ctx: RunContext[Deps], amount: int) -> str:
        seen.append(ctx.deps.user)
        return f"paid {amount}"

    journal = SQLiteJournal(tmp_path / "j.db")
    model = ScriptedModel([tool_calls(call("pay", {"amount": 3}, id="c1")), text("paid")])
    agent = Agent(client=model, tools=tools, journal=journal)
    paused = await agent.run("pay 3", deps=Deps("ana", {}), run_id="p1")
    assert paused.paused and seen == []
    result = await agent.resume("p1", approvals={"c1": True}, deps=Deps("bob", {}))
    journal.close()
    assert seen == ["bob"] and result.output == "paid"
