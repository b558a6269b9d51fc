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
- Approval: an inner run that pauses for approval pauses the outer run. The call's outcome is
  not settled (no record, no journal entry); the outer result's `pending` names each inner call
  by its path (`outer_call_id/inner_call_id`) and, when the inner run has no journal, carries its
  paused state (`PendingCall.inner`). Resuming the outer run with decisions for those paths runs
  the call again (agent tools are idempotent), which resumes the inner run with them.
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
from .._types import PendingCall, RunResult, Usage
from .approval import Decision, NestedDecision
from .observe import fan_out
from .output_spec import jsonable

if TYPE_CHECKING:
    from .agent import Agent
    from .limits import RunLimits
    from .state import Run

__all__ = [
    "Parent",
    "as_tool",
    "nested_emits",
    "spend",
    "count_call",
    "ancestor_limit",
    "token_budgeted",
    "calls_spent",
    "nested_pending",
    "restore_nested_usage",
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

    async def call_agent(ctx: RunContext[Any], input: str) -> Any:
        result = await run_nested(agent, ctx, input)
        if result.pending:  # the outer run pauses too; this text is never an outcome (see settle)
            return f"Paused: waiting for a human decision on {[p.name for p in result.pending]}."
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
    decisions, paused = _decisions_for(outer, ctx.tool_call_id)
    run = None
    if journal is not None:
        with contextlib.suppress(RunNotFoundError):  # a resumed outer run: continue the inner one
            # (paused and no decision for it yet: it pauses again, and so does the outer run)
            run = await agent._restore(run_id, decisions or None, nested=True)
    elif paused is not None:  # resumed with decisions for its paused inner run (no journal)
        run = await agent._restore(RunResult.from_json(paused), decisions)
    if run is None:
        run = agent._start(prompt, None, run_id, ctx.deps)
    else:
        agent._configure(run, ctx.deps, None, None)
    run.parent = parent
    result = await agent._loop(run, None, agent.limits)
    if result.pending:  # before the call returns: its outcome is not settled (Run.settle)
        outer.step_paused[ctx.tool_call_id] = (result, journal is not None)
    return result


def _decisions_for(outer: Run, call_id: str) -> tuple[dict[str, Decision], str | None]:
    """The decisions the outer run resumes with for this call's inner run (path prefix removed),
    and that run's paused state when it rode along (`PendingCall.inner`)."""
    prefix = f"{call_id}/"
    decisions: dict[str, Decision] = {}
    paused = None
    for key, d in outer.step_decisions.items():
        if key.startswith(prefix):
            if isinstance(d, NestedDecision):
                paused = d.inner
            decisions[key[len(prefix) :]] = d.decision if isinstance(d, NestedDecision) else d
    return decisions, paused


def nested_pending(run: Run, step: int) -> list[PendingCall]:
    """The pending calls of this step's paused inner runs, named by their path from this run."""
    out: list[PendingCall] = []
    paused, run.step_paused = run.step_paused, {}
    for call_id, (result, journaled) in paused.items():
        inner = None if journaled else result.to_json()  # a journaled inner run resumes from its journal
        for i, p in enumerate(result.pending):
            out.append(PendingCall(f"{call_id}/{p.id}", p.name, p.arguments, step, inner if i == 0 else None))
    return out


async def restore_nested_usage(agent: Agent[Any, Any], run: Run) -> None:
    """A journaled run restored (after a crash, or to resume a pause): count what the inner runs
    of its agent tools had spent, which its own journal does not hold. Exactly once: a call run
    again resumes its inner run from the same journal, and only that run's new requests are
    counted (`spend`) on top."""
    usage, turns = await _spent_below(agent, run.journal or agent.journal, run.run_id, run.messages, 0)
    if usage.requests:
        run.usage, run.nested_steps = run.usage + usage, run.nested_steps + usage.requests
        run.turns.extend(turns)
        if run.final is not None:  # a finished run is returned as it is: with the whole usage
            run.final.usage = run.total_usage()


async def _spent_below(
    agent: Agent[Any, Any], journal: Any, run_id: str, messages: list[dict[str, Any]], depth: int
) -> tuple[Usage, list[tuple[str, Usage]]]:
    """The journaled model requests of the inner runs under `run_id` (and under theirs)."""
    inner = _agent_tools(agent)
    total, turns = Usage(), list[tuple[str, Usage]]()
    if not inner or journal is None or depth >= MAX_DEPTH:
        return total, turns
    for m in messages:
        for c in m.get("tool_calls") or ():
            sub = inner.get(c.get("function", {}).get("name"))
            if sub is None:
                continue
            sub_journal = sub.journal or journal
            sub_id = nested_run_id(run_id, c.get("id", ""))
            try:
                loaded = await sub_journal.load(sub_id)
            except RunNotFoundError:
                continue  # the call had not started its inner run
            sub_messages = list(loaded.header.get("messages") or ())
            for e in loaded.entries:
                if e.kind == "model":
                    u = Usage.from_data(e.data["usage"])
                    total, turns = total + u, [*turns, (e.data.get("model") or "", u)]
                    sub_messages.append(e.data["message"])
            u, t = await _spent_below(sub, sub_journal, sub_id, sub_messages, depth + 1)
            total, turns = total + u, turns + t
    return total, turns


def _agent_tools(agent: Agent[Any, Any]) -> dict[str, Agent[Any, Any]]:
    """Tool name -> inner agent, for the agent tools of `agent` and of the agents it hands off to."""
    found: dict[str, Agent[Any, Any]] = {}
    todo, seen = [agent], {id(agent)}
    while todo:
        a = todo.pop()
        for t in a.tools:
            inner = getattr(t.fn, AGENT_TOOL, None)
            if inner is not None:
                found.setdefault(t.name, inner)
        for h, _ in a.handoffs:
            if id(h.agent) not in seen:
                seen.add(id(h.agent))
                todo.append(h.agent)
    return found


# --- hooks of the loop ------------------------------------------------------------------------


_NO_OBSERVERS: frozenset[Any] = frozenset()  # shared by the runs without observers (217 B each)


def nested_emits(run: Run, observers: tuple[Any, ...], emit: Emit | None) -> tuple[Emit | None, Emit | None]:
    """The run's (emit, observers-only emit); a nested run's reach the outer run's, tagged with the call id."""
    parent = run.parent
    if parent is None:
        run.observers = frozenset(observers) if observers else _NO_OBSERVERS
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


def token_budgeted(run: Run, limits: RunLimits) -> bool:
    """Whether a token budget holds for this run: its own, or that of a run above it."""
    if limits.max_total_tokens is not None:
        return True
    p = run.parent
    while p is not None:
        if p.run.limits is not None and p.run.limits.max_total_tokens is not None:
            return True
        p = p.run.parent
    return False


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
