"""agentloop: an asynchronous tool-execution agent runtime for FluxRouter.

```python
from agentloop import Agent, FluxClient, ToolRegistry

tools = ToolRegistry()

@tools.tool
async def get_weather(city: str) -> dict:
    \"\"\"Get the current weather for a city.\"\"\"
    return {"city": city, "temp_c": 21}

async with FluxClient() as client:
    agent = Agent(client=client, tools=tools, model="flux-auto")
    result = await agent.run("What's the weather in Lisbon?")
```

Optional parts live in their own modules and are imported only when used: `agentloop.mcp`,
`agentloop.otel`, `agentloop.temporal`, `agentloop.testing`. The rarely used public names (the
journal's, approval decisions, handoffs, history, structured-output helpers) are imported on first
use (PEP 562 `__getattr__`), so `import agentloop` does no work for them.
"""

from typing import TYPE_CHECKING

from ._budget import InputBudget
from ._context import RunContext
from ._events import (
    Event,
    ModelRequestStarted,
    ModelResponded,
    RunFailed,
    RunFinished,
    RunPaused,
    RunStarted,
    StepFinished,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallFinished,
    ToolCallStarted,
)
from ._exceptions import (
    AgentloopError,
    AgentToolError,
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConversationError,
    InternalServerError,
    JournalCorruptError,
    JournalError,
    JournalWriteError,
    LoopDetected,
    MCPServerError,
    MCPToolError,
    MissingDependencyError,
    OutputValidationError,
    RateLimitError,
    ResumeError,
    RunError,
    RunLimitExceeded,
    RunLockedError,
    RunNotFoundError,
    SandboxedToolError,
    SandboxUnavailableError,
    StepLimitExceeded,
    TimeLimitExceeded,
    TokenLimitExceeded,
    ToolCallLimitExceeded,
    ToolDefinitionError,
    ToolsNotSupportedError,
)
from ._imports import import_ref
from ._limits import Limits
from ._model import Model, ModelRequest
from ._retry import RetryPolicy
from ._run.agent import Agent, ToolChoice
from ._run.limits import RunLimits
from ._run.observe import Observer
from ._tools.caller import ToolCaller, run_tool_call
from ._tools.dispatch import ErrorFormatter, default_error_formatter
from ._tools.registry import ToolRegistry
from ._tools.tool import SandboxMode, Tool, build_tool
from ._types import ModelTurn, OutcomeStatus, PendingCall, RunResult, StopReason, ToolCallRecord, Usage
from ._wire.openai import normalize_message

if TYPE_CHECKING:  # imported on first use, by __getattr__ below; type checkers see them here
    from ._http.client import DEFAULT_ANTHROPIC_BASE_URL, DEFAULT_BASE_URL, FluxClient
    from ._run.approval import Decision, Override, Reject
    from ._run.conversation import messages_from_json, messages_to_json
    from ._run.handoff import Handoff
    from ._run.history import History
    from ._run.journal import Journal, RunInfo, RunPage, RunSummary
    from ._run.output_spec import JsonSchema
    from ._run.output_stream import OutputDelta
    from ._run.sqlite import SQLiteJournal

__version__ = "0.2.0.dev0"  # the one place the version is written (pyproject reads it)

__all__ = [
    "Agent",
    "RunContext",
    "JsonSchema",
    "History",
    "Handoff",
    "messages_to_json",
    "messages_from_json",
    "FluxClient",
    "ToolRegistry",
    "Tool",
    "build_tool",
    "Limits",
    "RunLimits",
    "InputBudget",
    "SandboxMode",
    "ErrorFormatter",
    "default_error_formatter",
    "run_tool_call",
    "ToolCaller",
    "RetryPolicy",
    "RunResult",
    "ToolCallRecord",
    "PendingCall",
    "Usage",
    "OutcomeStatus",
    "StopReason",
    "ToolChoice",
    "Model",
    "ModelRequest",
    "ModelTurn",
    "normalize_message",
    "Observer",
    "DEFAULT_BASE_URL",
    "DEFAULT_ANTHROPIC_BASE_URL",
    "import_ref",
    # approval and durable runs
    "Decision",
    "Override",
    "Reject",
    "Journal",
    "SQLiteJournal",
    "RunInfo",
    "RunSummary",
    "RunPage",
    # events
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
    "OutputDelta",
    # errors
    "AgentloopError",
    "ConfigurationError",
    "MissingDependencyError",
    "SandboxedToolError",
    "ToolDefinitionError",
    "ConversationError",
    "SandboxUnavailableError",
    "MCPServerError",
    "MCPToolError",
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
    "__version__",
]


