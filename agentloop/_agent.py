"""Agent: the one agent loop, shared by `run` and `stream`, by every wire and transport.

One step is one model request. If the answer has tool calls, the assistant message is appended
(ids repaired first), all calls of that message run concurrently, their tool messages are
appended in the order the model listed them, and the loop goes on. An answer without tool calls
is final. After `max_steps` requests that still asked for tools, `StepLimitExceeded` carries the
partial result, including the tool results of the last step.

An `Agent` holds configuration only; each run has its own state, so one agent can serve many
concurrent runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ._dispatch import Dispatcher, ErrorFormatter, default_error_formatter
from ._events import Event, RunFinished, RunStarted, StepFinished, TextDelta, run_logger
from ._exceptions import ConfigurationError, ConversationError, StepLimitExceeded
from ._ids import IdRegistry, new_run_id
from ._model import Emit, Model, ModelRequest
from ._tools import ToolRegistry
from ._types import RunResult, ToolCallRecord, Usage

__all__ = ["Agent", "ToolChoice"]

ToolChoice = str | dict[str, Any]
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


class Agent:
    """A model, its tools and the rules of the loop. Reusable and safe for concurrent runs.

    - `client`: anything with the `Model` interface: a `FluxClient` (shared connection pool) or
      `agentloop.testing.ScriptedModel`.
    - `model`: passed through unchanged (`flux-auto`, any `flux-pinned-*`).
    - `instructions`: a system message put first when the conversation has none.
    - `max_steps`: model requests per run before `StepLimitExceeded`.
    - `tool_choice`: `"auto"`, `"none"`, `"required"`, a tool name, or the OpenAI dict form.
      A choice that forces a tool (a name, the dict, or `"required"`) applies to the first step
      only and then falls back to `"auto"`; otherwise the model would be forced to call tools
      forever and never answer. `reset_tool_choice=False` keeps it for every step.
    - `max_concurrent_tools`: cap on the tool calls of one run running at once (None: no cap).
    - `model_settings`: extra request fields (`temperature`, `max_tokens`, ...), sent as they are.
    - `format_tool_error(tool_name, exception) -> str`: what the model is told when a tool
      raises (default: the exception type and message).
    """

    def __init__(
        self,
        *,
        client: Model,
        tools: ToolRegistry | None = None,
        model: str = "flux-auto",
        instructions: str | None = None,
        max_steps: int = 10,
        tool_choice: ToolChoice = "auto",
        reset_tool_choice: bool = True,
        max_concurrent_tools: int | None = None,
        model_settings: Mapping[str, Any] | None = None,
        format_tool_error: ErrorFormatter | None = None,
    ) -> None:
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
            raise ConfigurationError(f"max_steps must be a positive integer, got {max_steps!r}")
        if max_concurrent_tools is not None and max_concurrent_tools < 1:
            raise ConfigurationError(f"max_concurrent_tools must be >= 1 or None, got {max_concurrent_tools!r}")
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"model must be a non-empty string such as 'flux-auto', got {model!r}")
        if not callable(getattr(client, "request", None)):
            raise ConfigurationError(f"client must implement the Model interface (e.g. FluxClient), got {client!r}")
        self.client = client
        self.tools = tools if tools is not None else ToolRegistry()
        self.model = model
        self.instructions = instructions
        self.max_steps = max_steps
        self.tool_choice = _normalize_tool_choice(tool_choice, self.tools)
        self.reset_tool_choice = reset_tool_choice
        self.max_concurrent_tools = max_concurrent_tools
        self.model_settings = dict(model_settings or {})
        self.format_tool_error = format_tool_error or default_error_formatter

    def __repr__(self) -> str:
        return f"Agent(model={self.model!r}, tools={self.tools.names}, max_steps={self.max_steps})"

    # --- public entry points ------------------------------------------------------------------

    async def run(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Run the loop to a final answer and return the `RunResult`.

        `prompt` is appended as a user message to `messages` (the caller's conversation, which
        is not modified). Raises `StepLimitExceeded` (with `.result`) when the steps run out,
        and the `APIError` subclasses when the model endpoint fails.
        """
        return await self._loop(self._start(prompt, messages, run_id), None)

    @asynccontextmanager
    async def stream(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        run_id: str | None = None,
    ) -> AsyncIterator[_EventStream]:
        """Run the loop and yield its events as they happen: the same loop as `run`.

        ```python
        async with agent.stream("What's the weather?") as events:
            async for event in events:
                ...                      # RunFinished(result) comes last
        ```
        The loop waits for the consumer (no unbounded buffering: a slow consumer slows the
        run). Leaving the block early cancels the run. Errors of the run are raised from the
        `async with` / `async for`.
        """
        state = self._start(prompt, messages, run_id)
        send, receive = anyio.create_memory_object_stream[Event](0)
        events = _EventStream(receive)

        async def produce() -> None:
            async with send:
                try:
                    await self._loop(state, send.send)
                except Exception as e:  # handed to the consumer as is, not wrapped in a group
                    events.error = e

        try:
            async with anyio.create_task_group() as tg, receive:
                tg.start_soon(produce)
                try:
                    yield events
                finally:
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The only task that can fail is the consumer's own body (the loop's errors are
            # caught in produce): give the caller its exception, not a group around it.
            if len(group.exceptions) == 1:
                exc = group.exceptions[0]
                raise exc from exc.__cause__
            raise
        if events.error is not None and not events.raised:
            raise events.error

    # --- the loop -----------------------------------------------------------------------------

    def _start(self, prompt: str | None, messages: list[dict[str, Any]] | None, run_id: str | None) -> _Run:
        conversation = _check_conversation(messages) if messages is not None else []
        if prompt is not None:
            if not isinstance(prompt, str):
                raise ConversationError(f"prompt must be a str, got {type(prompt).__name__}")
            conversation.append({"role": "user", "content": prompt})
        if not conversation:
            raise ConversationError("nothing to send: pass a prompt, messages=[...], or both")
        if self.instructions and conversation[0].get("role") not in ("system", "developer"):
            conversation.insert(0, {"role": "system", "content": self.instructions})
        return _Run(run_id or new_run_id(), conversation)

    async def _loop(self, run: _Run, emit: Emit | None) -> RunResult:
        log = run_logger(run_id=run.run_id, model=self.model)
        tools = self.tools
        dispatcher = Dispatcher(
            tools,
            run_id=run.run_id,
            emit=emit,
            log=log,
            max_concurrent=self.max_concurrent_tools,
            format_error=self.format_tool_error,
        )
        ids = IdRegistry(run.messages)
        request = ModelRequest(
            model=self.model,
            messages=run.messages,
            tools=tools.definitions,
            tool_choice=self.tool_choice if tools.definitions else None,
            settings=self.model_settings,
            run_id=run.run_id,
        )
        if emit is not None:
            await emit(RunStarted(run.run_id, self.model))
        while run.steps < self.max_steps:
            step = request.step = run.steps + 1
            if log is not None:
                log.debug("model request", step=step, messages=len(run.messages))
            turn = await self.client.request(request, emit)
            run.steps = step
            run.usage = run.usage + turn.usage
            message = turn.message
            calls = message.get("tool_calls")
            if calls:
                ids.repair(calls)  # before the message is stored: a bad id is never replayed
            run.messages.append(message)
            if emit is not None and message.get("content") and not turn.streamed:
                await emit(TextDelta(run.run_id, step, message["content"]))
            if not calls:
                return await self._finish(run, message.get("content"), "final", emit, log)
            if self.reset_tool_choice and step == 1 and request.tool_choice not in (None, "auto", "none"):
                request.tool_choice = "auto"
            records = await dispatcher.run(calls, step)
            run.add_tool_results(records)
            if log is not None:
                log.debug("step finished", step=step, tool_calls=len(records), total_tokens=turn.usage.total_tokens)
            if emit is not None:
                await emit(StepFinished(run.run_id, step, turn.usage, len(records)))
        result = run.result(None, "max_steps")
        raise StepLimitExceeded(
            f"the model still asked for tools after max_steps={self.max_steps} model requests; the "
            "partial result (every message and tool result so far) is in .result. Raise max_steps or "
            "continue with Agent.run(messages=exc.result.messages).",
            result,
        )

    async def _finish(self, run: _Run, output: str | None, reason: str, emit: Emit | None, log: Any) -> RunResult:
        result = run.result(output, reason)
        if log is not None:
            log.debug("run finished", steps=run.steps, stop_reason=reason, total_tokens=run.usage.total_tokens)
        if emit is not None:
            await emit(RunFinished(run.run_id, result))
        return result


