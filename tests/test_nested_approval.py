"""Approval pauses propagate through agent tools (issue 17, part 3): a tool that needs approval in
an agent used via `as_tool` pauses the outer run; its pending call is named by its path
(`outer_call_id/inner_call_id`), and `resume` with the decision continues the inner run where it
stopped: no model request of the inner run is sent twice, the approved tool runs once. Without
a journal (the paused state rides in the outer RunResult, through its JSON form) and with one;
two levels deep; on both wires; on asyncio and trio, over the real-HTTP fake router."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from wirehelp import WIRES, last_tool_result, make_client

from agentloop import Agent, Reject, ResumeError, RunPaused, RunResult, SQLiteJournal, ToolRegistry
from agentloop.testing import FakeFluxRouter, call, text, tool_calls

pytestmark = pytest.mark.anyio


@pytest.fixture
async def router() -> AsyncIterator[FakeFluxRouter]:
    async with FakeFluxRouter() as r:
        yield r


def billing_agent(client: Any, refunds: list[int], **kw: Any) -> Agent[Any, Any]:
    tools = ToolRegistry()

    @tools.tool(requires_approval=True)
    async def refund(amount: int) -> str:
        """Refund an amount."""
        refunds.append(amount)
        return f"refunded {amount}"

    return Agent(client=client, tools=tools, name="billing", instructions="You do billing.", **kw)


def desk_agent(client: Any, inner: Agent[Any, Any], searched: list[str], **kw: Any) -> Agent[Any, Any]:
    tools = ToolRegistry()
    tools.register(inner.as_tool(description="Ask billing."))

    @tools.tool
    async def search(q: str) -> str:
        """Search."""
        searched.append(q)
        return f"found {q}"

    return Agent(client=client, tools=tools, name="desk", **kw)


SCRIPT = [
    tool_calls(call("billing", {"input": "refund 5"}, id="out"), call("search", {"q": "policy"}, id="s")),
    tool_calls(call("refund", {"amount": 5}, id="r")),  # the inner run: needs approval
]


@pytest.mark.parametrize("wire", WIRES)
async def test_an_inner_approval_pauses_the_outer_run_and_resume_continues_the_inner_run(
    router: FakeFluxRouter, wire: str
) -> None:
    refunds: list[int] = []
    searched: list[str] = []
    router.add(*SCRIPT)
    events: list[Any] = []
    async with make_client(router, wire) as client:
        desk = desk_agent(client, billing_agent(client, refunds), searched, observers=[events.append])
        paused = await desk.run("refund order 5")
        assert paused.stop_reason == "approval_required"
        assert [(p.id, p.name, p.arguments, p.step) for p in paused.pending] == [
            ("out/r", "refund", {"amount": 5}, 1)
        ]
        # the step's other call ran; the agent tool has no outcome yet; nothing refunded
        assert [(r.id, r.status) for r in paused.tool_calls] == [("s", "ok")] and searched == ["policy"]
        assert refunds == [] and len(router.requests) == 2
        assert sum(isinstance(e, RunPaused) for e in events) == 2  # the inner run's and the outer run's
        router.add(text("Refunded 5 euros."), text("Done: refunded."))
        stored = RunResult.from_json(paused.to_json())  # e.g. in another process
        result = await desk.resume(stored, approvals={"out/r": True})
    assert result.output == "Done: refunded." and refunds == [5] and searched == ["policy"]
    assert len(router.requests) == 4  # the inner run's first request was not sent again
    assert last_tool_result(router.requests[2].json) == "refunded 5"  # the inner run went on from its pause
    assert "Refunded 5 euros." in json.dumps(router.requests[3].json)  # the agent tool's outcome, at last
    assert sorted((r.id, r.status) for r in result.tool_calls) == [("out", "ok"), ("s", "ok")]
    assert result.usage.requests == 4  # every request once, the inner ones included


async def test_a_rejected_inner_call_is_told_to_the_inner_model(router: FakeFluxRouter) -> None:
    refunds: list[int] = []
    router.add(*SCRIPT)
    async with make_client(router, "openai") as client:
        desk = desk_agent(client, billing_agent(client, refunds), [])
        paused = await desk.run("refund order 5")
        router.add(text("A human said no."), text("Not refunded."))
        result = await desk.resume(paused, approvals={"out/r": Reject("over the limit")})
    assert result.output == "Not refunded." and refunds == []
    told = last_tool_result(router.requests[2].json)
    assert "rejected" in told and "over the limit" in told


async def test_decisions_must_name_the_nested_path(router: FakeFluxRouter) -> None:
    router.add(*SCRIPT)
    async with make_client(router, "openai") as client:
        desk = desk_agent(client, billing_agent(client, []), [])
        paused = await desk.run("refund order 5")
        with pytest.raises(ResumeError, match=r"missing: out/r \(refund\)"):
            await desk.resume(paused, approvals={})
        with pytest.raises(ResumeError, match="not pending"):
            await desk.resume(paused, approvals={"r": True, "out/r": True})
    assert len(router.requests) == 2  # nothing was sent for the refused resumes


@pytest.mark.parametrize("wire", WIRES)
async def test_a_journaled_outer_run_pauses_and_resumes_by_id(
    router: FakeFluxRouter, wire: str, tmp_path: Path
) -> None:
    refunds: list[int] = []
    journal = SQLiteJournal(tmp_path / "runs.db")
    router.add(*SCRIPT)
    async with make_client(router, wire) as client:
        desk = desk_agent(client, billing_agent(client, refunds), [], journal=journal)
        paused = await desk.run("refund order 5", run_id="desk-1")
        assert [p.id for p in paused.pending] == ["out/r"] and paused.pending[
            0
        ].inner is None  # in the journal
        router.add(text("Refunded 5 euros."), text("Done."))
        result = await desk.resume("desk-1", approvals={"out/r": True})
        again = await desk.resume("desk-1")  # finished: returned as it is
    assert result.output == "Done." and refunds == [5] and len(router.requests) == 4
    assert again.output == "Done." and len(router.requests) == 4
    inner_id = next(r.run_id for r in await journal.list_runs() if r.run_id != "desk-1")
    kinds = [e.kind for e in (await journal.load(inner_id)).entries]
    assert kinds.count("paused") == 1 and kinds.count("approvals") == 1 and kinds.count("model") == 2
    assert json.loads(json.dumps(result.usage.requests)) == 4


async def test_a_pause_two_agent_tools_deep(router: FakeFluxRouter) -> None:
    refunds: list[int] = []
    router.add(
        tool_calls(call("middle", {"input": "go"}, id="a")),
        tool_calls(call("billing", {"input": "refund 7"}, id="b")),
        tool_calls(call("refund", {"amount": 7}, id="c")),
    )
    async with make_client(router, "openai") as client:
        mid_tools = ToolRegistry()
        mid_tools.register(billing_agent(client, refunds).as_tool())
        middle = Agent(client=client, tools=mid_tools, name="middle")
        top_tools = ToolRegistry()
        top_tools.register(middle.as_tool())
        top = Agent(client=client, tools=top_tools, name="top")
        paused = await top.run("go")
        assert [p.id for p in paused.pending] == ["a/b/c"]
        router.add(text("refunded"), text("middle done"), text("top done"))
        result = await top.resume(RunResult.from_json(paused.to_json()), approvals={"a/b/c": True})
    assert result.output == "top done" and refunds == [7]
    assert len(router.requests) == 6 and result.usage.requests == 6


def notifying_desk(client: Any, refunds: list[int], sent: list[str]) -> Agent[Any, Any]:
    """A desk with two tools: the billing agent (its refund needs approval) and its own `notify`
    (needs approval too); `sent` records who was notified."""
    tools = ToolRegistry()
    tools.register(billing_agent(client, refunds).as_tool())

    @tools.tool(requires_approval=True)
    async def notify(to: str) -> str:
        sent.append(to)
        return f"notified {to}"

    return Agent(client=client, tools=tools)


async def test_a_streamed_run_pauses_on_an_inner_approval(router: FakeFluxRouter) -> None:
    refunds: list[int] = []
    sent: list[str] = []
    router.add(
        tool_calls(call("billing", {"input": "refund 5"}, id="out"), call("notify", {"to": "ann"}, id="n")),
        tool_calls(call("refund", {"amount": 5}, id="r")),
    )
    async with make_client(router, "openai") as client:
        desk = notifying_desk(client, refunds, sent)
        async with desk.stream("refund and tell ann") as events:
            kinds = [type(e).__name__ async for e in events]
        assert kinds[-1] == "RunPaused" and kinds.count("RunPaused") == 2  # the inner run's, then the outer's
    assert refunds == [] and sent == []


async def test_own_and_nested_pending_calls_resume_in_one_decision(router: FakeFluxRouter) -> None:
    refunds: list[int] = []
    sent: list[str] = []
    router.add(
        tool_calls(call("billing", {"input": "refund 5"}, id="out"), call("notify", {"to": "ann"}, id="n")),
        tool_calls(call("refund", {"amount": 5}, id="r")),
    )
    async with make_client(router, "openai") as client:
        desk = notifying_desk(client, refunds, sent)
        paused = await desk.run("refund and tell ann")
        assert sorted(p.id for p in paused.pending) == ["n", "out/r"]
        router.add(text("refunded"), text("all done"))
        result = await desk.resume(paused, approvals={"n": Reject("not now"), "out/r": True})
    assert result.output == "all done" and refunds == [5] and sent == []
    by_id = {r.id: r.status for r in result.tool_calls}
    assert by_id == {"out": "ok", "n": "rejected"}


def _tool_events(events: list[Any]) -> list[tuple[str, str, str]]:
    """(event, call id, status) of the outer run's tool events (the inner run's have parent_call_id)."""
    out = []
    for e in events:
        if getattr(e, "parent_call_id", None) is not None:
            continue
        if type(e).__name__ == "ToolCallStarted":
            out.append(("started", e.tool_call_id, ""))
        elif type(e).__name__ == "ToolCallFinished":
            out.append(("finished", e.record.id, e.record.status))
    return out


async def test_a_paused_agent_tool_has_no_finished_event_streamed_or_not(router: FakeFluxRouter) -> None:
    """Regression: a streamed run showed ToolCallFinished(status "ok", "Paused: waiting for a human
    decision ...") for an agent tool whose inner run paused, an outcome the result and the journal
    do not have. Now neither Agent.stream nor Agent.run's observers see a Finished for it before the
    pause; the resumed call starts again and finishes with its real outcome."""
    seen: dict[str, list[Any]] = {}
    for mode in ("run", "stream"):
        router.add(*SCRIPT)
        events: list[Any] = []
        sink = [events]  # where the observer puts what it sees: this run's, then the resumed run's
        async with make_client(router, "openai") as client:
            desk = desk_agent(
                client, billing_agent(client, []), [], observers=[lambda e, sink=sink: sink[0].append(e)]
            )
            if mode == "run":
                paused = await desk.run("refund order 5")
            else:
                async with desk.stream("refund order 5") as stream:
                    streamed = [e async for e in stream]
                paused = streamed[-1].result
                assert [type(e) for e in streamed] == [type(e) for e in events]  # the same story
            assert [p.id for p in paused.pending] == ["out/r"]
            assert all("Paused: waiting" not in repr(e) for e in events)
            seen[mode] = _tool_events(events)
            router.add(text("Refunded 5 euros."), text("Done: refunded."))
            after: list[Any] = []
            sink[0] = after
            result = await desk.resume(paused, approvals={"out/r": True})
        assert result.output == "Done: refunded."
        assert _tool_events(after) == [("started", "out", ""), ("finished", "out", "ok")]
    assert seen["run"] == seen["stream"]
    assert sorted(seen["stream"]) == [("finished", "s", "ok"), ("started", "out", ""), ("started", "s", "")]
