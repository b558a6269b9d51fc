"""Cancellation anywhere in a journaled run that hands off (`Agent(handoffs=[...])`) to an agent with
a non-idempotent tool and an approval: resumed until it ends, the run finishes with the agent it
was handed to, no call runs twice, and nothing leaks.

README ("Agents as tools and handoffs"): "In a journaled run the handoff is journaled, and
`resume(run_id)` ... continues with the agent that had the conversation"."""

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
    SQLiteJournal,
    ToolCallFinished,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, RecordedRequest, Reply, call, text, tool_calls

FINAL = "billing: done"


def script(request: RecordedRequest) -> Reply:
    """The desk (offered the transfer tool) transfers; billing charges and pays, then answers."""
    body = request.json or {}
    names = [t.get("function", t).get("name") for t in body.get("tools") or []]
    if "transfer_to_billing" in names:
        return tool_calls(call("transfer_to_billing", {}, id="x1"))
    if any(m.get("role") == "assistant" and "c1" in str(m) for m in body.get("messages") or []):
        return text(FINAL)  # billing's calls were answered (or told their outcome is unknown)
    return tool_calls(call("charge", {"amount": 1}, id="c1"), call("pay", {"amount": 5}, id="p1"))


class Desk:
    def __init__(self, client: FluxClient, journal: SQLiteJournal) -> None:
        self.ran: Counter[str] = Counter()
        self.watch: Any = None
        tools = ToolRegistry()

        @tools.tool
        async def charge(amount: int) -> str:
            """Charge (not idempotent)."""
            self.ran["charge"] += 1
            await anyio.lowlevel.checkpoint()
            return f"charged {amount}"

        @tools.tool(requires_approval=True)
        async def pay(amount: int) -> str:
            """Pay (needs approval)."""
            self.ran["pay"] += 1
            return f"paid {amount}"

        billing = Agent(client=client, name="billing", tools=tools)
        self.agent = Agent(
            client=client, name="desk", handoffs=[billing], journal=journal, observers=[self.observe]
        )

    def observe(self, event: object) -> None:
        if self.watch is not None:
            self.watch(event)

    async def attempt(self, cut: Any, resume: bool, approvals: Any) -> Any:
        """The run (or its resume) under a scope cancelled when `cut(event)` says so."""
        scope = anyio.CancelScope()

        def on_event(event: object) -> None:
            if cut(event):
                scope.cancel()

        self.watch, result = on_event, None
        try:
            with scope:
                if resume:
                    result = await self.agent.resume("r", approvals=approvals)
                else:
                    result = await self.agent.run("go", run_id="r")
        finally:
            self.watch = None
        return result

    async def until_done(self, cuts: list[Any]) -> Any:
        resume, approvals = False, None
        for attempt in range(len(cuts) + 3):
            cut = cuts[attempt] if attempt < len(cuts) else (lambda _e: False)
            try:
                result = await self.attempt(cut, resume, approvals)
            except RunNotFoundError:
                continue
            except ResumeError as e:
                assert "p1 (pay)" in str(e), e
                approvals = {"p1": True}
                continue
            resume, approvals = True, None
            if result is not None and result.stop_reason == "approval_required":
                approvals = {p.id: True for p in result.pending}
            elif result is not None:
                return result
        raise AssertionError("the run did not finish")


def _at(k: int) -> Any:
    seen = 0

    def cut(_event: object) -> bool:
        nonlocal seen
        seen += 1
        return seen == k + 1

    return cut


async def _one(wire: str, cuts: list[int], db: Path) -> None:
    start = tasks()
    async with journaled_client(script, wire, db) as (client, journal):
        desk = Desk(client, journal)
        result = await desk.until_done([_at(k) for k in cuts])
        assert result.output == FINAL and result.agent_name == "billing"
        assert_valid_conversation(result)
        assert all(n == 1 for n in desk.ran.values()), desk.ran
    assert tasks() == start


@settings(max_examples=examples(10), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    wire=st.sampled_from(["openai", "anthropic"]), cuts=st.lists(st.integers(0, 30), min_size=1, max_size=3)
)
def test_a_handed_off_run_cancelled_anywhere_resumes_whole(
    anyio_backend: str, tmp_path_factory: pytest.TempPathFactory, wire: str, cuts: list[int]
) -> None:
    db = tmp_path_factory.mktemp("handoff") / "runs.db"
    probe = Probe.take()
    anyio.run(_one, wire, cuts, db, backend=anyio_backend)
    probe.assert_back()


@pytest.mark.anyio
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_a_run_cancelled_between_its_transfer_and_the_handoff_is_handed_over_on_resume(
    wire: str, tmp_path: Path
) -> None:
    # Regression: the caller cancelled the run when the transfer's outcome was in (journaled) but
    # before the handoff was: `resume(run_id)` went on with the desk, whose conversation says it
    # transferred; the desk was asked again, transferred again, and again after the next cut,
    # until the loop guard stopped the run (LoopDetected) -- billing never got the conversation.
    journal = SQLiteJournal(tmp_path / "runs.db")
    try:
        async with FakeFluxRouter(script) as router:
            base = router.anthropic_url if wire == "anthropic" else router.base_url
            async with FluxClient(base_url=base, api_key="k") as client:
                desk = Desk(client, journal)

                def after_transfer(event: object) -> bool:
                    return isinstance(event, ToolCallFinished) and event.record.id == "x1"

                assert await desk.attempt(after_transfer, False, None) is None  # cancelled
                paused = await desk.attempt(lambda _e: False, True, None)
                assert paused.stop_reason == "approval_required" and paused.agent_name == "billing"
                result = await desk.attempt(lambda _e: False, True, {"p1": True})
                assert result.output == FINAL and result.agent_name == "billing"
                assert desk.ran == {"charge": 1, "pay": 1}
                desk_requests = [
                    r for r in router.model_requests if "transfer_to_billing" in str(r.json.get("tools"))
                ]
                assert len(desk_requests) == 1  # the desk's answer was journaled: never asked again
    finally:
        journal.close()
