"""Handoffs (issue 17, part 3): `Agent(handoffs=[...])` offers `transfer_to_<name>` tools; calling
one continues the same run with the other agent's instructions, tools and model, on the
(filtered, repaired) conversation. Over the real-HTTP fake router on both wires, through run and
stream, on asyncio and trio; a handoff loop is bounded, same-named tools resolve to the agent
that has the conversation, and a journaled run resumes with the agent it was handed to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.lowlevel
import pytest
from wirehelp import WIRES, last_tool_result, make_client, run_or_stream, system_text, tool_names

from agentloop import (
    Agent,
    ConfigurationError,
    Handoff,
    RunLimits,
    RunResult,
    SQLiteJournal,
    StepLimitExceeded,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


@pytest.fixture
async def router() -> AsyncIterator[FakeFluxRouter]:
    async with FakeFluxRouter() as r:
        yield r


def lookup_tools(answer: str, **options: Any) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool(**options)
    async def lookup(key: str) -> str:
        """Look a key up."""
        return f"{answer}:{key}"

    return tools


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("how", ["run", "stream"])
async def test_a_handoff_continues_the_run_with_the_other_agent(
    router: FakeFluxRouter, wire: str, how: str
) -> None:
    router.add(
        tool_calls(call("transfer_to_billing", {})),
        tool_calls(call("lookup", {"key": "inv-1"})),  # billing's lookup, not triage's
        text("Invoice inv-1 is paid."),
    )
    async with make_client(router, wire) as client:
        billing = Agent(client=client, name="billing", instructions="You do billing.", tools=lookup_tools("billing"),
                        model="flux-pinned-billing")  # fmt: skip
        triage = Agent(client=client, name="triage", instructions="You triage.", tools=lookup_tools("triage"),
                       handoffs=[billing])  # fmt: skip
        result = await run_or_stream(triage, how, "Is my invoice paid?")
    assert result.output == "Invoice inv-1 is paid." and result.agent_name == "billing"
    first, second, third = (r.json for r in router.requests)
    assert system_text(first) == "You triage." and tool_names(first) == ["lookup", "transfer_to_billing"]
    assert system_text(second) == "You do billing." and tool_names(second) == ["lookup"]
    assert second["model"] == "flux-pinned-billing"
    assert last_tool_result(third) == "billing:inv-1"
    assert [r.name for r in result.tool_calls] == ["transfer_to_billing", "lookup"]
    assert result.steps == 3 and result.usage.requests == 3
    assert result.new_messages()[0] == {"role": "user", "content": "Is my invoice paid?"}


@pytest.mark.parametrize("wire", WIRES)
async def test_the_input_filter_decides_what_the_next_agent_sees_and_the_wire_stays_valid(
    router: FakeFluxRouter, wire: str
) -> None:
    router.add(
        tool_calls(call("lookup", {"key": "a"}, id="call_l")),
        tool_calls(call("transfer_to_refunds", {}, id="call_t")),
        text("refund done"),
    )

    def drop_tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # careless on purpose: keeps the assistant tool calls, drops their results
        return [m for m in messages if m["role"] != "tool"]

    async with make_client(router, wire) as client:
        refunds = Agent(client=client, name="refunds", instructions="Refunds.")
        triage = Agent(client=client, name="triage", tools=lookup_tools("t"),
                       handoffs=[Handoff(refunds, input_filter=drop_tool_results)])  # fmt: skip
        result = await triage.run("refund please")
    sent = router.requests[2].json["messages"]
    assert system_text(router.requests[2].json) == "Refunds."
    # the orphan tool calls the filter left were removed, not sent (the wire would reject them)
    text_of = str(sent)
    assert "call_l" not in text_of and "call_t" not in text_of
    assert result.output == "refund done" and result.agent_name == "refunds"


async def test_an_async_input_filter_is_awaited(router: FakeFluxRouter) -> None:
    """An input filter may be async (it may ask a model for a summary; on Temporal it is an
    activity): its result, not the coroutine, is what the next agent sees."""
    router.add(tool_calls(call("transfer_to_refunds", {}, id="call_t")), text("refund done"))

    async def summarise(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        await anyio.lowlevel.checkpoint()  # a real suspension point
        return [{"role": "user", "content": f"Summary: {len(messages)} messages, a refund is wanted."}]

    async with make_client(router, "openai") as client:
        refunds = Agent(client=client, name="refunds", instructions="Refunds.")
        triage = Agent(client=client, name="triage", handoffs=[Handoff(refunds, input_filter=summarise)])
        result = await triage.run("refund please")
    assert router.requests[1].json["messages"] == [
        {"role": "system", "content": "Refunds."},
        {"role": "user", "content": "Summary: 3 messages, a refund is wanted."},
    ]
    assert result.output == "refund done" and result.agent_name == "refunds"


async def test_a_handoff_loop_between_two_agents_is_bounded_by_the_runs_max_steps() -> None:
    async with FakeFluxRouter(lambda req: tool_calls(call(_other(req.json), {}))) as router:
        async with make_client(router, "openai") as client:
            a = Agent(
                client=client, name="a", instructions="A", limits=RunLimits(max_steps=5, loop_threshold=None)
            )
            b = Agent(client=client, name="b", instructions="B", handoffs=[a])
            a.handoffs = Agent(client=client, name="a", handoffs=[b]).handoffs  # a <-> b
            with pytest.raises(StepLimitExceeded) as e:
                await a.run("ping")
    assert len(router.requests) == 5
    assert [system_text(r.json) for r in router.requests] == ["A", "B", "A", "B", "A"]
    assert e.value.result.agent_name == "b"  # the 5th answer handed the run to b, which had no step left
    assert [r.status for r in e.value.result.tool_calls] == ["ok"] * 5


def _other(body: dict[str, Any]) -> str:
    return "transfer_to_b" if body["messages"][0]["content"] == "A" else "transfer_to_a"


async def test_two_transfers_in_one_step_the_first_wins() -> None:
    model = ScriptedModel([tool_calls(call("transfer_to_x", {}), call("transfer_to_y", {})), text("from x")])
    x = Agent(client=model, name="x", instructions="X")
    y = Agent(client=model, name="y", instructions="Y")
    result = await Agent(client=model, name="t", handoffs=[y, x]).run("q")  # the model's order wins
    assert result.agent_name == "x" and result.output == "from x"
    assert "Not transferred" in result.tool_calls[1].content


async def test_a_journaled_run_resumes_with_the_agent_it_was_handed_to(
    router: FakeFluxRouter, tmp_path: Path
) -> None:
    journal = SQLiteJournal(tmp_path / "runs.db")
    router.add(
        tool_calls(call("transfer_to_billing", {})), tool_calls(call("lookup", {"key": "k"}, id="call_r"))
    )
    async with make_client(router, "openai") as client:
        billing = Agent(client=client, name="billing", instructions="Billing.",
                        tools=lookup_tools("billing", requires_approval=True))  # fmt: skip
        triage = Agent(
            client=client, name="triage", instructions="Triage.", handoffs=[billing], journal=journal
        )
        paused = await triage.run("q", run_id="h-1")
        assert paused.paused and paused.agent_name == "billing"
        router.add(text("approved and done"))
        result = await triage.resume("h-1", approvals={"call_r": True})
    assert result.output == "approved and done" and result.agent_name == "billing"
    assert system_text(router.requests[2].json) == "Billing."
    assert last_tool_result(router.requests[2].json) == "billing:k"
    loaded = await journal.load("h-1")
    assert "handoff" in [e.kind for e in loaded.entries]


def test_handoffs_are_checked_at_construction() -> None:
    model = ScriptedModel([])
    with pytest.raises(ConfigurationError, match="needs a name"):
        Agent(client=model, handoffs=[Agent(client=model)])
    tools = ToolRegistry()

    @tools.tool
    async def transfer_to_billing() -> str:
        return ""

    with pytest.raises(ConfigurationError, match="clashes"):
        Agent(client=model, tools=tools, handoffs=[Agent(client=model, name="billing")])
    with pytest.raises(ConfigurationError, match="takes an Agent"):
        Handoff("billing")  # type: ignore[arg-type]
    custom = Agent(
        client=model, handoffs=[Handoff(Agent(client=model), tool_name="escalate", description="Escalate.")]
    )
    assert custom.handoffs[0][1].definition["function"] == {
        "name": "escalate",
        "parameters": custom.handoffs[0][1].parameters,
        "description": "Escalate.",
    }


async def test_a_paused_result_resumed_without_a_journal_continues_with_the_agent_handed_to() -> None:
    # Regression: resume(RunResult) ignored result.agent_name, so the run went on with the first agent,
    # which has no `refund` tool: the approved call became "unknown tool" (found running handoffs on Temporal).
    script = ScriptedModel([
        tool_calls(call("transfer_to_billing", {})),
        tool_calls(call("refund", {"amount": 5}, id="r")),
        text("Refunded 5."),
    ])  # fmt: skip
    billing_tools = ToolRegistry()

    @billing_tools.tool(requires_approval=True)
    async def refund(amount: int) -> str:
        return f"refunded {amount}"

    billing = Agent(client=script, name="billing", instructions="You do billing.", tools=billing_tools)
    triage = Agent(client=script, name="triage", instructions="You triage.", handoffs=[billing])
    paused = await triage.run("refund A-17")
    assert paused.stop_reason == "approval_required" and paused.agent_name == "billing"
    result = await triage.resume(RunResult.from_json(paused.to_json()), approvals={"r": True})
    assert result.output == "Refunded 5." and result.agent_name == "billing"
    assert [(r.name, r.status, r.content) for r in result.tool_calls][-1] == ("refund", "ok", "refunded 5")
