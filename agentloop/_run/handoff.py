"""Handoffs: `Agent(handoffs=[billing_agent, Handoff(refunds_agent, input_filter=...)])`.

Each handoff is offered to the model as a tool, `transfer_to_<name>` (no arguments). When the
model calls one, the step's calls finish as usual (the transfer call gets its tool result, so
the conversation stays valid), and then the same run goes on with the other agent: its
instructions (replacing the system message), its tools, model, output type and handoffs. The
run keeps its id, journal, limits and counters: a handoff loop between two agents is bounded by
the run's `max_steps` like any other loop. `result.agent_name` says which agent finished.

`input_filter(messages) -> messages` (sync or async) decides what of the conversation the next
agent sees (the previous agent's system message is already removed). Whatever it returns is checked as a
conversation and repaired so the wire accepts it: a tool call whose result it dropped, or a
result whose call it dropped, is removed rather than sent (the Agents SDK sends them, and the
provider rejects the request).

Journaled runs journal the handoff (the agent's name and the conversation it starts from), so
`resume(run_id)` continues with the agent that had the conversation, found by name among the
handoffs reachable from the resuming agent.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._context import RunContext, resolve_instructions
from .._exceptions import ConfigurationError, ConversationError, ResumeError
from .._tools.registry import ToolRegistry
from .._tools.tool import Tool
from .conversation import check_conversation
from .history import repair_history

if TYPE_CHECKING:
    from .agent import Agent
    from .state import Run

__all__ = ["Handoff", "build_handoffs", "with_handoffs", "take_handoff", "find_agent"]

InputFilter = Callable[[list[dict[str, Any]]], "list[dict[str, Any]] | Awaitable[list[dict[str, Any]]]"]


@dataclass(frozen=True, slots=True)
class Handoff:
    """A handoff to `agent`, with the tool the model calls to make it and what the agent sees.

    - `tool_name`: default `transfer_to_<agent name>`.
    - `description`: what the model reads to decide (default: "Hand the conversation to ...").
    - `input_filter(messages) -> messages` (sync or async): the conversation the agent continues
      (default: all of it, without the previous agent's system message).
    """

    agent: Agent[Any, Any]
    tool_name: str | None = None
    description: str | None = None
    input_filter: InputFilter | None = None

    def __post_init__(self) -> None:
        if not callable(getattr(self.agent, "_loop", None)):
            raise ConfigurationError(f"Handoff(agent=...) takes an Agent, got {self.agent!r}")
        if self.input_filter is not None and not callable(self.input_filter):
            raise ConfigurationError(
                f"input_filter must be a function of the messages, got {self.input_filter!r}"
            )


def build_handoffs(handoffs: Any, tools: ToolRegistry) -> tuple[tuple[Handoff, Tool], ...]:
    """Agent.__init__: each handoff and its transfer tool, checked (names, clashes)."""
    built: list[tuple[Handoff, Tool]] = []
    seen: set[str] = set()
    for h in handoffs or ():
        if not isinstance(h, Handoff):
            h = Handoff(h)
        name = h.agent.name
        tool_name = h.tool_name or (f"transfer_to_{_slug(name)}" if name else None)
        if not tool_name:
            raise ConfigurationError(
                f"a handoff to {h.agent!r} needs a name: create that agent with Agent(name=...) or pass "
                "Handoff(agent, tool_name=...)"
            )
        if tool_name in tools or tool_name in seen:
            raise ConfigurationError(
                f"the handoff tool {tool_name!r} clashes with another tool of the same name"
            )
        seen.add(tool_name)
        description = (
            h.description or f"Hand the conversation over to {name or tool_name}, which continues it."
        )
        reg = ToolRegistry()
        built.append(
            (h, reg.register(_transfer(h, name or tool_name, seen), name=tool_name, description=description))
        )
    return tuple(built)


def _slug(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", name).strip("_").lower()[:48] or "agent"


def _transfer(h: Handoff, label: str, names: set[str]) -> Any:
    """The transfer tool's function; `names`: every transfer tool of the agent (filled by the caller)."""

    async def transfer(ctx: RunContext[Any]) -> str:
        run: Run = ctx._run
        if run is None:
            raise ConfigurationError("a handoff tool runs only inside an Agent run")
        # Two transfers in one step: the first in the model's order wins, whichever task runs first.
        first = next((c for c in run.step_calls or () if c["function"]["name"] in names), None)
        if first is not None and first["id"] != ctx.tool_call_id:
            return (
                f"Not transferred: this step's first transfer ({first['function']['name']}) is the one made."
            )
        run.handoff = h
        return f"{TRANSFERRED}{label}: it continues the conversation from here."

    return transfer


TRANSFERRED = "Transferred to "  # how a transfer's outcome starts when it was the one made


def transfer_not_taken(agent: Agent[Any, Any], run: Run) -> bool:
    """Whether a restored run's last step made a transfer the run was not handed over by: it was cut
    (cancelled, killed) between the transfer's outcome and the handoff's journal entry, or paused
    for another call of that step. Sets `run.handoff` so the loop takes it now. Without this the
    resumed run went on with the agent that transferred, which the conversation says it left."""
    if run.handoff is not None or not agent.handoffs or run.handed_at >= run.steps:
        return False
    by_name = {tool.name: h for h, tool in agent.handoffs}
    for r in run.tool_calls:
        if (
            r.step == run.steps
            and r.status == "ok"
            and r.name in by_name
            and r.content.startswith(TRANSFERRED)
        ):
            run.handoff = by_name[r.name]
            return True
    return False


def with_handoffs(tools: ToolRegistry, handoffs: tuple[tuple[Handoff, Tool], ...]) -> ToolRegistry:
    """The agent's tools plus its transfer tools, for one run (the agent's registry is not changed)."""
    view = ToolRegistry()
    view._tools = {**tools._tools, **{t.name: t for _, t in handoffs}}
    view._definitions = [*tools.definitions, *(t.definition for _, t in handoffs)]
    return view


async def take_handoff(run: Run) -> Agent[Any, Any]:
    """Pass the run to the agent its model transferred to; return that agent."""
    h: Handoff = run.handoff
    target = h.agent
    old = run.messages
    head = 0
    while head < len(old) and old[head].get("role") in ("system", "developer"):
        head += 1
    before = old[head : max(run.new_start, head)]
    messages = list(old[head:])
    if h.input_filter is not None:
        filtered = h.input_filter(list(messages))
        if inspect.isawaitable(filtered):  # e.g. a filter that asks a model, or Temporal's activity
            filtered = await filtered
        try:
            messages = check_conversation(filtered)
        except ConversationError as e:
            raise ConversationError(
                f"the input_filter of the handoff to {target.name!r} returned {e}"
            ) from None
        messages = repair_history(messages)
    kept = 0
    while kept < len(messages) and messages[kept] in before:  # what was there before this run began
        kept += 1
    text = target.instructions
    if callable(text):
        text = await resolve_instructions(text, run.context(run.steps))
    if text:
        messages.insert(0, {"role": "system", "content": text})
        kept += 1
    run.hand_to(target.name, target.model, target.model_settings, messages, kept)
    await run.recorder.handed_off(run.steps, target.name, messages)
    return target


def find_agent(start: Agent[Any, Any], name: str | None) -> Agent[Any, Any]:
    """The agent named `name` among those reachable from `start` through handoffs (a resumed run's)."""
    if name is None or name == start.name:
        return start
    seen: set[int] = {id(start)}
    todo: list[Agent[Any, Any]] = [start]
    while todo:
        agent = todo.pop()
        if agent.name == name:
            return agent
        for h, _ in agent.handoffs:
            if id(h.agent) not in seen:
                seen.add(id(h.agent))
                todo.append(h.agent)
    raise ResumeError(
        f"the run was handed off to agent {name!r}, which is not among the handoffs reachable from agent "
        f"{start.name!r}; resume it with that agent"
    )
