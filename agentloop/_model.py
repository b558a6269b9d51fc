"""The seam between the agent loop and whatever answers it.

The loop only knows `Model.request(ModelRequest, emit) -> ModelTurn`. `FluxClient` implements it
over HTTP (wire formats are adapters under `_wire/`); `agentloop.testing.ScriptedModel`
implements it in memory. Streaming is the same call with an `emit` callback that receives the
deltas as they arrive: one loop for both.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ._types import ModelTurn

__all__ = ["Model", "ModelRequest", "Emit"]

Emit = Callable[[Any], Awaitable[None]]


@dataclass(slots=True)
class ModelRequest:
    """One model request. `messages` is the run's own list, passed by reference, never copied."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any] | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)  # extra body fields: temperature, ...
    run_id: str | None = None
    step: int = 0
    # ids of the calls whose outcome was not "ok": wires that can mark a failed result (the
    # Anthropic wire's `is_error`) read it; the OpenAI wire has no such flag.
    tool_errors: set[str] = field(default_factory=set)
    # When a cancel scope around this request ends it, on the anyio clock (`anyio.current_time()`),
    # set by the run loop to its time limit (`RunLimits.timeout` / `deadline`), a scope it never
    # moves later; `math.inf`: none promised. A model may leave its own timer out when this comes
    # first: `FluxClient` then sets no timer of its own on a request queued for a connection.
    deadline: float = math.inf


@runtime_checkable
class Model(Protocol):
    async def request(self, request: ModelRequest, emit: Emit | None = None) -> ModelTurn:
        """Send one request; return the assistant turn in canonical (OpenAI chat) form.

        With `emit`, a model that can stream calls it with `TextDelta` / `ToolCallDelta` events
        as the answer arrives; one that cannot simply ignores it.
        """
        ...
