"""The one sink for what a run produces: events (to the stream and observers), journal entries, the log.

The loop, the step's calls and the final answer never write to the journal, emit an event or log
by hand: they tell the `Recorder` what happened (`model_answered`, `call_settled`, `paused`,
`finished`, ...) and it writes each of the three that is there (no listener, no journal, logging
off: nothing is built). So an event and its journal entry cannot drift apart, and the order they
happen in is written once.

The journal's entry kinds (`Entry`, named in `entries.py` so the journal's SQL readers can use
them too) are written and replayed here, each kind's writer beside its replay: what a
kind's data holds is read in the same place it is written. `replay(run)` rebuilds a journaled
run (`Replay`) from its entries; `state.Run.from_replay` turns that into a run to resume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .._events import (
    ModelRequestStarted,
    ModelResponded,
    RunFinished,
    RunPaused,
    RunStarted,
    StepFinished,
    TextDelta,
    ThinkingDelta,
    ToolCallFinished,
    ToolCallStarted,
)
from .._exceptions import JournalCorruptError
from .._model import Emit
from .._types import ModelTurn, PendingCall, RunResult, ToolCallRecord, Usage
from .._wire.thinking import THINKING_KEY
from .approval import Decision, decision_from_data
from .conversation import history_message
from .entries import Entry
from .finish import finish_reason
from .journal import Journal, JournaledRun, JournalEntry

__all__ = ["Entry", "Recorder", "Replay", "replay", "close_calls", "record_data"]


_MODEL, _MESSAGE, _HANDOFF = Entry.MODEL.value, Entry.MESSAGE.value, Entry.HANDOFF.value
_TOOL_START, _TOOL_END, _PAUSED = Entry.TOOL_START.value, Entry.TOOL_END.value, Entry.PAUSED.value
_APPROVALS, _RESUMED, _FAILED, _END = (
    e.value for e in (Entry.APPROVALS, Entry.RESUMED, Entry.FAILED, Entry.END)
)


def close_calls(
    calls: Iterable[dict[str, Any]],
    records: dict[str, ToolCallRecord],
    missing: Callable[[dict[str, Any]], ToolCallRecord],
    tool_calls: list[ToolCallRecord],
    messages: list[dict[str, Any]],
) -> None:
    """Close a step: its records and tool messages in the model's order (a live run and a replay alike).

    `missing(call)` answers for a call without a record (a live run: cancelled; a replay: damaged).
    """
    closed = [records.get(c["id"]) or missing(c) for c in calls]
    tool_calls.extend(closed)
    messages.extend({"role": "tool", "tool_call_id": r.id, "content": r.content} for r in closed)


# --- replay -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Replay:
    """A journaled run rebuilt: the conversation so far and the state of its last step."""

    messages: list[dict[str, Any]]
    steps: int = 0
    usage: Usage = field(default_factory=Usage)
    turns: list[tuple[str, Usage]] = field(default_factory=list)  # (model, usage) of each answer
    tool_calls: list[ToolCallRecord] = field(default_factory=list)  # of the closed steps
    calls: list[dict[str, Any]] | None = None  # the last step's calls when it is not closed
    records: dict[str, ToolCallRecord] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    pending: list[PendingCall] = field(default_factory=list)
    approvals: dict[str, Decision] = field(default_factory=dict)
    final: tuple[str, str | None] | None = None  # (stop_reason, output)
    finish_reason: str | None = None  # of the last answer (RunResult.finish_reason when it was the final one)
    ended: bool = False  # the "end" entry is there (a crash can come between the final answer and it)
    final_data: Any = None  # a structured output's JSON data ("output_data"), when there is one
    has_final_data: bool = False
    agent: str | None = None  # the agent a handoff passed the run to (the last one)
    handoff_step: int = 0  # the step that handoff was made in

    def close_step(self) -> None:
        if not self.calls:
            return
        close_calls(self.calls, self.records, _no_outcome, self.tool_calls, self.messages)
        self.calls, self.records, self.started, self.pending, self.approvals = None, {}, set(), [], {}


def _no_outcome(call: dict[str, Any]) -> ToolCallRecord:
    raise KeyError(call["id"])  # a step moved on without an outcome: the journal is damaged


def replay(run: JournaledRun) -> Replay:
    """The state of a journaled run (`JournalCorruptError` when its entries cannot be replayed)."""
    try:
        return _replay(run)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        # a Journal of the caller's may hand back anything: naming the run must not fail too
        run_id = getattr(getattr(run, "info", None), "run_id", None)
        raise JournalCorruptError(
            f"run {run_id!r}: the journal entries cannot be replayed ({type(e).__name__}: {e}); "
            "the journal was modified or damaged"
        ) from None


def _replay(run: JournaledRun) -> Replay:
    r = Replay(messages=list(run.header["messages"]))
    for e in run.entries:
        step = _REPLAY.get(e.kind)
        if step is not None:  # "resumed", "failed": for readers, not for the run's state
            step(r, e)
    last = r.messages[-1] if r.steps else None
    if r.final is None and last is not None and last.get("role") == "assistant" and not r.calls:
        r.final = ("final", last.get("content"))  # the final answer was committed, its "end" was not
    r.started -= r.records.keys()
    r.pending = [p for p in r.pending if p.id not in r.records]
    return r


# --- each entry kind: what is written, and how it is replayed -----------------------------------


def model_data(
    message: dict[str, Any], usage: Usage, model: str, finish: str | None = None
) -> dict[str, Any]:
    data = {"message": message, "usage": usage.to_data(), "model": model}
    if finish is not None:  # read back as a finished run's finish_reason (resume returns it as it was)
        data["finish_reason"] = finish
    return data


def _replay_model(r: Replay, e: JournalEntry) -> None:
    r.close_step()
    d = e.data
    message = d["message"]  # as the model sent it: the calls are rerun from their raw arguments
    r.messages.append(history_message(message))
    r.steps = e.step
    usage = Usage.from_data(d["usage"])
    r.usage = r.usage + usage
    if "model" in d:
        r.turns.append((d["model"], usage))
    finish = d.get("finish_reason")
    r.finish_reason = finish if isinstance(finish, str) else None
    r.calls = message.get("tool_calls") or None


def _replay_message(r: Replay, e: JournalEntry) -> None:
    r.close_step()
    r.calls = None
    r.messages.append(e.data["message"])


def _replay_handoff(r: Replay, e: JournalEntry) -> None:
    r.close_step()  # the conversation the agent handed to starts from (filtered)
    r.messages, r.agent, r.handoff_step = list(e.data["messages"]), e.data["agent"], e.step


def _call_id(entry: JournalEntry) -> str:
    """The call a tool entry is about; one without (a damaged row) cannot be replayed (ValueError)."""
    if entry.call_id is None:
        raise ValueError(f"a {entry.kind} entry has no call id")
    return entry.call_id


def _replay_tool_start(r: Replay, e: JournalEntry) -> None:
    r.started.add(_call_id(e))


def record_data(r: ToolCallRecord) -> dict[str, Any]:
    """A call's outcome as its "tool_end" entry holds it."""
    return {
        "name": r.name,
        "arguments": r.arguments,
        "status": r.status,
        "content": r.content,
        "duration_s": r.duration_s,
        "error": r.error,
        "raw_arguments": r.raw_arguments,
        "traceback": r.traceback,
    }


