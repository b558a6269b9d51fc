"""Resuming a paused run twice (a double-clicked "Approve"), as README "Approval" states it:
without a journal a paused `RunResult` is a plain value and its approved calls run again; with a
journal, resuming by run id runs each approved call once (a second resume with decisions is a
`ResumeError`: the run has no pending calls)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentloop import Agent, ResumeError, RunResult, SQLiteJournal, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


def _agent(journal: SQLiteJournal | None) -> tuple[Agent, list[str]]:
    tools = ToolRegistry()
    ran: list[str] = []

    @tools.tool(requires_approval=True)
    async def refund(order: str) -> str:
        """Refund an order (not idempotent)."""
        ran.append(order)
        return "refunded"

    model = ScriptedModel([tool_calls(call("refund", {"order": "1"}, id="r1")), text("done"), text("done")])
    return Agent(client=model, tools=tools, journal=journal), ran


async def test_with_a_journal_a_second_resume_by_run_id_runs_the_approved_call_once(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "runs.db")
    agent, ran = _agent(journal)
    paused = await agent.run("refund 1", run_id="p")
    assert paused.stop_reason == "approval_required"
    first = await agent.resume("p", approvals={"r1": True})
    with pytest.raises(ResumeError, match="no pending calls"):  # the double click: told, not run
        await agent.resume("p", approvals={"r1": True})
    assert ran == ["1"] and first.output == "done"
    assert (await agent.resume("p")).output == "done"  # the finished run, as it is
    journal.close()


async def test_without_a_journal_a_paused_result_resumed_twice_runs_its_call_twice() -> None:
    agent, ran = _agent(None)
    paused = RunResult.from_json((await agent.run("refund 1")).to_json())
    await agent.resume(paused, approvals={"r1": True})
    await agent.resume(paused, approvals={"r1": True})
    assert ran == ["1", "1"]  # what the README warns of: a value has no memory of being resumed
