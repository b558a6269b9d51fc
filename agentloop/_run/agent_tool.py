"""Agents as tools: `research_agent.as_tool(name=..., description=...)` runs a whole agent as one
tool call of another agent's run.

The inner run is an ordinary run of the inner agent through the same loop, nested under the
outer call:

- Deadline and cancellation: it runs in the outer call's task, inside the outer run's cancel
  scope; the outer deadline (or leaving an outer stream) cancels it, and its own tools with it.
- Budgets: every model request, token and tool call of the inner run counts in the inner run
  and in every run above it, once (`Run.nested_steps`, `Run.usage`, `Run.tool_count`). Each run
  checks its own `RunLimits` and those of the runs above it, so an agent that calls itself is
  bounded by the outermost run's budget (and by `MAX_DEPTH` when it has none).
- Events: the inner run's events reach the outer stream and observers with `parent_call_id` set
  to the outer call's id (`RunStarted` also carries `parent_run_id`); an observer attached to
  both agents sees each event once. Logs are bound to the same two fields.
- Journal: the inner run is journaled (in the inner agent's journal, else the outer's) under a
  run id derived from the outer run id and the call id. The tool is idempotent: an outer run
  resumed after a crash runs the call again, which resumes the inner run from its journal (or
  returns its result, if it had finished) instead of starting it over.
- Approval: an inner run cannot pause the outer one (see README); `as_tool` refuses an agent
  whose tools need approval, and an inner run that pauses anyway fails the call with
  `AgentToolError`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .._context import RunContext
from .._events import Event, RunStarted
from .._exceptions import AgentToolError, ConfigurationError, RunNotFoundError
from .._model import Emit
from .observe import fan_out
from .output_spec import jsonable

if TYPE_CHECKING:
    from .._types import RunResult
    from .agent import Agent
    from .state import Run

__all__ = [
    "Parent",
    "as_tool",
    "nested_emits",
    "spend",
    "count_call",
    "ancestor_limit",
    "calls_spent",
    "MAX_DEPTH",
]

MAX_DEPTH = 16  # agent tools nested deeper than this are refused: a self-calling agent without budgets
AGENT_TOOL = "__agentloop_agent__"  # attribute of an agent tool's function: the inner agent


@dataclass(frozen=True, slots=True)
class Parent:
    """What a nested run knows of the outer call it works for."""

    run: Run  # the outer run's state: its budgets and counters
    call_id: str
    depth: int  # 1 for a run nested in a top-level run


def nested_run_id(outer_run_id: str, call_id: str) -> str:
    """Deterministic, so a resumed outer run finds its inner run; bounded in length at any depth."""
    digest = hashlib.sha256(f"{outer_run_id}\x00{call_id}".encode()).hexdigest()[:16]
    root = outer_run_id.split(".", 1)[0][:40]
    return f"{root}.{digest}"


def as_tool(agent: Agent[Any, Any], name: str | None, description: str | None) -> Any:
    """The function `ToolRegistry.register` turns into the agent tool (see `Agent.as_tool`)."""
    tool_name = name or agent.name
    if not tool_name:
        raise ConfigurationError(
            "as_tool needs a tool name: pass name=... or create the agent with Agent(name=...)"
        )
    if agent.require_approval is not None or any(t.requires_approval for t in agent.tools):
        needing = [t.name for t in agent.tools if t.requires_approval] or ["require_approval=<function>"]
        raise ConfigurationError(
            f"agent tool {tool_name!r}: the agent's tools need approval ({', '.join(needing)}), and an inner run "
            "cannot pause the outer one for a human decision. Run that agent on its own (Agent.run / resume), or "
            "remove the approval requirement from the tools it uses as an inner agent."
        )

    async def call_agent(ctx: RunContext[Any], input: str) -> Any:
        result = await run_nested(agent, ctx, input)
        output = result.output
        return output if isinstance(output, str) or output is None else jsonable(output)

    call_agent.__name__ = tool_name
    call_agent.__qualname__ = tool_name
    call_agent.__doc__ = (
        f"{description or f'Ask the agent {tool_name!r} to do a task and return its answer.'}\n\n"
        "Args:\n    input: The task or question for the agent, with everything it needs to know."
    )
    setattr(call_agent, AGENT_TOOL, agent)
    return call_agent


async def run_nested(agent: Agent[Any, Any], ctx: RunContext[Any], prompt: str) -> RunResult[Any]:
    outer: Run | None = ctx._run
    if outer is None or ctx.tool_call_id is None:
        raise AgentToolError(
            "an agent tool runs only as a tool call of an Agent run (not on a Temporal worker)"
        )
    depth = outer.parent.depth + 1 if outer.parent is not None else 1
    if depth > MAX_DEPTH:
        raise AgentToolError(
            f"agent tools are nested {depth} deep (the limit is {MAX_DEPTH}): an agent keeps calling itself or "
            "another agent. Give the outer run RunLimits(max_steps=..., max_tool_calls=...) to bound it."
        )
    journal = agent.journal or outer.journal
    if journal is not agent.journal:  # journaled with the outer run: same durability, one file
        agent = copy.copy(agent)
        agent.journal = journal
    run_id = nested_run_id(outer.run_id, ctx.tool_call_id)
    parent = Parent(outer, ctx.tool_call_id, depth)
    run = None
    if journal is not None:
        with contextlib.suppress(RunNotFoundError):  # a resumed outer run: continue the inner one
            run = await agent._restore(run_id, None)
    if run is None:
        run = agent._start(prompt, None, run_id, ctx.deps)
    else:
        agent._configure(run, ctx.deps, None, None)
    run.parent = parent
    result = await agent._loop(run, None, agent.limits)
    if result.pending:
        raise AgentToolError(
            f"the agent behind tool {ctx.tool_name!r} paused for approval of {[p.name for p in result.pending]}; an "
            "inner run cannot pause the outer run. Its journaled run is "
            f"{run_id!r} (stop_reason 'approval_required')."
        )
    return result


# --- hooks of the loop ------------------------------------------------------------------------


def nested_emits(run: Run, observers: tuple[Any, ...], emit: Emit | None) -> tuple[Emit | None, Emit | None]:
    """The run's (emit, observers-only emit); a nested run's reach the outer run's, tagged with the call id."""
    parent = run.parent
    if parent is None:
        run.observers = frozenset(observers)
        observe = fan_out(observers, None) if observers else None
        return (fan_out(observers, emit) if observers else emit), observe
    outer = parent.run
    own = tuple(
        o for o in observers if o not in outer.observers
    )  # one observer, both agents: each event once
    run.observers = outer.observers | frozenset(own)
    tag = _tagger(parent.call_id, outer.run_id)
    full = tag(outer.emit) if outer.emit is not None else None
    only = tag(outer.observe) if outer.observe is not None else None
    if own:
        return fan_out(own, full), fan_out(own, only)
    return full, only


