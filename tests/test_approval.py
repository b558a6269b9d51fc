"""Human approval: pause with the pending calls, resume with decisions, across a JSON round trip."""

from __future__ import annotations

import json

import pytest

from agentloop import Agent, FluxClient, Override, PendingCall, Reject, ResumeError, RunResult, ToolRegistry
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


def make_tools() -> tuple[ToolRegistry, list[str]]:
    tools = ToolRegistry()
    done: list[str] = []

    @tools.tool
    async def lookup(key: str) -> str:
        """Look a key up."""
        done.append(f"lookup {key}")
        return f"value of {key}"

    @tools.tool(requires_approval=True)
    async def send_email(to: str, body: str) -> dict:
        """Send an email."""
        done.append(f"email {to}")
        return {"sent": True}

    @tools.tool
    async def pay(amount: int) -> str:
        """Pay an amount."""
        done.append(f"pay {amount}")
        return "paid"

    return tools, done


def step_one() -> list:
    return [
        tool_calls(
            call("lookup", {"key": "addr"}, id="c1"), call("send_email", {"to": "bob", "body": "hi"}, id="c2")
        ),
        text("done"),
    ]


async def test_pause_json_round_trip_and_approve() -> None:
    tools, done = make_tools()
    model = ScriptedModel(step_one())
    paused = await Agent(client=model, tools=tools).run("mail bob")
    assert paused.stop_reason == "approval_required" and paused.paused and paused.output is None
    assert paused.pending == [PendingCall("c2", "send_email", {"to": "bob", "body": "hi"}, 1)]
    assert done == ["lookup addr"]  # the call that needs no approval ran
    assert [r.id for r in paused.tool_calls] == ["c1"]
    assert paused.messages[-1]["role"] == "assistant"  # nothing sent to the model yet

    text_form = paused.to_json()
    json.loads(text_form)  # plain JSON
    restored = RunResult.from_json(text_form)
    assert restored.pending == paused.pending and restored.tool_calls == paused.tool_calls

    # "another process": a new agent (same tools and model endpoint)
    result = await Agent(client=model, tools=tools).resume(restored, approvals={"c2": True})
    assert result.output == "done" and result.stop_reason == "final"
    assert done == ["lookup addr", "email bob"]
    sent = model.requests[-1]["messages"]
    assert [m.get("tool_call_id") for m in sent[-2:]] == ["c1", "c2"]  # the model's order
    assert sent[-1]["content"] == '{"sent":true}'
    assert [r.status for r in result.tool_calls] == ["ok", "ok"]


@pytest.mark.parametrize(
    ("decision", "status", "content"),
    [
        (False, "rejected", "a human rejected"),
        (Reject("not today"), "rejected", "Reason: not today"),
        (Override({"sent": False, "queued": True}), "overridden", '{"sent":false,"queued":true}'),
        (Override("stub"), "overridden", "stub"),
    ],
)
async def test_reject_and_override_do_not_run_the_tool(decision: object, status: str, content: str) -> None:
    tools, done = make_tools()
    model = ScriptedModel(step_one())
    agent = Agent(client=model, tools=tools)
    paused = await agent.run("mail bob")
    result = await agent.resume(paused, approvals={"c2": decision})  # type: ignore[dict-item]
    assert done == ["lookup addr"]
    record = result.tool_calls[-1]
    assert record.status == status and content in record.content
    assert model.requests[-1]["messages"][-1]["content"] == record.content


async def test_predicate_over_name_and_arguments() -> None:
    tools, done = make_tools()
    model = ScriptedModel(
        [tool_calls(call("pay", {"amount": 5}, id="p1"), call("pay", {"amount": 500}, id="p2")), text("ok")]
    )
    agent = Agent(
        client=model, tools=tools, require_approval=lambda name, args: name == "pay" and args["amount"] > 100
    )
    paused = await agent.run("pay")
    assert [p.id for p in paused.pending] == ["p2"] and done == ["pay 5"]
    result = await agent.resume(paused, approvals={"p2": True})
    assert done == ["pay 5", "pay 500"] and result.output == "ok"


async def test_invalid_arguments_need_no_approval() -> None:
    tools, done = make_tools()
    model = ScriptedModel([tool_calls(call("send_email", {"to": "bob"}, id="c1")), text("sorry")])
    result = await Agent(client=model, tools=tools).run("mail")
    assert result.stop_reason == "final" and result.tool_calls[0].status == "invalid_arguments" and done == []


async def test_resume_errors_are_clear() -> None:
    tools, _ = make_tools()
    model = ScriptedModel(step_one())
    agent = Agent(client=model, tools=tools)
    paused = await agent.run("mail bob")
    with pytest.raises(ResumeError, match=r"missing: c2 \(send_email\)"):
        await agent.resume(paused)
    with pytest.raises(ResumeError, match="not pending"):
        await agent.resume(paused, approvals={"c2": True, "zzz": True})
    with pytest.raises(ResumeError, match="must be True, False"):
        await agent.resume(paused, approvals={"c2": "yes"})  # type: ignore[dict-item]
    final = await agent.resume(paused, approvals={"c2": True})
    with pytest.raises(ResumeError, match="not paused"):
        await agent.resume(final)
    with pytest.raises(ResumeError, match="cannot read a RunResult"):
        RunResult.from_json('{"format": "something else"}')
    with pytest.raises(ResumeError, match="no journal"):
        await agent.resume("run_123")


async def test_pause_twice_in_one_run_over_http(fake_router: FakeFluxRouter, flux_client: FluxClient) -> None:
    tools, done = make_tools()
    fake_router.add(
        tool_calls(call("send_email", {"to": "a", "body": "1"}, id="e1")),
        tool_calls(call("send_email", {"to": "b", "body": "2"}, id="e2")),
        text("both handled"),
    )
    agent = Agent(client=flux_client, tools=tools)
    first = await agent.run("mail a then b")
    second = await agent.resume(RunResult.from_json(first.to_json()), approvals={"e1": True})
    assert second.stop_reason == "approval_required" and [p.id for p in second.pending] == ["e2"]
    final = await agent.resume(RunResult.from_json(second.to_json()), approvals={"e2": False})
    assert final.output == "both handled" and done == ["email a"]
    assert [r.status for r in final.tool_calls] == ["ok", "rejected"]
    assert final.steps == 3 and final.usage.requests == 3


async def test_from_json_refuses_an_unknown_stop_reason() -> None:
    # mypy found it: result_from_json took any string as the StopReason, so an edited document
    # came back as a RunResult whose stop_reason no code path can produce.
    model = ScriptedModel([text("done")])
    result = await Agent(client=model).run("hi")
    data = json.loads(result.to_json())
    assert RunResult.from_json(json.dumps(data)).stop_reason == "final"
    data["stop_reason"] = "finished"
    with pytest.raises(ResumeError, match=r"unknown stop_reason 'finished'; one of final, max_steps"):
        RunResult.from_json(json.dumps(data))