def _replay_tool_end(r: Replay, e: JournalEntry) -> None:
    call_id = _call_id(e)
    r.records[call_id] = ToolCallRecord(call_id, step=e.step, **e.data)


def pending_data(pending: list[PendingCall]) -> dict[str, Any]:
    return {
        "pending": [{"id": p.id, "name": p.name, "arguments": p.arguments, "step": p.step} for p in pending]
    }


def _replay_paused(r: Replay, e: JournalEntry) -> None:
    r.pending = [PendingCall(**p) for p in e.data["pending"]]


def _replay_approvals(r: Replay, e: JournalEntry) -> None:  # written with approval.decision_to_data
    r.approvals.update({k: decision_from_data(v) for k, v in e.data.items()})


def _replay_end(r: Replay, e: JournalEntry) -> None:
    d = e.data
    if r.calls and all(c["id"] in r.records for c in r.calls):
        r.close_step()  # a run that ended on a tool step (the final_result tool)
    r.final = (d["stop_reason"], d["output"])
    if "output_data" in d:  # a structured output: "output" is its JSON text, this its data
        r.final_data, r.has_final_data = d["output_data"], True
    r.ended = True


_REPLAY: dict[str, Callable[[Replay, JournalEntry], None]] = {
    _MODEL: _replay_model,
    _MESSAGE: _replay_message,
    _HANDOFF: _replay_handoff,
    _TOOL_START: _replay_tool_start,
    _TOOL_END: _replay_tool_end,
    _PAUSED: _replay_paused,
    _APPROVALS: _replay_approvals,
    _END: _replay_end,
}


# --- the sink ---------------------------------------------------------------------------------


