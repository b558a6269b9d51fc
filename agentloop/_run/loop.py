"""The agent loop: one run from its start to a result (`drive`), one agent's steps (`Steps`).

One step is one model request. If the answer has tool calls, the assistant message is appended
(ids repaired first), the calls are admitted under the run's rules and run concurrently
(`calls.py`), their tool messages are appended in the order the model listed them, and the loop
goes on. An answer without tool calls is final (under `output_type`: once `output_step.py`
accepts it). Each step returns what it came to, `Final | Paused | Continue | HandedOff`, and the
loop acts on that in one place (as the OpenAI Agents SDK's run loop does with its next-step
types). Everything a step produces (events, journal entries, log lines) goes through the run's
`Recorder`; limits are interpreted in `limits.py`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from .. import _json
from .._context import resolve_instructions
from .._events import RunFailed, run_logger
from .._exceptions import (
    BadRequestError,
    JournalError,
    RunLimitExceeded,
    StepLimitExceeded,
    TokenLimitExceeded,
)
from .._ids import IdRegistry
from .._model import Emit, ModelRequest
from .._tools.dispatch import Dispatcher
from .._types import ModelTurn, RunResult, Usage, sendable
from .agent_tool import ancestor_limit, log_fields, nested_emits, spend, token_budgeted
from .calls import CallPolicy, CallsDone, StepCalls
from .conversation import history_message_async, sendable_answer
from .finish import finished
from .handoff import find_agent, take_handoff, transfer_not_taken, with_handoffs
from .limits import LimitHit, RunLimits, unreadable_usage
from .output_spec import OutputSpec, StoredOutput, jsonable
from .output_step import native_refused, output_request, output_step
from .output_stream import partial_output_emit
from .recorder import Recorder
from .state import Resume, Run

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["Continue", "Final", "HandedOff", "Paused", "Steps", "drive"]


@dataclass(frozen=True, slots=True)
class Final:
    """The run ended with an answer."""

    result: RunResult[Any]


@dataclass(frozen=True, slots=True)
class Paused:
    """The run waits for human decisions on some of the step's calls."""

    result: RunResult[Any]


class Continue:
    """Another step (also: the same step asked again, when the route refused a response format)."""

    __slots__ = ()


class HandedOff:
    """The model handed the run to another agent: its steps take over."""

    __slots__ = ()


Outcome = Final | Paused | Continue | HandedOff
CONTINUE, HANDED_OFF = Continue(), HandedOff()


class _NoScope:
    """What a run without a time limit runs under: nothing. Stateless and reentrant, one for all
    runs; its `__exit__` a static method, so a `with` keeps no bound method of it per run (a
    `contextlib.nullcontext` did: one GC-tracked object per waiting run)."""

    __slots__ = ()
    cancelled_caught = False

    def __enter__(self) -> _NoScope:
        return self

    @staticmethod
    def __exit__(*_: object) -> None:
        return None


_NO_SCOPE = _NoScope()


