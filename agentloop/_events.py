"""Run events (what `Agent.stream` yields) and the structlog binding used for debug logs.

Logging: the library never configures logging. When the application has configured structlog,
agentloop's events go through the application's structlog pipeline (logger name "agentloop").
Otherwise they go to the stdlib logger "agentloop", and only when that logger is enabled for
DEBUG; when it is not, the per-run logger is `None` and the hot path pays one `if`.

structlog itself is imported only when something will be logged: an application that configured
structlog has imported it already, and importing it costs ~110 ms and ~18 MB when `rich` is
installed (structlog.dev pulls it in), a cost `import agentloop` should not pay for nothing.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._types import RunResult, ToolCallRecord, Usage

__all__ = [
    "Event",
    "RunStarted",
    "ModelRequestStarted",
    "ModelResponded",
    "TextDelta",
    "ToolCallDelta",
    "ToolCallStarted",
    "ToolCallFinished",
    "StepFinished",
    "RunFinished",
    "RunPaused",
    "RunFailed",
    "run_logger",
]

_stdlib_logger = logging.getLogger("agentloop")


@dataclass(frozen=True, slots=True)
class Event:
    """`parent_call_id`: set on the events of a nested run (an agent run as a tool, `Agent.as_tool`):
    the id of the outer tool call the run works for. None for the events of a top-level run."""

    run_id: str
    parent_call_id: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class RunStarted(Event):
    model: str
    parent_run_id: str | None = field(default=None, kw_only=True)  # a nested run: the outer run's id


@dataclass(frozen=True, slots=True)
class ModelRequestStarted(Event):
    """A model request (one step) is about to be sent."""

    step: int
    model: str
    messages: int  # the conversation's length at that moment


@dataclass(frozen=True, slots=True)
class ModelResponded(Event):
    """The model answered a step (before any of its tool calls run)."""

    step: int
    usage: Usage
    finish_reason: str | None
    tool_calls: int
    response_model: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta(Event):
    """A piece of the assistant's text (the whole text at once when the wire is not streamed)."""

    step: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta(Event):
    """The model is streaming a tool call: `name` once known, then argument fragments.

    `index` is the call's position in the message; the id is final only in `ToolCallStarted`,
    after id repair.
    """

    step: int
    index: int
    name: str | None
    arguments_delta: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted(Event):
    """A tool call's arguments are complete and the loop takes it up (id already repaired).

    Every call gets one, then one `ToolCallFinished`, whatever its outcome: also calls that are
    refused before they run (unknown tool, invalid arguments, loop detected, over budget,
    rejected). `arguments` is the model's raw text.
    """

    step: int
    tool_call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallFinished(Event):
    """A tool call ended; `record` has its outcome status, result text and duration."""

    step: int
    record: ToolCallRecord


@dataclass(frozen=True, slots=True)
class StepFinished(Event):
    """One model request and the tools it asked for are done."""

    step: int
    usage: Usage  # this step's model usage
    tool_calls: int


@dataclass(frozen=True, slots=True)
class RunFinished(Event):
    result: RunResult


@dataclass(frozen=True, slots=True)
class RunPaused(Event):
    """The run stopped for human approval (`result.stop_reason == "approval_required"`)."""

    result: RunResult


@dataclass(frozen=True, slots=True)
class RunFailed(Event):
    """The run ended with an exception (a limit, an API error, cancellation).

    Delivered to observers only, so that tracing can close its spans: a `stream` consumer gets
    the exception itself.
    """

    error: BaseException


def warning_logger(**bound: Any) -> Any:
    """Like `run_logger`, for the rare warnings (a tool raised): logged at WARNING without DEBUG on."""
    loaded = sys.modules.get("structlog")
    if (loaded is None or not loaded.is_configured()) and not _stdlib_logger.isEnabledFor(logging.WARNING):
        return None
    import structlog

    if structlog.is_configured():
        return structlog.get_logger("agentloop").bind(**bound)
    return structlog.wrap_logger(
        _stdlib_logger,
        wrapper_class=structlog.stdlib.BoundLogger,
        processors=[structlog.stdlib.render_to_log_kwargs],
    ).bind(**bound)


def run_logger(**bound: Any) -> Any:
    """A structlog logger bound to `bound`, or None when nothing would be logged."""
    loaded = sys.modules.get("structlog")  # configured by the application => imported already
    if loaded is not None and loaded.is_configured():
        return loaded.get_logger("agentloop").bind(**bound)
    if _stdlib_logger.isEnabledFor(logging.DEBUG):
        import structlog

        return structlog.wrap_logger(
            _stdlib_logger,
            wrapper_class=structlog.stdlib.BoundLogger,
            processors=[structlog.stdlib.render_to_log_kwargs],
        ).bind(**bound)
    return None
