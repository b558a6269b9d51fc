"""RunContext: what a run hands to the tools and instructions that ask for it (dependency injection).

A tool whose first parameter is annotated `RunContext[Deps]` gets the run's context as that
argument: the `deps` passed to `Agent.run(..., deps=...)`, the run id, the step, the usage so
far, the tool call id and how many earlier calls of the same tool failed in this run. The
parameter never appears in the tool's schema: the model cannot see or forge it.

This replaces contextvars for per-run data: a contextvar set around `agent.run` is not reliably
visible in tools that run in worker threads or in other tasks, and is invisible to the type
checker. `ctx.deps` is an explicit, typed argument that reaches every tool of the run and
nothing else.

Sandboxed tools ("process" / "isolated") cannot take a RunContext: the context holds live
Python objects (a database pool, a client), and agentloop never pickles anything across the
process boundary. Registration refuses such a tool with a clear error; pass the JSON data the
tool needs as arguments instead.
"""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic

from typing_extensions import TypeVar

from . import _json
from ._exceptions import ConfigurationError, ToolDefinitionError
from ._types import Usage

__all__ = [
    "Instructions",
    "RunContext",
    "check_no_running_loop",
    "context_param",
    "place_instructions",
    "put_system",
    "resolve_instructions",
]

DepsT = TypeVar("DepsT", default=None)


@dataclass(slots=True)
class RunContext(Generic[DepsT]):
    """The run as a tool (or a dynamic `instructions` function) sees it. Read it; do not keep it.

    - `deps`: what was passed to `Agent.run(..., deps=...)` (None when nothing was).
    - `run_id`, `model` (the model requested for this run), `step` (the model request whose
      tool calls are running, 0 before the first), `usage` (the run's usage so far).
    - `tool_call_id`, `tool_name`: the call being run (None for instructions).
    - `retry`: how many earlier calls of this tool in this run did not end "ok" (0 the first
      time): a tool can tell it is being called again after a failure.
    - `messages`: the conversation so far (the run's own list: read it, never mutate it).
    """

    deps: DepsT
    run_id: str
    model: str
    step: int = 0
    usage: Usage = field(default_factory=Usage)
    tool_call_id: str | None = None
    tool_name: str | None = None
    retry: int = 0
    messages: Sequence[dict[str, Any]] = ()
    # The run's own state, for agentloop's tools that act on the run itself (agents as tools,
    # handoffs); not part of the public API.
    _run: Any = field(default=None, repr=False, compare=False)


Instructions = str | Callable[[RunContext[Any]], str] | Callable[[RunContext[Any]], Awaitable[str]]


def context_param(fn: Callable[..., Any]) -> str | None:
    """The name of `fn`'s first parameter when it is annotated `RunContext[...]`, else None.
    A RunContext parameter anywhere else is a `ToolDefinitionError` saying to move it first (the
    schema builder would call it "not a JSON-compatible type").

    String annotations (`from __future__ import annotations`) are recognised by name, so the
    types named inside the brackets need not be resolvable.
    """
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if not params:
        return None
    later = [p.name for p in params[1:] if _is_context(p.annotation)]
    if later:
        raise ToolDefinitionError(
            f"tool {getattr(fn, '__name__', fn)!r}: its RunContext parameter {later[0]!r} must be the "
            "first parameter (the model's arguments are the others); move it first"
        )
    return params[0].name if _is_context(params[0].annotation) else None


def _is_context(ann: Any) -> bool:
    if isinstance(ann, str):
        return ann.split("[", 1)[0].strip().rsplit(".", 1)[-1] == "RunContext"
    return (typing.get_origin(ann) or ann) is RunContext


async def resolve_instructions(instructions: Any, ctx: RunContext[Any]) -> str | None:
    """A dynamic `instructions` function's text for this run (sync or async function)."""
    text = instructions(ctx)
    if inspect.isawaitable(text):
        text = await text
    if text is not None and not isinstance(text, str):
        raise ConfigurationError(
            f"the instructions function {getattr(instructions, '__name__', instructions)!r} returned "
            f"{type(text).__name__}; it must return a str (or None for no instructions)"
        )
    if text and (problem := _json.not_unicode("the instructions function's text", text)):
        raise ConfigurationError(problem)
    return text or None


def check_instructions(instructions: Any, where: str) -> None:
    if instructions is not None and not isinstance(instructions, str) and not callable(instructions):
        raise ConfigurationError(
            f"{where}: instructions must be a str or a (sync or async) function of the RunContext "
            f"returning a str, got {instructions!r}"
        )
    if isinstance(instructions, str) and (
        problem := _json.not_unicode(f"{where}: instructions", instructions)
    ):
        raise ConfigurationError(problem)


_SYSTEM_ROLES = ("system", "developer")


def place_instructions(conversation: list[dict[str, Any]], own: Any, per_run: Any) -> tuple[Any, int]:
    """Put a run's instructions into its `conversation` (a new list of the caller's messages).

    The agent's `own` keep a conversation that already starts with a system (or developer)
    message as it is: that is how a multi-turn conversation comes back (`messages=result.messages`).
    Instructions passed for this run (`per_run`, not None) REPLACE that leading message: the caller
    said so for this run. Empty instructions change nothing. Returns the dynamic instructions
    function the loop must still call (`put_system` places its text), or None, and how many
    messages were inserted before the caller's (0 or 1)."""
    instructions = own if per_run is None else per_run
    if not instructions or (per_run is None and _leads(conversation)):
        return None, 0
    if callable(instructions):
        return instructions, 0  # resolved by the loop, which can await it
    return None, put_system(conversation, instructions)


def put_system(messages: list[dict[str, Any]], text: str) -> int:
    """`text` as the conversation's leading system message: it replaces the one there (a new dict
    of the same role, other keys kept: the caller's message is never changed), else is inserted.
    Returns how many messages were inserted (0 or 1)."""
    if _leads(messages):
        messages[0] = {**messages[0], "content": text}
        return 0
    messages.insert(0, {"role": "system", "content": text})
    return 1


def _leads(messages: list[dict[str, Any]]) -> bool:
    return bool(messages) and messages[0].get("role") in _SYSTEM_ROLES


def check_no_running_loop() -> None:
    """`run_sync` starts its own event loop; inside a running one that would deadlock or fail."""
    library = _running_loop_library()
    if library is not None:
        raise ConfigurationError(
            f"Agent.run_sync was called inside a running {library} event loop (an async function, a "
            "notebook, a web handler); it cannot start another loop there. Use `await agent.run(...)` "
            "instead."
        )


def _running_loop_library() -> str | None:
    """The library of the event loop this thread runs ("asyncio" / "trio"), else None. Asked of the
    loops themselves: sniffio is not a dependency (recent anyio no longer brings it), and importing
    it made `run_sync` raise ModuleNotFoundError on a fresh install."""
    import asyncio  # not at import time: ~10 ms, and a trio program never needs it

    if asyncio._get_running_loop() is not None:  # also a notebook cell's loop
        return "asyncio"
    trio = sys.modules.get("trio")  # a trio loop runs only where trio was imported
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:  # "must be called from async context"
            return None
        return "trio"
    return None
