"""The one exception tree of agentloop, rooted in `AgentloopError`.

Every message says what happened and what to do about it. None of them ever carries an API key:
`FluxClient` scrubs each error it raises, and its whole cause / context chain (`_secrets.py`).

The tree (a test keeps this picture equal to the classes)::

    AgentloopError
        APIError                        a model request failed
            APIConnectionError              no answer: connection refused, dropped, ...
                APITimeoutError                 ... or too slow
            APIResponseError                an answer agentloop cannot use (bad JSON, too big, ...)
            APIStatusError                  an HTTP error status
                AuthenticationError             401 / 403: the key
                BadRequestError                 400 / 404 / 422: the request
                    ToolsNotSupportedError          the routed model cannot call tools
                InternalServerError             5xx after the retries
                RateLimitError                  429 after the retries
        ConfigurationError  (also ValueError)   a caller's mistake, refused before anything runs
            MissingDependencyError  (also ImportError)
        ConversationError  (also ValueError)    `messages=` is not a valid conversation
        JournalError                    durable runs
            JournalCorruptError             not a journal, or damaged
            JournalWriteError               disk full or I/O error; nothing lost, the lease released
            RunLockedError                  another live process runs it
            RunNotFoundError  (also KeyError)
        MCPServerError                  an MCP server could not be started or reached
        MCPToolError                    an MCP tool call failed outside the model's view
        RunError                        a run stopped without a final answer
            AgentToolError                  an agent tool could not run its inner agent (told to the model)
            OutputValidationError           final answers kept failing `output_type`
            ResumeError  (also ValueError)  the decisions or the run cannot be resumed
            RunLimitExceeded                a `RunLimits` budget; `.result` is the partial run
                LoopDetected
                StepLimitExceeded
                TimeLimitExceeded
                TokenLimitExceeded
                ToolCallLimitExceeded
        SandboxUnavailableError         a sandbox mode this machine cannot provide
        SandboxedToolError              never raised: stands in for a sandboxed tool's exception
        ToolDefinitionError  (also ValueError)  a tool cannot be registered as written

A tool's own exception never escapes a run: it becomes that call's outcome, fed back to the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._types import RunResult

__all__ = [
    "AgentloopError",
    "ConfigurationError",
    "ToolDefinitionError",
    "ConversationError",
    "APIError",
    "APIConnectionError",
    "APITimeoutError",
    "APIResponseError",
    "APIStatusError",
    "BadRequestError",
    "ToolsNotSupportedError",
    "AuthenticationError",
    "RateLimitError",
    "InternalServerError",
    "RunError",
    "RunLimitExceeded",
    "StepLimitExceeded",
    "ToolCallLimitExceeded",
    "TokenLimitExceeded",
    "TimeLimitExceeded",
    "LoopDetected",
    "OutputValidationError",
    "ResumeError",
    "AgentToolError",
    "JournalError",
    "JournalCorruptError",
    "JournalWriteError",
    "RunNotFoundError",
    "RunLockedError",
    "SandboxUnavailableError",
    "MissingDependencyError",
    "MCPServerError",
    "MCPToolError",
]


class AgentloopError(Exception):
    """Base class of every error agentloop raises on purpose."""


class ConfigurationError(AgentloopError, ValueError):
    """The library was set up wrongly (missing API key, bad option value)."""


class ToolDefinitionError(AgentloopError, ValueError):
    """A tool cannot be registered: bad schema, duplicate name, unsupported signature.

    Raised at registration time, never in the middle of a run.
    """


class ConversationError(AgentloopError, ValueError):
    """The conversation handed to `Agent.run(messages=...)` is not a valid chat-format list."""


class SandboxedToolError(AgentloopError):
    """A "process" / "isolated" tool raised in its child process; what `format_tool_error` gets.

    The exception itself cannot cross the process boundary (nothing a child sends is unpickled),
    so this stands in for it: `exc_type` is its class name, `str(e)` its message, `traceback`
    the child's traceback text. Never raised by agentloop; only handed to the formatter.
    """

    def __init__(self, exc_type: str, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback


class SandboxUnavailableError(AgentloopError):
    """The requested sandbox mode cannot be provided on this host (fail closed, never run unsandboxed)."""


# --- talking to the model ---------------------------------------------------------------------------


class APIError(AgentloopError):
    """A request to the model endpoint failed."""

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


class APIConnectionError(APIError):
    """The endpoint could not be reached or the connection broke. Retried by the retry policy."""


class APITimeoutError(APIConnectionError):
    """The request timed out (connect, read or total). Retried by the retry policy."""


class APIResponseError(APIError):
    """The endpoint answered 2xx with a body that is not a usable completion.

    Covers malformed JSON, a body with an `error` object instead of `choices`, and a body with no
    message in it. `body` holds the raw text (truncated) for diagnosis.
    """

    def __init__(self, message: str, *, body: str = "", request_id: str | None = None) -> None:
        super().__init__(message, request_id=request_id)
        self.body = body


class APIStatusError(APIError):
    """The endpoint answered with an HTTP error status.

    `status_code`, the parsed error `body` (dict, or the raw text when it is not JSON) and the
    `request_id` header are kept for diagnosis.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: Any = None,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.status_code = status_code
        self.body = body
        self.headers = headers or {}


