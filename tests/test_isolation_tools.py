"""Cross-run isolation against tools that misbehave: one run's tool must not break its siblings.

Each case is a round on one shared FluxClient against the server of tests/test_isolation_server.py:
one run whose model calls the misbehaving tool, beside healthy runs (plain and streamed) that call
a well-behaved one. The healthy runs must finish with their own right answers; the misbehaving
tool's run must end with its failure fed back to the model (or, where the runtime says so, with
the exception it documents).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from test_isolation_server import Outcome, client_for, play_round, problems, serving, task_count

from agentloop import Agent, RunLimits, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

GUARD = 120  # seconds: a hang fails instead of hanging the suite (not a timing claim)


class PluginAbort(BaseException):
    """A BaseException of a library's own (as pytest's `Failed`, gevent's `Timeout`)."""


def hostile_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def echo(text: str) -> str:
        """Echo the text back."""
        return f"echo {text}"

    @tools.tool
    async def blocks_the_loop() -> str:
        """Blocks the event loop (a sync sleep in an async tool): the hostile act under test."""
        time.sleep(0.05)  # noqa: ASYNC251 (the hostile act under test)
        return "blocked"

    @tools.tool
    async def exits() -> str:
        """Calls sys.exit."""
        raise SystemExit(3)

    @tools.tool
    async def aborts() -> str:
        """Raises a BaseException of its own."""
        raise PluginAbort("abort from a plugin")

    @tools.tool
    def aborts_in_a_thread() -> str:
        """Raises a BaseException of its own, in a worker thread."""
        raise PluginAbort("abort from a thread")

    @tools.tool
    async def raises_a_group() -> str:
        """Raises a group of BaseExceptions of its own."""
        raise BaseExceptionGroup("several", [PluginAbort("one"), ValueError("two")])

    @tools.tool
    async def raises_cancelled() -> str:
        """Raises the backend's cancellation exception without being cancelled."""
        raise anyio.get_cancelled_exc_class()

    @tools.tool
    async def unserialisable() -> Any:
        """Returns what JSON cannot hold."""
        loop: dict[str, Any] = {"set": {1, 2}, "bytes": b"\xff\x00", "nan": float("nan"), "obj": object()}
        loop["self"] = loop
        return loop

    @tools.tool
    async def returns_a_generator() -> Any:
        """Returns a generator."""
        return (i for i in range(3))

    return tools


def _agent(client: Any) -> Agent[Any, Any]:
    return Agent(
        client=client, tools=hostile_tools(), model="m", limits=RunLimits(max_steps=4, loop_threshold=None)
    )


def _round(tool: str, backend: str, check: Callable[[Outcome], None]) -> None:
    plan = [(f"call_{tool}", "run"), (f"call_{tool}", "stream")] + [
        ("healthy", "run"),
        ("healthy", "stream"),
    ] * 3

    async def main() -> None:
        async with client_for(server.url, "lean") as client:
            agent = _agent(client)
            assert problems(await play_round(agent, [("healthy", "run")])) == []
            tasks = task_count()
            with anyio.fail_after(GUARD):
                outcomes = await play_round(agent, plan)
            assert len(outcomes) == len(plan)  # every run ended with an outcome
            assert problems([o for o in outcomes if o.kind == "healthy"]) == []
            for o in outcomes[:2]:
                check(o)
            assert task_count() == tasks

    with serving() as server:
        anyio.run(main, backend=backend)


def _fed_back(*words: str) -> Callable[[Outcome], None]:
    """The tool's run finished: the model was told, in a text naming each of `words`."""

    def check(o: Outcome) -> None:
        assert o.error is None, repr(o.error)
        assert o.output.startswith(f"done {o.index}: ")
        assert all(w in o.tool_contents[0] for w in words), o.tool_contents

    return check


backends = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


@backends
def test_a_tool_blocking_the_loop_only_delays_its_siblings(anyio_backend: str) -> None:
    """README: an "inline" tool is awaited in the event loop, so a sync sleep in it blocks every run
    for that long (use sandbox="thread" for blocking code); it must cost the siblings time, nothing else."""
    _round(
        "blocks_the_loop",
        anyio_backend,
        lambda o: (o.error is None and o.output.endswith("blocked")) or pytest.fail(repr(o)),
    )