# The rarely used public names: the module each comes from. A first access through `agentloop`
# imports that module and fixes up all of its public names at once (below), so an object the
# journal returns shows as `agentloop.RunInfo` even if only `agentloop.SQLiteJournal` was named.
_LAZY = {
    # The HTTP client: httpx (and what it imports) loads when a program first names FluxClient, not
    # in a program that never talks HTTP itself (the sandbox's fork server, a tool module, a test
    # with a scripted model, `agentloop runs`).
    "FluxClient": "._http.client",
    "DEFAULT_BASE_URL": "._http.client",
    "DEFAULT_ANTHROPIC_BASE_URL": "._http.client",
    "Decision": "._run.approval",
    "Override": "._run.approval",
    "Reject": "._run.approval",
    "messages_from_json": "._run.conversation",
    "messages_to_json": "._run.conversation",
    "Handoff": "._run.handoff",
    "History": "._run.history",
    "Journal": "._run.journal",
    "RunInfo": "._run.journal",
    "RunPage": "._run.journal",
    "RunSummary": "._run.journal",
    "SQLiteJournal": "._run.sqlite",
    "JsonSchema": "._run.output_spec",
    "OutputDelta": "._run.output_stream",
}


# Public classes and functions show as `agentloop.X` (in reprs, tracebacks and docs), not as the
# private module that happens to define them, as httpx does. Pickling still works: `agentloop.X`
# is where they are found. `typing.get_type_hints` resolves a class's string annotations in the
# module its `__module__` names, so a class's own annotations are resolved first, in the module
# that wrote them (pydantic, FastAPI and cattrs read them); a class whose annotations cannot be
# resolved there keeps its module name rather than break them (a test checks that none does).
def _fix_module_names(names: list[str], home: str = __name__, scope: dict[str, object] | None = None) -> None:
    import contextlib
    import inspect
    import sys
    import typing

    scope = globals() if scope is None else scope  # `agentloop.abc` publishes its names as its own
    for name in names:
        obj = scope[name]
        if not (isinstance(obj, type) or callable(obj)) or not getattr(obj, "__module__", "").startswith(
            "agentloop._"
        ):
            continue
        own = inspect.get_annotations(obj) if isinstance(obj, type) else None  # its own, not inherited
        if own:
            # the defining module's names, plus the public ones it imports only for type checking
            namespace = {**globals(), **vars(sys.modules[obj.__module__])}
            try:
                resolved = typing.get_type_hints(obj, globalns=namespace, include_extras=True)
            except Exception:
                continue
            obj.__annotations__ = {key: resolved[key] for key in own}
        with contextlib.suppress(AttributeError, TypeError):  # typing aliases refuse; they keep theirs
            obj.__module__ = home


def _load(module: str) -> None:
    """Import one lazy module and publish (and fix up) all of its public names at once."""
    import importlib

    loaded = importlib.import_module(module, __name__)
    names = [n for n, m in _LAZY.items() if m == module]
    for n in names:
        globals()[n] = getattr(loaded, n)
    _fix_module_names(names)


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentloop' has no attribute {name!r}")
    _load(module)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _fix_loaded() -> None:
    """Fix up the eager names, and the lazy ones whose module something already imported."""
    import sys

    _fix_module_names([n for n in __all__ if n not in _LAZY])
    for module in dict.fromkeys(_LAZY.values()):
        if f"{__name__}{module}" in sys.modules:
            _load(module)


_fix_loaded()
del _fix_loaded
