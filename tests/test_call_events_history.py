"""Every call gets ToolCallStarted then ToolCallFinished; the history stays valid JSON (issue #13).

- Events: whatever a call's outcome (ran, raised, refused before it ran, skipped, detected as a
  loop, rejected or overridden by a human), a streamed run shows it start, then finish, once.
- History: a call whose arguments are not a JSON object enters the conversation with "{}", so
  the next request is valid for every provider (flux-auto may route it to another); the model's
  raw text stays on the record and in the error it is told. Both wires, over HTTP.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentloop import (
    Agent,
    FluxClient,
    Limits,
    Override,
    Reject,
    RunLimitExceeded,
    RunLimits,
    ToolCallFinished,
    ToolCallLimitExceeded,
    ToolCallStarted,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


def tools() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool
    async def add(a: int, b: int) -> int:
        return a + b

    @registry.tool
    async def explode() -> str:
        raise RuntimeError("boom")

    @registry.tool
    async def unencodable() -> object:
        return object()

    @registry.tool(limits=Limits(output_bytes=10))
    async def chatty() -> str:
        return "x" * 100

    @registry.tool(limits=Limits(timeout=0.01))
    async def slow() -> str:
        import anyio

        await anyio.sleep_forever()
        return "never"

    @registry.tool(requires_approval=True)
    async def delete(path: str) -> str:
        return f"deleted {path}"

    return registry


async def stream(agent: Agent, **kw: Any) -> list[Any]:
    seen: list[Any] = []
    async with agent.stream(**kw) as events:
        async for event in events:
            seen.append(event)
    return seen


def assert_started_then_finished(events: list[Any]) -> dict[str, str]:
    """Each call id: exactly one Started, then exactly one Finished. Returns id -> status."""
    started: dict[str, int] = {}
    finished: dict[str, tuple[int, str]] = {}
    for i, e in enumerate(events):
        if isinstance(e, ToolCallStarted):
            assert e.tool_call_id not in started, f"two ToolCallStarted for {e.tool_call_id}"
            started[e.tool_call_id] = i
        elif isinstance(e, ToolCallFinished):
            assert e.record.id not in finished, f"two ToolCallFinished for {e.record.id}"
            finished[e.record.id] = (i, e.record.status)
    assert started.keys() == finished.keys()
    for cid, (at, _) in finished.items():
        assert started[cid] < at, f"{cid} finished before it started"
    return {cid: status for cid, (_, status) in finished.items()}


async def test_every_outcome_kind_gets_started_then_finished_when_streamed() -> None:
    model = ScriptedModel(
        [
            tool_calls(
                call("add", {"a": 1, "b": 2}, id="ok"),
                call("explode", {}, id="raised"),
                call("add", '{"a": 1,', id="bad_json"),
                call("add", {"a": "x"}, id="schema"),
                call("nope", {}, id="unknown"),
                call("unencodable", {}, id="invalid_result"),
                call("chatty", {}, id="output_limit"),
                call("slow", {}, id="timeout"),
            ),
            text("done"),
        ]
    )
    events = await stream(Agent(client=model, tools=tools()), prompt="go")
    assert assert_started_then_finished(events) == {
        "ok": "ok",
        "raised": "raised",
        "bad_json": "invalid_arguments",
        "schema": "invalid_arguments",
        "unknown": "unknown_tool",
        "invalid_result": "invalid_result",
        "output_limit": "output_limit",
        "timeout": "timeout",
    }


async def test_loop_detected_and_skipped_calls_get_both_events() -> None:
    same = call("add", {"a": 1, "b": 1})
    seen: list[Any] = []
    model = ScriptedModel([tool_calls(same), tool_calls(same), tool_calls(same)])  # a loop spans steps
    agent = Agent(client=model, tools=tools(), limits=RunLimits(loop_threshold=2), observers=[seen.append])
    with pytest.raises(RunLimitExceeded):
        await agent.run("go")
    assert sorted(assert_started_then_finished(seen).values()) == ["loop_detected", "loop_detected", "ok"]

    seen.clear()
    model = ScriptedModel(
        [
            tool_calls(
                call("add", {"a": 1, "b": 1}), call("add", {"a": 2, "b": 2}), call("add", {"a": 3, "b": 3})
            )
        ]
    )
    agent = Agent(client=model, tools=tools(), limits=RunLimits(max_tool_calls=1), observers=[seen.append])
    with pytest.raises(ToolCallLimitExceeded):
        await agent.run("go")
    assert sorted(assert_started_then_finished(seen).values()) == ["ok", "skipped", "skipped"]


async def test_rejected_and_overridden_calls_get_both_events_on_resume() -> None:
    model = ScriptedModel(
        [
            tool_calls(call("delete", {"path": "/a"}, id="a"), call("delete", {"path": "/b"}, id="b")),
            text("ok"),
        ]
    )
    agent = Agent(client=model, tools=tools())
    paused = await agent.run("clean up")
    assert paused.paused
    seen: list[Any] = []
    agent.observers = (seen.append,)
    await agent.resume(paused, approvals={"a": Reject("no"), "b": Override("pretend")})
    assert assert_started_then_finished(seen) == {"a": "rejected", "b": "overridden"}


# --- history -------------------------------------------------------------------------------------

BAD = ['{"a": 1,', "[1, 2]", "", "null", "not json at all"]


def sent_arguments(request: Any) -> list[Any]:
    """The arguments of every earlier tool call, as the request carries them (either wire)."""
    if request.wire == "openai":
        return [
            c["function"]["arguments"] for m in request.json["messages"] for c in m.get("tool_calls") or ()
        ]
    return [
        b["input"]
        for m in request.json["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_use"
    ]


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_invalid_arguments_enter_history_as_a_json_object(wire: str) -> None:
    calls = [call("add", raw, id=f"c{i}") for i, raw in enumerate(BAD)] + [
        call("add", '{"a": 1, "b": 2}', id="good")
    ]
    async with FakeFluxRouter([tool_calls(*calls), text("done")]) as router:
        url = router.base_url if wire == "openai" else router.anthropic_url
        async with FluxClient(base_url=url, api_key="test", stream=False) as client:
            result = await Agent(client=client, tools=tools()).run("go")
    assert result.output == "done"
    second = router.model_requests[1]
    for args in sent_arguments(second):
        value = json.loads(args) if isinstance(args, str) else args
        assert isinstance(value, dict), args
    by_id = {r.id: r for r in result.tool_calls}
    good = by_id["good"].raw_arguments
    if wire == "openai":  # valid object text is kept byte for byte
        assert sent_arguments(second)[-1] == good
    history = next(m for m in result.messages if m.get("tool_calls"))
    assert [c["function"]["arguments"] for c in history["tool_calls"]] == ["{}"] * len(BAD) + [good]
    for i, raw in enumerate(BAD):
        record = by_id[f"c{i}"]
        assert record.status == "invalid_arguments"
        # the model's own text stays on the record and in what it is told (the Anthropic wire
        # carries parsed JSON, so only the OpenAI wire has text that is not JSON; "" is read as {})
        if wire == "openai" and raw:
            assert record.raw_arguments == raw
            if raw != "null":  # null is read as {} (lenient), then fails the schema
                assert f"You sent: {raw}" in record.content
    assert by_id["good"].content == "3"


async def test_history_is_also_valid_when_streamed_and_resumed_from_json() -> None:
    model = ScriptedModel(
        [tool_calls(call("add", "{broken", id="x"), call("delete", {"path": "/a"}, id="d")), text("done")]
    )
    agent = Agent(client=model, tools=tools())
    paused = await agent.run("go")
    history = next(m for m in paused.messages if m.get("tool_calls"))
    assert history["tool_calls"][0]["function"]["arguments"] == "{}"
    from agentloop import RunResult

    done = await agent.resume(RunResult.from_json(paused.to_json()), approvals={"d": True})
    assert [r.status for r in done.tool_calls] == ["invalid_arguments", "ok"]
    assert done.tool_calls[0].raw_arguments == "{broken"