@backends
def test_sys_exit_in_a_tool_is_fed_back(anyio_backend: str) -> None:
    _round("exits", anyio_backend, _fed_back("SystemExit"))


@backends
@pytest.mark.parametrize(
    ("tool", "words"),
    [
        ("aborts", ("PluginAbort",)),
        ("aborts_in_a_thread", ("PluginAbort",)),
        ("raises_a_group", ("BaseExceptionGroup",)),
    ],
)
def test_a_base_exception_of_a_tools_own_is_fed_back(
    anyio_backend: str, tool: str, words: tuple[str, ...]
) -> None:
    """A BaseException subclass that is not KeyboardInterrupt, GeneratorExit or a real cancellation
    (pytest's `Failed`, gevent's `Timeout`, a plugin's own) is the tool's failure: before the fix it
    left `Agent.run` raw and tore down every sibling run in the caller's task group."""
    _round(tool, anyio_backend, _fed_back(*words))


@backends
def test_a_tool_raising_the_cancellation_exception_uncancelled_is_fed_back(anyio_backend: str) -> None:
    # trio's Cancelled has no public constructor: the tool's TypeError is what it raised
    word = "CancelledError" if anyio_backend == "asyncio" else "TypeError"
    _round("raises_cancelled", anyio_backend, _fed_back(word))


@backends
@pytest.mark.parametrize("tool", ["unserialisable", "returns_a_generator"])
def test_a_result_json_cannot_hold_is_still_an_answer(anyio_backend: str, tool: str) -> None:
    def check(o: Outcome) -> None:
        assert o.error is None, repr(o.error)
        assert o.output.startswith(f"done {o.index}: ") and o.tool_contents[0]

    _round(tool, anyio_backend, check)


@backends
def test_keyboard_interrupt_from_a_tool_still_stops_the_run(anyio_backend: str) -> None:
    """KeyboardInterrupt is not contained: a Ctrl-C lands in whatever code runs, a tool's too, and
    must stop the program (the runtime cannot tell it from a tool raising one)."""
    tools = ToolRegistry()

    @tools.tool
    async def interrupted() -> str:
        """Raises KeyboardInterrupt."""
        raise KeyboardInterrupt

    caught: list[BaseException] = []

    async def main() -> None:
        agent = Agent(client=ScriptedModel([tool_calls(call("interrupted", {})), text("no")]), tools=tools)
        try:
            await agent.run("go")
        except KeyboardInterrupt as e:
            caught.append(e)

    anyio.run(main, backend=anyio_backend)
    assert len(caught) == 1


def test_a_tool_cancelling_its_own_task_cancels_only_its_run() -> None:
    """asyncio: a tool that cancels the task it runs in (`current_task().cancel()`) cancels its
    run as the caller would (the runtime cannot tell the two apart: asyncio.timeout() cancels the
    same way), so that run raises CancelledError; runs in other tasks go on and finish."""
    tools = ToolRegistry()

    @tools.tool
    async def cancels_itself() -> str:
        """Cancels its own task."""
        return await _cancel_own_task()

    async def main() -> None:
        async with client_for(server.url, "lean") as client:
            sibling = _agent(client)
            agent = Agent(client=client, tools=tools, model="m")
            cancelled: list[bool] = []

            async def hostile() -> None:
                try:
                    await agent.run("run 0 call_cancels_itself")
                except asyncio.CancelledError:
                    cancelled.append(True)
                    raise

            task = asyncio.get_running_loop().create_task(hostile())  # the caller's own task, not a group's
            outcomes = await play_round(sibling, [("healthy", "run"), ("healthy", "stream")] * 3)
            await asyncio.wait([task])
            assert task.cancelled() and cancelled == [True]
            assert problems(outcomes) == []

    with serving() as server:
        anyio.run(main, backend="asyncio")


