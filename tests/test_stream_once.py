"""One `agent.stream(...)` object is one run: entering it a second time (after it finished, or
while it is open) raises a typed `ConfigurationError` saying to call `agent.stream(...)` again,
not contextlib's bare AttributeError (round-3 outside-in finding)."""

from __future__ import annotations

import pytest

from agentloop import Agent, AgentloopError, ConfigurationError
from agentloop.testing import ScriptedModel, text

pytestmark = pytest.mark.anyio


async def drain(stream: object) -> str:
    async with stream as events:  # type: ignore[attr-defined]
        async for _ in events:
            pass
        return str(events.result.output)


async def test_entering_a_finished_stream_again_is_a_typed_error() -> None:
    model = ScriptedModel([text("one"), text("two")])
    s = Agent(client=model).stream("go")
    assert await drain(s) == "one"
    with pytest.raises(ConfigurationError, match=r"entered once.*call agent\.stream\(\.\.\.\) again") as info:
        await drain(s)
    assert isinstance(info.value, AgentloopError)
    assert len(model.requests) == 1  # the second entry started nothing
    assert await drain(Agent(client=model).stream("go")) == "two"  # a new stream is a new run


async def test_entering_an_open_stream_again_is_a_typed_error() -> None:
    model = ScriptedModel([text("one")])
    s = Agent(client=model).stream("go")
    async with s as events:
        with pytest.raises(ConfigurationError, match="entered once"):
            async with s:
                pass
        async for _ in events:
            pass
    assert events.result is not None and events.result.output == "one"  # the first run was not harmed
