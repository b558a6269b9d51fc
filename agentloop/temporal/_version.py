"""Versions of the spec: what a spec needs from the worker that runs it, and the worker's check.

A spec is data written by one agentloop (the client's, `start_run`) and read by another (the
worker's), and the two are upgraded at different times. A worker that does not know a field
would ignore it: a text fallback would become a forced tool call, a history processor would
never be called, an agent's dynamic instructions would be missing, and the run would go on as
if nothing were wrong. So every field added after the first format is a *feature*: a spec using
one lists it under `requires`, with the agentloop version that introduced it, and a worker that
does not know a required feature fails the run at once (no activity runs), naming the feature
and the version it needs (`IncompatibleWorkerError` on the client). A field the worker does not
know that no feature declares (a newer client's, or garbage) is refused the same way, never
ignored. A spec without `requires` (agentloop 0.1's, or one using no feature) reads as before.

Workers older than this check (agentloop 0.1) cannot honour it: upgrade the workers of a task
queue before the clients that start runs on it.

Pure data checks: it runs in workflow code.
"""

from __future__ import annotations

from typing import Any

import agentloop

from ._agents import SpecError
from ._spec import ROOT_KEY

__all__ = ["FEATURES", "HONOURED", "INCOMPATIBLE", "check_spec", "requirements"]

# feature -> the agentloop version whose workers honour it first (append only: never rename one)
FEATURES: dict[str, str] = {
    "text_output": "0.2.0",  # output.text: `output_type=str | T`
    "history_processor": "0.2.0",  # history.processor: History(processor=...) on the worker
    "handoff_input_filter": "0.2.0",  # handoffs[].input_filter on the worker
    "dynamic_instructions": "0.2.0",  # instructions_function: on the worker
    "own_settings": "0.2.0",  # own: the first agent's, where the run starts with per-run ones
}
HONOURED = frozenset(FEATURES)  # what this worker runs (a test makes it an older worker's)
INCOMPATIBLE = "IncompatibleWorkerError"  # the ApplicationError type the client turns into that class

# every field of an agent's node this worker reads; the root also carries the graph and the versions
_NODE = frozenset({
    "name", "model", "instructions", "tool_choice", "reset_tool_choice", "max_concurrent_tools",
    "model_settings", "limits", "tools", "agent_tools", "handoffs", "output", "history",
    "instructions_function", "own",
})  # fmt: skip
_ROOT = _NODE | {"agents", "requires", "agentloop"}


def requirements(spec: dict[str, Any]) -> dict[str, str]:
    """The features `spec` uses, each with the version that introduced it (the client's side)."""
    used: set[str] = set()
    for node in (spec, *spec.get("agents", {}).values()):
        if (node.get("output") or {}).get("text"):
            used.add("text_output")
        if (node.get("history") or {}).get("processor"):
            used.add("history_processor")
        if any(h.get("input_filter") for h in node.get("handoffs", ())):
            used.add("handoff_input_filter")
        if "instructions_function" in node:
            used.add("dynamic_instructions")
        if "own" in node:
            used.add("own_settings")
    return {f: FEATURES[f] for f in sorted(used)}


def check_spec(spec: dict[str, Any]) -> None:
    """Raise `SpecError` (kind `INCOMPATIBLE`) when this worker cannot honour every field of `spec`."""
    here = agentloop.__version__
    client = spec.get("agentloop")
    sender = f"agentloop {client}" if isinstance(client, str) else "another agentloop"
    requires = spec.get("requires", {})
    if not isinstance(requires, dict) or not all(isinstance(v, str) for v in requires.values()):
        raise SpecError(
            f"the spec's requires is not {{feature: version}}: {requires!r:.200}", "ConfigurationError"
        )
    missing = {str(f): v for f, v in requires.items() if f not in HONOURED}
    if missing:
        needed = ", ".join(f"{f!r} (agentloop >= {v})" for f, v in sorted(missing.items()))
        raise SpecError(
            f"this worker runs agentloop {here}, which cannot honour what the agent needs: {needed}. The run was "
            f"started by {sender}. Upgrade the workers of this task queue to agentloop >= {_newest(missing.values())} "
            "(upgrade workers before clients), or start the run without that feature.",
            INCOMPATIBLE,
            {"features": missing, "worker": here},
        )
    nodes = spec.get("agents", {})
    if not isinstance(nodes, dict) or not all(isinstance(n, dict) for n in nodes.values()):
        raise SpecError("the spec's agents is not {key: agent}", "ConfigurationError")
    for key, node in (*nodes.items(), (ROOT_KEY, spec)):
        unknown = sorted(map(str, set(node) - (_ROOT if key == ROOT_KEY else _NODE)))
        if unknown:
            raise SpecError(
                f"this worker runs agentloop {here}, which does not know the fields {unknown} of agent "
                f"{node.get('name')!r} (sent by {sender}): it would ignore them. Upgrade the workers of this task "
                "queue to the client's agentloop (upgrade workers before clients).",
                INCOMPATIBLE,
                {"fields": unknown, "worker": here},
            )


def _newest(versions: Any) -> str:
    """The highest of some version strings ("0.10.0" above "0.9.0"; a part that is no number counts 0)."""
    return str(max(versions, key=lambda v: [int(p) if p.isdigit() else 0 for p in str(v).split(".")]))
