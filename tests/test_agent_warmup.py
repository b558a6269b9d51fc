"""`Agent.warmup()` rehearses the run path, and nobody sees it.

Hostile: the agent under test has a journal, observers, a tool, an approval predicate, an error
formatter and instructions that all record every call, a client that records every request, and
the `agentloop` logger at DEBUG; after `warmup()` none of them saw anything, and the first real
run is answered as usual, its events and journal entries its own. Whether the first run got
faster is a timing: benchmarks/bench_first_request.py. Both backends.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentloop import Agent, SQLiteJournal, ToolRegistry
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


class Witness:
    """Everything the user's side of an agent can be called through, recording each call."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

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

    def tools(self) -> ToolRegistry:
        registry = ToolRegistry()

        def tool(x: int) -> int:  # the rehearsal's own tool is named `tool` too: it must not be this one
            self.seen.append(("tool", x))
            return x

        registry.register(tool)
        return registry


def _agent(client: Any, witness: Witness, journal: Any) -> Agent[Any, Any]:
    return Agent(
        client=client,
        tools=witness.tools(),
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
    agent = _agent(model, witness, journal)
    threads = set(threading.enumerate())
    tasks = len(anyio.get_running_tasks())
    with caplog.at_level(logging.DEBUG, logger="agentloop"):
        await agent.warmup()
        assert caplog.records == []  # not a line logged for the rehearsal's runs
    assert set(threading.enumerate()) == threads  # its tool is async: no worker thread
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
