"""The extension points of agentloop (as `trio.abc` is for trio): implement one to plug in.

- `Model`: answers one `ModelRequest` with a `ModelTurn` (streaming through `Emit`).
- `Wire`: the codec `FluxClient` speaks on HTTP (OpenAI chat-completions, Anthropic Messages).
- `ToolExecutor`: runs a tool out of the event loop's process and returns a `ToolOutcome`
  (what `ToolRegistry.sandbox_for` returns).
- `ToolSource`: registers tools into an agent's registry when given in `Agent(tools=[...])`.
- `Journal`: where durable runs are recorded.

`agentloop.temporal`, `agentloop.mcp` and `agentloop.testing` are built on these and on the names
`agentloop` exports; see docs/architecture.md.
"""

from __future__ import annotations

from ._run.journal import Journal
from ._seams import Emit, Model, ModelRequest, ToolExecutor, ToolOutcome, ToolSource, Wire

__all__ = ["Emit", "Journal", "Model", "ModelRequest", "ToolExecutor", "ToolOutcome", "ToolSource", "Wire"]
