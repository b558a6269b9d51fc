"""A raising tool logged through the stdlib (structlog not configured): the record's message text
carries what the structlog path's fields carry (the tool, the call id, the run id, the step, the
exception type, then the traceback), not just "tool raised", which was all a plain
`logging.basicConfig()` showed. The fields stay on the record as attributes (`extra=`)."""

from __future__ import annotations

import logging

import pytest
import structlog

from agentloop import Agent, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


async def test_tool_raised_through_stdlib_logging_names_tool_call_run_and_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert not structlog.is_configured()  # the stdlib path: what an application gets by default
    tools = ToolRegistry()

    @tools.tool
    async def lookup(key: str) -> str:
        """Look a key up."""
        raise KeyError(key)

    model = ScriptedModel([tool_calls(call("lookup", {"key": "k1"}, id="call-7")), text("sorry")])
    with caplog.at_level(logging.WARNING, logger="agentloop"):
        result = await Agent(client=model, tools=tools).run("go")
    [entry] = [r for r in caplog.records if r.getMessage().startswith("tool raised")]
    line, _, rest = entry.getMessage().partition("\n")
    for field in (
        "tool=lookup",
        "tool_call_id=call-7",
        f"run_id={result.run_id}",
        "step=1",
        "exc_type=KeyError",
    ):
        assert field in line, (field, line)
    assert rest == result.tool_calls[0].traceback.rstrip("\n")  # type: ignore[union-attr]
    assert rest.startswith("Traceback") and "raise KeyError(key)" in rest
    assert (entry.tool, entry.tool_call_id, entry.run_id) == ("lookup", "call-7", result.run_id)  # type: ignore[attr-defined]


async def test_the_message_text_is_utf8_even_when_the_exception_holds_a_lone_surrogate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tools = ToolRegistry()

    @tools.tool
    async def bad() -> str:
        """Raises with a message decoded with surrogateescape."""
        raise ValueError("lone \udc80 byte")

    model = ScriptedModel([tool_calls(call("bad", {})), text("done")])
    with caplog.at_level(logging.WARNING, logger="agentloop"):
        await Agent(client=model, tools=tools).run("go")
    [entry] = [r for r in caplog.records if r.getMessage().startswith("tool raised")]
    assert (
        "ValueError: lone \ufffd byte" in entry.getMessage().encode("utf-8").decode()
    )  # a handler can write it
