"""The extension points of agentloop, in one place.

Each seam is a Protocol (structural: implement the methods, no base class needed) or an ABC, and
each has one or more implementations inside the package:

- `Model`: answers one request (`FluxClient`, `agentloop.testing.ScriptedModel`, Temporal's
  activity model). Defined in `_model.py`, re-exported here.
- `Wire`: the codec `FluxClient` speaks (`_wire/_openai.OpenAIWire`, `_wire/_anthropic.AnthropicWire`):
  pure functions from a `ModelRequest` to bytes and from bytes to a `ModelTurn`; no I/O.
- `ToolExecutor`: what runs a tool outside the event loop's process for `sandbox="process"` /
  `"isolated"` (`_sandbox.ProcessSandbox`; Temporal's activity box). `ToolRegistry.sandbox_for`
  returns one.
- `ToolSource`: something that registers tools into a registry when given in `Agent(tools=[...])`
  (`agentloop.mcp.MCPServer`).
- `Journal`: where durable runs are recorded (`SQLiteJournal`). Defined in `_journal.py`.

This module sits on the ground floor: everything it names from higher floors is imported for type
checking only, so any module may import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._model import Emit, Model, ModelRequest

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

    def decode(self, content: bytes, *, request_id: str | None = None) -> ModelTurn:
        """A whole (non-streamed) response body → the assistant turn in canonical form."""
        ...

    def assembler(self, run_id: str | None, step: int, request_id: str | None) -> StreamAssembler:
        """A fresh accumulator for one streamed answer (fed SSE events, yields deltas)."""
        ...


class ToolOutcome(Protocol):
    """How one call run by a `ToolExecutor` ended (`SandboxOutcome` is the reference shape).

    `status` is an `OutcomeStatus`; `content` is the text the model reads; `error` a short detail.
    An outcome whose text was already written where the tool ran (a Temporal worker, with the
    agent's `format_tool_error`) also carries `formatted = True`; the dispatcher then keeps it.
    """

    @property
    def status(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def exc_message(self) -> str:
        """status "raised": the exception's message (`error` holds its type name)."""
        ...

    @property
    def traceback(self) -> str | None: ...


@runtime_checkable
class ToolExecutor(Protocol):
    """Runs a registered tool by reference (`module:qualname`, or a name) under `Limits`.

    Every failure is an outcome, never an exception: the dispatcher turns it into a tool message.
    """

    async def call(self, ref: str, arguments: dict[str, Any], limits: Limits) -> ToolOutcome: ...


@runtime_checkable
class ToolSource(Protocol):
    """A source of tools given in `Agent(tools=[...])`: it registers them into the agent's registry."""

    def register_into(self, registry: ToolRegistry) -> Any: ...


# `Journal` is an ABC with a dozen methods; it stays beside its SQLite implementation (`_journal`),
# and `agentloop.abc` re-exports it with the others.
