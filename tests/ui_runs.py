"""Real runs journaled for the run-inspector tests (tests/test_ui*.py) and the screenshots.

Every run goes through `Agent` with a `ScriptedModel` (or the fake router, for streaming), so the
journal is exactly what a user's runs would leave: every outcome type, an approval pause, a
failure, a step limit, a crash (a cancelled process) and its resume.
"""

from __future__ import annotations

from typing import Any

import anyio

from agentloop import (
    Agent,
    APIError,
    FluxClient,
    Limits,
    RunLimitExceeded,
    SQLiteJournal,
    ToolCallFinished,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

SCRIPT_RESULT = '<script>document.title="pwned"</script><b>bold</b>'


def make_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def get_weather(city: str) -> str:
        """Current weather for a city."""
        return f"Sunny, 24°C in {city}"

    @tools.tool
    async def fetch_page(url: str) -> str:
        """Fetch a web page."""
        return SCRIPT_RESULT

    @tools.tool
    async def divide(a: float, b: float) -> float:
        """Divide a by b."""
        return a / b

    @tools.tool(limits=Limits(timeout=0.05))
    async def slow_search(query: str) -> str:
        """A search that hangs."""
        await anyio.sleep_forever()
        return "never"

    @tools.tool(requires_approval=True)
    async def refund(order: str, amount: float) -> str:
        """Refund an order (needs a human's approval)."""
        return f"refunded {amount} on {order}"

    @tools.tool(idempotent=True)
    async def read_order(order: str) -> str:
        """Read an order (idempotent)."""
        return f"order {order}: 2 items"

    return tools


class Crash(Exception):
    pass


async def _interrupt(agent: Agent, prompt: str, run_id: str, started: anyio.Event) -> None:
    """Run until `started` is set (a tool is mid-flight), then cancel: what a killed process leaves."""
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def go() -> None:
                await agent.run(prompt, run_id=run_id)

            tg.start_soon(go)

            async def stop() -> None:
                await started.wait()
                scope.cancel()

            tg.start_soon(stop)


async def build_journal(path: str, with_stream: bool = True) -> dict[str, Any]:
    """Journal one run of each kind in `path`; returns {name: run_id}."""
    journal = SQLiteJournal(path)
    tools = make_tools()
    ids: dict[str, Any] = {}

    def agent(script: Any, **kw: Any) -> Agent:
        return Agent(
            client=ScriptedModel(script),
            tools=tools,
            journal=journal,
            model=kw.pop("model", "flux-auto"),
            **kw,
        )

    # final, two parallel calls
    await agent(
        [
            tool_calls(
                call("get_weather", {"city": "Lisbon"}, id="w1"),
                call("get_weather", {"city": "Porto"}, id="w2"),
            ),
            text("Lisbon and Porto are both sunny, 24°C."),
        ]
    ).run("What's the weather in Lisbon and Porto?", run_id="weather")
    ids["final"] = "weather"
    # the same prompt with another model: for compare
    await agent(
        [
            tool_calls(call("get_weather", {"city": "Lisbon"}, id="v1")),
            text("Lisbon is sunny."),
        ],
        model="flux-fast",
    ).run("What's the weather in Lisbon and Porto?", run_id="weather-fast")
    ids["compare"] = "weather-fast"
    # every failing outcome in one step, and a tool result that is HTML
    await agent(
        [
            tool_calls(
                call("no_such_tool", {}, id="e1"),
                call("divide", '{"a": 1, "b": ', id="e2"),
                call("divide", {"a": 1, "b": 0}, id="e3"),
                call("slow_search", {"query": "x"}, id="e4"),
                call("fetch_page", {"url": "https://example.test/"}, id="e5"),
            ),
            text("Some tools failed; the page says <b>hello</b>."),
        ]
    ).run("Try everything <img src=x onerror=alert(1)>", run_id="errors")
    ids["errors"] = "errors"
    # paused for approval
    paused = await agent([tool_calls(call("refund", {"order": "A-17", "amount": 20}, id="r1"))]).run(
        "Refund order A-17", run_id="refund"
    )
    assert paused.stop_reason == "approval_required"
    ids["paused"] = "refund"

    # failed: the endpoint errors on step 2
    def failing(request: Any) -> Any:
        if request.step == 1:
            return tool_calls(call("read_order", {"order": "9"}, id="f1"))
        raise APIError("FluxRouter answered 503: overloaded")

    try:
        await agent(failing).run("Read order 9", run_id="failed")
    except APIError:
        pass
    ids["failed"] = "failed"
    # step limit
    try:
        await agent(lambda r: tool_calls(call("read_order", {"order": str(r.step)})), max_steps=2).run(
            "Read every order", run_id="looping"
        )
    except RunLimitExceeded:
        pass
    ids["step_limit"] = "looping"
    # a crash mid-tool, then its resume: the idempotent call re-runs, the other is not re-run
    started = anyio.Event()
    read_done = anyio.Event()  # the crash comes once read_order's outcome is journaled: replayed on resume
    crash_tools = make_tools()

    def watch(event: Any) -> None:  # ToolCallFinished is emitted after the outcome is committed
        if isinstance(event, ToolCallFinished) and event.record.name == "read_order":
            read_done.set()

    @crash_tools.tool
    async def charge(order: str) -> str:
        """Charge an order (not idempotent)."""
        await read_done.wait()
        started.set()
        await anyio.sleep_forever()
        return "charged"

    crashing = Agent(
        client=ScriptedModel(
            [
                tool_calls(
                    call("read_order", {"order": "5"}, id="c1"), call("charge", {"order": "5"}, id="c2")
                ),
            ]
        ),
        tools=crash_tools,
        journal=journal,
        observers=[watch],
    )
    await _interrupt(crashing, "Charge order 5", "crashed", started)
    ids["interrupted"] = "crashed"
    started = anyio.Event()
    read_done = anyio.Event()
    await _interrupt(
        crashing.__class__(
            client=ScriptedModel(
                [
                    tool_calls(
                        call("read_order", {"order": "6"}, id="d1"), call("charge", {"order": "6"}, id="d2")
                    ),
                ]
            ),
            tools=crash_tools,
            journal=journal,
            observers=[watch],
        ),
        "Charge order 6",
        "resumed",
        started,
    )
    await agent([text("Order 6: charge outcome unknown, please check.")]).resume("resumed")
    ids["resumed"] = "resumed"
    if with_stream:
        async with FakeFluxRouter(
            [
                tool_calls(call("get_weather", {"city": "Oslo"}, id="s1")),
                text("Oslo: sunny."),
            ]
        ) as router:
            async with FluxClient(base_url=router.base_url, api_key="test") as client:
                streaming = Agent(client=client, tools=tools, journal=journal)
                async with streaming.stream("Weather in Oslo?", run_id="streamed") as events:
                    async for _ in events:
                        pass
        ids["streamed"] = "streamed"
    journal.close()
    return ids


TOOLS = make_tools()  # `agentloop ui --allow-resume --tools ui_runs:TOOLS` in the browser tests
