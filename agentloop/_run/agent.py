"""Agent: a model, its tools and the rules of the loop; `run`, `stream` and `resume`.

An `Agent` holds configuration only; each run has its own state (`state.Run`), so one agent can
serve many concurrent runs. The loop every entry point goes through is in `loop.py` (one agent
loop for run / stream / resume, every wire and transport); a restored run comes from
`restore.py`. Calls that need approval pause the run (`stop_reason="approval_required"`);
`resume` continues it. With a `Journal`, every model answer and every tool outcome is committed
before the loop moves on, and `resume(run_id)` continues a run after a crash (`recorder.py`).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from functools import partial
from typing import Any, Generic

import anyio
import anyio.lowlevel
from typing_extensions import TypeVar

from .._budget import InputBudget
from .._context import check_instructions, check_no_running_loop, place_instructions
from .._exceptions import ConfigurationError, ConversationError
from .._ids import new_run_id
from .._json import not_unicode
from .._model import Emit, Model
from .._tools.dispatch import ErrorFormatter
from .._tools.registry import ToolRegistry
from .._types import OutputT, RunResult
from .agent_tool import as_tool, restore_nested_usage
from .answered import check_answered
from .approval import ApprovalPredicate, Decision
from .config import (
    build_tools,
    check_client,
    check_concurrency,
    check_deps,
    check_flag,
    check_history,
    check_hooks,
    check_journal,
    check_limits,
    check_model_name,
    check_model_settings,
    check_name,
    check_observers,
    check_output_retries,
    input_budget_for,
    output_spec_for,
    tool_choice_for,
)
from .conversation import ToolChoice, check_conversation
from .handoff import build_handoffs
from .history import History
from .journal import Journal
from .limits import RunLimits
from .loop import drive
from .observe import Observer
from .output_spec import OutputMode
from .restore import restore
from .state import Run
from .stream import EventStream, entered_once, stream_events
from .warmup import RehearsalModel, rehearsal_tools, rehearse_runs, start_sandboxes, threaded

DepsT = TypeVar("DepsT", default=None)

__all__ = ["Agent", "ToolChoice"]
_PARTS_GO = "content parts (an image) or whole messages go in messages=[{'role': 'user', 'content': [...]}]"


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
    - `deps_type`: the type of `run(..., deps=...)` (`Agent[Deps, T]`). Type checkers check the
      deps given; at run time a run without deps is refused (`ConfigurationError`) when the type
      does not admit None (declare `Deps | None` for deps that are optional).
    - `history`: a `History(...)` policy: what of a long conversation each request carries
      (the run's messages and the journal keep everything); see `history.py`.
    - `output_type`: the type of `result.output` (default `str`); see `output_spec.py`.
      `output_mode`: "auto" (default), "tool" or "native". `output_retries`: how many invalid
      final answers are fed back before `OutputValidationError`.
    - `name`: the agent's name (handoff tools are `transfer_to_<name>`; `result.agent_name`).
    - `handoffs`: agents (or `Handoff(agent, input_filter=..., tool_name=..., description=...)`)
      the model may hand the conversation to; see `handoff.py`.
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
        # Every caller mistake is refused here, naming the argument and the fix (see config.py).
        self.limits = check_limits(limits, max_steps)
        self.max_concurrent_tools = check_concurrency(max_concurrent_tools)
        self.model = check_model_name(model)
        self.client = check_client(client)
        self.reset_tool_choice = check_flag("reset_tool_choice", reset_tool_choice)
        self.require_approval, self.format_tool_error = check_hooks(require_approval, format_tool_error)
        self.journal = check_journal(journal)
        self.observers = check_observers(observers)
        self.input_budget = input_budget_for(input_budget, client)
        self.tools = build_tools(tools)
        self.tool_choice = tool_choice_for(tool_choice, self.tools)
        self.model_settings = check_model_settings(model_settings)
        check_instructions(instructions, "Agent")
        self.instructions = instructions
        self.deps_type = deps_type
        self.output_retries = check_output_retries(output_retries)
        self.output_type = output_type
        self.history = check_history(history)
        self.name = check_name(name)
        self.handoffs = build_handoffs(handoffs, self.tools)
        self.output = output_spec_for(output_type, output_mode, client, self.tools)

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
        deadline, budgets, deps, event stream and journal (see `agent_tool.py`). `name` defaults
        to the agent's `name`.
        """
        return as_tool(self, name, description)

    # --- public entry points ------------------------------------------------------------------

    async def warmup(self) -> None:
        """Rehearse the run path, so the first real run does not run cold code: 16 runs and 16
        streamed runs of a private `Agent` (a tool call, then a text), in the
        process, ~20 ms of CPU on a busy machine, once per process (`_run/warmup.py`).

        Invisible: the twin has none of this agent's client, tools, hooks, observers, journal,
        instructions or output type; its model is in the process (no request, no credential,
        no socket) and its one tool is its own; its log lines are muted. Cancelling the caller
        cancels it; it leaves no task behind. It warms code, not connections: for the request
        path and a pooled connection call `await client.warmup()` too (a `FluxClient`), after
        this: what ran last is what the CPU's caches hold for the first request.

        A thread, when asked for: if one of this agent's tools runs in a worker thread (a sync
        function, `sandbox="thread"`), the twin's tool does too, so the rehearsal also starts
        the worker thread that tool's first call would start (one daemon thread, ~0.5-0.7 ms of
        the first run's CPU). It stays idle in its cache, which lets an idle worker go after
        10 s: a first call later than that starts a new one as usual.
        Likewise, if a tool runs in the registry's fork-server sandbox ("process", "isolated"),
        its fork server is started (one call of the rehearsal's own no-op tool in it: a fresh
        interpreter's boot, 0.1-2.7 s of wall, is no longer the first call's); it runs until
        the registry is closed, as after a first real call."""
        twin: Agent[Any, Any] = Agent(  # not type(self): a subclass is user code
            client=RehearsalModel(getattr(self.client, "wire", "openai")),
            tools=rehearsal_tools(threaded(self.tools)),
            model="rehearsal",
        )
        await rehearse_runs(twin, _consume)
        await start_sandboxes(self.tools)

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
        and `instructions` replace the agent's for this run (`instructions` also replace a
        system message that `messages` starts with; the agent's own leave it); `model_settings`
        is merged over the agent's (this run's keys win).
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

    @entered_once
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
        run). A step's tool calls start only once the consumer has gone past their
        `ToolCallStarted` events (asked for the event after them): `break` and no further call
        starts. Leaving the block early cancels the run. Errors of the run are raised from the
        `async with` / `async for`. Takes the same per-run arguments as `run`.
        """
        state = self._start(prompt, messages, run_id, deps, model, model_settings, instructions)
        async with stream_events(lambda emit: self._loop(state, emit, limits or self.limits)) as events:
            yield events

    # --- starting and restoring runs (the loop itself is in loop.py) ----------------------------------------------------------

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
        if run_id is not None and (not isinstance(run_id, str) or not run_id):  # "" once meant "a new id"
            raise ConfigurationError(f"run_id must be a non-empty str (or None for a new id), got {run_id!r}")
        if run_id is not None and (problem := not_unicode("run_id", run_id)):
            raise ConfigurationError(problem)
        conversation = check_conversation(messages) if messages is not None else []
        check_answered(conversation)
        if prompt is not None:
            if not isinstance(prompt, str):
                raise ConversationError(f"prompt must be a str, got {type(prompt).__name__}; {_PARTS_GO}")
            if problem := not_unicode("prompt", prompt):
                raise ConversationError(problem)
            conversation.append({"role": "user", "content": prompt})
        if not conversation:
            raise ConversationError("nothing to send: pass a prompt, messages=[...], or both")
        new_start = len(conversation) - 1 if prompt is not None else len(conversation)
        check_instructions(instructions, "run")
        dynamic, added = place_instructions(conversation, self.instructions, instructions)
        run = Run(run_id or new_run_id(), conversation, new_start=new_start + added, instructions=dynamic)
        self._configure(run, deps, model, model_settings)
        return run

    def _configure(
        self, run: Run, deps: Any, model: str | None, model_settings: Mapping[str, Any] | None
    ) -> None:
        if model is not None:
            check_model_name(model)  # the same rules as at construction
        if model_settings is not None:  # per run, the same rules as at construction
            model_settings = check_model_settings(model_settings)
        settings = {**self.model_settings, **model_settings} if model_settings else self.model_settings
        check_deps(self, deps)
        run.configure(deps, model or self.model, settings)

    async def _restore(
        self,
        source: RunResult[Any] | str,
        approvals: Mapping[str, Decision] | None,
        *,
        nested: bool = False,
    ) -> Run:
        if isinstance(source, str) and (problem := not_unicode("run_id", source)):
            raise ConfigurationError(problem)
        return await restore(
            self.journal, source, approvals, partial(restore_nested_usage, self), nested=nested
        )

    def _loop(self, run: Run, emit: Emit | None, limits: RunLimits) -> Coroutine[Any, Any, RunResult[Any]]:
        """The loop (`loop.py`) over `run` under `limits`; `emit`: the stream consumer's, if any.

        Not a coroutine itself: it hands back `drive`'s, so a waiting run holds one coroutine
        frame fewer (every caller awaits it at once)."""
        if not isinstance(limits, RunLimits):
            raise ConfigurationError(f"limits must be a RunLimits, got {limits!r}")
        return drive(self, run, emit, limits)


async def _consume(agent: Agent[Any, Any]) -> None:
    """One streamed run of `agent`, its events read and dropped (`Agent.warmup()`)."""
    async with agent.stream("rehearsal") as events:
        async for _ in events:
            pass
