"""The typed outcome a sandboxed call ends in (its limits are `agentloop.Limits`)."""

from __future__ import annotations

from dataclasses import dataclass

from .._limits import SANDBOX_DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from .._limits import Limits

__all__ = ["Limits", "SandboxOutcome", "DEFAULT_TIMEOUT"]


@dataclass(slots=True)
class SandboxOutcome:
    """How one sandboxed call ended.

    `status` is one of: ok, raised, invalid_result, timeout, memory, cpu, output_limit, crashed,
    cancelled, sandbox_unavailable. `content` is what the model sees: the result text for `ok`
    (str results as is, others JSON-encoded), otherwise a clear message. `error` is a short
    machine-friendly detail (exception type, signal name, ...). `stdout` / `stderr` hold what the
    tool printed, capped at `output_bytes` each (for logs, not for the model).
    """

    status: str
    content: str
    error: str | None = None
    truncated: bool = False
    stdout: str = ""
    stderr: str = ""
    exc_message: str = ""  # status "raised": the exception's message (`error` is its type name)
    traceback: str = ""  # status "raised": the child's traceback text (its last 8000 characters)

    @property
    def ok(self) -> bool:
        return self.status == "ok"
