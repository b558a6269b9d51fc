"""The workflow's agents, rebuilt from the spec the client sent (`_spec.agent_spec`).

Every agent of the graph is an ordinary `Agent` whose model is the workflow's activity model and
whose registry holds proxies of the worker's tools it names; agent tools (`Agent.as_tool`) are
registered as they are in-process (the inner run is the same loop, in the workflow, its model
requests and tool calls activities of the same workflow), and handoffs are built by `Agent`
itself. Built in two passes, because agents may reach each other in a circle (an agent that is
its own tool, two agents handing off to each other): first every agent with its worker tools,
then the agent tools, the handoffs and the tool choice, which may name them.

Pure construction: no I/O, no clock; it runs in workflow code (passed through the sandbox as
the loop's modules are).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from agentloop import Agent, AgentloopError, Handoff, History, JsonSchema, ToolRegistry

from ._spec import ROOT_KEY, limits_from_data

__all__ = ["SpecError", "build_agents", "start_options"]


class SpecError(Exception):
    """The spec cannot be run by this worker (a tool it does not have, a setting it refuses)."""

    def __init__(self, message: str, kind: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.details = details  # data for the client (the features a worker lacks)


Functions = Callable[[str, str, str], Callable[..., Any]]


def _no_functions(ref: str, kind: str, who: str) -> Callable[..., Any]:
    raise SpecError(
        f"agent {who!r} names the function {ref!r}, and there are none here", "ConfigurationError"
    )


def build_agents(
    spec: dict[str, Any],
    available: dict[str, dict[str, Any]],
    tools_for: Callable[[list[dict[str, Any]]], ToolRegistry],
    make: Callable[..., Agent[Any, Any]],
    functions: Functions = _no_functions,
) -> Agent[Any, Any]:
    """The root agent of `spec`. `tools_for(specs)`: a registry of proxies of those worker tools;
    `make(**kwargs)`: an `Agent` with the workflow's model, limits and observers;
    `functions(ref, kind, agent name)`: the stand-in for a worker's function (`_functions.py`)."""
    nodes = {ROOT_KEY: spec, **spec.get("agents", {})}
    agents: dict[str, Agent[Any, Any]] = {}
    try:
        for key, node in nodes.items():
            agents[key] = _agent(node, available, tools_for, make, functions)
        for key, node in nodes.items():
            _connect(agents[key], node, agents, make, functions)
    except AgentloopError as e:  # e.g. output_mode="native" on a worker speaking the Anthropic wire
        raise SpecError(f"the worker cannot run this agent: {e}", type(e).__name__) from None
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        # The spec is data anyone who can start a workflow wrote (or a newer client): one that
        # cannot be built fails the run; raised from the workflow task, it would be retried forever.
        raise SpecError(
            f"the worker cannot run this agent: its spec is damaged or from a newer agentloop ({type(e).__name__}: "
            f"{e})",
            "ConfigurationError",
        ) from None
    return agents[ROOT_KEY]


def _agent(
    node: dict[str, Any],
    available: dict[str, dict[str, Any]],
    tools_for: Callable[[list[dict[str, Any]]], ToolRegistry],
    make: Callable[..., Agent[Any, Any]],
    functions: Functions,
) -> Agent[Any, Any]:
    names = node.get("tools")  # None: a spec from an older client, which ran every tool of the worker
    missing = [n for n in names or () if n not in available]
    if missing:
        raise SpecError(
            f"the worker has no tool {', '.join(map(repr, missing))} (agent {node.get('name')!r} uses it); "
            f"it has {sorted(available)}. Register it in the worker's registry.",
            "ConfigurationError",
        )
    tools = tools_for([available[n] for n in (available if names is None else names)])
    output, history = node.get("output"), node.get("history")
    options: dict[str, Any] = {}
    if output is not None:
        options.update(
            output_type=JsonSchema(output["schema"], name=output["name"]),
            output_mode=output["mode"],
            output_retries=output["retries"],
        )
    if history is not None:
        history = dict(history)
        ref = history.pop("processor", None)
        if ref is not None:
            history["processor"] = functions(ref, "history", node.get("name") or "")
        options["history"] = History(**history)
    own = {**node, **node.get("own", {})}  # the first agent's own, where the run starts with others
    agent = make(
        tools=tools,
        name=node.get("name"),
        model=own["model"],
        instructions=_instructions(own, functions),
        limits=limits_from_data(node["limits"]),
        reset_tool_choice=node.get("reset_tool_choice", True),
        max_concurrent_tools=node.get("max_concurrent_tools"),
        model_settings=own.get("model_settings"),
        **options,
    )
    if output is not None and output.get("text"):
        agent.output = _text_fallback(agent.output)
    return agent


def _instructions(node: dict[str, Any], functions: Functions) -> Any:
    """The agent's own instructions: text, or the stand-in for its function on the worker."""
    ref = node.get("instructions_function")
    if ref is not None:
        return functions(ref, "instructions", node.get("name") or "")
    return node.get("instructions")


def start_options(spec: dict[str, Any]) -> dict[str, Any]:
    """What the run starts with where it differs from the first agent's own (`Agent.run`'s per-run
    options): the start's instructions (resolved by the client), model and settings."""
    if "instructions_function" not in spec and "own" not in spec:
        return {}  # the agent was built with them
    return {
        "instructions": spec.get("instructions") or "",  # "": none, as resolved (not the function again)
        "model": spec["model"],
        "model_settings": spec.get("model_settings"),
    }


def _text_fallback(spec: Any) -> Any:
    """The spec of `output_type=str | T` from the spec of `T` (a JSON schema cannot say "or text"
    as a Python type can): the same final_result tool, not forced, and a text answer is final.
    A copy, as `OutputSpec.as_tool()` makes one; the client sent mode "tool", as in-process."""
    twin = copy.copy(spec)
    twin.allows_text = True
    return twin


def _connect(
    agent: Agent[Any, Any],
    node: dict[str, Any],
    agents: dict[str, Agent[Any, Any]],
    make: Callable[..., Agent[Any, Any]],
    functions: Functions,
) -> None:
    """The second pass: agent tools and handoffs (which may name any agent), then the tool choice."""
    for t in node.get("agent_tools", ()):
        agent.tools.register(agents[t["agent"]].as_tool(name=t["name"], description=t["description"]))
    handoffs = [
        Handoff(
            agents[h["agent"]],
            tool_name=h["tool_name"],
            description=h["description"],
            input_filter=functions(h["input_filter"], "input_filter", agent.name or "")
            if h.get("input_filter")
            else None,
        )
        for h in node.get("handoffs", ())
    ]
    # built by Agent itself (checks, transfer tools), as `a.handoffs = ...` in-process; the tool
    # choice checked again (the client did, but anyone who can start a workflow writes its input)
    checked = make(
        tools=agent.tools, name=agent.name, handoffs=handoffs, tool_choice=node.get("tool_choice", "auto")
    )
    if handoffs:
        agent.handoffs = checked.handoffs
    agent.tool_choice = checked.tool_choice