def test_a_tool_leaving_an_orphan_task_does_not_touch_other_runs() -> None:
    """asyncio: a tool that starts a task nobody owns. The runtime cannot reap it (it is not in any
    task group of the run's); it must not break the sibling runs, nor keep its own run from ending."""
    tools = ToolRegistry()
    release = asyncio.Event()
    orphans: list[asyncio.Task[None]] = []

    @tools.tool
    async def spawns() -> str:
        """Starts an orphan task."""
        orphans.append(asyncio.get_running_loop().create_task(release.wait()))  # type: ignore[arg-type]
        return "spawned"

    async def main() -> None:
        async with client_for(server.url, "lean") as client:
            sibling = _agent(client)
            agent = Agent(client=client, tools=tools, model="m")
            result = await agent.run("run 0 call_spawns")
            outcomes = await play_round(sibling, [("healthy", "run"), ("healthy", "stream")] * 3)
            assert result.output == "done 0: spawned" and problems(outcomes) == []
            assert len(orphans) == 1 and not orphans[0].done()  # still there: it was never the run's
            release.set()
            await orphans[0]

    with serving() as server:
        anyio.run(main, backend="asyncio")


async def _cancel_own_task() -> str:
    """What the self-cancelling tools do: cancel the asyncio task they run in, then wait once."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)
    return "never"


def _self_cancelling(calls: int) -> Agent[Any, Any]:
    tools = ToolRegistry()

    @tools.tool
    async def cancels_itself(n: int = 0) -> str:
        """Cancels the task it runs in."""
        return await _cancel_own_task()

    script = [tool_calls(*[call("cancels_itself", {"n": i}) for i in range(calls)]), text("done")]
    return Agent(client=ScriptedModel(script), tools=tools)


@pytest.mark.parametrize("calls", [1, 2])
def test_a_streamed_run_whose_tool_cancels_its_task_does_not_end_silently(calls: int) -> None:
    seen: list[str] = []
    ended: list[str] = []

    async def main() -> None:
        try:
            async with _self_cancelling(calls).stream("go") as events:
                async for event in events:
                    seen.append(type(event).__name__)
        except Exception as e:  # a typed error is a fine end; a clean end without RunFinished is not
            ended.append(type(e).__name__)
        else:
            ended.append("clean")

    anyio.run(main, backend="asyncio")
    # a typed error saying what happened, or (the cancel reached only a task of the dispatcher's
    # own: that call ends "cancelled") a finished run; never a clean end without RunFinished
    assert ended == ["RunError"] or (ended == ["clean"] and seen[-1] == "RunFinished"), (ended, seen)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_cancel_scope_around_a_stream_still_cancels_it_quietly(backend: str) -> None:
    """The other side of the test above: a real cancellation (a scope the caller cancels while
    the run streams) is a cancellation, never turned into an error."""
    tools = ToolRegistry()

    @tools.tool
    async def step(n: int) -> str:
        """One step."""
        await anyio.lowlevel.checkpoint()
        return f"step {n}"

    script = [tool_calls(call("step", {"n": i})) for i in range(5)] + [text("done")]
    seen: list[str] = []

    async def main() -> bool:
        with anyio.CancelScope() as scope:
            async with Agent(client=ScriptedModel(script), tools=tools).stream("go") as events:
                async for event in events:
                    seen.append(type(event).__name__)
                    if type(event).__name__ == "ToolCallFinished":
                        scope.cancel()
        return scope.cancelled_caught

    assert anyio.run(main, backend=backend) is True
    assert "RunFinished" not in seen


def test_a_tool_cancelling_a_task_of_the_dispatchers_own_ends_only_its_call() -> None:
    """When the self-cancelling call runs in a task of the dispatcher's group (the calls after the
    first that waits do), the cancel reaches only agentloop's own task: that call ends "cancelled"
    and the run goes on. (The first call runs in the step's task, which in `Agent.run` is the
    caller's: cancelling it is cancelling the caller, see the test above.)"""
    tools = ToolRegistry()

    @tools.tool
    async def waits() -> str:
        """Waits once, so the calls after it start as tasks."""
        await anyio.lowlevel.checkpoint()
        return "waited"

    @tools.tool
    async def cancels_itself() -> str:
        """Cancels the task it runs in."""
        return await _cancel_own_task()

    script = [tool_calls(call("waits", {}), call("cancels_itself", {})), text("done")]
    agent = Agent(client=ScriptedModel(script), tools=tools)
    results: list[Any] = []

    async def main() -> None:
        results.append(await agent.run("go"))

    anyio.run(main, backend="asyncio")
    (result,) = results
    assert result.output == "done"
    assert [(r.name, r.status) for r in result.tool_calls] == [
        ("waits", "ok"),
        ("cancels_itself", "cancelled"),
    ]
