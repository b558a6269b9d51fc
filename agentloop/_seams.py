"""The extension points of agentloop, in one place.

Each seam is a Protocol (structural: implement the methods, no base class needed) or an ABC, and
each has one or more implementations inside the package:

- `Model`: answers one request (`FluxClient`, `agentloop.testing.ScriptedModel`, Temporal's
  activity model). Defined in `_model.py`, re-exported here.
- `Wire`: the codec `FluxClient` speaks (`_wire/_openai.OpenAIWire`, `_wire/_anthropic.AnthropicWire`):
  pure functions from a `ModelRequest` to bytes and from bytes to a `ModelTurn`; no I/O.
- `ToolExecutor`: what runs a tool outside the event loop's process for `sandbox="process"` /
  `"isolated"` (`_tools/executors.SandboxExecutor` over `_sandbox.ProcessSandbox`), or for
  `sandbox=<an executor>` (Temporal's activity box). It answers with a `ToolOutcome`, a typed
  record; the dispatcher writes every text the model reads from it.
- `ToolSource`: something that registers tools into a registry when given in `Agent(tools=[...])`
  (`agentloop.mcp.MCPServer`).
- `Journal`: where durable runs are recorded (`SQLiteJournal`). Defined in `_journal.py`.

This module sits just above the ground floor: everything it names from higher floors is imported
for type checking only, so any module from `_run`, `_tools`, `_http` and `_wire` may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._model import Emit, Model, ModelRequest
from ._types import OutcomeStatus

if TYPE_CHECKING:
    from ._limits import Limits
    from ._tools.registry import ToolRegistry
    from ._types import ModelTurn
    from ._wire.assembler import StreamAssembler

__all__ = ["Emit", "Model", "ModelRequest", "Wire", "ToolExecutor", "ToolOutcome", "ToolSource"]


class Wire(Protocol):
    """A wire format: how a `ModelRequest` becomes an HTTP body and an answer becomes a `ModelTurn`.

    `FluxClient` owns the HTTP (retries, budgets, transports); a wire only encodes and decodes.
    """

    def url(self, base_url: str) -> str:
        """The endpoint URL under `base_url` (e.g. `.../chat/completions`)."""
        ...

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """The headers that carry the key (never logged: `_secrets` redacts them)."""
        ...

    def encode(self, request: ModelRequest, *, stream: bool = False) -> bytes:
        """The request body for the canonical (OpenAI chat-format) request."""
        ...

    def decode(self, content: bytes, *, request_id: str | None = None, status: int = 200) -> ModelTurn:
        """A whole (non-streamed) response body → the assistant turn in canonical form.

        `status` is the 2xx status the body came with (a router may answer 202 or 203): an error
        about the body names it ("the endpoint answered 203 with a body that is not JSON").
        A `decode` written before this keyword (without `status` or `**kwargs`) still works:
        `FluxClient` looks at its signature once and then calls it without `status`.
        """
        ...

    def assembler(self, run_id: str | None, step: int, request_id: str | None) -> StreamAssembler:
        """A fresh accumulator for one streamed answer (fed SSE events, yields deltas)."""
        ...


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """How one call run by a `ToolExecutor` ended: every failure is one of these, never an exception.

    - `status`: an `OutcomeStatus` ("ok", "raised", "timeout", "memory", "crashed", ...).
    - `content`: "ok": the tool's result as text (str results as they are, others as JSON).
      Otherwise what happened, as `"Tool <what happened>"` ("Tool timed out after 5 s and was
      killed"); the dispatcher names the tool in it and cuts it to `InputBudget.max_error_bytes`.
    - `error`: a short machine-friendly detail (exception type, signal name, limit name).
    - `exception`: status "raised": the exception, or a `SandboxedToolError` standing in for one
      raised in another process. The model's text is then `format_tool_error(name, exception)`,
      written by the dispatcher (never by the executor), the same in every mode.
    - `traceback`: status "raised": the traceback text, kept on the `ToolCallRecord` and logged.
    - `final`: `content` is already the finished text for the model (it was written by another
      agentloop dispatcher, e.g. on a Temporal worker, with that side's `format_tool_error`).
    """

    status: OutcomeStatus
    content: str = ""
    error: str | None = None
    exception: BaseException | None = None
    traceback: str | None = None
    final: bool = False


@runtime_checkable
class ToolExecutor(Protocol):
    """Runs a registered tool by reference (`module:qualname`, or a name) under `Limits`.

    Every failure is an outcome, never an exception: the dispatcher turns it into a tool message.
    (The dispatcher also survives an executor that breaks this contract: an exception, or a
    return value that is not a `ToolOutcome`, ends the call as "crashed" with a text saying so.)
    Cancellation must stop what the call started before it propagates. Give one to a tool with
    `ToolRegistry.register(fn, sandbox=executor)`; the registry's own are the fork-server
    sandboxes of "process" and "isolated" (`ToolRegistry.sandbox_for`).
    """

    async def call(self, ref: str, arguments: dict[str, Any], limits: Limits) -> ToolOutcome: ...


@runtime_checkable
class ToolSource(Protocol):
    """A source of tools given in `Agent(tools=[...])`: it registers them into the agent's registry."""

    def register_into(self, registry: ToolRegistry) -> object:
        """Register the tools (`registry.add(build_tool(...))` or `registry.register(...)`); the
        return value is not used."""
        ...


# `Journal` is an ABC with a dozen methods; it stays beside its SQLite implementation (`_journal`),
# and `agentloop.abc` re-exports it with the others.
