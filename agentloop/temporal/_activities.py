"""The activities: everything with I/O happens here, in the worker, never in workflow code.

- `describe_tools`: the worker's tools (schemas, approval and idempotency flags, activity
  options), once per run; recorded in the history, so a replay sees the same tools.
- `model_request`: one model request. The conversation comes by reference (see `_store`); the
  answer's tool-call ids are repaired here, so workflow code never needs randomness.
- `tool_call`: one tool call through the worker's own `Dispatcher`, so argument conversion,
  the sandbox modes ("thread", "process", "isolated"), `Limits` and result encoding are exactly
  those of an in-process run. Every call heartbeats while it runs, so a lost worker is noticed
  after `heartbeat_timeout` and cancellation reaches the tool. The worker's model credentials
  are cut out of the outcome (`ToolCaller(redact=model.redact)`), as a run with that client does.
- `call_function`: a `History(processor=...)`, a handoff's `input_filter` or an agent's dynamic
  instructions, one the worker was given (`create_worker(functions=[...])`), by its `module:qualname`; never a name the
  workflow's input chose that the worker was not given.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import anyio
from temporalio import activity
from temporalio.exceptions import ApplicationError

from agentloop import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConversationError,
    Model,
    ModelRequest,
    RunContext,
    ToolCaller,
    ToolRegistry,
    Usage,
)

from ..abc import repair_tool_call_ids
from ._spec import (
    DESCRIBE_ACTIVITY,
    FUNCTION_ACTIVITY,
    MODEL_ACTIVITY,
    TOOL_ACTIVITY,
    ToolActivityOptions,
    WorkerOptions,
    functions_by_ref,
    is_json_data,
)
from ._store import REFERENCE_MISSING, ROOT, ConversationStore, index_of, refer, tools_digest

__all__ = ["AgentActivities", "NON_RETRYABLE_MODEL_ERRORS", "tools_digest"]

T = TypeVar("T")

MAX_RESULT_JSON = 1_500_000  # bytes of JSON a tool result may take in the history (Temporal's limit: 2 MB)
MAX_TRACEBACK = 20_000  # characters of a tool's traceback kept (its end: where it raised)

# Model errors that another attempt cannot fix (FluxClient already retried the transient ones).
NON_RETRYABLE_MODEL_ERRORS = [
    BadRequestError.__name__,
    "ToolsNotSupportedError",
    AuthenticationError.__name__,
    ConfigurationError.__name__,
    ConversationError.__name__,
    REFERENCE_MISSING,
]


class AgentActivities:
    """The activities of one worker: its model, its tools and its conversation store."""

    def __init__(
        self,
        model: Model,
        tools: ToolRegistry,
        *,
        options: WorkerOptions | None = None,
        functions: Sequence[Callable[..., Any]] = (),
    ) -> None:
        if not callable(getattr(model, "request", None)):
            raise ConfigurationError(
                f"model must implement the Model interface (e.g. FluxClient), got {model!r}"
            )
        if not isinstance(tools, ToolRegistry):
            raise ConfigurationError(f"tools must be a ToolRegistry, got {tools!r}")
        options = options or WorkerOptions()
        tool_options = options.tool_options or {}
        unknown = sorted(set(tool_options) - set(tools.names))
        if unknown:
            raise ConfigurationError(
                f"tool_options names tools that are not registered: {unknown}; registered: {tools.names}"
            )
        self.model = model
        self.tools = tools
        self.functions = functions_by_ref(functions)
        self.store = options.store if options.store is not None else ConversationStore()
        self.tool_options = dict(tool_options)
        self.default_tool_timeout = options.default_tool_timeout
        self.heartbeat_timeout = options.heartbeat_timeout
        self.model_timeout = options.model_timeout
        self.model_attempts = options.model_attempts
        # The model's credentials (a FluxClient's key) cut out of every tool outcome and function
        # error before it is returned: an activity's result goes to Temporal's history and to the
        # model's next request. The key is known where the model is: on this worker, whose tools
        # run in the same process (and environment) as the client holding it.
        self.redact: Callable[[str], str] = getattr(model, "redact", None) or _unchanged
        self.caller = ToolCaller(tools, format_tool_error=options.format_tool_error, redact=self.redact)
        self.tool_executions = 0  # tool activities started in this process (soak/diagnostics)

    @property
    def activities(self) -> list[Any]:
        return [self.describe_tools, self.model_request, self.tool_call, self.call_function]

    # --- describe_tools -------------------------------------------------------------------------

    @activity.defn(name=DESCRIBE_ACTIVITY)
    async def describe_tools(self) -> dict[str, Any]:
        out = []
        for tool in self.tools:
            opts = self.tool_options.get(tool.name, ToolActivityOptions())
            timeout = opts.start_to_close_timeout
            if timeout is None:
                timeout = (
                    tool.limits.timeout + 30 if tool.limits.timeout is not None else self.default_tool_timeout
                )
            attempts = opts.maximum_attempts or (3 if tool.idempotent else 1)
            out.append(
                {
                    "name": tool.name,
                    "definition": tool.definition,
                    "idempotent": tool.idempotent,
                    "requires_approval": tool.requires_approval,
                    "context": tool.context is not None,  # its calls carry the run's deps
                    "start_to_close_timeout": timeout,
                    "heartbeat_timeout": opts.heartbeat_timeout or self.heartbeat_timeout,
                    "maximum_attempts": attempts,
                }
            )
        model = {
            "start_to_close_timeout": self.model_timeout,
            "heartbeat_timeout": self.heartbeat_timeout,
            "maximum_attempts": self.model_attempts,
            "wire": getattr(self.model, "wire", None),  # output_mode="auto" is decided by it
        }
        return {
            "tools": out,
            "digest": tools_digest(self.tools.definitions),
            "model": model,
            "functions": sorted(self.functions),  # History processors and input filters, by ref
        }

    # --- model_request --------------------------------------------------------------------------

    @activity.defn(name=MODEL_ACTIVITY)
    async def model_request(self, data: dict[str, Any]) -> dict[str, Any]:
        _check_input(data, model=str, delta=list)
        store = self.store
        tools = self._tools(data)
        digest, conversation = self._conversation(data)
        request = ModelRequest(
            model=data["model"],
            messages=conversation,
            tools=tools,
            tool_choice=data.get("tool_choice"),
            settings=data.get("settings") or {},
            run_id=data.get("run_id"),
            step=data.get("step", 0),
        )
        turn = await _heartbeating(self.model.request, request, None)
        message = turn.message
        if message.get("tool_calls"):
            repair_tool_call_ids(conversation, message["tool_calls"])  # here, not in the workflow: random
        store.put(digest, message)
        out: dict[str, Any] = {
            "message": message,
            "usage": turn.usage.to_data(),
            "finish_reason": turn.finish_reason,
            "model": turn.model,
            "request_id": turn.request_id,
        }
        if turn.usage_problems:  # the workflow decides (refused under a token budget): it knows the budget
            out["usage_problems"] = list(turn.usage_problems)
        return out

    def _conversation(self, data: dict[str, Any]) -> tuple[str, list[Any]]:
        """The conversation an activity's input names: a stored prefix (by digest) and the delta."""
        base = data.get("base", ROOT)
        prefix = self.store.conversation(base) if base != ROOT else []
        if prefix is None:
            raise ApplicationError(
                "this worker does not have the conversation prefix the workflow referenced (worker restarted "
                "or another worker); the workflow sends the whole conversation again",
                type=REFERENCE_MISSING,
                non_retryable=True,
            )
        delta = data.get("delta") or []
        return self.store.extend(base, delta), [*prefix, *delta]

    def _tools(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The request's tools array: sent inline (and kept by digest), or referenced by digest."""
        tools: list[dict[str, Any]] | None = data.get("tools")
        digest = data.get("tools_digest")
        if tools is not None:
            if digest and tools:
                self.store.put_tools(digest, tools)
            return tools
        definitions = self.tools.definitions
        if digest == tools_digest(definitions):
            return definitions
        tools = self.store.tools(digest) if isinstance(digest, str) else None
        if tools is None:
            raise ApplicationError(
                "this worker does not have the run's tool definitions (its own differ, or the agent's set was "
                "sent to another worker); the workflow sends them inline",
                type=REFERENCE_MISSING,
                non_retryable=True,
            )
        return tools

    # --- tool_call ------------------------------------------------------------------------------

    @activity.defn(name=TOOL_ACTIVITY)
    async def tool_call(self, data: dict[str, Any]) -> dict[str, Any]:
        _check_input(data, name=str, arguments=dict)
        self.tool_executions += 1
        call = partial(
            self.caller.call,
            data["name"],
            data.get("arguments") or {},
            run_id=data.get("run_id") or "",
            step=int(data.get("step", 0)),
            call_id=data.get("call_id") or "call",
            deps=data.get("deps"),  # JSON data, for tools that take a RunContext
        )
        record = await _heartbeating(call)
        out = {
            "status": record.status,
            "content": record.content,
            "error": record.error,
            "duration_s": record.duration_s,
            "traceback": record.traceback and record.traceback[-MAX_TRACEBACK:],
        }
        return _fitted(out)

    # --- call_function ----------------------------------------------------------------------------

    @activity.defn(name=FUNCTION_ACTIVITY)
    async def call_function(self, data: dict[str, Any]) -> dict[str, Any]:
        """A `History(processor=...)`, a handoff's `input_filter` or an agent's dynamic
        instructions, by its ref, on this worker.

        Its own exceptions fail the run, as in-process (not retried: it is called once there);
        its result is recorded in the history, so a replay never calls it again.
        """
        _check_input(data, ref=str, kind=str)
        ref, kind = data["ref"], data["kind"]
        fn = self.functions.get(ref) if isinstance(ref, str) else None
        if fn is None or not isinstance(
            ref, str
        ):  # the workflow checked describe_tools; a worker of another version may lack it
            raise ApplicationError(
                f"this worker has no function {ref!r:.200}; pass it to create_worker(functions=[...])",
                type=ConfigurationError.__name__,
                non_retryable=True,
            )
        if kind == "instructions":
            _, conversation = self._conversation(data)
            text = await _run_function(ref, fn, self.redact, _context(data, _copy(conversation)))
            return {"text": _text(ref, text)}
        given = data.get("messages")  # a processor's: None when it is the conversation itself
        conversation = []
        if kind == "history":
            _, conversation = self._conversation(data)
        # what the workflow has too (the result refers to these by index), indexed before the
        # function runs; it gets copies, so changing them in place changes neither this nor the store
        where = index_of(conversation + (given or []))
        arg = _copy(conversation if given is None else given)
        args = (_context(data, _copy(conversation)), arg) if kind == "history" else (arg,)
        out = _messages_data(ref, await _run_function(ref, fn, self.redact, *args))
        if not isinstance(out, list):  # not messages: the loop in the workflow refuses it, as in-process
            return {"value": out}
        # Recorded as references into what the workflow sent (only new messages cross), and stored:
        # the model request right after it refers to it by digest.
        return {"items": refer(out, where), "digest": self.store.extend(ROOT, out)}


def _fitted(out: dict[str, Any]) -> dict[str, Any]:
    """A tool call's outcome, its text truncated when the JSON would not fit in a history event.

    Temporal refuses a payload over ~2 MB (a tool with `Limits(output_bytes=None)` may return
    more); the refused result would read as a lost worker ("outcome unknown") although the tool
    ran. Measured as JSON, because escaping can make the text several times longer."""
    size = len(json.dumps(out))
    if size <= MAX_RESULT_JSON:
        return out
    content: str = out["content"]
    kept = content[: int(len(content) * MAX_RESULT_JSON * 0.9 / size)]
    marker = (
        f"\n[output truncated: the result is {len(content.encode()):,} bytes; on Temporal a result is "
        f"capped at {MAX_RESULT_JSON:,} bytes of JSON (the history's payload limit)]"
    )
    return {**out, "status": "output_limit", "content": kept + marker, "error": f"{size} bytes of JSON"}


def _check_input(data: Any, **fields: type) -> None:
    """An activity's input has the fields it needs, of their types: a workflow of any type on the
    queue can schedule these activities, and a KeyError would be retried as if the worker were lost."""
    wrong = [k for k, t in fields.items() if not isinstance(data, dict) or not isinstance(data.get(k), t)]
    if wrong:
        raise ApplicationError(
            f"the activity's input is not what an agentloop workflow sends (fields {wrong} missing or of the "
            "wrong type); agentloop's activities are scheduled by its AgentWorkflow only",
            type=ConfigurationError.__name__,
            non_retryable=True,
        )


async def _run_function(ref: str, fn: Callable[..., Any], redact: Callable[[str], str], *args: Any) -> Any:
    """The user's function, heartbeating; its own exception fails the run with its type, not retried
    (its message redacted: it goes to the history and to the client's `TemporalRunError`)."""
    try:
        return await _heartbeating(_call, fn, *args)
    except Exception as e:
        raise ApplicationError(redact(f"{ref} raised {type(e).__name__}: {e}"), type=type(e).__name__,
                               non_retryable=True) from None  # fmt: skip


def _unchanged(text: str) -> str:
    """The redactor of a model without credentials of its own to cut (not a FluxClient)."""
    return text


def _text(ref: str, text: Any) -> str | None:
    """Dynamic instructions' result, checked as the loop checks it in-process."""
    if text is not None and not isinstance(text, str):
        raise ApplicationError(
            f"the instructions function {ref!r} returned {type(text).__name__}; it must return a str (or None "
            "for no instructions)",
            type=ConfigurationError.__name__,
            non_retryable=True,
        )
    return text


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    out = fn(*args)
    return await out if inspect.isawaitable(out) else out


def _copy(messages: list[Any]) -> list[Any]:
    copied: list[Any] = json.loads(json.dumps(messages))  # JSON data already (an activity's input)
    return copied


def _context(data: dict[str, Any], conversation: list[Any]) -> RunContext[Any]:
    """The RunContext a history processor gets in-process: the run's deps, id, model, step, usage."""
    usage = Usage.from_data(data.get("usage") or {})
    return RunContext(data.get("deps"), data["run_id"], data["model"], data["step"], usage,
                      messages=conversation)  # fmt: skip


def _messages_data(ref: str, out: Any) -> Any:
    """What a function returned, as it crosses to the workflow: JSON data, or a clear failure."""
    if not is_json_data(out):
        raise ApplicationError(
            f"{ref} returned {type(out).__name__} that is not JSON data; on Temporal it must return "
            "chat-format message dicts (its result is recorded in the workflow's history)",
            type=ConfigurationError.__name__,
            non_retryable=True,
        )
    return out


async def _heartbeating(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`await fn(*args)`, heartbeating every third of the activity's heartbeat timeout meanwhile."""
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        return await fn(*args)
    interval = max(timeout.total_seconds() / 3, 0.05)

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await anyio.sleep(interval)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(beat)
            result = await fn(*args)
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the body's own error, not a group around it
        if len(group.exceptions) == 1:
            exc = group.exceptions[0]
            raise exc from exc.__cause__
        raise
    return result
