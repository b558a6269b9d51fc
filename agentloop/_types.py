"""Plain data that crosses module boundaries: tool-call records, model turns, run results.

All of it is slotted dataclasses over plain dicts: the conversation itself stays a list of OpenAI
chat-format dicts, never wrapped, so nothing is copied or reflected on per request. `Usage` is in
`_usage.py` (re-exported here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Generic, Literal, get_args

from typing_extensions import TypeVar

from . import _json
from ._exceptions import ResumeError
from ._usage import Usage

__all__ = [
    "Usage",
    "ToolCallRecord",
    "ModelTurn",
    "RunResult",
    "PendingCall",
    "OutcomeStatus",
    "StopReason",
    "encode_result",
    "sendable",
    "result_to_json",
    "result_from_json",
]

OutcomeStatus = Literal[
    "ok",  # the tool returned a value
    "raised",  # the tool raised an exception
    "invalid_arguments",  # arguments were not JSON, or violated the schema
    "unknown_tool",  # the model named a tool that is not registered (or an empty name)
    "invalid_result",  # the tool returned something that cannot be encoded as JSON
    "timeout",  # the tool ran past its time limit
    "memory",  # the tool hit its memory limit (sandboxed modes)
    "cpu",  # the tool hit its CPU-seconds limit (sandboxed modes)
    "output_limit",  # the tool's output was larger than allowed (and was cut)
    "crashed",  # the sandboxed process died of a signal
    "cancelled",  # the run was cancelled while the tool ran
    "sandbox_unavailable",  # the sandbox the tool needs could not be provided
    "skipped",  # not run: the run's max_tool_calls budget was spent
    "too_many_calls",  # not run: its message had more calls than InputBudget.max_tool_calls
    "loop_detected",  # not run: the same call was repeated too many times in a row
    "rejected",  # not run: a human rejected it (approval)
    "overridden",  # not run: a human supplied the result (approval Override)
    "outcome_unknown",  # a crash interrupted it; not idempotent, so it was not run again
]

StopReason = Literal[
    "final",
    "max_steps",
    "max_tool_calls",
    "max_total_tokens",
    "timeout",
    "loop_detected",
    "approval_required",
    "output_invalid",  # OutputValidationError: the final answers kept failing output_type
]


@dataclass(slots=True)
class ToolCallRecord:
    """What happened to one tool call: the call as sent back to the model and its outcome.

    `content` is exactly the text of the `role: "tool"` message the model received.
    """

    id: str
    name: str
    arguments: dict[str, Any] | None
    status: OutcomeStatus
    content: str
    step: int
    duration_s: float = 0.0
    error: str | None = None
    raw_arguments: str = ""
    traceback: str | None = None  # status "raised": the exception's traceback text, in every sandbox mode

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(slots=True)
class ModelTurn:
    """One model answer in canonical form, whatever wire it came over.

    `message` is an OpenAI chat-format assistant dict: `content` (str or None) and, when the
    model wants tools, `tool_calls` as `[{"id", "type": "function", "function": {"name",
    "arguments": str}}]`. Adapters normalise what the wire sent; ids are repaired by the loop.
    """

    message: dict[str, Any]
    usage: Usage
    finish_reason: str | None = None
    model: str | None = None
    request_id: str | None = None
    streamed: bool = False  # True when the text deltas were already emitted while streaming
    # What of the answer's usage report was not a token count (counted as 0), e.g.
    # "usage.prompt_tokens is -5, not a token count": refused by a run with a token budget, else
    # logged once at WARNING (see `RunLimits.max_total_tokens`).
    usage_problems: tuple[str, ...] = ()

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return self.message.get("tool_calls") or []


@dataclass(frozen=True, slots=True)
class PendingCall:
    """A tool call waiting for a human decision: its id, tool name and validated arguments."""

    id: str  # a call of an agent tool's inner run: its path, "outer_call_id/inner_call_id"
    name: str
    arguments: dict[str, Any]
    step: int
    inner: str | None = field(default=None, repr=False)  # that run's paused RunResult JSON (no journal)


OutputT = TypeVar("OutputT", default=str)  # PEP 696 default: a plain Agent's result is RunResult[str]


@dataclass(slots=True)
class RunResult(Generic[OutputT]):
    """The outcome of `Agent.run`.

    `output` is the final answer: the text, or with `Agent(output_type=T)` a validated `T`.
    `messages` is the whole conversation in OpenAI chat format (the caller's messages first),
    ready to be passed back as `Agent.run(messages=...)` to continue it; `new_messages()` is the
    part this run added (from the prompt's user message on).
    """

    output: OutputT | None
    messages: list[dict[str, Any]]
    steps: int
    usage: Usage
    stop_reason: StopReason
    run_id: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    pending: list[PendingCall] = field(default_factory=list)  # stop_reason "approval_required"
    new_start: int = 0  # index in `messages` where this run's own messages begin
    agent_name: str | None = None  # the `Agent(name=...)` that finished the run (after handoffs)
    # Why the model's final answer ended, as the wire said ("stop"; "length": cut at max_tokens,
    # the output is incomplete; "content_filter", "refusal", ...); None when unknown.
    finish_reason: str | None = None

    @property
    def paused(self) -> bool:
        """True when the run waits for approvals: continue it with `Agent.resume(result, approvals=...)`."""
        return bool(self.pending)

    def all_messages(self) -> list[dict[str, Any]]:
        """The whole conversation (a new list): store it, e.g. with `messages_to_json`, to continue the chat."""
        return list(self.messages)

    def new_messages(self) -> list[dict[str, Any]]:
        """The messages this run added: the prompt's user message (if any) and everything after it."""
        return self.messages[self.new_start :]

    def to_json(self) -> str:
        """The whole result as JSON text (a paused run can be resumed from it in another process)."""
        return result_to_json(self)

    @classmethod
    def from_json(cls, data: str | bytes) -> RunResult[Any]:
        """The inverse of `to_json`. Raises `ResumeError` for text that is not a serialized result.

        A structured `output` comes back as its JSON data (a dict, list, ...), not as the type.
        """
        return result_from_json(data)

    @property
    def last_message(self) -> dict[str, Any] | None:
        return self.messages[-1] if self.messages else None


# --- JSON forms ---------------------------------------------------------------------------------
# They live beside the data they encode so that this module imports nothing above the ground floor
# (they were in `_approval` and `_dispatch`, which made `_types` part of an import circle).


sendable = _json.sendable  # lone surrogates replaced by U+FFFD (it lives with the codec the child uses too)


def encode_result(name: str, value: Any, cap: int | None) -> tuple[OutcomeStatus, str, str | None]:
    """A tool's return value → the tool-message text: `str` as is, anything else as JSON."""
    if isinstance(value, str):
        content = sendable(value)
    else:
        try:
            content = _json.dumps_result(value)
        except (TypeError, ValueError) as e:
            return _unencodable(name, value, str(e))
        except (Exception, SystemExit) as e:  # the value's own model_dump / tolist / __getattr__ raised
            return _unencodable(name, value, f"{type(e).__name__}: {e}")  # (it escaped the run, raw)
    if cap is not None and len(content) * 4 > cap:  # cheap pre-check: UTF-8 is at most 4 bytes a char
        data = content.encode()
        if len(data) > cap:
            kept = data[:cap].decode("utf-8", "ignore")
            marker = f"\n[output truncated: {len(data)} bytes, limit {cap}]"
            return "output_limit", kept + marker, f"{len(data)} bytes"
    return "ok", content, None


def _unencodable(name: str, value: Any, why: str) -> tuple[OutcomeStatus, str, str | None]:
    kind = type(value).__name__
    return (
        "invalid_result",
        f"Tool {name!r} returned a value of type {kind} that cannot be encoded as JSON ({why}).",
        kind,
    )


_FORMAT = "agentloop.RunResult/1"


def result_to_json(result: RunResult[Any]) -> str:
    data = {
        "format": _FORMAT,
        "output": _json.jsonable(result.output),  # structured outputs (dataclasses, pydantic) as data
        "messages": result.messages,
        "new_start": result.new_start,
        "steps": result.steps,
        "usage": result.usage.to_data(),
        "stop_reason": result.stop_reason,
        "run_id": result.run_id,
        "tool_calls": [asdict(r) for r in result.tool_calls],
        "pending": [asdict(p) for p in result.pending],
        "agent_name": result.agent_name,
        "finish_reason": result.finish_reason,
    }
    return _json.dumps_str(data)


def _stop_reason(value: object) -> StopReason:
    """`value` as a StopReason; a document naming another (edited, or from elsewhere) is not a RunResult."""
    for reason in get_args(StopReason):
        if value == reason:
            return reason  # type: ignore[no-any-return]  # get_args is untyped: each item is a StopReason
    raise ValueError(f"unknown stop_reason {value!r}; one of {', '.join(get_args(StopReason))} was expected")


def _optional_str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"finish_reason must be a str or null, got {type(value).__name__}")


def result_from_json(text: str | bytes) -> RunResult:
    try:
        data = _json.loads(text)
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"not a {_FORMAT} document")
        return RunResult(
            output=data["output"],
            messages=list(data["messages"]),
            steps=int(data["steps"]),
            usage=Usage.from_data(data["usage"]),
            stop_reason=_stop_reason(data["stop_reason"]),
            run_id=str(data["run_id"]),
            tool_calls=[ToolCallRecord(**r) for r in data["tool_calls"]],
            pending=[PendingCall(**p) for p in data["pending"]],
            new_start=int(data.get("new_start", 0)),
            agent_name=data.get("agent_name"),
            finish_reason=_optional_str(data.get("finish_reason")),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ResumeError(
            f"cannot read a RunResult from this JSON ({e}); pass the text RunResult.to_json() produced"
        ) from None
