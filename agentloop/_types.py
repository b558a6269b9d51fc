"""Plain data that crosses module boundaries: usage, tool-call records, model turns, run results.

All of it is slotted dataclasses over plain dicts: the conversation itself stays a list of OpenAI
chat-format dicts, never wrapped, so nothing is copied or reflected on per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Usage", "ToolCallRecord", "ModelTurn", "RunResult", "PendingCall", "OutcomeStatus", "StopReason"]

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
]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage as reported by the endpoint, summed over a run's model requests."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.requests + other.requests,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
        )

    @classmethod
    def from_openai(cls, raw: Any) -> Usage:
        """Lenient: a missing or odd `usage` object counts as zero tokens, never an error."""
        if not isinstance(raw, dict):
            return cls(requests=1)
        p = _int(raw.get("prompt_tokens", raw.get("input_tokens")))
        c = _int(raw.get("completion_tokens", raw.get("output_tokens")))
        t = _int(raw.get("total_tokens")) or p + c
        return cls(1, p, c, t)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


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

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return self.message.get("tool_calls") or []


@dataclass(frozen=True, slots=True)
class PendingCall:
    """A tool call waiting for a human decision: its id, tool name and validated arguments."""

    id: str
    name: str
    arguments: dict[str, Any]
    step: int


@dataclass(slots=True)
class RunResult:
    """The outcome of `Agent.run`.

    `messages` is the whole conversation in OpenAI chat format (the caller's messages first),
    ready to be passed back as `Agent.run(messages=...)` to continue it.
    """

    output: str | None
    messages: list[dict[str, Any]]
    steps: int
    usage: Usage
    stop_reason: StopReason
    run_id: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    pending: list[PendingCall] = field(default_factory=list)  # stop_reason "approval_required"

    @property
    def paused(self) -> bool:
        """True when the run waits for approvals: continue it with `Agent.resume(result, approvals=...)`."""
        return bool(self.pending)

    def to_json(self) -> str:
        """The whole result as JSON text (a paused run can be resumed from it in another process)."""
        from ._approval import result_to_json

        return result_to_json(self)

    @classmethod
    def from_json(cls, data: str | bytes) -> RunResult:
        """The inverse of `to_json`. Raises `ResumeError` for text that is not a serialized result."""
        from ._approval import result_from_json

        return result_from_json(data)

    @property
    def last_message(self) -> dict[str, Any] | None:
        return self.messages[-1] if self.messages else None