async def drive(agent: Agent[Any, Any], run: Run, emit: Emit | None, limits: RunLimits) -> RunResult[Any]:
    """A run from start (or restore) to its result, through handoffs, under its deadline."""
    emit, observe = nested_emits(run, agent.observers, emit)  # a nested run's reach the outer's
    run.begin(emit, observe, limits, agent.journal)
    journal = run.journal
    agent = find_agent(agent, run.agent_name)  # a resumed run that was handed off: that agent
    run.run_by(agent.name)
    instructions = run.take_instructions()
    if instructions is not None:  # dynamic instructions: resolved once, then journaled like static ones
        text = await resolve_instructions(instructions, run.context(0))
        if text:
            run.add_system(text)
    if journal is not None and run.lease is None and run.final is None:
        header = {"model": run.model, "messages": run.messages, "new_start": run.new_start, **log_fields(run)}
        run.leased(await journal.create(run.run_id, header))
    try:
        if run.final is not None:  # a journaled run that had already finished
            return await _finished_before(agent, run)
        deadline = limits.cancel_deadline()
        # a cancel scope only for a run with a time limit: ~550 B and 3 GC-tracked objects otherwise
        with anyio.CancelScope(deadline=deadline) if deadline != math.inf else _NO_SCOPE as scope:
            first = True
            while True:
                steps = Steps(agent, run, emit, limits, first)
                steps.request.deadline = deadline  # the model may rely on this scope (never moved)
                result = await steps.until_done(first)
                if result is not None:
                    return result
                agent, first = await take_handoff(run), False  # the model handed the run over
        # only reached when the deadline cancelled the run
        run.close_step()
        assert scope is not None and scope.cancelled_caught
        raise run.limit_error(limits.time_exceeded())
    except BaseException as exc:
        if journal is not None and run.lease is not None:
            with anyio.CancelScope(shield=True):
                await _journal_failure(run, exc)
        if observe is not None:  # observers only: the stream consumer gets the exception itself
            with anyio.CancelScope(shield=True):
                await observe(RunFailed(run.run_id, exc))
        raise
    finally:
        if journal is not None and run.lease is not None:
            with anyio.CancelScope(shield=True):
                await journal.release(run.run_id, run.lease)


async def _finished_before(agent: Agent[Any, Any], run: Run) -> RunResult[Any]:
    final = run.final
    assert final is not None
    if not run.ended:  # a crash came between the final answer and its "end" entry
        await Recorder(run.run_id, run.journal, None, None).ended(run.steps, final.stop_reason, final.output)
    if agent.output is not None and final.output is not None:  # journaled as JSON
        final.output = agent.output.restore(final.output)
    elif isinstance(final.output, StoredOutput):  # a plain agent gets the data
        final.output = final.output.data
    return final


async def _journal_failure(run: Run, exc: BaseException) -> None:
    """Journal why a run stopped with an error (a limit, the endpoint), so `agentloop ui` can say.

    A cancelled or killed run journals nothing: it is interrupted, and resumable as it is.
    Replay ignores this entry; resuming the run goes on from its last step.
    """
    if not isinstance(exc, Exception) or isinstance(exc, JournalError):
        return
    status: str = exc.result.stop_reason if isinstance(exc, RunLimitExceeded) else "failed"
    try:  # the caller's own function raised it (a history processor, an input filter): any text
        message = sendable(str(exc))
    except Exception:
        message = "<the exception's str() raised>"
    data = {"stop_reason": status, "error": type(exc).__name__, "message": message}
    with contextlib.suppress(JournalError):  # the original error is the one to raise
        await Recorder(run.run_id, run.journal, None, None).failed(run.steps, status, data)


