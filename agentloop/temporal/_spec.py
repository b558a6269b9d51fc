"""What crosses the wire between the client, the workflow and the activities: plain JSON dicts.

Temporal's default converter handles JSON values; keeping every payload a plain dict (no pickles,
no classes) means histories stay readable in the Temporal UI and replayable by any version of
agentloop that reads the same keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from agentloop import ConfigurationError, RunLimits

__all__ = [
    "WORKFLOW_NAME",
    "MODEL_ACTIVITY",
    "TOOL_ACTIVITY",
    "DESCRIBE_ACTIVITY",
    "ToolActivityOptions",
    "agent_spec",
    "limits_to_data",
    "limits_from_data",
]

WORKFLOW_NAME = "agentloop.Agent"
MODEL_ACTIVITY = "agentloop.model_request"
TOOL_ACTIVITY = "agentloop.tool_call"
DESCRIBE_ACTIVITY = "agentloop.describe_tools"


@dataclass(frozen=True, slots=True)
class ToolActivityOptions:
    """How one tool's calls run as Temporal activities (set per tool on the worker).

    - `start_to_close_timeout`: seconds one attempt may take (default: the tool's
      `Limits.timeout` plus 30 s, or the worker's default when the tool has none).
    - `heartbeat_timeout`: seconds without a heartbeat after which Temporal declares the attempt
      lost (a dead worker is noticed this fast). The worker heartbeats for every running call.
    - `maximum_attempts`: attempts when a worker is lost mid-call. Default: 3 for tools
      registered `idempotent=True`, 1 for the others; a non-idempotent call whose worker was
      lost gets the tool result "outcome unknown", exactly as a resumed in-process durable run.
    """

    start_to_close_timeout: float | None = None
    heartbeat_timeout: float | None = None
    maximum_attempts: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
                raise ConfigurationError(
                    f"ToolActivityOptions.{f.name} must be a positive number or None, got {v!r}"
                )


def limits_to_data(limits: RunLimits) -> dict[str, Any]:
    return asdict(limits)


def limits_from_data(data: dict[str, Any]) -> RunLimits:
    return RunLimits(**data)


def agent_spec(agent: Any) -> dict[str, Any]:
    """The serializable part of an `Agent`: what the workflow needs to rebuild it.

    The agent's `client` is not sent: the worker's model answers. Things that cannot cross a
    process boundary are refused with a clear message rather than silently dropped.
    """
    if agent.require_approval is not None:
        raise ConfigurationError(
            "Agent(require_approval=<function>) cannot run on Temporal: a function cannot be sent to the "
            "worker. Register the tools that need approval with requires_approval=True instead."
        )
    if agent.journal is not None:
        raise ConfigurationError(
            "Agent(journal=...) is not used on Temporal: Temporal's history makes the run durable. "
            "Create the agent without a journal."
        )
    if callable(agent.instructions):
        raise ConfigurationError(
            "Agent(instructions=<function>) cannot run on Temporal: a function cannot be sent to the worker. "
            "Resolve the instructions first and pass the text."
        )
    if getattr(agent, "output", None) is not None:
        raise ConfigurationError(
            "Agent(output_type=...) is not supported on Temporal yet: the worker runs a text-output loop. "
            "Validate the final text yourself, or run the agent without Temporal."
        )
    if getattr(agent, "history", None) is not None:
        raise ConfigurationError(
            "Agent(history=...) is not supported on Temporal yet: the workflow sends the whole conversation. "
            "Create the agent without a history policy."
        )
    if getattr(agent, "handoffs", ()):
        raise ConfigurationError(
            "Agent(handoffs=[...]) is not supported on Temporal yet: the workflow runs one agent's loop. "
            "Run agents with handoffs without Temporal."
        )
    nested = [t.name for t in agent.tools if hasattr(t.fn, "__agentloop_agent__")]
    if nested:
        raise ConfigurationError(
            f"agent tools ({', '.join(nested)}: Agent.as_tool) are not supported on Temporal yet: an inner "
            "agent run cannot be sent to the worker as an activity. Run the outer agent without Temporal."
        )
    from .._tools.dispatch import default_error_formatter

    if agent.format_tool_error is not default_error_formatter:
        raise ConfigurationError(
            "Agent(format_tool_error=...) cannot be sent to a Temporal worker; pass format_tool_error= "
            "to the worker (create_worker / AgentWorker) instead."
        )
    return {
        "model": agent.model,
        "instructions": agent.instructions,
        "tool_choice": agent.tool_choice,
        "reset_tool_choice": agent.reset_tool_choice,
        "max_concurrent_tools": agent.max_concurrent_tools,
        "model_settings": dict(agent.model_settings),
        "limits": limits_to_data(agent.limits),
    }