def _tagger(call_id: str, outer_run_id: str) -> Any:
    def tag(emit: Emit) -> Emit:
        async def tagged(event: Event) -> None:
            if event.parent_call_id is None:  # deeper runs' events keep their own (nearest) parent
                if isinstance(event, RunStarted):
                    event = replace(event, parent_call_id=call_id, parent_run_id=outer_run_id)
                else:
                    event = replace(event, parent_call_id=call_id)
            await emit(event)

        return tagged

    return tag


def log_fields(run: Run) -> dict[str, str]:
    """What a nested run's log lines and journal header carry about the outer call."""
    p = run.parent
    return {} if p is None else {"parent_run_id": p.run.run_id, "parent_call_id": p.call_id}


def spend(run: Run, model: str, usage: Any) -> None:
    """A nested run's model request counts in every run above it too (tokens, steps, by model)."""
    p = run.parent
    while p is not None:
        outer = p.run
        outer.usage = outer.usage + usage
        outer.turns.append((model, usage))
        outer.nested_steps += 1
        p = outer.parent


def count_call(run: Run) -> None:
    """One tool call of `run`: counted in it and in every run above it."""
    run.tool_count += 1
    p = run.parent
    while p is not None:
        p.run.tool_count += 1
        p = p.run.parent


def calls_spent(run: Run) -> str | None:
    """Why no more tool calls may run when a run above this one has spent its max_tool_calls, else None."""
    p = run.parent
    while p is not None:
        outer = p.run
        limit = outer.limits.max_tool_calls if outer.limits is not None else None
        if limit is not None and outer.tool_count >= limit:
            return (
                f"Not run: the outer run {outer.run_id!r} has spent its budget of max_tool_calls={limit} tool "
                "calls (its nested agents' calls included)."
            )
        p = outer.parent
    return None


def ancestor_limit(run: Run) -> tuple[str, str] | None:
    """(kind, message) when a run above this nested run has spent its steps or tokens, else None."""
    p = run.parent
    while p is not None:
        outer = p.run
        limits = outer.limits
        if limits is not None:
            if limits.max_steps is not None and outer.steps + outer.nested_steps >= limits.max_steps:
                return "steps", (
                    f"the outer run {outer.run_id!r} has spent its max_steps={limits.max_steps} model requests "
                    "(its nested agents' requests included); this nested run stops. The partial result is in .result."
                )
            if limits.max_total_tokens is not None and outer.usage.total_tokens >= limits.max_total_tokens:
                return "tokens", (
                    f"the outer run {outer.run_id!r} has used {outer.usage.total_tokens} tokens (its nested agents' "
                    f"included), reaching max_total_tokens={limits.max_total_tokens}; this nested run stops."
                )
        p = outer.parent
    return None
