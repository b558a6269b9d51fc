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

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

from ._unicode import sendable

if TYPE_CHECKING:
    from ._types import RunResult, ToolCallRecord, Usage

__all__ = [
    "Event",
    "RunStarted",
    "ModelRequestStarted",
    "ModelResponded",
    "TextDelta",
    "ThinkingDelta",
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
_E = TypeVar("_E")


def quick_init(cls: type[_E]) -> type[_E]:
    """Give a frozen, slotted event dataclass an `__init__` that sets each slot through its descriptor.

    Why: the `__init__` dataclasses write for a frozen class calls `object.__setattr__` per field
    (a generic attribute lookup each time); a streamed step builds ~20 events, one per delta,
    so their construction was ~15 µs of it. Calling each slot's own setter halves that. The class
    is otherwise untouched: same signature and defaults, still frozen (assignment raises),
    same equality, repr, `replace`, pickling. A class this cannot do exactly (a field with a
    default factory, `init=False`, `__post_init__`) keeps the generated `__init__`.
    """
    fs = fields(cls)  # type: ignore[arg-type]
    setters: dict[str, Any] = {f"_set_{f.name}": getattr(cls, f.name, None) for f in fs}
    if (
        hasattr(cls, "__post_init__")
        or any(f.default_factory is not MISSING or not f.init for f in fs)
        or any(type(d).__name__ != "member_descriptor" for d in setters.values())
    ):
        return cls
    namespace: dict[str, Any] = {k: d.__set__ for k, d in setters.items()}
    namespace.update({f"_default_{f.name}": f.default for f in fs if f.default is not MISSING})

    def param(f: Any) -> str:
        return f.name if f.default is MISSING else f"{f.name}=_default_{f.name}"

    params = [param(f) for f in fs if not f.kw_only]
    if any(f.kw_only for f in fs):
        params += ["*", *(param(f) for f in fs if f.kw_only)]
    body = "".join(f"    _set_{f.name}(self, {f.name})\n" for f in fs)
    exec(f"def __init__(self, {', '.join(params)}):\n{body}", namespace)  # names of our own fields only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    setattr(cls, "__init__", init)  # noqa: B010 - (mypy: assigning to a method)
    return cls


@dataclass(frozen=True, slots=True)
class Event:
    """`parent_call_id`: set on the events of a nested run (an agent run as a tool, `Agent.as_tool`):
    the id of the outer tool call the run works for. None for the events of a top-level run."""

    run_id: str
    parent_call_id: str | None = field(default=None, kw_only=True)


@quick_init
@dataclass(frozen=True, slots=True)
class RunStarted(Event):
    model: str
    parent_run_id: str | None = field(default=None, kw_only=True)  # a nested run: the outer run's id


@quick_init
@dataclass(frozen=True, slots=True)
class ModelRequestStarted(Event):
    """A model request (one step) is about to be sent."""

    step: int
    model: str
    messages: int  # the conversation's length at that moment


@quick_init
@dataclass(frozen=True, slots=True)
class ModelResponded(Event):
    """The model answered a step (before any of its tool calls run)."""

    step: int
    usage: Usage
    finish_reason: str | None
    tool_calls: int
    response_model: str | None = None
    request_id: str | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class TextDelta(Event):
    """A piece of the assistant's text (the whole text at once when the wire is not streamed)."""

    step: int
    text: str


@quick_init
@dataclass(frozen=True, slots=True)
class ThinkingDelta(Event):
    """A piece of the model's extended thinking (Anthropic wire with `thinking` enabled; the whole
    text of each thinking block when the answer is not streamed). Redacted thinking has no text
    and no event. The blocks themselves stay on the assistant message (`thinking_blocks`)."""

    step: int
    text: str


@quick_init
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


@quick_init
@dataclass(frozen=True, slots=True)
class ToolCallStarted(Event):
    """A tool call's arguments are complete and the loop takes it up (id already repaired).

    Every call gets one, then one `ToolCallFinished`, whatever its outcome: also calls that are
    refused before they run (unknown tool, invalid arguments, loop detected, over budget,
    rejected). One exception: an agent tool (`Agent.as_tool`) whose inner run pauses for approval
    has no outcome yet, so no `ToolCallFinished` (as it has no record in the result and no entry
    in the journal); the inner run's `RunPaused` (its `parent_call_id` is this call) and then the
    outer run's name its pending calls, and the resumed run starts the call again (a new
    `ToolCallStarted`, then its `ToolCallFinished`). `arguments` is the model's raw text.
    A step's calls are announced together, before any of them runs; in `Agent.stream` they run
    only once the consumer has gone past the last of these events (see `Agent.stream`).
    """

    step: int
    tool_call_id: str
    name: str
    arguments: str


@quick_init
@dataclass(frozen=True, slots=True)
class ToolCallFinished(Event):
    """A tool call ended; `record` has its outcome status, result text and duration."""

    step: int
    record: ToolCallRecord


@quick_init
@dataclass(frozen=True, slots=True)
class StepFinished(Event):
    """One model request and the tools it asked for are done."""

    step: int
    usage: Usage  # this step's model usage
    tool_calls: int


@quick_init
@dataclass(frozen=True, slots=True)
class RunFinished(Event):
    result: RunResult


@quick_init
@dataclass(frozen=True, slots=True)
class RunPaused(Event):
    """The run stopped for human approval (`result.stop_reason == "approval_required"`)."""

    result: RunResult


@quick_init
@dataclass(frozen=True, slots=True)
class RunFailed(Event):
    """The run ended with an exception (a limit, an API error, cancellation).

    Delivered to observers only, so that tracing can close its spans: a `stream` consumer gets
    the exception itself.
    """

    error: BaseException


# Set while `Agent.warmup()` rehearses runs (`_run/warmup.py`): their log lines are nobody's.
# A context variable, not a global: the tasks of the rehearsal see it, the application's do not.
_quiet: contextvars.ContextVar[bool] = contextvars.ContextVar("agentloop_quiet_logs", default=False)


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """No run or warning logger (None) in this context and the tasks started from it."""
    token = _quiet.set(True)
    try:
        yield
    finally:
        _quiet.reset(token)


def warning_logger(**bound: Any) -> Any:
    """Like `run_logger`, for the rare warnings (a tool raised): logged at WARNING without DEBUG on."""
    if _quiet.get():
        return None
    loaded = sys.modules.get("structlog")
    if (loaded is None or not loaded.is_configured()) and not _stdlib_logger.isEnabledFor(logging.WARNING):
        return None
    import structlog

    if structlog.is_configured():
        return structlog.get_logger("agentloop").bind(**bound)
    return _stdlib(structlog, bound)


def run_logger(**bound: Any) -> Any:
    """A structlog logger bound to `bound`, or None when nothing would be logged."""
    if _quiet.get():
        return None
    loaded = sys.modules.get("structlog")  # configured by the application => imported already
    if loaded is not None and loaded.is_configured():
        return loaded.get_logger("agentloop").bind(**bound)
    if _stdlib_logger.isEnabledFor(logging.DEBUG):
        import structlog

        return _stdlib(structlog, bound)
    return None


def _stdlib(structlog: Any, bound: dict[str, Any]) -> Any:
    """A structlog logger over the stdlib logger "agentloop": the fields in `extra=` (attributes of
    the record) AND in the message text, which is all a plain `logging.basicConfig()` shows: the
    text said only "tool raised", without the tool, the call, the run or the exception."""
    return structlog.wrap_logger(
        _stdlib_logger,
        wrapper_class=structlog.stdlib.BoundLogger,
        processors=[_fields_in_text, structlog.stdlib.render_to_log_kwargs],
    ).bind(**bound)


def _fields_in_text(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """`event` as "tool raised: step=1 tool=bad exc_type=ValueError run_id=..." (a multi-line
    field, the traceback, after the line, as `logging.exception` prints one). Only where a line is
    logged: a disabled level never reaches the processors."""
    event, last = str(event_dict.get("event", "")), ""
    pairs = []
    for key, value in event_dict.items():
        if key == "event":
            continue
        text = value if isinstance(value, str) else repr(value)
        if "\n" in text:
            last += "\n" + text.rstrip("\n")
        else:
            shown = text if text and not any(c in text for c in " \"'=") else repr(text)
            pairs.append(f"{key}={shown}")
    # sendable: a tool's exception message may hold a lone surrogate, which no UTF-8 handler (a log
    # file, a terminal) can write ("--- Logging error ---"); the attributes keep it as it was
    text = f"{event}: {' '.join(pairs)}{last}" if pairs or last else event
    return {**event_dict, "event": sendable(text)}
