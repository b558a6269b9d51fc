"""Agent: the one agent loop, shared by `run`, `stream` and `resume`, by every wire and transport.

One step is one model request. If the answer has tool calls, the assistant message is appended
(ids repaired first), all calls of that message run concurrently, their tool messages are
appended in the order the model listed them, and the loop goes on. An answer without tool calls
is final. The run's `RunLimits` bound it (steps, tool calls, tokens, wall clock, repeated
calls); each exceeded limit raises its `RunLimitExceeded` subclass carrying the partial result,
which is always a valid conversation.

Calls that need approval pause the run (`stop_reason="approval_required"`); `resume` continues
it. With a `Journal`, every model answer and every tool outcome is committed before the loop
moves on, and `resume(run_id)` continues a run after a crash (semantics in `_journal.py`).

An `Agent` holds configuration only; each run has its own state, so one agent can serve many
concurrent runs.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Generic

import anyio
import anyio.lowlevel
from typing_extensions import TypeVar

from .. import _json
from .._budget import InputBudget
from .._context import check_instructions, check_no_running_loop, resolve_instructions
from .._events import (
    ModelRequestStarted,
    ModelResponded,
    RunFailed,
    RunFinished,
    RunPaused,
    RunStarted,
    StepFinished,
    TextDelta,
    run_logger,
)
from .._exceptions import (
    BadRequestError,
    ConfigurationError,
    ConversationError,
    JournalError,
    ResumeError,
    RunLimitExceeded,
    StepLimitExceeded,
    TimeLimitExceeded,
    TokenLimitExceeded,
)
from .._ids import IdRegistry, new_run_id
from .._model import Emit, Model, ModelRequest
from .._tools.dispatch import Dispatcher, ErrorFormatter, default_error_formatter
from .._tools.registry import ToolRegistry
from .._types import OutputT, RunResult, Usage
from .agent_tool import ancestor_limit, as_tool, log_fields, nested_emits, spend
from .approval import (
    ApprovalPredicate,
    Decision,
    check_decisions,
    decision_to_data,
)
from .calls import NOT_COUNTED, limit_error, tools_step
from .config import (
    build_tools,
    check_callable,
    check_choice_needs_tools,
    check_int,
    check_limits,
    check_model_settings,
)
from .conversation import (
    ToolChoice,
    check_conversation,
    history_message_async,
    normalize_tool_choice,
)
from .handoff import build_handoffs, find_agent, take_handoff, with_handoffs
from .history import History
from .journal import Journal
from .limits import RunLimits
from .loopguard import LoopGuard
from .observe import Observer
from .output_spec import OutputMode, OutputSpec, StoredOutput, jsonable
from .output_step import native_refused, output_request, output_step
from .output_stream import partial_output_emit
from .recorder import replay
from .state import Resume, Run, usage_data
from .stream import EventStream, stream_events

DepsT = TypeVar("DepsT", default=None)

__all__ = ["Agent", "ToolChoice"]


class Agent(Generic[DepsT, OutputT]):
    """A model, its tools and the rules of the loop. Reusable and safe for concurrent runs.

    - `client`: anything with the `Model` interface: a `FluxClient` (shared connection pool) or
      `agentloop.testing.ScriptedModel`.
    - `model`: passed through unchanged (`flux-auto`, any `flux-pinned-*`).
    - `instructions`: a system message put first when the conversation has none.
    - `tools`: a `ToolRegistry`, or a list of functions, registries, `Tool`s and open
      `MCPServer`s, from which the agent builds its registry (a snapshot: tools registered
      into a listed registry later are not seen).
    - `limits`: the run's `RunLimits` (steps, tool calls, tokens, timeout / deadline, loop
      detection). `max_steps=` is a shortcut for `limits.max_steps` (passing both with
      different values is an error).
    - `tool_choice`: `"auto"`, `"none"`, `"required"`, a tool name, or the OpenAI dict form.
      A choice that forces a tool (a name, the dict, or `"required"`) applies to the first step
      only and then falls back to `"auto"`; otherwise the model would be forced to call tools
      forever and never answer. `reset_tool_choice=False` keeps it for every step.
    - `max_concurrent_tools`: cap on the tool calls of one run running at once (None: no cap).
    - `model_settings`: extra request fields (`temperature`, `max_tokens`, ...), sent as they are;
      the fields the loop sets itself (`model`, `messages`, `tools`, `tool_choice`, `stream`, ...)
      are refused.
    - `format_tool_error(tool_name, exception) -> str`: what the model is told when a tool
      raises, in every sandbox mode (default: the tool name, exception type and message). For
      "process" / "isolated" tools `exception` is a `SandboxedToolError` carrying the child's
      exception type name, message and traceback text.
    - `require_approval(tool_name, arguments) -> bool`: calls for which it returns True pause
      the run for a human decision (as do tools registered with `requires_approval=True`).
    - `journal`: a `Journal` (e.g. `SQLiteJournal(path)`) that makes runs durable and resumable.
    - `input_budget`: the `InputBudget` for model answers (argument bytes and depth, tool calls
      per message, error-text bytes...). Default: the client's `input_budget` when it has one
      (`FluxClient(input_budget=...)`), else `InputBudget()`.
    - `observers`: callables (sync or async) that receive every event of every run, as
      `Agent.stream` would yield them: metrics, tracing (`agentloop.otel.OTelObserver`), audit.
      An observer that raises is logged and ignored: telemetry never breaks a run.
    - `instructions` may also be a function (sync or async) of the `RunContext`, evaluated once
      at the start of each run; its text becomes the run's system message (and is journaled).
    - `deps_type`: the type of `run(..., deps=...)`, for type checkers only (`Agent[Deps, T]`).
    - `history`: a `History(...)` policy: what of a long conversation each request carries
      (the run's messages and the journal keep everything); see `_history.py`.
    - `output_type`: the type of `result.output` (default `str`); see `_output.py`.
      `output_mode`: "auto" (default), "tool" or "native". `output_retries`: how many invalid
      final answers are fed back before `OutputValidationError`.
    - `name`: the agent's name (handoff tools are `transfer_to_<name>`; `result.agent_name`).
    - `handoffs`: agents (or `Handoff(agent, input_filter=..., tool_name=..., description=...)`)
      the model may hand the conversation to; see `_handoff.py`.
    """

    def __init__(
        self,
        *,
        client: Model,
        tools: ToolRegistry | Sequence[Any] | None = None,
        model: str = "flux-auto",
        instructions: Any = None,
        max_steps: int | None = None,
        limits: RunLimits | None = None,
        tool_choice: ToolChoice = "auto",
        reset_tool_choice: bool = True,
        max_concurrent_tools: int | None = None,
        model_settings: Mapping[str, Any] | None = None,
        format_tool_error: ErrorFormatter | None = None,
        require_approval: ApprovalPredicate | None = None,
        journal: Journal | None = None,
        observers: list[Observer] | tuple[Observer, ...] = (),
        deps_type: type[DepsT] | None = None,
        output_type: Any = str,
        output_mode: OutputMode = "auto",
        output_retries: int = 1,
        history: History | None = None,
        input_budget: InputBudget | None = None,
        name: str | None = None,
        handoffs: Any = (),
    ) -> None:
        # Every caller mistake is refused here, naming the argument and the fix (see _agentconfig).
        limits = check_limits(limits, max_steps)
        if max_concurrent_tools is not None:
            check_int("max_concurrent_tools", max_concurrent_tools)
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError(f"model must be a non-empty string such as 'flux-auto', got {model!r}")
        if not callable(getattr(client, "request", None)):
            raise ConfigurationError(
                f"client must implement the Model interface (e.g. a FluxClient or agentloop.testing.ScriptedModel), "
                f"got {client!r}"
            )
        if not isinstance(reset_tool_choice, bool):
            raise ConfigurationError(f"reset_tool_choice must be True or False, got {reset_tool_choice!r}")
        if require_approval is not None:
            check_callable("require_approval", require_approval, ("tool_name", "arguments"))
        if format_tool_error is not None:
            check_callable("format_tool_error", format_tool_error, ("tool_name", "exception"))
        if journal is not None and not all(
            callable(getattr(journal, m, None)) for m in ("create", "append", "load")
        ):
            raise ConfigurationError(
                f"journal must be a Journal such as SQLiteJournal(path), got {journal!r}"
            )
        if not isinstance(observers, (list, tuple)):
            raise ConfigurationError(
                f"observers must be a list of callables taking an Event, got {observers!r}"
            )
        if input_budget is None:
            input_budget = getattr(client, "input_budget", None)
            input_budget = input_budget if isinstance(input_budget, InputBudget) else InputBudget()
        elif not isinstance(input_budget, InputBudget):
            raise ConfigurationError(f"input_budget must be an InputBudget, got {input_budget!r}")
        self.input_budget = input_budget
        for o in observers:
            if not callable(o):
                raise ConfigurationError(f"observers must be callables taking an Event, got {o!r}")
        self.client = client
        self.tools = build_tools(tools)
        self.model = model
        self.instructions = instructions
        self.limits = limits
        check_choice_needs_tools(tool_choice, self.tools)
        self.tool_choice = normalize_tool_choice(tool_choice, self.tools)
        self.reset_tool_choice = reset_tool_choice
        self.max_concurrent_tools = max_concurrent_tools
        self.model_settings = check_model_settings(model_settings)
        self.format_tool_error = format_tool_error or default_error_formatter
        self.require_approval = require_approval
        self.journal = journal
        self.observers = tuple(observers)
        check_instructions(instructions, "Agent")
        self.deps_type = deps_type
        if not isinstance(output_retries, int) or isinstance(output_retries, bool) or output_retries < 0:
            raise ConfigurationError(f"output_retries must be an int >= 0, got {output_retries!r}")
        self.output_type = output_type
        self.output_retries = output_retries
        if history is not None and not isinstance(history, History):
            raise ConfigurationError(f"history must be a History(...) policy, got {history!r}")
        self.history = history
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        self.handoffs = build_handoffs(handoffs, self.tools)
        self.output: OutputSpec | None = None
        if output_type is not str:
            if "final_result" in self.tools:
                raise ConfigurationError(
                    "a tool named 'final_result' clashes with the final-answer tool of output_type"
                )
            wire = getattr(client, "wire", None)
            self.output = OutputSpec(output_type, output_mode, wire=wire, has_tools=len(self.tools) > 0)

    @property
    def max_steps(self) -> int | None:
        return self.limits.max_steps

    def __repr__(self) -> str:
        named = f"name={self.name!r}, " if self.name else ""
        return f"Agent({named}model={self.model!r}, tools={self.tools.names}, max_steps={self.max_steps})"

    def as_tool(self, name: str | None = None, description: str | None = None) -> Any:
        """This agent as a tool of another: register the returned function in the other's registry.

        ```python
        tools.register(research.as_tool(name="research", description="Research a topic"))
        ```
        The model calls it with `{"input": "..."}`; the inner run shares the outer run's client
        deadline, budgets, deps, event stream and journal (see `_agenttool.py`). `name` defaults
        to the agent's `name`.
        """
        return as_tool(self, name, description)

    # --- public entry points ------------------------------------------------------------------

    async def run(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        run_id: str | None = None,
        limits: RunLimits | None = None,
        deps: DepsT = None,  # type: ignore[assignment]
        model: str | None = None,
        model_settings: Mapping[str, Any] | None = None,
        instructions: Any = None,
    ) -> RunResult[OutputT]:
        """Run the loop to a final answer (or an approval pause) and return the `RunResult`.

        `prompt` is appended as a user message to `messages` (the caller's conversation, which
        is not modified). Raises a `RunLimitExceeded` subclass (with `.result`) when a limit is
        hit, and the `APIError` subclasses when the model endpoint fails.

        Per run: `deps` reaches tools and instructions as `RunContext.deps`; `limits`, `model`
        and `instructions` replace the agent's for this run; `model_settings` is merged over the
        agent's (this run's keys win).
        """
        run = self._start(prompt, messages, run_id, deps, model, model_settings, instructions)
        return await self._loop(run, None, limits or self.limits)

    def run_sync(self, prompt: str | None = None, **kwargs: Any) -> RunResult[OutputT]:
        """`run` for scripts and notebooks: starts an event loop, runs, returns the result.

        Raises `ConfigurationError` inside a running event loop (use `await agent.run(...)`).
        """
        check_no_running_loop()
        return anyio.run(partial(self._run_in_new_loop, prompt, kwargs))

    async def _run_in_new_loop(self, prompt: str | None, kwargs: dict[str, Any]) -> RunResult[OutputT]:
        # A connection pool is bound to the loop it ran in, and this loop ends with the call: run
        # on a copy of the client with a pool of its own, closed here (otherwise the next
        # run_sync would reuse connections of a closed loop).
        fresh = getattr(self.client, "fresh_pool", None)
        client = fresh() if callable(fresh) else None
        if client is None:
            return await self.run(prompt, **kwargs)
        async with client:
            agent = copy.copy(self)
            agent.client = client
            return await agent.run(prompt, **kwargs)

    async def resume(
        self,
        source: RunResult[Any] | str,
        *,
        approvals: Mapping[str, Decision] | None = None,
        limits: RunLimits | None = None,
        deps: DepsT = None,  # type: ignore[assignment]
    ) -> RunResult[OutputT]:
        """Continue a paused run (a `RunResult`, maybe from `RunResult.from_json`) or a journaled run (its id).

        `approvals` decides every pending call: `True` runs it, `False` / `Reject(reason)` tells
        the model it was rejected, `Override(value)` stands in as its result. A journaled run
        interrupted by a crash continues where its journal stops; a finished one is returned
        as it is. Limits count the whole run (steps and tool calls so far included); the
        timeout starts now. `deps` is given again: it is live state, never stored.
        """
        run = await self._restore(source, approvals)
        self._configure(run, deps, None, None)
        return await self._loop(run, None, limits or self.limits)

    @asynccontextmanager
    async def stream(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        run_id: str | None = None,
        limits: RunLimits | None = None,
        deps: DepsT = None,  # type: ignore[assignment]
        model: str | None = None,
        model_settings: Mapping[str, Any] | None = None,
        instructions: Any = None,
    ) -> AsyncIterator[EventStream]:
        """Run the loop and yield its events as they happen: the same loop as `run`.

        ```python
        async with agent.stream("What's the weather?") as events:
            async for event in events:
                ...                      # RunFinished(result) comes last
        ```
        The loop waits for the consumer (no unbounded buffering: a slow consumer slows the
        run). Leaving the block early cancels the run. Errors of the run are raised from the
        `async with` / `async for`. Takes the same per-run arguments as `run`.
        """
        state = self._start(prompt, messages, run_id, deps, model, model_settings, instructions)
        async with stream_events(lambda emit: self._loop(state, emit, limits or self.limits)) as events:
            yield events

    # --- starting and restoring runs ----------------------------------------------------------

    def _start(
        self,
        prompt: str | None,
        messages: list[dict[str, Any]] | None,
        run_id: str | None,
        deps: Any = None,
        model: str | None = None,
        model_settings: Mapping[str, Any] | None = None,
        instructions: Any = None,
    ) -> Run:
        conversation = check_conversation(messages) if messages is not None else []
        if prompt is not None:
            if not isinstance(prompt, str):
                raise ConversationError(f"prompt must be a str, got {type(prompt).__name__}")
            conversation.append({"role": "user", "content": prompt})
        if not conversation:
            raise ConversationError("nothing to send: pass a prompt, messages=[...], or both")
        new_start = len(conversation) - 1 if prompt is not None else len(conversation)
        check_instructions(instructions, "run")
        instructions = self.instructions if instructions is None else instructions
        run = Run(run_id or new_run_id(), conversation)
        if instructions and conversation[0].get("role") not in ("system", "developer"):
            if callable(instructions):
                run.instructions = instructions  # resolved by the loop, which can await it
            else:
                conversation.insert(0, {"role": "system", "content": instructions})
                new_start += 1
        run.new_start = new_start
        self._configure(run, deps, model, model_settings)
        return run

    def _configure(
        self, run: Run, deps: Any, model: str | None, model_settings: Mapping[str, Any] | None
    ) -> None:
        if model is not None and (not isinstance(model, str) or not model):
            raise ConfigurationError(f"model must be a non-empty string such as 'flux-auto', got {model!r}")
        if model_settings is not None:  # per run, the same rules as at construction
            model_settings = check_model_settings(model_settings)
        run.deps = deps
        run.model = model or self.model
        run.settings = {**self.model_settings, **model_settings} if model_settings else self.model_settings

    async def _restore(self, source: RunResult | str, approvals: Mapping[str, Decision] | None) -> Run:
        if isinstance(source, str):
            if self.journal is None:
                raise ResumeError(
                    f"cannot resume run {source!r} by id: this agent has no journal. Pass journal=... "
                    "to Agent, or resume from the RunResult of a paused run."
                )
            token = await self.journal.acquire(source)
            try:
                loaded = await self.journal.load(source)
                state = replay(loaded)
                run = Run.from_replay(source, state)
                run.new_start = int(loaded.header.get("new_start", 0))
                run.lease = token
                if state.pending:
                    # replay keeps pending calls only while their step's calls are open
                    assert state.calls is not None, "pending calls without their step"
                    decisions = check_decisions(state.pending, {**state.approvals, **dict(approvals or {})})
                    if approvals:
                        data = {k: decision_to_data(v) for k, v in approvals.items()}
                        await self.journal.append(source, "approvals", data, step=run.steps)
                    run.resume = Resume(state.calls, state.records, state.started, decisions)
                elif approvals:
                    raise ResumeError(f"run {source!r} has no pending calls; approvals are not needed")
                if state.final is None:  # where a resume picked up: shown by the run inspector
                    was = loaded.info.status
                    after = "paused" if state.pending else ("interrupted" if was == "running" else was)
                    await self.journal.append(
                        source, "resumed", {"after": after}, step=run.steps, status="running"
                    )
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self.journal.release(source, token)
                raise
            return run
        if not isinstance(source, RunResult):
            raise ResumeError(f"resume takes a RunResult or a journaled run id, got {type(source).__name__}")
        # the journal knows best (and holds the lease)
        if self.journal is not None and source.run_id in {r.run_id for r in await self.journal.list_runs()}:
            return await self._restore(source.run_id, approvals)
        if not source.pending:
            raise ResumeError(
                f"run {source.run_id!r} is not paused (stop_reason={source.stop_reason!r}); to continue a "
                "conversation, call Agent.run(messages=result.messages)"
            )
        decisions = check_decisions(source.pending, approvals)
        last = source.messages[-1] if source.messages else {}
        calls = last.get("tool_calls") or []
        ids = {c.get("id") for c in calls}
        if last.get("role") != "assistant" or not {p.id for p in source.pending} <= ids:
            raise ResumeError(
                f"run {source.run_id!r}: the last message is not the assistant message of the pending calls"
            )
        step = source.steps
        done = [r for r in source.tool_calls if r.step == step and r.id in ids]
        run = Run(source.run_id, check_conversation(source.messages))
        run.steps, run.usage, run.new_start = step, source.usage, source.new_start
        run.tool_calls = [r for r in source.tool_calls if not (r.step == step and r.id in ids)]
        run.resume = Resume(calls, {r.id: r for r in done}, frozenset(), decisions)
        return run

    # --- the loop -----------------------------------------------------------------------------

    async def _loop(self, run: Run, emit: Emit | None, limits: RunLimits) -> RunResult[Any]:
        if not isinstance(limits, RunLimits):
            raise ConfigurationError(f"limits must be a RunLimits, got {limits!r}")
        # one emit for the stream consumer and the observers alike; a nested run's reach the outer's
        emit, observe = nested_emits(run, self.observers, emit)
        run.emit, run.observe, run.limits = emit, observe, limits
        run.journal = journal = self.journal
        agent = find_agent(self, run.agent_name)  # a resumed run that was handed off: that agent
        run.agent_name = agent.name
        if (
            run.instructions is not None
        ):  # dynamic instructions: resolved once, then journaled like static ones
            text = await resolve_instructions(run.instructions, run.context(0))
            run.instructions = None
            if text:
                run.messages.insert(0, {"role": "system", "content": text})
                run.new_start += 1
        if journal is not None and run.lease is None and run.final is None:
            header = {
                "model": run.model,
                "messages": run.messages,
                "new_start": run.new_start,
                **log_fields(run),
            }
            run.lease = await journal.create(run.run_id, header)
        try:
            if run.final is not None:  # a journaled run that had already finished
                if journal is not None and not run.ended:
                    data = {"stop_reason": run.final.stop_reason, "output": run.final.output}
                    await journal.append(
                        run.run_id, "end", data, step=run.steps, status=run.final.stop_reason
                    )
                if agent.output is not None and run.final.output is not None:  # journaled as JSON
                    run.final.output = agent.output.restore(run.final.output)
                elif isinstance(run.final.output, StoredOutput):  # a plain agent gets the data
                    run.final.output = run.final.output.data
                return run.final
            with anyio.CancelScope(deadline=limits.cancel_deadline()) as scope:
                first = True
                while True:
                    result = await agent._steps(run, emit, limits, first)
                    if result is not None:
                        return result
                    agent, first = await take_handoff(run), False  # the model handed the run over
            # only reached when the deadline cancelled the run
            run.close_step()
            assert scope.cancelled_caught
            raise limit_error(
                run,
                TimeLimitExceeded,
                f"the run passed its time limit ({limits.describe_time()}) and was cancelled; tool calls cut "
                "short have status 'cancelled'. The partial result is in .result; give the run more time "
                "or continue with Agent.run(messages=exc.result.messages).",
            )
        except BaseException as exc:
            if journal is not None and run.lease is not None:
                with anyio.CancelScope(shield=True):
                    await _journal_failure(journal, run, exc)
            if observe is not None:  # observers only: the stream consumer gets the exception itself
                with anyio.CancelScope(shield=True):
                    await observe(RunFailed(run.run_id, exc))
            raise
        finally:
            if journal is not None and run.lease is not None:
                with anyio.CancelScope(shield=True):
                    await journal.release(run.run_id, run.lease)

    async def _steps(
        self, run: Run, emit: Emit | None, limits: RunLimits, first: bool = True
    ) -> RunResult[Any] | None:
        """The steps of one agent: a result, or None when the model handed the run to another agent."""
        log = run_logger(run_id=run.run_id, model=run.model, **log_fields(run))
        journal = run.journal
        tools = with_handoffs(self.tools, self.handoffs) if self.handoffs else self.tools
        dispatcher = Dispatcher(
            tools,
            run_id=run.run_id,
            emit=emit,
            log=log,
            max_concurrent=self.max_concurrent_tools,
            format_error=self.format_tool_error,
            on_invoke=run.journal_start if journal is not None else None,
            on_finish=run.settle,
            context=lambda r: run.context(r.step, r.id, r.name),
            budget=self.input_budget,
        )
        if first:  # after a handoff the run goes on: its loop guard and counters stay
            run.guard = LoopGuard(limits.loop_threshold, ((r.name, r.raw_arguments) for r in run.tool_calls))
            run.tool_count = sum(r.status not in NOT_COUNTED for r in run.tool_calls)
        ids = IdRegistry(run.messages)
        request = ModelRequest(
            model=run.model,
            messages=run.messages,
            tools=tools.definitions,
            tool_choice=self.tool_choice if tools.definitions else None,
            settings=run.settings,
            run_id=run.run_id,
        )
        output = self.output
        if output is not None:
            output_request(output, request, self.tool_choice)
            if emit is not None:  # partial outputs for the stream; `lambda` sees a switched spec too
                emit = dispatcher.emit = partial_output_emit(emit, lambda: output)  # type: ignore[arg-type,return-value]
        # after a forced first step: "auto", or "required" while the answer must come through final_result
        settled = (
            "required" if output is not None and output.mode == "tool" and not output.allows_text else "auto"
        )
        unforced = (None, "auto", "none", settled)
        if self.reset_tool_choice and run.steps >= 1 and request.tool_choice not in unforced:
            request.tool_choice = settled
        request.tool_errors = {r.id for r in run.tool_calls if r.status != "ok"}
        if emit is not None and first:
            await emit(RunStarted(run.run_id, run.model))
        history = self.history.start() if self.history is not None else None
        resume, run.resume = run.resume, None
        if resume is not None:
            paused = await tools_step(self, run, resume.calls, run.steps, dispatcher, limits, resume)
            if paused is not None:
                if emit is not None:
                    await emit(RunPaused(run.run_id, paused))
                return paused
            if emit is not None:
                await emit(StepFinished(run.run_id, run.steps, Usage(), len(resume.calls)))
        while True:
            await anyio.lowlevel.checkpoint_if_cancelled()  # a deadline holds even if nothing below yields
            if limits.max_steps is not None and run.steps + run.nested_steps >= limits.max_steps:
                raise limit_error(
                    run,
                    StepLimitExceeded,
                    f"the model still asked for tools after max_steps={limits.max_steps} model requests; the "
                    "partial result (every message and tool result so far) is in .result. Raise max_steps or "
                    "continue with Agent.run(messages=exc.result.messages).",
                )
            if limits.max_total_tokens is not None and run.usage.total_tokens >= limits.max_total_tokens:
                raise limit_error(
                    run,
                    TokenLimitExceeded,
                    f"the run used {run.usage.total_tokens} tokens, reaching max_total_tokens="
                    f"{limits.max_total_tokens}; no further model request was sent. The partial result is in "
                    ".result; raise the limit or continue with Agent.run(messages=exc.result.messages).",
                )
            if run.parent is not None:  # a nested run: the budgets of the runs above it hold too
                spent = ancestor_limit(run)
                if spent is not None:
                    cls = StepLimitExceeded if spent[0] == "steps" else TokenLimitExceeded
                    raise limit_error(run, cls, spent[1])
            step = request.step = run.steps + 1
            if log is not None:
                log.debug("model request", step=step, messages=len(run.messages))
            if emit is not None:
                await emit(ModelRequestStarted(run.run_id, step, run.model, len(run.messages)))
            if history is not None:  # what is sent; run.messages (and the journal) keep everything
                request.messages = await history.process(run.messages, run.context(step))
            try:
                turn = await self.client.request(request, emit)
            except BadRequestError as e:
                switched = native_refused(output, request, e) if output is not None else None
                if switched is None:
                    raise
                output, settled, unforced = switched, "required", (None, "auto", "none", "required")
                if log is not None:
                    log.debug("response_format refused by the route; using the final_result tool", step=step)
                continue  # the same step again, asking through the tool
            if history is not None:
                history.observe(turn.usage.prompt_tokens)
            message = turn.message
            calls = message.get("tool_calls")
            if calls:
                ids.repair(calls)  # before the message is stored: a bad id is never replayed
            if emit is not None:
                await emit(
                    ModelResponded(
                        run.run_id,
                        step,
                        turn.usage,
                        turn.finish_reason,
                        len(calls or ()),
                        turn.model,
                        turn.request_id,
                    )
                )
            model = turn.model or run.model
            if journal is not None:
                data = {"message": message, "usage": usage_data(turn.usage), "model": model}
                await journal.append(run.run_id, "model", data, step=step)
            run.steps = step
            run.usage = run.usage + turn.usage
            run.turns.append((model, turn.usage))  # split by model when a result is made, not per step
            if run.parent is not None:
                spend(run, model, turn.usage)  # counted once in every run above, too
            # `calls` keep the model's raw arguments
            run.messages.append(await history_message_async(message))
            if emit is not None and message.get("content") and not turn.streamed:
                await emit(TextDelta(run.run_id, step, message["content"]))
            if self.reset_tool_choice and step == 1 and request.tool_choice not in unforced:
                request.tool_choice = settled
            recorded = len(run.tool_calls)
            if output is not None:  # a final answer (or a failed one) ends or repeats the step here
                verdict, value = await output_step(self, run, output, message, step, dispatcher, limits)
                if verdict == "done":
                    return await self._finish(run, value, "final", emit, log)
                if verdict == "paused":
                    if emit is not None:
                        await emit(RunPaused(run.run_id, value))
                    return value  # type: ignore[no-any-return]
                if verdict == "retry":
                    request.tool_errors.update(r.id for r in run.tool_calls[recorded:] if r.status != "ok")
                    if emit is not None:
                        await emit(StepFinished(run.run_id, step, turn.usage, len(calls or ())))
                    continue
            if not calls:
                return await self._finish(run, message.get("content"), "final", emit, log)
            paused = await tools_step(self, run, calls, step, dispatcher, limits, None)
            if paused is not None:
                if emit is not None:
                    await emit(RunPaused(run.run_id, paused))
                return paused
            request.tool_errors.update(r.id for r in run.tool_calls[recorded:] if r.status != "ok")
            if log is not None:
                log.debug(
                    "step finished", step=step, tool_calls=len(calls), total_tokens=turn.usage.total_tokens
                )
            if emit is not None:
                await emit(StepFinished(run.run_id, step, turn.usage, len(calls)))
            if run.handoff is not None:
                return None

    async def _finish(
        self, run: Run, output: Any, reason: str, emit: Emit | None, log: Any
    ) -> RunResult[Any]:
        result = run.result(output, reason)
        if run.journal is not None:
            data: dict[str, Any] = {"stop_reason": reason, "output": output}
            if self.output is not None and not isinstance(output, str):  # text for readers (ui, search)
                value = jsonable(output)  # ... and the data that `resume` validates again
                data.update(output=_json.dumps_str(value), output_data=value)
            await run.journal.append(run.run_id, "end", data, step=run.steps, status=reason)
        if log is not None:
            log.debug(
                "run finished", steps=run.steps, stop_reason=reason, total_tokens=run.usage.total_tokens
            )
        if emit is not None:
            await emit(RunFinished(run.run_id, result))
        return result


async def _journal_failure(journal: Journal, run: Run, exc: BaseException) -> None:
    """Journal why a run stopped with an error (a limit, the endpoint), so `agentloop ui` can say.

    A cancelled or killed run journals nothing: it is interrupted, and resumable as it is.
    Replay ignores this entry; resuming the run goes on from its last step.
    """
    if not isinstance(exc, Exception) or isinstance(exc, JournalError):
        return
    status: str = exc.result.stop_reason if isinstance(exc, RunLimitExceeded) else "failed"
    data = {"stop_reason": status, "error": type(exc).__name__, "message": str(exc)}
    with contextlib.suppress(JournalError):  # the original error is the one to raise
        await journal.append(run.run_id, "failed", data, step=run.steps, status=status)
