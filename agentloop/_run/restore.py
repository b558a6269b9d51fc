"""A run picked up again (`Agent.resume`): from its journal (by id) or from a paused `RunResult`.

From a journal: the run is leased, replayed (`recorder.replay`), the decisions given are checked
against its pending calls and journaled, and a "resumed" entry says where it picked up. From a
`RunResult`: the result must be paused, and its last message must be the assistant message of
the pending calls. Either way the run resumes at its last step (`state.Resume`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio

from .._exceptions import ConversationError, JournalCorruptError, ResumeError
from .._tools.arguments import parse_arguments
from .._types import PendingCall, RunResult
from .approval import Decision, check_decisions, decision_to_data
from .conversation import check_conversation
from .journal import Journal
from .recorder import Recorder, replay
from .state import Resume, Run

__all__ = ["restore"]


Restored = Callable[[Run], Awaitable[None]]  # what else a run read back from its journal picks up


async def restore(
    journal: Journal | None,
    source: RunResult[Any] | str,
    approvals: Mapping[str, Decision] | None,
    restored: Restored | None = None,
    *,
    nested: bool = False,
) -> Run:
    """The run `source` names, ready for the loop; `journal`: the agent's. `restored(run)`: awaited
    for a run read from the journal (its agent tools' inner runs' usage, `agent_tool.py`).
    `nested`: an agent tool's inner run, resumed because its outer run (resumed) calls the tool
    again; the outer run may have been cut (cancelled, killed) anywhere, so its decisions for the
    inner run may not be there yet or may have been applied already. A paused inner run without
    decisions pauses again at once (and so does the outer run: its call must not fail); decisions
    the inner run has no pending call for any more were applied by an earlier attempt of the call."""
    if approvals is not None and not isinstance(approvals, Mapping):  # before a lease is taken
        check_decisions([], approvals)  # raises ResumeError, saying what approvals must be
    if isinstance(source, str):
        if journal is None:
            raise ResumeError(
                f"cannot resume run {source!r} by id: this agent has no journal. Pass journal=... "
                "to Agent, or resume from the RunResult of a paused run."
            )
        return await _from_journal(journal, source, approvals, restored, nested)
    if not isinstance(source, RunResult):
        raise ResumeError(f"resume takes a RunResult or a journaled run id, got {type(source).__name__}")
    # the journal knows best (and holds the lease)
    if journal is not None and source.run_id in {r.run_id for r in await journal.list_runs()}:
        return await _from_journal(journal, source.run_id, approvals, restored)
    return _from_result(source, approvals)


async def _from_journal(
    journal: Journal,
    run_id: str,
    approvals: Mapping[str, Decision] | None,
    restored: Restored | None,
    nested: bool = False,
) -> Run:
    token = await journal.acquire(run_id)
    try:
        loaded = await journal.load(run_id)
        state = replay(loaded)
        _check_replayed(run_id, state.messages)
        run = Run.from_replay(run_id, state, int(loaded.header.get("new_start", 0)))
        run.leased(token)
        if restored is not None:
            await restored(run)
        rec = Recorder(run_id, journal, None, None)
        if state.pending:
            # replay keeps pending calls only while their step's calls are open
            assert state.calls is not None, "pending calls without their step"
            decided = {**state.approvals, **dict(approvals or {})}
            # nested: the calls without a decision wait for one again (calls.py pauses them)
            decisions = decided if nested and not approvals else check_decisions(state.pending, decided)
            check_approved_arguments(state.calls, state.pending, decisions)
            if approvals:
                await rec.approvals(run.steps, {k: decision_to_data(v) for k, v in approvals.items()})
            run.resume_at(Resume(state.calls, state.records, state.started, decisions))
        elif approvals and not nested:
            raise ResumeError(f"run {run_id!r} has no pending calls; approvals are not needed")
        if state.final is None:  # where a resume picked up: shown by the run inspector
            was = loaded.info.status
            after = "paused" if state.pending else ("interrupted" if was == "running" else was)
            await rec.resumed(run.steps, after)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await journal.release(run_id, token)
        raise
    return run


def _check_replayed(run_id: str, messages: list[dict[str, Any]]) -> None:
    """The conversation read back is held to what `run(messages=...)` takes: a journal row edited
    by hand (a message that is a str, content 5) was sent as it was, or crashed the Anthropic
    wire's encoder with a raw AttributeError."""
    try:
        check_conversation(messages)
    except ConversationError as e:
        raise JournalCorruptError(
            f"run {run_id!r}: the journal's conversation is not one a run can send ({e}); "
            "the journal was modified or damaged"
        ) from None


def _from_result(source: RunResult[Any], approvals: Mapping[str, Decision] | None) -> Run:
    if not source.pending:
        raise ResumeError(
            f"run {source.run_id!r} is not paused (stop_reason={source.stop_reason!r}); to continue a "
            "conversation, call Agent.run(messages=result.messages)"
        )
    decisions = check_decisions(source.pending, approvals)
    last = source.messages[-1] if source.messages else {}
    calls = last.get("tool_calls") or []
    ids = {c.get("id") for c in calls}
    if last.get("role") != "assistant" or not {p.id.split("/")[0] for p in source.pending} <= ids:
        raise ResumeError(
            f"run {source.run_id!r}: the last message is not the assistant message of the pending calls"
        )
    check_approved_arguments(calls, source.pending, decisions)
    step = source.steps
    done = {r.id: r for r in source.tool_calls if r.step == step and r.id in ids}
    messages = check_conversation(source.messages)
    return Run.from_paused(source, messages, Resume(calls, done, frozenset(), decisions), set(done))


def check_approved_arguments(
    calls: list[dict[str, Any]], pending: list[PendingCall], decisions: Mapping[str, Any]
) -> None:
    """An approved call runs as the tool and with the arguments the human was shown
    (`PendingCall.name`, `.arguments`), or not at all: a stored paused run whose call was changed after the pause is refused, never run
    with arguments nobody approved. (An agent tool's inner calls are checked by the inner run.)"""
    fns = {c.get("id"): c.get("function") or {} for c in calls if isinstance(c, dict)}
    for p in pending:
        if "/" in p.id or decisions.get(p.id) is not True:
            continue
        fn = fns.get(p.id, {})
        try:
            runs_with: Any = parse_arguments(fn.get("arguments"))
        except ValueError:
            runs_with = None
        # the name too: a pending call renamed after the pause ("pay" shown as "get_weather") ran "pay"
        if runs_with != p.arguments or fn.get("name") != p.name:
            raise ResumeError(
                f"call {p.id!r} ({p.name}) would run as another tool or with arguments other than the "
                "ones shown for approval: the paused run was changed after it paused. Decide on the run "
                "as stored."
            )
