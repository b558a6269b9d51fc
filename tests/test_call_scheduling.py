"""How one step's tool calls are scheduled, seen from outside: a call that never waits runs
without a task of its own, a call that waits shares the event loop with its siblings, and nothing
of that is visible to the tools, the run or the caller.

Every test runs the same things with one call alone and with two or three calls in one message,
in every order of "finishes at once" and "waits": cancellation (a deadline, the caller), a tool's
`SystemExit`, a tool's own `CancelledError`, context variables, locks and cancel scopes a tool holds
across a wait, calls that need each other to finish, the order of the results.
"""

from __future__ import annotations

import contextvars
from typing import Any

import anyio
import pytest
from helpers import assert_valid_conversation

from agentloop import Agent, RunLimits, TimeLimitExceeded, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio

# the message's calls: "now" finishes without waiting, "hang" waits until cancelled
SHAPES = [
    ["hang"],
    ["hang", "hang"],
    ["now", "hang"],
    ["hang", "now"],
    ["now", "hang", "now"],
]

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


class Seen:
    """What the tools saw: started, cancelled, cleaned up."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.cancelled: list[int] = []
        self.cleaned: list[int] = []
        self.all_waiting = anyio.Event()
        self.waiting = 0
        self.expected = 0


def hanging_tools(seen: Seen) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def now(x: int) -> str:
        """Answers at once."""
        seen.started.append(x)
        return f"now {x}"

    @tools.tool
    async def hang(x: int) -> str:
        """Waits until cancelled."""
        seen.started.append(x)
        try:
            seen.waiting += 1
            if seen.waiting == seen.expected:
                seen.all_waiting.set()
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            seen.cancelled.append(x)
            raise
        finally:
            seen.cleaned.append(x)
        return "unreachable"

    return tools


def message(shape: list[str]) -> Any:
    return tool_calls(*(call(name, {"x": i}, id=f"c{i}") for i, name in enumerate(shape)))


def expected_statuses(shape: list[str]) -> list[str]:
    return ["ok" if name == "now" else "cancelled" for name in shape]


@pytest.mark.parametrize("shape", SHAPES, ids=["+".join(s) for s in SHAPES])
async def test_a_deadline_during_the_calls_cancels_exactly_the_waiting_ones(shape: list[str]) -> None:
    seen = Seen()
    agent = Agent(client=ScriptedModel([message(shape), text("unreached")]), tools=hanging_tools(seen))
    with pytest.raises(TimeLimitExceeded) as info:
        await agent.run("go", limits=RunLimits(timeout=0.05))
    partial = info.value.result
    hanging = [i for i, name in enumerate(shape) if name == "hang"]
    assert sorted(seen.started) == list(range(len(shape)))  # every call started, once
    assert sorted(seen.cancelled) == sorted(seen.cleaned) == hanging
    assert [r.status for r in partial.tool_calls] == expected_statuses(shape)
    assert [r.id for r in partial.tool_calls] == [f"c{i}" for i in range(len(shape))]  # the model's order
    for record in partial.tool_calls:
        if record.status == "cancelled":
            assert record.content == "Tool 'hang' was cancelled before it finished."
    assert partial.stop_reason == "timeout" and partial.steps == 1
    assert_valid_conversation(partial)


@pytest.mark.parametrize("shape", SHAPES, ids=["+".join(s) for s in SHAPES])
async def test_the_caller_cancelling_during_the_calls_cancels_them_and_the_run(shape: list[str]) -> None:
    seen = Seen()
    seen.expected = shape.count("hang")
    agent = Agent(client=ScriptedModel([message(shape), text("unreached")]), tools=hanging_tools(seen))
    outcome: list[object] = []

    async def run() -> None:
        try:
            outcome.append(await agent.run("go"))
        except BaseException as e:
            outcome.append(type(e))
            raise

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await seen.all_waiting.wait()  # every hanging call waits now
        tg.cancel_scope.cancel()
    assert outcome == [anyio.get_cancelled_exc_class()]  # the run ended with the cancellation itself
    hanging = [i for i, name in enumerate(shape) if name == "hang"]
    assert sorted(seen.started) == list(range(len(shape)))
    assert sorted(seen.cancelled) == sorted(seen.cleaned) == hanging


def failing_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def fine(x: int) -> str:
        """Answers after a wait."""
        await anyio.lowlevel.checkpoint()
        return f"fine {x}"

    @tools.tool
    async def quick(x: int) -> str:
        """Answers at once."""
        return f"quick {x}"

    @tools.tool
    async def exits(x: int) -> str:
        """Calls sys.exit, before or after a wait."""
        if x % 2:
            await anyio.lowlevel.checkpoint()
        raise SystemExit(3)

    return tools


EXIT_SHAPES = [["exits"], ["exits", "fine"], ["quick", "exits"], ["exits", "quick", "fine"]]


@pytest.mark.parametrize("first_waits", [False, True])
@pytest.mark.parametrize("shape", EXIT_SHAPES, ids=["+".join(s) for s in EXIT_SHAPES])
async def test_a_tool_calling_sys_exit_ends_its_call_alone_or_beside_others(
    shape: list[str], first_waits: bool
) -> None:
    calls = [call(name, {"x": i + first_waits}, id=f"c{i}") for i, name in enumerate(shape)]
    model = ScriptedModel([tool_calls(*calls), text("done")])
    result = await Agent(client=model, tools=failing_tools()).run("go")
    assert result.output == "done"
    for name, record in zip(shape, result.tool_calls, strict=True):
        if name == "exits":
            assert (record.status, record.error) == ("raised", "SystemExit")
            assert record.content == "Tool 'exits' raised SystemExit: 3"
        else:
            assert record.status == "ok" and record.content.startswith(name)
    assert_valid_conversation(result)


def own_cancel_tools() -> ToolRegistry:
    import asyncio

    tools = ToolRegistry()

    @tools.tool
    async def awaits_cancelled(x: int) -> str:
        """Awaits a future someone else cancelled: asyncio raises CancelledError in this task,
        which nobody cancelled (x odd: after a first wait)."""
        if x % 2:
            await asyncio.sleep(0)
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future
        return "unreachable"

    @tools.tool
    async def quick(x: int) -> str:
        """Answers at once."""
        return f"quick {x}"

    @tools.tool
    async def fine(x: int) -> str:
        """Answers after a wait."""
        await asyncio.sleep(0)
        return f"fine {x}"

    return tools


OWN_SHAPES = [
    ["awaits_cancelled"],
    ["awaits_cancelled", "fine"],
    ["quick", "awaits_cancelled"],
    ["awaits_cancelled", "quick", "fine"],
]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio's Cancelled cannot be raised by a tool
@pytest.mark.parametrize("first_waits", [False, True])
@pytest.mark.parametrize("shape", OWN_SHAPES, ids=["+".join(s) for s in OWN_SHAPES])
async def test_a_cancelled_error_the_tool_raises_itself_ends_its_call_not_the_step_or_run(
    shape: list[str], first_waits: bool
) -> None:
    # Before: alone, the tool's CancelledError ended the run with it; beside others it cancelled
    # every sibling and the run went on. Now both: the call "raised", its siblings unharmed.
    calls = [call(name, {"x": i + first_waits}, id=f"c{i}") for i, name in enumerate(shape)]
    model = ScriptedModel([tool_calls(*calls), text("done")])
    result = await Agent(client=model, tools=own_cancel_tools()).run("go")
    assert result.output == "done"
    for name, record in zip(shape, result.tool_calls, strict=True):
        if name == "awaits_cancelled":
            assert (record.status, record.error) == ("raised", "CancelledError")
            assert record.content.startswith("Tool 'awaits_cancelled' raised CancelledError")
        else:
            assert (record.status, record.content.split()[0]) == ("ok", name)
    assert_valid_conversation(result)


def context_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def sets(value: str) -> str:
        """Sets VAR in its own context, returns what it saw before."""
        before = VAR.get()
        VAR.set(value)
        return before

    @tools.tool
    async def reads(wait: bool) -> str:
        """Returns VAR, after a wait or not."""
        if wait:
            await anyio.lowlevel.checkpoint()
        return VAR.get()

    return tools


@pytest.mark.parametrize("wait", [False, True])
async def test_each_call_has_its_own_context_as_a_task_would(wait: bool) -> None:
    calls = [
        call("sets", {"value": "first"}),
        call("reads", {"wait": wait}),
        call("sets", {"value": "second"}),
        call("reads", {"wait": not wait}),
    ]
    model = ScriptedModel([tool_calls(*calls), text("done")])
    token = VAR.set("caller's")
    try:
        result = await Agent(client=model, tools=context_tools()).run("go")
        assert VAR.get() == "caller's"  # no call's value leaked into the caller
    finally:
        VAR.reset(token)
    # every call sees the caller's value, none a sibling's
    assert [r.content for r in result.tool_calls] == ["caller's"] * 4


@pytest.mark.parametrize("order", [["ping", "pong"], ["pong", "ping"], ["now", "pong", "now", "ping"]])
async def test_calls_that_need_each_other_run_concurrently(order: list[str]) -> None:
    tools = ToolRegistry()
    ping_sent, pong_sent = anyio.Event(), anyio.Event()

    @tools.tool
    async def ping() -> str:
        """Sends ping, waits for pong."""
        ping_sent.set()
        await pong_sent.wait()
        return "ping done"

    @tools.tool
    async def pong() -> str:
        """Waits for ping, sends pong."""
        await ping_sent.wait()
        pong_sent.set()
        return "pong done"

    @tools.tool
    async def now() -> str:
        """Answers at once."""
        return "now done"

    model = ScriptedModel([tool_calls(*(call(name) for name in order)), text("done")])
    with anyio.fail_after(10):  # run one after the other, they would wait forever
        result = await Agent(client=model, tools=tools).run("go")
    assert [r.content for r in result.tool_calls] == [f"{name} done" for name in order]


async def test_tools_holding_a_lock_and_a_cancel_scope_across_a_wait() -> None:
    tools = ToolRegistry()
    lock = anyio.Lock()
    inside: list[int] = []

    @tools.tool
    async def guarded(x: int) -> str:
        """Holds the shared lock and a cancel scope of its own across a wait."""
        with anyio.fail_after(60):
            async with lock:
                inside.append(x)
                await anyio.lowlevel.checkpoint()
                assert inside[-1] == x  # nobody else got in meanwhile
                return f"guarded {x}"

    model = ScriptedModel([tool_calls(*(call("guarded", {"x": i}) for i in range(4))), text("done")])
    result = await Agent(client=model, tools=tools).run("go")
    assert [r.content for r in result.tool_calls] == [f"guarded {i}" for i in range(4)]
    assert sorted(inside) == [0, 1, 2, 3]


async def test_results_keep_the_models_order_whoever_finishes_first() -> None:
    tools = ToolRegistry()
    finished: list[int] = []

    @tools.tool
    async def work(x: int, waits: int) -> str:
        """Waits `waits` times, then answers."""
        for _ in range(waits):
            await anyio.lowlevel.checkpoint()
        finished.append(x)
        return f"work {x}"

    waits = [3, 0, 2, 0, 1]
    model = ScriptedModel(
        [tool_calls(*(call("work", {"x": i, "waits": w}) for i, w in enumerate(waits))), text("done")]
    )
    result = await Agent(client=model, tools=tools).run("go")
    assert [r.content for r in result.tool_calls] == [f"work {i}" for i in range(5)]
    assert [m["tool_call_id"] for m in result.messages if m["role"] == "tool"] == [
        r.id for r in result.tool_calls
    ]
    # the calls that never waited finished before the first one, which waited three times
    assert finished.index(1) < finished.index(0) and finished.index(3) < finished.index(0)
