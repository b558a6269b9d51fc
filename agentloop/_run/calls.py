"""One step's tool calls under the run's rules: loop detection, the tool-call budget, resume
decisions for interrupted calls, and human approval. What passes is handed to the Dispatcher.

Kept apart from the loop itself (`_agent.py`) so that the loop reads as the loop: send, append,
run the step's calls, repeat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio.lowlevel

from .._events import ToolCallFinished, ToolCallStarted
from .._exceptions import LoopDetected, RunLimitExceeded, ToolCallLimitExceeded
from .._tools.arguments import clip, too_many_calls_text
from .._tools.dispatch import Dispatcher
from .._types import PendingCall, RunResult, ToolCallRecord
from .agent_tool import calls_spent, count_call
from .approval import check_approval, decision_record
from .journal import Journal
from .limits import RunLimits
from .state import Resume, Run, make_record

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["tools_step", "limit_error", "NOT_COUNTED"]

# calls that do not use the run's max_tool_calls budget
NOT_COUNTED = frozenset({"skipped", "loop_detected", "too_many_calls"})
_YIELD_EVERY = (
    64  # calls settled between two checkpoints: a message with 100,000 calls must not stall the loop
)


async def tools_step(
    agent: Agent[Any, Any],
    run: Run,
    calls: list[dict[str, Any]],
    step: int,
    dispatcher: Dispatcher,
    limits: RunLimits,
    resume: Resume | None,
) -> RunResult | None:
    """Run one assistant message's calls; None when done, the paused result when approvals are needed."""
    run.step_calls = calls
    run.step_records = records = dict(resume.records) if resume is not None else {}
    started = resume.started if resume is not None else frozenset()
    decisions = resume.decisions if resume is not None else {}
    guard, max_calls = run.guard, limits.max_tool_calls
    assert guard is not None, "Agent._loop sets run.guard before the first step"
    emit = dispatcher.emit
    budget = dispatcher.budget
    per_message = budget.max_tool_calls
    extra_text = too_many_calls_text(len(calls), budget) if len(calls) > per_message else ""

    async def decided(record: ToolCallRecord) -> None:
        """A call the loop settles without running it (skipped, rejected, ...): still an event."""
        await run.settle(record)
        if emit is not None:  # every call gets both events, even one that never runs
            await emit(ToolCallStarted(run.run_id, record.step, record.id, record.name, record.raw_arguments))
            await emit(ToolCallFinished(run.run_id, record.step, record))

    to_run: list[dict[str, Any]] = []
    pending: list[PendingCall] = []
    loop_stop = over_budget = False
    outer_spent: str | None = None  # a nested run: a run above it spent its max_tool_calls
    for i, call in enumerate(calls):
        cid, fn = call["id"], call["function"]
        name, raw = fn["name"], fn["arguments"]
        if i and not i % _YIELD_EVERY:
            await anyio.lowlevel.checkpoint()
        if i >= per_message:  # over the per-message budget: not run, not counted, not watched
            if cid not in records:
                await decided(make_record(cid, name, raw, step, "too_many_calls", extra_text))
            continue
        verdict = guard.observe(name, raw)
        done = records.get(cid)
        if done is not None:
            run.tool_count += done.status not in NOT_COUNTED
            loop_stop = loop_stop or (done.status == "loop_detected" and verdict == 2)
            over_budget = over_budget or done.status == "skipped"
            continue
        if verdict:
            loop_stop = loop_stop or verdict == 2
            await decided(make_record(cid, name, raw, step, "loop_detected", guard.message(name, verdict)))
            continue
        outer_spent = calls_spent(run) if run.parent is not None else None  # the outer budgets hold too
        if outer_spent is not None or (max_calls is not None and run.tool_count >= max_calls):
            over_budget = True
            text = (
                outer_spent or f"Not run: the run's budget of max_tool_calls={max_calls} tool calls is spent."
            )
            await decided(make_record(cid, name, raw, step, "skipped", text))
            continue
        count_call(run)
        tool = agent.tools.get(name)
        if cid in started and not (tool is not None and tool.idempotent):
            text = (
                f"Outcome unknown: the run was interrupted while {clip(name, budget.max_tool_name_chars)!r} was running, and it was not "
                "run again because it is not marked idempotent. It may or may not have taken effect: "
                "check before calling it again."
            )
            await decided(make_record(cid, name, raw, step, "outcome_unknown", text))
            continue
        args = await check_approval(
            agent.tools, agent.require_approval, name, raw, budget, dispatcher.checker
        )
        if args is not None:
            p = PendingCall(cid, name, args, step)
            if cid not in decisions:
                pending.append(p)
                continue
            stand_in = decision_record(p, decisions[cid], raw)
            if stand_in is not None:
                await decided(stand_in)
                continue
        to_run.append(call)
    if to_run:
        await dispatcher.run(to_run, step)  # each record reaches run.step_records through settle
    if pending:
        return await _pause(run.journal, run, pending)
    run.close_step()
    if loop_stop:
        raise limit_error(
            run,
            LoopDetected,
            f"the model kept calling the same tool with the same arguments ({guard.streak} times in a row, "
            "after being told to stop); the run was stopped. The partial result is in .result.",
        )
    if over_budget and outer_spent is not None:
        raise limit_error(
            run,
            ToolCallLimitExceeded,
            outer_spent.replace("Not run: t", "T") + " The partial result is in .result.",
        )
    if over_budget:
        raise limit_error(
            run,
            ToolCallLimitExceeded,
            f"the model asked for more than max_tool_calls={max_calls} tool calls; the calls over the "
            "budget were not run (status 'skipped'). The partial result is in .result; raise the limit or "
            "continue with Agent.run(messages=exc.result.messages).",
        )
    return None


async def _pause(journal: Journal | None, run: Run, pending: list[PendingCall]) -> RunResult[Any]:
    done = [run.step_records[c["id"]] for c in run.step_calls or () if c["id"] in run.step_records]
    result = RunResult(
        None,
        run.messages,
        run.steps,
        run.total_usage(),
        "approval_required",
        run.run_id,
        [*run.tool_calls, *done],
        pending,
        run.new_start,
        run.agent_name,
    )
    if journal is not None:
        data = {
            "pending": [
                {"id": p.id, "name": p.name, "arguments": p.arguments, "step": p.step} for p in pending
            ]
        }
        await journal.append(run.run_id, "paused", data, step=run.steps, status="paused")
    return result


def limit_error(run: Run, cls: type[RunLimitExceeded], message: str) -> RunLimitExceeded:
    """The limit's exception, carrying the run's partial result."""
    return cls(message, run.result(None, cls.stop_reason))
