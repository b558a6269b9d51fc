"""Per-run `instructions=` in a multi-turn conversation, through `Agent.run` / `Agent.stream` on
both wires, and through resume.

Before: `agent.run(messages=result.messages, instructions="...")` (the documented way to go on
with a conversation) silently ignored the per-run instructions, because the conversation already
started with the first run's system message. Now they replace that leading message for this run,
and the returned messages carry the new one. The agent's own instructions keep their behaviour:
a conversation that already has a system message keeps it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from wirehelp import WIRES, make_client, run_or_stream, system_text

from agentloop import Agent, RunContext, SQLiteJournal, ToolRegistry
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio

OLD = [
    {"role": "system", "content": "Answer in English."},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
]


def _copy(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(m) for m in messages]


@pytest.mark.parametrize("how", ["run", "stream"])
@pytest.mark.parametrize("wire", WIRES)
async def test_per_run_instructions_replace_the_leading_system_message(wire: str, how: str) -> None:
    messages = _copy(OLD)
    async with FakeFluxRouter([text("bonjour")]) as router, make_client(router, wire) as client:
        agent = Agent(client=client, instructions="Answer in English.")
        result = await run_or_stream(agent, how, "again", messages=messages, instructions="Answer in French.")
        sent = router.model_requests[0].json
    assert system_text(sent) == "Answer in French."
    assert result.messages[0] == {"role": "system", "content": "Answer in French."}
    assert [m["role"] for m in result.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages == OLD  # the caller's list and its message objects are not changed
    assert [m["content"] for m in result.new_messages()] == ["again", "bonjour"]


@pytest.mark.parametrize("wire", WIRES)
async def test_the_agents_own_instructions_keep_a_conversations_system_message(wire: str) -> None:
    # What it did before and still does: the conversation's own instructions stay.
    async with FakeFluxRouter([text("ok")]) as router, make_client(router, wire) as client:
        result = await Agent(client=client, instructions="Be terse.").run("again", messages=_copy(OLD))
        assert system_text(router.model_requests[0].json) == "Answer in English."
    assert result.messages[0] == OLD[0]


async def test_a_conversation_without_a_system_message_gets_the_per_run_instructions_first() -> None:
    model = ScriptedModel([text("ok")])
    result = await Agent(client=model, instructions="own").run(
        "q", messages=_copy(OLD[1:]), instructions="run"
    )
    assert result.messages[0] == {"role": "system", "content": "run"}
    assert model.requests[0]["messages"][0] == {"role": "system", "content": "run"}
    assert [m["content"] for m in result.new_messages()] == ["q", "ok"]


async def test_a_developer_message_is_replaced_in_its_role_with_its_other_keys() -> None:
    first = {"role": "developer", "content": [{"type": "text", "text": "old"}], "name": "ops"}
    model = ScriptedModel([text("ok")])
    result = await Agent(client=model).run("q", messages=[first], instructions="new")
    assert result.messages[0] == {"role": "developer", "content": "new", "name": "ops"}
    assert first["content"] == [{"type": "text", "text": "old"}]


@pytest.mark.parametrize("empty", ["", None])
async def test_empty_per_run_instructions_change_nothing(empty: Any) -> None:
    model = ScriptedModel([text("ok")])
    result = await Agent(client=model, instructions="own").run("q", messages=_copy(OLD), instructions=empty)
    assert result.messages[0] == OLD[0]


async def test_dynamic_per_run_instructions_replace_it_with_their_text() -> None:
    seen: list[str] = []

    async def french(ctx: RunContext[None]) -> str:
        seen.append(ctx.messages[0]["content"])  # the conversation as it came, old instructions included
        return "Answer in French."

    def nothing(ctx: RunContext[None]) -> None:
        return None

    model = ScriptedModel([text("ok"), text("ok")])
    agent = Agent(client=model)
    result = await agent.run("q", messages=_copy(OLD), instructions=french)
    assert result.messages[0] == {"role": "system", "content": "Answer in French."}
    assert model.requests[0]["messages"][0]["content"] == "Answer in French." and seen == [
        "Answer in English."
    ]
    kept = await agent.run("q", messages=_copy(OLD), instructions=nothing)  # no text: nothing replaced
    assert kept.messages[0] == OLD[0]


def _pay_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    def pay(amount: int) -> str:
        return "paid"

    return tools


@pytest.mark.parametrize("journaled", [False, True])
async def test_a_resumed_run_keeps_the_replaced_instructions_and_applies_nothing_again(
    tmp_path: Path, journaled: bool
) -> None:
    """A paused run's messages (the RunResult, or the journal's header) hold the conversation as
    the run began, instructions applied once: the resume continues from them, the function is not
    called again and the old text does not come back."""
    calls: list[int] = []

    def french(ctx: RunContext[None]) -> str:
        calls.append(1)
        return "Answer in French."

    journal = SQLiteJournal(tmp_path / "runs.db") if journaled else None
    tools = _pay_tools()
    model = ScriptedModel([tool_calls(call("pay", {"amount": 3})), text("payé")])
    agent = Agent(client=model, tools=tools, journal=journal, require_approval=lambda name, args: True)
    paused = await agent.run("pay it", messages=_copy(OLD), instructions=french, run_id="r1")
    assert paused.paused and paused.messages[0] == {"role": "system", "content": "Answer in French."}
    resumed = await agent.resume("r1" if journaled else paused, approvals={paused.pending[0].id: True})
    assert resumed.output == "payé" and [r.status for r in resumed.tool_calls] == ["ok"]
    assert resumed.messages[0] == {"role": "system", "content": "Answer in French."}
    assert model.requests[-1]["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert calls == [1]
