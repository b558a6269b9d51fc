"""`def` tools' worker threads, from outside: what anyio's `to_thread` gave a sync tool still holds
now that, on asyncio, agentloop runs it in daemon threads of its own (an abandoned call never keeps
the interpreter alive): the default thread limiter bounds them, the caller's contextvars are copied
in (not back), `anyio.from_thread` works inside, a cancelled run's tool sees `check_cancelled`, and
the thread is reused. Both backends."""

from __future__ import annotations

import contextvars
import threading
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pytest
import sniffio

from agentloop import Agent, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio
VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def _agent(tools: ToolRegistry, *calls: Any) -> Agent:
    return Agent(client=ScriptedModel([tool_calls(*calls), text("done")]), tools=tools)


async def test_sync_tools_stay_within_the_default_thread_limiter() -> None:
    limiter = anyio.to_thread.current_default_thread_limiter()
    old, limiter.total_tokens = limiter.total_tokens, 2
    lock, active, peak = threading.Lock(), [0], [0]
    tools = ToolRegistry()

    @tools.tool
    def busy(i: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        anyio.from_thread.run_sync(lambda: None)  # a round trip to the loop while holding a slot
        with lock:
            active[0] -= 1
        return i

    try:
        result = await _agent(tools, *[call("busy", {"i": i}) for i in range(6)]).run("go")
    finally:
        limiter.total_tokens = old
    assert [r.status for r in result.tool_calls] == ["ok"] * 6
    assert 1 <= peak[0] <= 2


async def test_a_sync_tool_sees_a_copy_of_the_callers_contextvars() -> None:
    seen: list[Any] = []
    tools = ToolRegistry()

    @tools.tool
    def peek() -> str:
        seen.append(VAR.get())
        VAR.set("set in the tool")  # a copy: never seen by the caller
        try:
            seen.append(sniffio.current_async_library())
        except sniffio.AsyncLibraryNotFoundError:
            seen.append(None)  # as anyio's workers: the thread runs no event loop
        return "ok"

    token = VAR.set("the caller's")
    try:
        await _agent(tools, call("peek", {})).run("go")
        assert VAR.get() == "the caller's"
    finally:
        VAR.reset(token)
    assert seen == ["the caller's", None]


async def test_a_sync_tool_can_call_back_into_the_event_loop(anyio_backend: str) -> None:
    tools = ToolRegistry()

    async def on_the_loop(x: int) -> tuple[int, str]:
        await anyio.lowlevel.checkpoint()
        return x * 2, sniffio.current_async_library()

    @tools.tool
    def twice(x: int) -> str:
        doubled, library = anyio.from_thread.run(on_the_loop, x)
        return f"{doubled} on {library}"

    result = await _agent(tools, call("twice", {"x": 21})).run("go")
    assert result.messages[-2]["content"] == f"42 on {anyio_backend}"


async def test_a_cancelled_runs_sync_tool_sees_it_with_check_cancelled() -> None:
    entered, release, done = anyio.Event(), threading.Event(), threading.Event()
    saw: list[str] = []
    tools = ToolRegistry()

    @tools.tool
    def cooperative() -> str:
        anyio.from_thread.run_sync(entered.set)
        release.wait()
        try:
            anyio.from_thread.check_cancelled()
            saw.append("not cancelled")
        except BaseException as e:  # the backend's cancellation exception
            saw.append(type(e).__name__)
        finally:
            done.set()
        return "late"

    async with anyio.create_task_group() as tg:
        tg.start_soon(_agent(tools, call("cooperative", {})).run, "go")
        await entered.wait()
        tg.cancel_scope.cancel()
    release.set()
    assert await anyio.to_thread.run_sync(done.wait, 60)
    assert saw == [anyio.get_cancelled_exc_class().__name__]


async def test_one_call_after_another_reuses_the_thread(anyio_backend: str) -> None:
    threads: list[threading.Thread] = []
    tools = ToolRegistry()

    @tools.tool
    def where(i: int) -> int:
        threads.append(threading.current_thread())
        return i

    model = ScriptedModel(
        [tool_calls(call("where", {"i": 1})), tool_calls(call("where", {"i": 2})), text("done")]
    )
    await Agent(client=model, tools=tools).run("go")
    assert len(threads) == 2 and all(t is not threading.main_thread() and t.daemon for t in threads)
    if anyio_backend == "asyncio":  # agentloop's cache idles a thread before its caller resumes
        assert threads[0] is threads[1]  # (trio's may hand the next call to another of its threads)


async def test_a_sync_tool_raising_stop_iteration_is_a_raised_outcome() -> None:
    # a future cannot hold StopIteration (asyncio refuses it with a TypeError)
    tools = ToolRegistry()

    @tools.tool
    def exhausted() -> str:
        return next(iter([]))

    result = await _agent(tools, call("exhausted", {})).run("go")
    assert result.tool_calls[0].status == "raised"
    assert result.output == "done"
