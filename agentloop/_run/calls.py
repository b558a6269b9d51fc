"""One step's tool calls under the run's rules: the per-message cap, loop detection, the tool-call
budget, resume decisions for interrupted calls, and human approval. What passes is handed to the
Dispatcher.

The rules read a `CallPolicy` (the agent's tools and approval predicate, the run's limits, the
input budget), not the agent: the step's calls are admitted the same way whoever asks. Each call
goes through the rules in the model's order; the first rule that settles it decides its record,
and only calls that pass the loop guard spend the budget. What the step came to is returned
(`CallsDone`: calls waiting for a decision, or the limit that stops the run); the loop raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio.lowlevel

from .._budget import InputBudget
from .._tools.arguments import clip, too_many_calls_text
from .._tools.dispatch import Dispatcher
from .._tools.registry import ToolRegistry
from .._types import PendingCall, ToolCallRecord
from .agent_tool import calls_spent, count_call, nested_pending
from .approval import ApprovalPredicate, Decision, check_approval, decision_record
from .limits import LimitHit, RunLimits, loop_detected, outer_calls_exceeded
from .loopguard import Streak
from .recorder import Recorder
from .state import NOT_COUNTED, Resume, Run, make_record

__all__ = ["CallPolicy", "CallsDone", "StepCalls", "NOT_COUNTED"]

_YIELD_EVERY = (
    64  # calls admitted between two checkpoints: 100,000 calls in a message must not stall the loop
)
_STOP = Streak.STOP


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """The rules one agent's steps admit calls under."""

    tools: ToolRegistry  # the agent's own tools: which are idempotent, which need approval
    require_approval: ApprovalPredicate | None
    limits: RunLimits
    budget: InputBudget


@dataclass(frozen=True, slots=True)
class CallsDone:
    """What a step's calls came to: calls waiting for a human decision, or a limit that stops the run."""

    pending: list[PendingCall]
    stop: LimitHit | None = None


_DONE = CallsDone([])


class _Tally:
    """One step's admission so far."""

    __slots__ = (
        "decisions",
        "loop_stop",
        "outer_spent",
        "over_budget",
        "pending",
        "records",
        "started",
        "to_run",
    )

    def __init__(self, records: dict[str, ToolCallRecord], resume: Resume | None) -> None:
        self.records = records
        self.started = resume.started if resume is not None else frozenset()
        self.decisions: dict[str, Decision] | Any = resume.decisions if resume is not None else {}
        self.to_run: list[dict[str, Any]] = []
        self.pending: list[PendingCall] = []
        self.loop_stop = self.over_budget = False
        self.outer_spent: str | None = None  # a nested run: a run above it spent its max_tool_calls


class StepCalls:
    """One agent's way of running a step's calls: its policy, dispatcher and recorder."""

    __slots__ = ("dispatcher", "policy", "recorder")

    def __init__(self, policy: CallPolicy, dispatcher: Dispatcher, recorder: Recorder) -> None:
        self.policy = policy
        self.dispatcher = dispatcher
        self.recorder = recorder

    async def run(
        self, run: Run, calls: list[dict[str, Any]], step: int, resume: Resume | None = None
    ) -> CallsDone:
        """Admit and run one assistant message's calls; `resume`: what is known of them already."""
        t = _Tally(run.open_step(calls, resume), resume)
        run.step_decisions = t.decisions  # agent tools find their inner runs' decisions here
        per_message = self.policy.budget.max_tool_calls
        extra = too_many_calls_text(len(calls), self.policy.budget) if len(calls) > per_message else ""
        for i, call in enumerate(calls):
            if i and not i % _YIELD_EVERY:
                await anyio.lowlevel.checkpoint()
            if i >= per_message:  # over the per-message budget: not run, not counted, not watched
                if call["id"] not in t.records:
                    fn = call["function"]
                    await self._decide(
                        run,
                        make_record(call["id"], fn["name"], fn["arguments"], step, "too_many_calls", extra),
                    )
                continue
            await self._admit(run, t, call, step)
        if t.to_run:
            await self.dispatcher.run(t.to_run, step)  # each record reaches the run through Run.settle
        t.pending.extend(nested_pending(run, step))  # agent tools whose inner run paused: this run pauses
        if t.pending:
            return CallsDone(t.pending)
        run.close_step()
        stop = self._stop(run, t)
        return _DONE if stop is None else CallsDone([], stop)

    async def _admit(self, run: Run, t: _Tally, call: dict[str, Any], step: int) -> None:
        """One call through the rules, in order; the first that settles it decides its record."""
        cid, fn = call["id"], call["function"]
        name, raw = fn["name"], fn["arguments"]
        verdict = run.guard.observe(name, raw, step)
        done = t.records.get(cid)
        if done is not None:  # settled before the run was interrupted: counted, never run again
            run.tool_count += done.status not in NOT_COUNTED
            t.loop_stop = t.loop_stop or (done.status == "loop_detected" and verdict == _STOP)
            t.over_budget = t.over_budget or done.status == "skipped"
            return
        if verdict:
            t.loop_stop = t.loop_stop or verdict == _STOP
            await self._decide(
                run, make_record(cid, name, raw, step, "loop_detected", run.guard.message(name, verdict))
            )
            return
        limits = self.policy.limits
        t.outer_spent = calls_spent(run) if run.parent is not None else None  # the outer budgets hold too
        if t.outer_spent is not None or not limits.calls_left(run.tool_count):
            t.over_budget = True
            text = t.outer_spent or limits.calls_spent_text()
            await self._decide(run, make_record(cid, name, raw, step, "skipped", text))
            return
        count_call(run)
        if cid in t.started and not self._idempotent(name):
            await self._decide(run, make_record(cid, name, raw, step, "outcome_unknown", self._unknown(name)))
            return
        await self._approve(run, t, call, step)

    async def _approve(self, run: Run, t: _Tally, call: dict[str, Any], step: int) -> None:
        """The last rule: a call that needs approval waits for its decision, or takes it."""
        cid, fn = call["id"], call["function"]
        p = self.policy
        args = await check_approval(
            p.tools, p.require_approval, fn["name"], fn["arguments"], p.budget, self.dispatcher.checker
        )
        if args is not None:
            pending = PendingCall(cid, fn["name"], args, step)
            if cid not in t.decisions:
                t.pending.append(pending)
                return
            stand_in = decision_record(pending, t.decisions[cid], fn["arguments"])
            if stand_in is not None:
                await self._decide(run, stand_in)
                return
        t.to_run.append(call)

    async def _decide(self, run: Run, record: ToolCallRecord) -> None:
        """A call the step settles without running it (skipped, rejected, ...): committed, then its events."""
        await run.settle(record)
        await self.recorder.call_decided(record)

    def _idempotent(self, name: str) -> bool:
        tool = self.policy.tools.get(name)
        return tool is not None and tool.idempotent

    def _unknown(self, name: str) -> str:
        why = (
            "it is not marked idempotent"
            if name in self.policy.tools
            else "no tool of that name is registered on the resuming agent"
        )
        return (
            f"Outcome unknown: the run was interrupted while {clip(name, self.policy.budget.max_tool_name_chars)!r} "
            f"was running, and it was not run again because {why}. It may or may not have "
            "taken effect: check before calling it again."
        )

    def _stop(self, run: Run, t: _Tally) -> LimitHit | None:
        if t.loop_stop:
            return loop_detected(run.guard.streak)
        if t.over_budget and t.outer_spent is not None:
            return outer_calls_exceeded(t.outer_spent)
        if t.over_budget:
            return self.policy.limits.calls_exceeded()
        return None
