"""A tool that quotes the client's API key (in what it raises or returns) never hands it on.

README: "The API key never appears in a repr, log line or message". A tool is given the key (or
an SDK's error quotes it) and raises or returns it: the model's next request, the run's result,
its repr and JSON, the records' error and traceback, the stream's events, the journal file and
the log lines get `[redacted]` instead, in every tool mode.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import sandbox_tools as st

from agentloop import Agent, FluxClient, Limits, SQLiteJournal, ToolCaller, ToolRegistry
from agentloop.testing import FakeFluxRouter, call, text, tool_calls

pytestmark = pytest.mark.anyio

KEY = "sk-live-0123456789abcdef"  # what the client sends; the tools below quote it


async def raises_inline() -> None:
    raise RuntimeError(f"upstream refused key {KEY}")  # as an SDK's auth error quotes it


def raises_in_thread() -> None:
    raise RuntimeError(f"upstream refused key {KEY}")


def returns_in_thread() -> dict[str, Any]:
    return {"text": f"the key is {KEY}"}


async def run(tools: ToolRegistry, script: list[Any], tmp_path: Path) -> tuple[Any, list[Any], Any]:
    """The run through `agent.stream` (with a journal); its result, events and the router."""
    events: list[Any] = []
    async with FakeFluxRouter(script) as router, FluxClient(base_url=router.base_url, api_key=KEY) as client:
        agent = Agent(client=client, tools=tools, journal=SQLiteJournal(tmp_path / "runs.db"))
        async with agent.stream("go") as stream:
            async for event in stream:
                events.append(event)
    return stream.result, events, router


def assert_tool_side_clean(result: Any, router: Any) -> None:
    sent_back = [m for m in router.requests[-1].json["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in sent_back] == ["c1", "c2"]
    assert all(KEY not in m["content"] and "[redacted]" in m["content"] for m in sent_back), sent_back
    raised, returned = result.tool_calls
    assert raised.status != "ok" and returned.status == "ok"
    for record in result.tool_calls:
        assert all(KEY not in (f or "") for f in (record.content, record.error, record.traceback)), record
    assert raised.traceback and "[redacted]" in raised.traceback  # still there to debug with


@pytest.mark.parametrize("mode", ["inline", "thread"])
async def test_a_tool_quoting_the_client_key_never_hands_it_on(
    mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tools = ToolRegistry()
    tools.register(raises_inline if mode == "inline" else raises_in_thread, name="raises", sandbox=mode)  # type: ignore[arg-type]
    tools.register(returns_in_thread, name="returns", sandbox="thread")
    script = [tool_calls(call("raises", {}, id="c1"), call("returns", {}, id="c2")), text("done")]
    with caplog.at_level(logging.DEBUG, logger="agentloop"):
        result, events, router = await run(tools, script, tmp_path)
    assert result.output == "done"
    assert_tool_side_clean(result, router)
    assert KEY not in repr(result) and KEY not in result.to_json()
    assert all(KEY not in repr(e) for e in events)
    assert all(KEY not in json.dumps(r.__dict__, default=str) for r in caplog.records)
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert KEY.encode() not in stored


async def test_a_sandboxed_tool_quoting_the_key_never_hands_it_on(tmp_path: Path) -> None:
    """The child has no key of its own (its environment is an allowlist): the model hands it one,
    which the tool echoes and raises with; what the tool side makes of it is cut."""
    tools = ToolRegistry(limits=Limits(timeout=30))
    tools.register(st.boom, name="raises", sandbox="process")
    tools.register(st.echo, name="returns", sandbox="process")
    script = [
        tool_calls(
            call("raises", {"message": f"key {KEY}"}, id="c1"), call("returns", {"text": KEY}, id="c2")
        ),
        text("done"),
    ]
    result, _, router = await run(tools, script, tmp_path)
    assert result.output == "done"
    assert_tool_side_clean(result, router)


async def test_a_client_redacts_its_own_credentials_only() -> None:
    async with FluxClient(base_url="http://127.0.0.1:9/v1", api_key=KEY) as client:
        assert client.redact(f"a {KEY} b {KEY}") == "a [redacted] b [redacted]"
        assert client.redact("sk-live-other-key and text") == "sk-live-other-key and text"


async def test_tool_caller_redacts_as_a_run_does() -> None:
    """The seam a worker of your own calls tools through (`ToolCaller`), given the client's redactor."""
    tools = ToolRegistry()
    tools.register(raises_inline, name="raises")
    tools.register(returns_in_thread, name="returns", sandbox="thread")
    async with FluxClient(base_url="http://127.0.0.1:9/v1", api_key=KEY) as client:
        caller = ToolCaller(tools, redact=client.redact)
        raised = await caller.call("raises", {}, run_id="r1", call_id="c1")
        returned = await caller.call("returns", {})
    assert (raised.status, returned.status) == ("raised", "ok")
    assert "[redacted]" in raised.content and "[redacted]" in (raised.traceback or "")
    assert returned.content == '{"text":"the key is [redacted]"}'
    for record in (raised, returned):
        assert all(KEY not in (f or "") for f in (record.content, record.error, record.traceback))
    with pytest.raises(ValueError, match="redact must be a callable"):
        ToolCaller(tools, redact="no")  # type: ignore[arg-type]
