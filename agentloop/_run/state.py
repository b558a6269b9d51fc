"""The state of one run, and what a restored run picks up from (used by the loop in `_agent.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from .._context import RunContext
from .._types import RunResult, StopReason, ToolCallRecord, Usage, _make_usage
from .approval import Decision
from .journal import Journal
from .loopguard import LoopGuard
from .output_spec import StoredOutput
from .recorder import Replay, close_calls, record_data

__all__ = ["Run", "Resume", "make_record", "usage_data"]


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
        "resume",
        "run_id",
        "settings",
        "step_calls",
        "step_records",
        "steps",
        "tool_calls",
        "tool_count",
        "turns",
        "usage",
    )

    def __init__(self, run_id: str, messages: list[dict[str, Any]]) -> None:
        self.run_id = run_id
        self.messages = messages
        self.steps = 0
        self.usage = Usage()
        self.tool_calls: list[ToolCallRecord] = []
        self.tool_count = 0
        self.guard: LoopGuard | None = None
        self.step_calls: list[dict[str, Any]] | None = None  # the calls of the step in progress
        self.step_records: dict[str, ToolCallRecord] = {}  # ...and the outcomes they have so far
        self.journal: Journal | None = None
        self.lease: str | None = None
        self.resume: Resume | None = None
        self.final: RunResult[Any] | None = None
        self.ended = True  # False: a journaled final answer still lacks its "end" entry
        self.deps: Any = None  # RunContext.deps: live state, never journaled
        self.model = ""  # the model requested for this run (Agent.model unless overridden)
        self.settings: Mapping[str, Any] = {}
        self.instructions: Any = None  # a dynamic instructions function the loop still has to call
        self.new_start = 0  # index of the first message this run added (RunResult.new_messages)
        self.output_failures = 0  # final answers that failed output_type validation
        self.turns: list[tuple[str, Usage]] = []  # (model, usage) of each request: Usage.by_model
        # Agents as tools and handoffs (_agenttool.py, _handoff.py):
        self.parent: Any = None  # a nested run: the outer run's call it works for (a `Parent`)
        self.nested_steps = 0  # model requests of nested runs, counted against max_steps
        self.emit: Any = None  # the run's emit and observers-only emit, for its nested runs
        self.observe: Any = None
        self.observers: frozenset[Any] = frozenset()  # observers that already see this run's events
        self.handoff: Any = None  # a Handoff the model asked for in the step in progress
        self.agent_name: str | None = None  # the agent running the loop (changes at a handoff)
        self.limits: Any = None  # the RunLimits the loop runs under (nested runs check them too)

    @classmethod
    def from_replay(cls, run_id: str, state: Replay) -> Run:
        run = cls(run_id, state.messages)
        run.steps, run.usage, run.tool_calls, run.turns = (
            state.steps,
            state.usage,
            state.tool_calls,
            state.turns,
        )
        run.agent_name = state.agent
        if state.final is not None:
            final = run.result(state.final[1], state.final[0])
            if state.has_final_data:  # validated against output_type when the run is finished
                final.output = StoredOutput(state.final_data)
            run.final = final
            run.ended = state.ended
        elif state.calls:
            run.resume = Resume(state.calls, state.records, state.started, {})
        return run

    async def journal_start(self, record: ToolCallRecord) -> None:
        assert self.journal is not None
        data = {"name": record.name, "arguments": record.raw_arguments}
        await self.journal.append(self.run_id, "tool_start", data, step=record.step, call_id=record.id)

    async def settle(self, record: ToolCallRecord) -> None:
        """A call's outcome is final: commit it (durable runs) before the loop can move on."""
        self.step_records[record.id] = record
        if self.journal is not None:
            await self.journal.append(
                self.run_id, "tool_end", record_data(record), step=record.step, call_id=record.id
            )

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
        return _make_usage(u.requests, u.prompt_tokens, u.completion_tokens, u.total_tokens,
                           u.cache_read_tokens, u.cache_write_tokens, split)  # fmt: skip

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


def usage_data(u: Usage) -> dict[str, Any]:
    return u.to_data()
