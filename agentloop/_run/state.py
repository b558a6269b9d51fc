"""The state of one run, and what a restored run picks up from.

A `Run` is complete when constructed (`Run(...)`, `Run.from_replay`, `Run.from_paused`); the loop
changes it only through the methods below, each named after what happened (`answered`,
`open_step`, `settle`, `close_step`, `hand_to`, ...). What still writes fields directly is the
nesting of agent runs (`agent_tool.py`: the counters of the runs above a nested run).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from .._context import RunContext, put_system
from .._exceptions import RunLimitExceeded
from .._types import PendingCall, RunResult, StopReason, ToolCallRecord, Usage
from .._usage import make_usage
from .approval import Decision
from .journal import Journal
from .limits import LimitHit, RunLimits
from .loopguard import LoopGuard
from .output_spec import StoredOutput
from .recorder import Recorder, Replay, close_calls

__all__ = ["Run", "Resume", "make_record", "NOT_COUNTED"]

# calls that do not use the run's max_tool_calls budget
NOT_COUNTED = frozenset({"skipped", "loop_detected", "too_many_calls"})
_NO_RECORDER = Recorder("", None, None, None)  # before a loop runs the run: nothing to record
_NO_GUARD = LoopGuard(None)  # never fires and keeps no state: shared until the loop sets the run's own


class Resume:
    """Where a restored run picks up: the calls of its last step and what is known about them."""

    __slots__ = ("calls", "decisions", "records", "started")

    def __init__(
        self,
        calls: list[dict[str, Any]],
        records: dict[str, ToolCallRecord],
        started: frozenset[str] | set[str],
        decisions: Mapping[str, Decision],
    ) -> None:
        self.calls = calls
        self.records = records  # finished calls: not run again
        self.started = started  # started, never finished (a crash): re-run only if idempotent
        self.decisions = decisions


class Run:
    """The state of one run."""

    __slots__ = (
        "agent_name",
        "deps",
        "emit",
        "ended",
        "final",
        "guard",
        "handed_at",
        "handoff",
        "instructions",
        "journal",
        "lease",
        "limits",
        "messages",
        "model",
        "nested_steps",
        "new_start",
        "observe",
        "observers",
        "output_failures",
        "parent",
        "recorder",
        "resume",
        "run_id",
        "settings",
        "step_calls",
        "step_decisions",
        "step_paused",
        "step_records",
        "steps",
        "tool_calls",
        "tool_count",
        "turns",
        "usage",
    )

    def __init__(
        self,
        run_id: str,
        messages: list[dict[str, Any]],
        *,
        new_start: int = 0,
        instructions: Any = None,
        agent_name: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.messages = messages
        self.new_start = new_start  # index of the first message this run added (RunResult.new_messages)
        self.instructions = instructions  # a dynamic instructions function the loop still has to call
        self.agent_name = agent_name  # the agent running the loop (changes at a handoff)
        self.steps = 0
        self.usage = Usage()
        self.turns: list[tuple[str, Usage]] = []  # (model, usage) of each request: Usage.by_model
        self.tool_calls: list[ToolCallRecord] = []
        self.tool_count = 0  # calls that spent the max_tool_calls budget
        self.guard = _NO_GUARD
        self.step_calls: list[dict[str, Any]] | None = None  # the calls of the step in progress
        self.step_records: dict[str, ToolCallRecord] = {}  # ...and the outcomes they have so far
        self.step_decisions: Mapping[str, Any] = {}  # ...the decisions it resumes with
        self.step_paused: dict[str, Any] = {}  # ...and its agent tools whose inner run paused
        self.output_failures = 0  # final answers that failed output_type validation
        self.resume: Resume | None = None
        self.final: RunResult[Any] | None = None
        self.ended = True  # False: a journaled final answer still lacks its "end" entry
        # per run (Agent.run's arguments): set by `configure`
        self.deps: Any = None  # RunContext.deps: live state, never journaled
        self.model = ""  # the model requested for this run (Agent.model unless overridden)
        self.settings: Mapping[str, Any] = {}
        # set by the loop when it starts (`begin`, `attach`) and for each agent's steps (`recorder`)
        self.journal: Journal | None = None
        self.lease: str | None = None
        self.limits: RunLimits | None = None  # the RunLimits the loop runs under (nested runs check them too)
        self.emit: Any = None  # the run's emit and observers-only emit, for its nested runs
        self.observe: Any = None
        self.recorder = _NO_RECORDER
        # Agents as tools and handoffs (agent_tool.py, handoff.py):
        self.parent: Any = None  # a nested run: the outer run's call it works for (a `Parent`)
        self.nested_steps = 0  # model requests of nested runs, counted against max_steps
        self.observers: frozenset[Any] = frozenset()  # observers that already see this run's events
        self.handoff: Any = None  # a Handoff the model asked for in the step in progress
        self.handed_at = 0  # the step of the last handoff taken (journaled), 0 for none

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_replay(cls, run_id: str, state: Replay, new_start: int) -> Run:
        run = cls(run_id, state.messages, new_start=new_start, agent_name=state.agent)
        run.handed_at = state.handoff_step
        run.steps, run.usage, run.tool_calls, run.turns = (
            state.steps,
            state.usage,
            state.tool_calls,
            state.turns,
        )
        if state.final is not None:
            final = run.result(state.final[1], state.final[0])
            final.finish_reason = state.finish_reason
            if state.has_final_data:  # validated against output_type when the run is finished
                final.output = StoredOutput(state.final_data)
            run.final = final
            run.ended = state.ended
        elif state.calls:
            run.resume = Resume(state.calls, state.records, state.started, {})
        return run

    @classmethod
    def from_paused(
        cls, source: RunResult[Any], messages: list[dict[str, Any]], resume: Resume, done: set[str]
    ) -> Run:
        """A paused `RunResult` (no journal) picked up again; `done`: its last step's settled calls."""
        run = cls(source.run_id, messages, new_start=source.new_start)
        run.steps, run.usage = source.steps, source.usage
        run.agent_name = source.agent_name  # paused after a handoff: the agent it was handed to goes on
        run.tool_calls = [r for r in source.tool_calls if not (r.step == source.steps and r.id in done)]
        run.resume = resume
        return run

    def configure(self, deps: Any, model: str, settings: Mapping[str, Any]) -> None:
        """What one call of run / resume gives: live deps, the model and its settings."""
        self.deps, self.model, self.settings = deps, model, settings

    def begin(self, emit: Any, observe: Any, limits: RunLimits, journal: Journal | None) -> None:
        """The loop takes the run: where its events go, its limits, its journal."""
        self.emit, self.observe, self.limits, self.journal = emit, observe, limits, journal

    def leased(self, token: str) -> None:
        """The journal leased the run to this process (`token` releases it)."""
        self.lease = token

    def run_by(self, agent_name: str | None) -> None:
        """The agent whose steps run now (a restored run's: the one it was handed to)."""
        self.agent_name = agent_name

    def resume_at(self, resume: Resume) -> None:
        """Where the loop picks the run up: its last step's calls and what is known of them."""
        self.resume = resume

    def record_to(self, recorder: Recorder) -> None:
        """Where the steps of the agent running now report (events, journal entries, log lines)."""
        self.recorder = recorder

    def count_from_history(self, threshold: int | None) -> None:
        """A run's first agent: the loop guard and the call count start from the calls so far."""
        self.guard = LoopGuard(threshold, ((r.name, r.raw_arguments, r.step) for r in self.tool_calls))
        self.tool_count = sum(r.status not in NOT_COUNTED for r in self.tool_calls)

    def take_instructions(self) -> Any:
        """The dynamic instructions still to resolve (once), or None."""
        instructions, self.instructions = self.instructions, None
        return instructions

    def add_system(self, text: str) -> None:
        """The resolved instructions, first in the conversation (`place_instructions` left the
        dynamic ones to the loop only where they go first: no leading system message, or one
        that per-run instructions replace)."""
        self.new_start += put_system(self.messages, text)

    def take_resume(self) -> Resume | None:
        resume, self.resume = self.resume, None
        return resume

    # --- the steps ----------------------------------------------------------------------------

    def answered(self, step: int, model: str, usage: Usage, message: dict[str, Any]) -> None:
        """A model answer: the step is made, its usage counted, its message appended."""
        self.steps = step
        self.usage = self.usage + usage
        self.turns.append((model, usage))  # split by model when a result is made, not per step
        self.messages.append(message)

    def add_message(self, message: dict[str, Any]) -> None:
        """A message the loop itself adds (output-validation feedback)."""
        self.messages.append(message)

    def output_failed(self) -> int:
        """One more final answer failed output_type validation; how many have."""
        self.output_failures += 1
        return self.output_failures

    def open_step(self, calls: list[dict[str, Any]], resume: Resume | None) -> dict[str, ToolCallRecord]:
        """A step's calls start; their records so far (a resumed step's) are returned, to add to."""
        self.step_calls = calls
        self.step_records = records = dict(resume.records) if resume is not None else {}
        return records

    async def settle(self, record: ToolCallRecord) -> bool:
        """A call's outcome is final: commit it (durable runs) before the loop can move on. False
        when it has none yet (an agent tool's inner run paused): nothing kept, no event."""
        if record.id in self.step_paused:
            return False
        self.step_records[record.id] = record
        if self.recorder.journal is not None:  # no coroutine per call when there is nothing to commit
            await self.recorder.call_settled(record)
        return True

    def close_step(self) -> None:
        """Append the tool messages of the step in progress, in the model's order.

        Calls without an outcome (the run was cancelled while they ran) get a `cancelled` record,
        so the conversation stays valid.
        """
        calls, self.step_calls = self.step_calls, None
        if not calls:
            return
        records, self.step_records = self.step_records, {}
        close_calls(calls, records, self._cancelled, self.tool_calls, self.messages)

    def _cancelled(self, call: dict[str, Any]) -> ToolCallRecord:
        name = call["function"]["name"]
        text = f"Tool {name!r} was cancelled before it finished."
        return make_record(call["id"], name, call["function"]["arguments"], self.steps, "cancelled", text)

    def hand_to(
        self,
        agent_name: str | None,
        model: str,
        settings: Mapping[str, Any],
        messages: list[dict[str, Any]],
        kept: int,
    ) -> None:
        """A handoff: the run goes on with another agent, from the conversation it was given."""
        self.handoff, self.handed_at = None, self.steps
        self.messages, self.new_start = messages, kept
        self.agent_name, self.model, self.settings = agent_name, model, settings

    # --- results ------------------------------------------------------------------------------

    def result(self, output: Any, reason: str) -> RunResult[Any]:
        return RunResult(
            output,
            self.messages,
            self.steps,
            self.total_usage(),
            cast(StopReason, reason),
            self.run_id,
            self.tool_calls,
            new_start=self.new_start,
            agent_name=self.agent_name,
        )

    def paused(self, pending: list[PendingCall]) -> RunResult[Any]:
        """The result of a run paused for approval: the step's settled calls are in it, its open ones pending."""
        done = [self.step_records[c["id"]] for c in self.step_calls or () if c["id"] in self.step_records]
        result = self.result(None, "approval_required")
        result.tool_calls, result.pending = [*self.tool_calls, *done], pending
        return result

    def limit_error(self, hit: LimitHit) -> RunLimitExceeded:
        """The limit's exception, carrying the run's partial result."""
        cls, message = hit
        return cls(message, self.result(None, cls.stop_reason))

    def total_usage(self) -> Usage:
        """The run's usage with its split by model (built here, once, rather than at every step)."""
        u, turns = self.usage, self.turns
        if not turns:
            return u
        first = turns[0][0]
        if not u.by_model and (len(turns) == 1 or len({m for m, _ in turns}) == 1):  # one model: all of it
            split: dict[str, Usage] = {first: u}
        else:
            split = dict(u.by_model)  # a restored run's earlier split, if any
            for model, t in turns:
                split[model] = split[model] + t if model in split else t
        return make_usage(u.requests, u.prompt_tokens, u.completion_tokens, u.total_tokens,
                           u.cache_read_tokens, u.cache_write_tokens, split)  # fmt: skip

    def call_context(self, record: ToolCallRecord) -> RunContext[Any]:
        """The RunContext for the call of `record` (the dispatcher's `context`: a bound method
        is one GC-tracked object per run where a lambda over the run was three)."""
        return self.context(record.step, record.id, record.name)

    def context(self, step: int, call_id: str | None = None, tool: str | None = None) -> RunContext[Any]:
        """The RunContext for a tool call (or, without a call, for dynamic instructions)."""
        retry = sum(1 for r in self.tool_calls if r.name == tool and r.status != "ok") if tool else 0
        return RunContext(
            self.deps,
            self.run_id,
            self.model,
            step,
            self.usage,
            call_id,
            tool,
            retry,
            self.messages,
            _run=self,
        )


def make_record(cid: str, name: str, raw: Any, step: int, status: Any, content: str) -> ToolCallRecord:
    return ToolCallRecord(
        cid, name, None, status, content, step, raw_arguments=raw if isinstance(raw, str) else ""
    )
