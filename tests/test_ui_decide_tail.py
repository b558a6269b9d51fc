"""A decision in the inspector reads the run's tail, not the whole run.

Regression: POST /decide loaded and replayed the whole run to find its pending calls, on every
click: a run of 100,000 entries (or one 32 MiB entry anywhere in it) made each decision cost all
of it. It now reads the run's last entries (the `paused` entry and the decisions since), as the
run's page does. The proof from outside: a damaged entry early in the run, which a full replay
cannot read, does not stop a decision; and the decision is journaled exactly as before (the
step replay gives), so `Agent.resume` continues the run.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentloop import Agent, RunLimits, SQLiteJournal, ToolRegistry
from agentloop.abc import Entry, replay
from agentloop.testing import ScriptedModel, call, text, tool_calls
from agentloop.ui import create_app

pytestmark = pytest.mark.anyio
STEPS = 40  # echo steps before the pause: ~120 entries


def tools() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool
    async def echo(text: str) -> str:
        """Echo."""
        return text

    @registry.tool(requires_approval=True)
    async def refund(amount: int) -> str:
        """Refund."""
        return f"refunded {amount}"

    return registry


async def paused_run(path: str, steps: int) -> None:
    script = [tool_calls(call("echo", {"text": f"x{i}"})) for i in range(steps)]
    script.append(tool_calls(call("refund", {"amount": 5}, id="r1"), call("refund", {"amount": 6}, id="r2")))
    journal = SQLiteJournal(path)
    limits = RunLimits(max_steps=steps + 5, loop_threshold=None)
    agent = Agent(client=ScriptedModel(script), tools=tools(), journal=journal, limits=limits)
    result = await agent.run("long run", run_id="long", limits=limits)
    assert result.stop_reason == "approval_required"
    journal.close()


async def decide(path: str, call_id: str) -> int:
    app = create_app(path)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            # the form's token (per app): the run's page may not render (the damaged-entry test)
            form = {"call_id": call_id, "decision": "approve", "csrf": app.state.inspector.csrf}
            return (await c.post("/decide/long", data=form)).status_code


async def approvals(path: str) -> list[Any]:
    journal = SQLiteJournal(path, read_only=True)
    try:
        run = await journal.load("long")
    finally:
        journal.close()
    return [(e.step, e.data) for e in run.entries if e.kind == Entry.APPROVALS]


async def test_decisions_are_journaled_as_a_replay_would_and_the_run_resumes(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    await paused_run(path, STEPS)
    journal = SQLiteJournal(path, read_only=True)
    steps = replay(await journal.load("long")).steps
    journal.close()
    assert await decide(path, "r1") == 303
    assert await decide(path, "r1") == 303  # decided again: still pending until both are
    assert await decide(path, "nope") == 409
    assert await decide(path, "r2") == 303
    assert [s for s, _ in await approvals(path)] == [steps] * 3
    journal = SQLiteJournal(path)
    limits = RunLimits(max_steps=STEPS + 5, loop_threshold=None)
    agent = Agent(
        client=ScriptedModel([text("refunded both")]), tools=tools(), journal=journal, limits=limits
    )
    result = await agent.resume("long")
    journal.close()
    assert result.output == "refunded both"
    assert sorted(r.content for r in result.tool_calls if r.name == "refund") == ["refunded 5", "refunded 6"]


async def test_a_decision_does_not_read_the_runs_early_entries(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    await paused_run(path, 120)  # ~360 entries: seq 2 is well before the 256 the tail read holds
    with sqlite3.connect(path) as db:  # an early entry no replay can read: never touched by a decision
        db.execute("UPDATE agentloop_entries SET data='{' WHERE run_id='long' AND seq=2")
    assert await decide(path, "r1") == 303


async def test_past_the_tail_a_decision_still_finds_the_pending_calls(tmp_path: Path) -> None:
    """More entries since the pause than the tail holds (hand-written decisions, e.g.): the
    decision falls back to a replay and is still right."""
    path = str(tmp_path / "j.db")
    await paused_run(path, 1)
    journal = SQLiteJournal(path)
    token = await journal.acquire("long")
    for _ in range(300):
        await journal.append("long", Entry.APPROVALS, {"r2": True}, step=2)
    await journal.release("long", token)
    journal.close()
    assert await decide(path, "r1") == 303
    assert await decide(path, "nope") == 409
