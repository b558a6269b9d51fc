"""Cancellation anywhere in a run whose tool is another agent (`Agent.as_tool`) with its own calls
and an approval inside, journaled: resumed until it ends, the outer run finishes as an uncancelled
one, the inner agent's non-idempotent tool never runs twice, and nothing leaks.

README ("Agents as tools and handoffs"): the inner run shares the outer cancel scope; agent tools
are idempotent: a resumed outer run calls the agent tool again, which resumes the inner run from the
journal instead of restarting it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import assert_valid_conversation, examples, journaled_client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from leaks import Probe, tasks

from agentloop import (
    Agent,
    FluxClient,
    ResumeError,
    RunNotFoundError,
    RunPaused,
    SQLiteJournal,
    ToolCallFinished,
    ToolRegistry,
)
from agentloop.testing import RecordedRequest, Reply, call, text, tool_calls

FINAL = "desk: all done"


def script(request: RecordedRequest) -> Reply:
    """The desk asks its helper once, then answers; the helper charges and pays (approval), then
    answers. Chosen by model name and by how many answers the conversation holds."""
    body = request.json or {}
    messages = body.get("messages") or []
    step = sum(m.get("role") == "assistant" for m in messages)
    if body.get("model") == "helper-model":
        if step == 0:
            return tool_calls(call("charge", {"amount": 1}, id="c1"), call("pay", {"amount": 5}, id="p1"))
        return text("helper: done")
    if step == 0:
        return tool_calls(call("helper", {"input": "charge and pay"}, id="h1"))
    return text(FINAL)


class World:
    def __init__(self, client: FluxClient, journal: SQLiteJournal) -> None:
        self.ran: Counter[str] = Counter()
        self.watch: Any = None
        inner = ToolRegistry()

        @inner.tool
        async def charge(amount: int) -> str:
            """Charge (not idempotent)."""
            self.ran[f"charge {amount}"] += 1
            await anyio.lowlevel.checkpoint()
            return f"charged {amount}"

        @inner.tool(requires_approval=True)
        async def pay(amount: int) -> str:
            """Pay (needs approval)."""
            self.ran[f"pay {amount}"] += 1
            return f"paid {amount}"

        helper = Agent(client=client, name="helper", model="helper-model", tools=inner)
        outer = ToolRegistry()
        outer.register(helper.as_tool(description="Ask the helper."))
        self.desk = Agent(client=client, name="desk", tools=outer, journal=journal, observers=[self.observe])

    def observe(self, event: object) -> None:
        if self.watch is not None:
            self.watch(event)


async def _attempt(world: World, k: int | None, approvals: Any, resume: bool) -> Any:
    scope, seen = anyio.CancelScope(), 0

    def on_event(_event: object) -> None:
        nonlocal seen
        seen += 1
        if k is not None and seen == k + 1:
            scope.cancel()

    world.watch = on_event
    result = None
    try:
        with scope:
            if resume:
                result = await world.desk.resume("r", approvals=approvals)
            else:
                result = await world.desk.run("go", run_id="r")
    finally:
        world.watch = None
    return result


async def _one(wire: str, cuts: list[int], db: Path) -> None:
    start = tasks()
    async with journaled_client(script, wire, db) as (client, journal):
        world = World(client, journal)
        resume, approvals, result = False, None, None
        for attempt in range(len(cuts) + 3):
            k = cuts[attempt] if attempt < len(cuts) else None
            try:
                result = await _attempt(world, k, approvals, resume)
            except RunNotFoundError:
                continue
            except ResumeError as e:
                assert "h1/p1" in str(e), e
                approvals = {"h1/p1": True}
                continue
            resume, approvals = True, None
            if result is not None and result.stop_reason == "approval_required":
                assert [p.id for p in result.pending] == ["h1/p1"]
                approvals = {"h1/p1": True}
            elif result is not None:
                break
        assert result is not None and result.output == FINAL, result
        assert_valid_conversation(result)
        assert all(n == 1 for n in world.ran.values()), world.ran  # never twice
        assert [r.status for r in result.tool_calls] == ["ok"]  # the agent tool: resumed whole
    assert tasks() == start


@settings(max_examples=examples(10), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    wire=st.sampled_from(["openai", "anthropic"]), cuts=st.lists(st.integers(0, 40), min_size=1, max_size=3)
)
def test_a_nested_run_cancelled_anywhere_resumes_whole(
    anyio_backend: str, tmp_path_factory: pytest.TempPathFactory, wire: str, cuts: list[int]
) -> None:
    db = tmp_path_factory.mktemp("nested") / "runs.db"
    probe = Probe.take()
    anyio.run(_one, wire, cuts, db, backend=anyio_backend)
    probe.assert_back()


@pytest.mark.anyio
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_outer_run_cancelled_after_its_inner_run_paused_pauses_again_on_resume(
    wire: str, tmp_path: Path
) -> None:
    # Regression: the caller cancelled the outer run right after its agent tool's inner run paused
    # for approval (before the outer run's own pause reached the caller). `resume(run_id)` ran the
    # agent tool again, whose inner run, resumed from the journal without a decision, raised
    # ResumeError: the outer model was told the helper "raised", the run ended "final", and the
    # approval was never asked for (nor the payment made). It must pause again, naming "h1/p1".
    async with journaled_client(script, wire, tmp_path / "runs.db") as (client, journal):
        world = World(client, journal)
        scope = anyio.CancelScope()

        def cut(event: object) -> None:
            if isinstance(event, RunPaused) and event.parent_call_id == "h1":
                scope.cancel()

        world.watch = cut
        with scope:
            await world.desk.run("go", run_id="r")
        assert scope.cancelled_caught
        world.watch = None
        paused = await world.desk.resume("r")
        assert paused.stop_reason == "approval_required"
        assert [p.id for p in paused.pending] == ["h1/p1"]
        assert world.ran == {"charge 1": 1}
        result = await world.desk.resume("r", approvals={"h1/p1": True})
        assert result.output == FINAL
        assert [r.status for r in result.tool_calls] == ["ok"]
        assert world.ran == {"charge 1": 1, "pay 5": 1}


@pytest.mark.anyio
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_approving_resume_cancelled_after_the_inner_call_ran_resumes_whole(
    wire: str, tmp_path: Path
) -> None:
    # Regression: the resume that approved "h1/p1" was cancelled after the inner run had taken the
    # decision and run `pay`. The next `resume(run_id)` ran the agent tool again with the outer
    # run's journaled decision, and the inner run, no longer pending, refused it (ResumeError "has
    # no pending calls; approvals are not needed"): the helper "raised" and the run ended "final".
    async with journaled_client(script, wire, tmp_path / "runs.db") as (client, journal):
        world = World(client, journal)
        paused = await world.desk.run("go", run_id="r")
        assert [p.id for p in paused.pending] == ["h1/p1"]
        scope = anyio.CancelScope()

        def cut(event: object) -> None:
            if isinstance(event, ToolCallFinished) and event.parent_call_id == "h1":
                scope.cancel()  # `pay` ran; the inner run has not answered yet

        world.watch = cut
        with scope:
            await world.desk.resume("r", approvals={"h1/p1": True})
        assert scope.cancelled_caught
        world.watch = None
        result = await world.desk.resume("r")
        assert result.output == FINAL
        assert [r.status for r in result.tool_calls] == ["ok"]
        assert world.ran == {"charge 1": 1, "pay 5": 1}