class Steps:
    """One agent's steps of a run: the request it sends, and what each answer comes to."""

    __slots__ = (
        "agent",
        "calls",
        "history",
        "ids",
        "limits",
        "output",
        "rec",
        "request",
        "run",
        "settled",
        "unforced",
    )

    def __init__(
        self, agent: Agent[Any, Any], run: Run, emit: Emit | None, limits: RunLimits, first: bool
    ) -> None:
        self.agent, self.run, self.limits = agent, run, limits
        log = run_logger(run_id=run.run_id, model=run.model, **log_fields(run))
        tools = with_handoffs(agent.tools, agent.handoffs) if agent.handoffs else agent.tools
        rec = Recorder(run.run_id, run.journal, emit, log)
        dispatcher = Dispatcher(
            tools,
            run_id=run.run_id,
            emit=emit,
            log=log,
            max_concurrent=agent.max_concurrent_tools,
            format_error=agent.format_tool_error,
            on_invoke=rec.call_started if run.journal is not None else None,
            on_finish=run.settle,
            context=run.call_context,
            budget=agent.input_budget,
            redact=getattr(agent.client, "redact", None),
        )
        policy = CallPolicy(agent.tools, agent.require_approval, limits, agent.input_budget)
        if first:  # after a handoff the run goes on: its loop guard and counters stay
            run.count_from_history(limits.loop_threshold)
        self.ids = IdRegistry(run.messages)
        self.request = request = ModelRequest(
            model=run.model,
            messages=run.messages,
            tools=tools.definitions,
            tool_choice=agent.tool_choice if tools.definitions else None,
            settings=run.settings,
            run_id=run.run_id,
        )
        self.output: OutputSpec | None = agent.output
        if self.output is not None:
            output_request(self.output, request, agent.tool_choice)
            if emit is not None:  # partial outputs for the stream; the lambda sees a switched spec too
                rec.emit = dispatcher.emit = partial_output_emit(emit, lambda: self.output)  # type: ignore[arg-type,return-value]
        self.rec = rec
        run.record_to(rec)
        self.calls = StepCalls(policy, dispatcher, rec)
        # after a forced first step: "auto", or "required" while the answer must come through final_result
        out = self.output
        self.settled = (
            "required" if out is not None and out.mode == "tool" and not out.allows_text else "auto"
        )
        self.unforced: tuple[Any, ...] = (None, "auto", "none", self.settled)
        self._reset_choice()
        request.tool_errors = {r.id for r in run.tool_calls if r.status != "ok"}
        self.history = agent.history.start() if agent.history is not None else None

    def _reset_choice(self) -> None:
        """A choice that forces a tool holds for the first step only (unless reset_tool_choice=False)."""
        if (
            self.agent.reset_tool_choice
            and self.run.steps >= 1
            and self.request.tool_choice not in self.unforced
        ):
            self.request.tool_choice = self.settled

    async def until_done(self, first: bool) -> RunResult[Any] | None:
        """The steps until the run ends, pauses (the result) or is handed to another agent (None)."""
        if first:
            await self.rec.run_started(self.run.model)
        resume = self.run.take_resume()
        if resume is not None:
            outcome: Outcome = await self._resumed_step(resume.calls, resume)
        else:  # a restored run cut right after its last step's transfer: hand it over first
            outcome = HANDED_OFF if transfer_not_taken(self.agent, self.run) else CONTINUE
        while outcome is CONTINUE:
            outcome = await self.step()
        if isinstance(outcome, Final):
            await self.rec.finished(outcome.result, self._end_data(outcome.result))
            return outcome.result
        if isinstance(outcome, Paused):
            await self.rec.paused(outcome.result)
            return outcome.result
        return None

    async def _resumed_step(self, calls: list[dict[str, Any]], resume: Resume) -> Outcome:
        """A restored run's last step: its calls that were not settled, under the same rules."""
        paused = self._after_calls(await self.calls.run(self.run, calls, self.run.steps, resume))
        if paused is not None:
            return paused
        await self.rec.step_finished(self.run.steps, Usage(), len(calls), log=False)
        return (
            HANDED_OFF
            if self.run.handoff is not None or transfer_not_taken(self.agent, self.run)
            else CONTINUE
        )

    def _after_calls(self, done: CallsDone) -> Paused | None:
        if done.pending:
            return Paused(self.run.paused(done.pending))
        if done.stop is not None:
            raise self.run.limit_error(done.stop)
        return None

    async def step(self) -> Outcome:
        run = self.run
        await anyio.lowlevel.checkpoint_if_cancelled()  # a deadline holds even if nothing below yields
        self._check_limits()
        step = self.request.step = run.steps + 1
        await self.rec.request_started(step, run.model, len(run.messages))
        turn = await self._ask(step)
        if turn is None:
            return CONTINUE  # the same step again, asking through the final_result tool
        message = await self._answered(step, turn)
        calls = message.get("tool_calls")
        recorded = len(run.tool_calls)
        if self.output is not None:  # a final answer (or a failed one) ends or repeats the step here
            verdict, value = await output_step(
                self.output, self.agent.output_retries, self.calls, run, message, step
            )
            if verdict == "done":
                return Final(finished(run.result(value, "final"), turn))
            if verdict == "paused":
                return Paused(run.paused(value))
            if verdict == "retry":
                self._note_errors(recorded)
                await self.rec.step_finished(step, turn.usage, len(calls or ()), log=False)
                return CONTINUE
        if not calls:
            return Final(finished(run.result(message.get("content"), "final"), turn))
        paused = self._after_calls(await self.calls.run(run, calls, step))
        if paused is not None:
            return paused
        self._note_errors(recorded)
        await self.rec.step_finished(step, turn.usage, len(calls))
        return HANDED_OFF if run.handoff is not None else CONTINUE

    def _check_limits(self) -> None:
        run = self.run
        hit: LimitHit | None = self.limits.before_request(
            run.steps + run.nested_steps, run.usage.total_tokens
        )
        if hit is None and run.parent is not None:  # a nested run: the budgets of the runs above it hold too
            spent = ancestor_limit(run)
            if spent is not None:
                hit = (StepLimitExceeded if spent[0] == "steps" else TokenLimitExceeded), spent[1]
        if hit is not None:
            raise run.limit_error(hit)

    async def _ask(self, step: int) -> ModelTurn | None:
        """The model's answer; None when the route refused the response format (ask again by tool)."""
        request, run = self.request, self.run
        if self.history is not None:  # what is sent; run.messages (and the journal) keep everything
            request.messages = await self.history.process(run.messages, run.context(step))
        try:
            turn = await self.agent.client.request(request, self.rec.emit)
        except BadRequestError as e:
            switched = native_refused(self.output, request, e) if self.output is not None else None
            if switched is None:
                raise
            self.output, self.settled, self.unforced = (
                switched,
                "required",
                (None, "auto", "none", "required"),
            )
            self.rec.request_retried(step)
            return None
        if turn.usage_problems:  # counted as 0 by the wire: refused under a token budget, else a warning
            unreadable_usage(
                turn.usage_problems, turn.request_id, token_budgeted(run, self.limits), run.run_id
            )
        if self.history is not None:
            self.history.observe(turn.usage.prompt_tokens)
        return turn

    async def _answered(self, step: int, turn: ModelTurn) -> dict[str, Any]:
        """The answer is recorded (committed before its calls run) and joins the conversation."""
        run = self.run
        message = turn.message = sendable_answer(turn.message)  # a Model of the caller's may send anything
        calls = message.get("tool_calls")
        if calls:
            self.ids.repair(calls)  # before the message is stored: a bad id is never replayed
        elif message.get("content") is None:  # an answer with no text: "" on every wire, streamed or
            message = turn.message = {**message, "content": ""}  # not (a null without calls is not sendable)
        model = sendable(turn.model) if turn.model else run.model
        await self.rec.model_answered(step, turn, len(calls or ()), model)
        stored = await history_message_async(message)  # every call's arguments JSON object text
        run.answered(step, model, turn.usage, stored)  # (the calls keep the model's raw arguments)
        if run.parent is not None:
            spend(run, model, turn.usage)  # counted once in every run above, too
        self._reset_choice()
        return message

    def _note_errors(self, recorded: int) -> None:
        """The step's failed calls: a wire that must mark tool errors (Anthropic) reads these."""
        self.request.tool_errors.update(r.id for r in self.run.tool_calls[recorded:] if r.status != "ok")

    def _end_data(self, result: RunResult[Any]) -> dict[str, Any]:
        """The "end" entry's data: the output as text for readers (ui, search), and for a structured
        output also its data, which `resume` validates again."""
        output = result.output
        data: dict[str, Any] = {"stop_reason": result.stop_reason, "output": output}
        if self.agent.output is not None and not isinstance(output, str):
            value = jsonable(output)
            data.update(output=_json.dumps_str(value), output_data=value)
        return data
