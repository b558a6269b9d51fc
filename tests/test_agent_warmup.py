"""`Agent.warmup()` rehearses the run path, and nobody sees it.

Hostile: the agent under test has a journal, observers, a tool, an approval predicate, an error
formatter and instructions that all record every call, a client that records every request, and
the `agentloop` logger at DEBUG; after `warmup()` none of them saw anything, and the first real
run is answered as usual, its events and journal entries its own. Whether the first run got
faster is a timing: benchmarks/bench_first_request.py. Both backends.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentloop import Agent, SQLiteJournal, ToolRegistry
from agentloop.abc import ToolOutcome
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


class Witness:
    """Everything the user's side of an agent can be called through, recording each call."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.threads: list[threading.Thread] = []  # where the (sync) tool ran

    def observer(self, event: Any) -> None:
        self.seen.append(("observer", type(event).__name__))

    def approve(self, name: str, arguments: Any) -> bool:
        self.seen.append(("approval", name))
        return False

    def format_error(self, name: str, exc: BaseException) -> str:
        self.seen.append(("format_error", name))
        return "error"

    def instructions(self, ctx: Any) -> str:
        self.seen.append(("instructions", None))
        return "be brief"

    def tools(self, sync: bool = True) -> ToolRegistry:
        registry = ToolRegistry()

        def tool(x: int) -> int:  # the rehearsal's own tool is named `tool` too: it must not be this one
            self.seen.append(("tool", x))
            self.threads.append(threading.current_thread())
            return x

        async def async_tool(x: int) -> int:
            self.seen.append(("tool", x))
            return x

        registry.register(tool if sync else async_tool, name="tool")
        return registry


def _agent(client: Any, witness: Witness, journal: Any, sync: bool = True) -> Agent[Any, Any]:
    return Agent(
        client=client,
        tools=witness.tools(sync),
        journal=journal,
        observers=[witness.observer],
        require_approval=witness.approve,
        format_tool_error=witness.format_error,
        instructions=witness.instructions,
    )


async def test_warmup_touches_nothing_of_the_user(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    witness = Witness()
    model = ScriptedModel([tool_calls(call("tool", {"x": 7})), text("done")])
    journal = SQLiteJournal(tmp_path / "runs.db")
    agent = _agent(model, witness, journal, sync=False)
    threads = set(threading.enumerate())
    tasks = len(anyio.get_running_tasks())
    with caplog.at_level(logging.DEBUG, logger="agentloop"):
        await agent.warmup()
        assert caplog.records == []  # not a line logged for the rehearsal's runs
    # the agent's tools are async: no worker thread started (an idle one of an earlier test may
    # end meanwhile: trio's thread cache lets it go after 10 s, which failed this under load)
    assert set(threading.enumerate()) - threads == set()
    assert witness.seen == []
    assert model.requests == []  # the user's model was never asked
    assert await journal.list_runs() == []  # (the journal's own worker thread from here on)
    assert len(anyio.get_running_tasks()) == tasks
    # The first real run is the user's own, start to end.
    result = await agent.run("go")
    assert result.output == "done"
    assert ("tool", 7) in witness.seen and ("instructions", None) in witness.seen
    assert len(model.requests) == 2
    runs = await journal.list_runs()
    assert [r.run_id for r in runs] == [result.run_id]


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_warmup_sends_nothing_over_the_network(wire: str) -> None:
    from agentloop import FluxClient

    witness = Witness()
    async with FakeFluxRouter([text("hello")], api_key="sk-secret") as router:
        url = router.base_url if wire == "openai" else router.anthropic_url
        async with FluxClient(base_url=url, api_key="sk-secret", wire=wire) as client:  # type: ignore[arg-type]
            agent = _agent(client, witness, None)
            await agent.warmup()
            assert router.requests == []  # not a byte of the rehearsal left the process
            assert (await agent.run("hi")).output == "hello"
    assert len(router.requests) == 1
    assert [kind for kind, _ in witness.seen if kind != "observer"] == ["instructions"]


async def test_a_cancelled_warmup_stops_at_once_and_leaves_nothing() -> None:
    witness = Witness()
    agent = _agent(ScriptedModel([text("ok")]), witness, None)
    tasks = len(anyio.get_running_tasks())
    with anyio.CancelScope() as scope:
        scope.cancel()
        await agent.warmup()
    assert scope.cancelled_caught
    with anyio.move_on_after(0.001):  # cancelled mid-way (wherever that falls)
        await agent.warmup()
    assert len(anyio.get_running_tasks()) == tasks
    assert witness.seen == []
    assert (await agent.run("go")).output == "ok"


async def test_warmup_inside_a_stream_and_concurrent_runs_sees_none_of_them() -> None:
    # Another run of the same agent streams while warmup() rehearses: its events are its own.
    witness = Witness()
    model = ScriptedModel([tool_calls(call("tool", {"x": 1})), text("done")])
    agent = _agent(model, witness, None)
    events: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.warmup)
        async with agent.stream("go") as stream:
            async for event in stream:
                events.append(type(event).__name__)
    assert events.count("RunStarted") == 1 and events.count("RunFinished") == 1
    assert events.count("ToolCallFinished") == 1
    assert witness.seen.count(("observer", "RunStarted")) == 1
    assert [s for s in witness.seen if s[0] == "tool"] == [("tool", 1)]