class BadRequestError(APIStatusError):
    """400 or 422: the request was rejected as malformed. Retrying will not help."""


class ToolsNotSupportedError(BadRequestError):
    """The routed model does not support tool calling. Pin a tool-capable `flux-pinned-*` model."""


class AuthenticationError(APIStatusError):
    """401 or 403: the API key is missing, wrong or lacks permission."""


class RateLimitError(APIStatusError):
    """429: too many requests. Retried (honouring retry-after) by the retry policy."""


class InternalServerError(APIStatusError):
    """5xx: the endpoint failed. Retried by the retry policy."""


# --- the run ------------------------------------------------------------------------------------------


class RunError(AgentloopError):
    """A run stopped before the model gave a final answer."""


class RunLimitExceeded(RunError):
    """A run hit one of its limits. `.result` is the partial `RunResult`: nothing is lost."""

    stop_reason = "limit"

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


class StepLimitExceeded(RunLimitExceeded):
    """The model still asked for tools after `max_steps` model requests."""

    stop_reason = "max_steps"


class ToolCallLimitExceeded(RunLimitExceeded):
    """The model asked for more tool calls than `RunLimits.max_tool_calls` allows.

    The calls over the budget were not run; each got a tool result saying so (status `skipped`).
    """

    stop_reason = "max_tool_calls"


class TokenLimitExceeded(RunLimitExceeded):
    """The reported token usage reached `RunLimits.max_total_tokens`; no further request was sent."""

    stop_reason = "max_total_tokens"


class TimeLimitExceeded(RunLimitExceeded):
    """The run passed `RunLimits.timeout` / `deadline` and was cancelled.

    Tool calls cut short have status `cancelled` and a tool message saying so.
    """

    stop_reason = "timeout"


class LoopDetected(RunLimitExceeded):
    """The model kept calling the same tool with the same arguments after it was told to stop."""

    stop_reason = "loop_detected"


class OutputValidationError(RunError):
    """The model's final answers kept failing `output_type` validation (`output_retries` spent).

    `.last_answer` is the last answer as the model sent it (JSON text), `.errors` its validation
    errors (`"<json path>: <message>"`), `.result` the partial `RunResult` (a valid conversation).
    """

    stop_reason = "output_invalid"

    def __init__(self, message: str, result: RunResult, last_answer: str | None, errors: list[str]) -> None:
        super().__init__(message)
        self.result = result
        self.last_answer = last_answer
        self.errors = errors


class ResumeError(RunError, ValueError):
    """`Agent.resume` was given something it cannot continue: a finished run, missing approvals."""


class AgentToolError(RunError):
    """An agent tool (`Agent.as_tool`) could not run its inner agent: nested too deep, outside a run,
    or the inner run paused for approval. Like any tool error, the model is told."""


# --- durable runs ------------------------------------------------------------------------------------


class JournalError(AgentloopError):
    """The run journal cannot be used."""


class JournalCorruptError(JournalError):
    """The journal file is not a database, not an agentloop journal, or its contents are damaged."""


class JournalWriteError(JournalError):
    """The journal could not be written: the disk is full (the message says so) or an I/O error.

    The failed write was not committed and nothing before it is lost; the run's lease is
    released, so once the disk has room `Agent.resume(run_id)` continues the run (in this
    process too).
    """


class RunNotFoundError(JournalError, KeyError):
    """No run with this id is in the journal."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RunLockedError(JournalError):
    """Another live process (or task) holds the run's lease: two cannot continue one run at once."""


# --- optional integrations -----------------------------------------------------------------------------


class MissingDependencyError(ConfigurationError, ImportError):
    """An optional feature needs a package that is not installed; the message names the extra to install."""


class MCPServerError(AgentloopError):
    """An MCP server could not be started or reached, failed a request, or was used after it was closed."""


class MCPToolError(AgentloopError):
    """An MCP tool reported an error result (`isError`).

    Raised from the tool function, so the call's outcome is `raised` and the model reads the
    server's own error text.
    """
