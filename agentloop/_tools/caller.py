"""One tool call outside an `Agent` run, made exactly as a run makes it: `ToolCaller` and
`run_tool_call`, the seam a worker (the Temporal integration's tool activity) calls tools through."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any

from .. import _json
from .._context import RunContext
from .._events import run_logger
from .._exceptions import ConfigurationError
from .._types import ToolCallRecord
from .dispatch import Dispatcher, ErrorFormatter, default_error_formatter
from .registry import ToolRegistry

__all__ = ["ToolCaller", "run_tool_call"]


class ToolCaller:
    """Runs single tool calls outside an `Agent` run, exactly as a run makes them (a worker's seam).

    Built once with what a run takes from its agent: `format_tool_error`, and `redact`, the
    client's redactor (`FluxClient.redact`): every outcome text (content, error, traceback, the
    "tool raised" log line) has the credentials cut out, as in a run with that client.
    """

    __slots__ = ("format_tool_error", "redact", "tools")

    def __init__(
        self,
        tools: ToolRegistry,
        *,
        format_tool_error: ErrorFormatter | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        if redact is not None and not callable(redact):
            raise ConfigurationError(
                f"redact must be a callable str -> str (FluxClient.redact), got {redact!r}"
            )
        self.tools, self.redact = tools, redact
        self.format_tool_error = format_tool_error or default_error_formatter

    async def call(
        self,
        name: str,
        arguments: str | dict[str, Any] | None,
        *,
        run_id: str = "",
        step: int = 0,
        call_id: str = "call",
        deps: Any = None,
    ) -> ToolCallRecord:
        """One call, as `run_tool_call` describes it."""
        if not isinstance(name, str) or not isinstance(call_id, str):  # a call's record needs both as text
            raise ConfigurationError(
                "run_tool_call needs the tool's name and the call id as str, got "
                f"name: {type(name).__name__}, call_id: {type(call_id).__name__}"
            )
        dispatcher = Dispatcher(
            self.tools,
            run_id=run_id,
            emit=None,
            log=run_logger(run_id=run_id),
            max_concurrent=None,
            format_error=self.format_tool_error,
            context=lambda r: RunContext(deps, run_id, "", r.step, tool_call_id=r.id, tool_name=r.name),
            redact=self.redact,
        )
        raw: Any = arguments if arguments is not None else ""
        if not isinstance(raw, str):  # the record keeps the text a model would have sent
            with suppress(TypeError, ValueError):  # not JSON at all: the call ends as invalid_arguments
                raw = _json.dumps_str(raw)
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": raw}}
        return (await dispatcher.run([call], step))[0]


async def run_tool_call(
    tools: ToolRegistry,
    name: str,
    arguments: str | dict[str, Any] | None,
    *,
    run_id: str = "",
    step: int = 0,
    call_id: str = "call",
    format_tool_error: ErrorFormatter | None = None,
    deps: Any = None,
) -> ToolCallRecord:
    """Run one tool call outside an `Agent` run, exactly as a run would (the Temporal worker's seam).

    `arguments` as the model sent them (a JSON string) or already parsed. Every outcome is in the
    returned record (`status`, `content`, `error`, `traceback`); only cancellation propagates.
    Failures are logged as in a run, bound to `run_id`. A tool that takes a `RunContext` gets
    `deps`, `run_id`, `step`, `call_id` and its name in it. To cut a client's credentials out of
    the outcome as a run does, use `ToolCaller(tools, redact=client.redact).call(...)`.
    """
    caller = ToolCaller(tools, format_tool_error=format_tool_error)
    return await caller.call(name, arguments, run_id=run_id, step=step, call_id=call_id, deps=deps)
