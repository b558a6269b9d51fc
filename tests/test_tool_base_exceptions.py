"""A tool raising a BaseException that is neither KeyboardInterrupt nor a cancellation: the call
ends as "raised", fed back to the model like any tool exception, and its sibling runs.

GeneratorExit (`raise GeneratorExit`, or a generator's misuse) left `Agent.run` as anyio's bare
`BaseExceptionGroup` when the call had a sibling, as a bare GeneratorExit alone, and a "thread"
tool's on asyncio as "RuntimeError: coroutine ignored GeneratorExit" (asyncio throws a future's
exception into the task, and a thrown GeneratorExit closes the coroutine). A KeyboardInterrupt
still ends the run, as before.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from agentloop import Agent, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls


class Boom(BaseException):
    """A library's own BaseException (as pytest's Failed, gevent's Timeout)."""


def registry(exc: type[BaseException], mode: str) -> ToolRegistry:
    tools = ToolRegistry()
    if mode == "inline":

        @tools.tool(name="bad")
        async def bad_inline() -> str:
            """Raises."""
            raise exc("the tool's own")

    else:

        @tools.tool(name="bad")
        def bad_thread() -> str:
            """Raises."""
            raise exc("the tool's own")

    @tools.tool
    async def good() -> str:
        """Answers."""
        return "fine"

    return tools


async def run(tools: ToolRegistry) -> Any:
    model = ScriptedModel([tool_calls(call("bad", {}), call("good", {})), text("done")])
    return await Agent(client=model, tools=tools).run("go")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["inline", "thread"])
@pytest.mark.parametrize("exc", [GeneratorExit, Boom], ids=["GeneratorExit", "Boom"])
async def test_a_tools_own_base_exception_is_fed_back_as_raised(exc: type[BaseException], mode: str) -> None:
    result = await run(registry(exc, mode))
    assert result.output == "done"
    bad, good = result.tool_calls
    assert (bad.status, good.status) == ("raised", "ok")
    assert bad.content == f"Tool 'bad' raised {exc.__name__}: the tool's own"
    assert bad.traceback is not None and "raise exc(" in bad.traceback  # the tool's own frame


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("mode", ["inline", "thread"])
def test_keyboard_interrupt_beside_a_sibling_still_ends_the_run(backend: str, mode: str) -> None:
    caught: list[BaseException] = []

    async def main() -> None:
        try:
            await run(registry(KeyboardInterrupt, mode))
        except BaseException as e:  # what comes out is the assertion
            caught.append(e)

    anyio.run(main, backend=backend)
    (e,) = caught
    group = isinstance(e, BaseExceptionGroup) and e.subgroup(KeyboardInterrupt) is not None
    assert isinstance(e, KeyboardInterrupt) or group, repr(e)