async def test_with_a_sync_tool_warmup_starts_the_one_worker_thread_the_first_call_uses(
    anyio_backend: str,
) -> None:
    # The first run of an agent with a sync tool started a worker thread (~0.5-0.7 ms):
    # `warmup()` (the user asking) starts it, one, and runs nothing of the user's in it.
    witness = Witness()
    model = ScriptedModel([tool_calls(call("tool", {"x": 7})), text("done")])
    agent = _agent(model, witness, None)
    before = set(threading.enumerate())
    await agent.warmup()
    started = set(threading.enumerate()) - before
    assert witness.seen == [] and model.requests == []
    assert (await agent.run("go")).output == "done"
    assert [s for s in witness.seen if s[0] == "tool"] == [("tool", 7)]
    if anyio_backend == "asyncio":
        # agentloop's daemon threads of `def` tools are a process-wide cache (as trio's): an idle
        # one of an earlier loop may serve; else warmup() started exactly one. A thread is idle
        # again before its caller resumes, so the first call reuses it and starts none.
        assert len(started) <= 1
        assert set(threading.enumerate()) - before == started
        assert witness.threads[0].daemon
    else:  # trio's thread cache is the process's: an idle thread of an earlier loop may serve
        assert len(started) <= 1


async def test_warmup_of_an_agent_without_tools_starts_no_thread() -> None:
    agent = Agent(client=ScriptedModel([text("done")]))
    before = set(threading.enumerate())
    await agent.warmup()
    assert set(threading.enumerate()) - before == set()  # none started (an idle one may end)
    assert (await agent.run("go")).output == "done"


def _children() -> set[int]:
    """This process's child processes (a fork server is one)."""
    out: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            out |= {int(pid) for pid in f.read().split()}
    return out


async def test_warmup_starts_the_fork_server_a_sandboxed_tool_uses_and_runs_no_tool_of_the_user() -> None:
    # The first sandboxed call of a process started the fork server (an interpreter's boot):
    # warmup() starts it, with a call of its own no-op tool; the user's tool is not run.
    import sandbox_tools as st

    witness = Witness()
    tools = ToolRegistry()
    tools.register(st.echo, sandbox="process")
    model = ScriptedModel([tool_calls(call("echo", {"text": "hi"})), text("done")])
    agent = Agent(client=model, tools=tools, observers=[witness.observer])
    async with tools:
        before = _children()
        await agent.warmup()
        started = _children() - before
        assert len(started) == 1  # the fork server, and nothing else
        assert witness.seen == [] and model.requests == []
        result = await agent.run("go")
        assert result.output == "done"
        answer = model.requests[1]["messages"][-1]
        assert answer["role"] == "tool" and '"pid_is_child":true' in answer["content"]  # it ran, once
        assert _children() - before == started  # the first call used it: no second server
    assert _children() - before == set()  # closing the registry stopped it


async def test_warmup_leaves_a_callers_own_executor_alone() -> None:
    # A `sandbox=<ToolExecutor>` is the caller's (Temporal's activities): warmup never calls it.
    calls: list[str] = []

    class Executor:
        async def call(self, ref: str, arguments: dict[str, Any], limits: Any) -> Any:
            calls.append(ref)
            return ToolOutcome("ok", "1")

    tools = ToolRegistry()

    def remote(x: int) -> int:
        return x

    tools.register(remote, sandbox=Executor())
    agent = Agent(client=ScriptedModel([text("done")]), tools=tools)
    await agent.warmup()
    assert calls == []