class Recorder:
    """Where one agent's steps of a run report what happened: events, journal entries, log lines.

    `emit`, `journal` and `log` are each None when nobody listens / the run is not durable /
    logging is off; each method then does only what is left (often nothing).
    """

    __slots__ = ("emit", "journal", "log", "run_id")

    def __init__(self, run_id: str, journal: Journal | None, emit: Emit | None, log: Any) -> None:
        self.run_id = run_id
        self.journal = journal
        self.emit = emit
        self.log = log

    async def _append(
        self,
        kind: str,
        data: dict[str, Any],
        step: int,
        call_id: str | None = None,
        status: str | None = None,
    ) -> None:
        assert self.journal is not None
        await self.journal.append(self.run_id, kind, data, step=step, call_id=call_id, status=status)

    # --- the run --------------------------------------------------------------------------------

    async def run_started(self, model: str) -> None:
        if self.emit is not None:
            await self.emit(RunStarted(self.run_id, model))

    async def finished(self, result: RunResult[Any], data: dict[str, Any]) -> None:
        """The run's final result: its "end" entry (`data`), the log line, `RunFinished`."""
        if self.journal is not None:
            await self._append(_END, data, result.steps, status=result.stop_reason)
        if self.log is not None:
            total = result.usage.total_tokens
            self.log.debug(
                "run finished", steps=result.steps, stop_reason=result.stop_reason, total_tokens=total
            )
        if self.emit is not None:
            await self.emit(RunFinished(self.run_id, result))

    async def ended(self, step: int, stop_reason: str, output: Any) -> None:
        """The "end" entry of a journaled final answer whose "end" a crash cut off."""
        if self.journal is not None:
            await self._append(_END, {"stop_reason": stop_reason, "output": output}, step, status=stop_reason)

    async def paused(self, result: RunResult[Any]) -> None:
        """Calls wait for a human decision: the "paused" entry, `RunPaused`."""
        if self.journal is not None:
            await self._append(_PAUSED, pending_data(result.pending), result.steps, status="paused")
        if self.emit is not None:
            await self.emit(RunPaused(self.run_id, result))

    async def failed(self, step: int, status: str, data: dict[str, Any]) -> None:
        await self._append(_FAILED, data, step, status=status)

    async def resumed(self, step: int, after: str) -> None:
        await self._append(_RESUMED, {"after": after}, step, status="running")

    async def approvals(self, step: int, data: dict[str, Any]) -> None:
        await self._append(_APPROVALS, data, step)

    async def handed_off(self, step: int, agent: str | None, messages: list[dict[str, Any]]) -> None:
        if self.journal is not None:
            await self._append(_HANDOFF, {"agent": agent, "messages": messages}, step)

    # --- a step ---------------------------------------------------------------------------------

    async def request_started(self, step: int, model: str, messages: int) -> None:
        if self.log is not None:
            self.log.debug("model request", step=step, messages=messages)
        if self.emit is not None:
            await self.emit(ModelRequestStarted(self.run_id, step, model, messages))

    def request_retried(self, step: int) -> None:
        if self.log is not None:
            self.log.debug("response_format refused by the route; using the final_result tool", step=step)

    async def model_answered(self, step: int, turn: ModelTurn, calls: int, model: str) -> None:
        """The model's answer: `ModelResponded`, its "model" entry (committed before its calls run),
        then its text as one `TextDelta` when it was not streamed."""
        emit = self.emit
        if emit is not None:
            await emit(
                ModelResponded(
                    self.run_id, step, turn.usage, turn.finish_reason, calls, turn.model, turn.request_id
                )
            )
        if self.journal is not None:
            await self._append(_MODEL, model_data(turn.message, turn.usage, model, finish_reason(turn)), step)
        if emit is not None and not turn.streamed:
            for block in turn.message.get(THINKING_KEY) or ():  # before the text, as a stream has them
                text = block.get("thinking") if isinstance(block, dict) else None
                if text and isinstance(text, str):
                    await emit(ThinkingDelta(self.run_id, step, text))
            content = turn.message.get("content")
            if content:
                await emit(TextDelta(self.run_id, step, content))

    async def message_added(self, step: int, message: dict[str, Any]) -> None:
        if self.journal is not None:
            await self._append(_MESSAGE, {"message": message}, step)

    async def step_finished(self, step: int, usage: Usage, calls: int, *, log: bool = True) -> None:
        if log and self.log is not None:
            self.log.debug("step finished", step=step, tool_calls=calls, total_tokens=usage.total_tokens)
        if self.emit is not None:
            await self.emit(StepFinished(self.run_id, step, usage, calls))

    # --- a call ---------------------------------------------------------------------------------

    async def call_started(self, record: ToolCallRecord) -> None:
        """A call is about to run (the Dispatcher's `on_invoke`; only set on a journaled run)."""
        data = {"name": record.name, "arguments": record.raw_arguments}
        await self._append(_TOOL_START, data, record.step, record.id)

    async def call_settled(self, record: ToolCallRecord) -> None:
        """A call's outcome is final: committed before the loop can move on (`Run.settle`, journaled runs)."""
        await self._append(_TOOL_END, record_data(record), record.step, record.id)

    async def call_decided(self, record: ToolCallRecord) -> None:
        """A call the step settled without running it: it still gets both events."""
        if self.emit is not None:
            await self.emit(
                ToolCallStarted(self.run_id, record.step, record.id, record.name, record.raw_arguments)
            )
            await self.emit(ToolCallFinished(self.run_id, record.step, record))

    async def call_finished(self, record: ToolCallRecord) -> None:
        if self.emit is not None:
            await self.emit(ToolCallFinished(self.run_id, record.step, record))