class _EventStream:
    """The async iterator `Agent.stream` yields; raises the run's error where iteration ends."""

    __slots__ = ("_receive", "error", "raised", "result")

    def __init__(self, receive: Any) -> None:
        self._receive = receive
        self.error: Exception | None = None
        self.raised = False
        self.result: RunResult | None = None

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> Event:
        try:
            event = await self._receive.receive()
        except anyio.EndOfStream:
            if self.error is not None and not self.raised:
                self.raised = True
                raise self.error
            raise StopAsyncIteration from None
        if isinstance(event, RunFinished):
            self.result = event.result
        return event


class _Run:
    """The state of one run."""

    __slots__ = ("run_id", "messages", "steps", "usage", "tool_calls")

    def __init__(self, run_id: str, messages: list[dict[str, Any]]) -> None:
        self.run_id = run_id
        self.messages = messages
        self.steps = 0
        self.usage = Usage()
        self.tool_calls: list[ToolCallRecord] = []

    def add_tool_results(self, records: list[ToolCallRecord]) -> None:
        self.tool_calls.extend(records)
        self.messages.extend({"role": "tool", "tool_call_id": r.id, "content": r.content} for r in records)

    def result(self, output: str | None, reason: str) -> RunResult:
        return RunResult(output, self.messages, self.steps, self.usage, reason, self.run_id, self.tool_calls)


def _normalize_tool_choice(choice: ToolChoice, tools: ToolRegistry) -> ToolChoice:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, str):
        name = choice
        choice = {"type": "function", "function": {"name": name}}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
    else:
        raise ConfigurationError(
            f"tool_choice must be 'auto', 'none', 'required', a tool name or "
            f"{{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}"
        )
    if name not in tools:
        raise ConfigurationError(
            f"tool_choice forces tool {name!r}, which is not registered; registered: {tools.names}"
        )
    return choice


def _check_conversation(messages: Any) -> list[dict[str, Any]]:
    """Validate the caller's conversation (cheaply) and return a shallow copy the run may extend."""
    if not isinstance(messages, list):
        raise ConversationError(f"messages must be a list of chat-format dicts, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ConversationError(f"messages[{i}] must be a dict, got {type(m).__name__}")
        role = m.get("role")
        if role not in _ROLES:
            raise ConversationError(f"messages[{i}] has role {role!r}; expected one of {sorted(_ROLES)}")
        if role == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise ConversationError(f"messages[{i}] is a tool message without a string tool_call_id")
    return list(messages)
