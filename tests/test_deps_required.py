"""`deps_type=` without `deps=` (outside-in review, round 5): an agent created with a deps type
that does not admit None, run without `deps=`, is refused at the start of the run with a
`ConfigurationError` naming the option to pass, before any model request. It used to hand its
tools `ctx.deps = None`, and the first tool to read a field crashed with an AttributeError the
model was told about. A type that admits None (`Deps | None`, `Optional[Deps]`, `Any`, `object`)
keeps runs without deps. Deps of another type are not checked at run time (type checkers do:
`Agent[Deps, T].run(deps=...)` is typed): a stand-in with the same attributes is accepted."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from agentloop import Agent, ConfigurationError, Handoff, RunContext, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

sys.path.insert(0, str(Path(__file__).parent))
from wirehelp import run_or_stream

pytestmark = pytest.mark.anyio


@dataclass
class Deps:
    user: str


def deps_tools(seen: list[Any]) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def whoami(ctx: RunContext[Deps]) -> str:
        """Who is asking."""
        seen.append(ctx.deps)
        return ctx.deps.user

    return tools


def answers() -> list[Any]:
    return [tool_calls(call("whoami", {}, id="c1")), text("done")]


@pytest.mark.parametrize("how", ["run", "stream"])
async def test_deps_type_without_deps_is_refused_at_run_start(how: str) -> None:
    seen: list[Any] = []
    model = ScriptedModel(answers())
    agent = Agent[Deps, str](client=model, tools=deps_tools(seen), deps_type=Deps)
    with pytest.raises(ConfigurationError) as e:
        await run_or_stream(agent, how, "who am I?")
    message = str(e.value)
    assert "deps_type=Deps" in message and "deps=" in message and "Deps | None" in message
    assert seen == [] and len(model.requests) == 0  # no request paid for, no tool ran


def test_run_sync_refuses_it_too() -> None:
    agent = Agent[Deps, str](client=ScriptedModel(answers()), tools=deps_tools([]), deps_type=Deps)
    with pytest.raises(ConfigurationError, match="deps="):
        agent.run_sync("who am I?")


async def test_resume_without_deps_is_refused() -> None:
    tools = ToolRegistry()

    @tools.tool(requires_approval=True)
    async def pay(ctx: RunContext[Deps], amount: int) -> str:
        return f"{ctx.deps.user} paid {amount}"

    model = ScriptedModel([tool_calls(call("pay", {"amount": 3}, id="p")), text("paid")])
    agent = Agent[Deps, str](client=model, tools=tools, deps_type=Deps)
    paused = await agent.run("pay", deps=Deps("ana"))
    assert paused.stop_reason == "approval_required"
    with pytest.raises(ConfigurationError, match="deps="):
        await agent.resume(paused, approvals={"p": True})
    done = await agent.resume(paused, approvals={"p": True}, deps=Deps("ana"))
    assert done.tool_calls[-1].content == "ana paid 3"


OPTIONAL_DEPS = Optional[Deps]  # noqa: UP045  # the spelling older code uses, on purpose


@pytest.mark.parametrize("deps_type", [Deps | None, OPTIONAL_DEPS, Any, object, type(None)], ids=repr)
async def test_a_deps_type_that_admits_none_runs_without_deps(deps_type: Any) -> None:
    tools = ToolRegistry()

    @tools.tool
    async def whoami(ctx: RunContext[Any]) -> str:
        return "anonymous" if ctx.deps is None else ctx.deps.user

    agent = Agent[Any, str](client=ScriptedModel(answers()), tools=tools, deps_type=deps_type)
    result = await agent.run("who am I?")
    assert result.tool_calls[0].content == "anonymous" and result.output == "done"


async def test_deps_of_another_type_are_not_checked_at_run_time() -> None:
    """A test double, a subclass proxy, a Protocol's implementation: duck typing is the user's call
    (and type checkers see the mismatch); only the missing deps are refused."""

    @dataclass
    class StandIn:
        user: str

    seen: list[Any] = []
    agent = Agent[Deps, str](client=ScriptedModel(answers()), tools=deps_tools(seen), deps_type=Deps)
    result = await agent.run("who am I?", deps=StandIn("bob"))  # type: ignore[arg-type]
    assert result.tool_calls[0].content == "bob" and isinstance(seen[0], StandIn)


async def test_a_handoff_or_agent_tool_that_needs_deps_is_refused_at_the_outer_run_start() -> None:
    """They share the run's deps: the outer run without deps would hand them None mid-run."""
    seen: list[Any] = []
    inner = Agent[Deps, str](
        client=ScriptedModel(answers()), tools=deps_tools(seen), deps_type=Deps, name="billing"
    )
    via_tool = ToolRegistry()
    via_tool.register(inner.as_tool(description="Ask billing"))
    for outer in (
        Agent(client=ScriptedModel([text("x")]), handoffs=[Handoff(inner)]),
        Agent(client=ScriptedModel([text("x")]), tools=via_tool),
    ):
        with pytest.raises(ConfigurationError, match="'billing'") as e:
            await outer.run("hi")
        assert "deps=" in str(e.value) and "deps_type=Deps" in str(e.value)
    assert seen == []


async def test_deps_given_reach_the_tools_as_before() -> None:
    seen: list[Any] = []
    agent = Agent[Deps, str](client=ScriptedModel(answers()), tools=deps_tools(seen), deps_type=Deps)
    result = await agent.run("who am I?", deps=Deps("ana"))
    assert result.tool_calls[0].content == "ana" and seen == [Deps("ana")]
