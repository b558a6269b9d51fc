"""What crosses the wire between the client, the workflow and the activities: plain JSON dicts.

Temporal's default converter handles JSON values; keeping every payload a plain dict (no pickles,
no classes) means histories stay readable in the Temporal UI and replayable by any version of
agentloop that reads the same keys.

An agent is sent as a graph: the root agent's fields at the top (the keys older workflows
read), and every agent it reaches through agent tools (`Agent.as_tool`) and handoffs under
`"agents"`, each by a key (`"a1"`, `"a2"`, ...) that the others name. Each agent names its tools;
the worker's registry supplies them (one registry per worker: a name means one tool).
Functions cannot cross to the workflow (it is replayed, and nothing is pickled). A history
processor, a handoff's input filter and the dynamic instructions of an agent reached by a handoff
or an agent tool (`instructions_function`) are sent by name (`module:qualname`): the worker was
given the same function (`create_worker(functions=[...])`) and runs it in an activity, whose
result the history records. The root's dynamic instructions are resolved by the client when the
run starts (as in-process: once, at the start); its `instructions` is then the run's start text,
and its own (`instructions_function`; `own`: instructions, model and settings where per-run
options replaced them) are sent only when another agent reaches it again. The other functions are refused here, with the way out: approval predicates
and error formatters. Fields added after agentloop 0.1's format are features a spec declares
(`_version.py`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from typing import Any

from agentloop import ConfigurationError, ErrorFormatter, RunLimits, default_error_formatter
from agentloop.abc import is_number

from ._store import ConversationStore

__all__ = [
    "WORKFLOW_NAME",
    "MODEL_ACTIVITY",
    "TOOL_ACTIVITY",
    "DESCRIBE_ACTIVITY",
    "ROOT_KEY",
    "FUNCTION_ACTIVITY",
    "ToolActivityOptions",
    "WorkerOptions",
    "agent_spec",
    "function_ref",
    "functions_by_ref",
    "check_deps",
    "limits_to_data",
    "limits_from_data",
]

WORKFLOW_NAME = "agentloop.Agent"
MODEL_ACTIVITY = "agentloop.model_request"
TOOL_ACTIVITY = "agentloop.tool_call"
FUNCTION_ACTIVITY = "agentloop.call_function"  # a History processor or a handoff's input_filter
DESCRIBE_ACTIVITY = "agentloop.describe_tools"
ROOT_KEY = "a0"
AGENT_TOOL = "__agentloop_agent__"  # set by Agent.as_tool on the function it returns: the inner agent


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
            if getattr(self, f.name) is not None:  # None: the default the docs above say
                check_option(self, f.name, "leave it out (None) for the default")


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a worker runs its activities (`create_worker(..., options=WorkerOptions(...))`).

    - `tool_options`: per-tool `ToolActivityOptions` (timeouts, heartbeat, attempts).
    - `heartbeat_timeout`: seconds; how fast a lost worker is noticed (every activity).
    - `model_timeout` / `model_attempts`: one model request's limit and its attempts (the client's
      own retries come first). The calls of `functions` run under the same.
    - `default_tool_timeout`: seconds for a tool without `Limits.timeout` or `tool_options`.
    - `format_tool_error`: the text the model reads when a tool fails (as `Agent(format_tool_error=)`).
    - `store`: the `ConversationStore` (default: a new one, 256 MB).
    - `graceful_shutdown_timeout`: seconds in-flight activities get to finish on shutdown.
    """

    tool_options: Mapping[str, ToolActivityOptions] | None = None
    heartbeat_timeout: float = 30.0
    model_timeout: float = 600.0
    model_attempts: int = 3
    default_tool_timeout: float = 600.0
    format_tool_error: ErrorFormatter | None = None
    store: ConversationStore | None = None
    graceful_shutdown_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in _NUMBERS:
            check_option(self, name, "leave it out for the default")
        for tool, opts in (self.tool_options or {}).items():
            if not isinstance(opts, ToolActivityOptions):
                raise ConfigurationError(
                    f"WorkerOptions.tool_options[{tool!r}] must be a ToolActivityOptions, got {opts!r}"
                )


# Seconds end as timedelta(seconds=...) in workflow code, where NaN raised ValueError and 1e20
# OverflowError on every replay of the workflow task: refused here, where the caller can act.
_MAX_SECONDS = timedelta.max.days * 86400  # (a whole day short of the end: every fraction fits)
_NUMBERS = (
    "heartbeat_timeout",
    "model_timeout",
    "model_attempts",
    "default_tool_timeout",
    "graceful_shutdown_timeout",
)
_COUNTS = frozenset({"maximum_attempts", "model_attempts"})


def check_option(options: object, name: str, default: str) -> None:
    """`options.name` is a whole number >= 1 (attempts) or a positive, finite number of seconds
    that a `timedelta` holds; else a `ConfigurationError` that says what to pass."""
    value = getattr(options, name)
    whole = name in _COUNTS
    if is_number(value, whole=whole) and 0 < value <= _MAX_SECONDS:
        return
    kind = (
        "a whole number >= 1" if whole else f"a positive, finite number of seconds (at most {_MAX_SECONDS})"
    )
    raise ConfigurationError(f"{type(options).__name__}.{name} must be {kind}, got {value!r}; {default}")


def function_ref(fn: Any, what: str) -> str:
    """How a function is named between the client and the worker: `module:qualname`, as tools are
    named; the worker runs the function it was given under that name (`create_worker(functions=)`)."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<lambda>" in qualname:
        raise ConfigurationError(
            f"{what}: {fn!r} cannot be named on a Temporal worker: define it with `def` (a lambda, a "
            "functools.partial or a callable object has no name) and pass the same function to "
            "create_worker(functions=[...])"
        )
    return f"{module}:{qualname}"


def functions_by_ref(functions: Any) -> dict[str, Any]:
    """The worker's functions by ref; two functions of one name are refused (a name means one function)."""
    out: dict[str, Any] = {}
    for fn in functions or ():
        if not callable(fn):
            raise ConfigurationError(f"functions= takes functions, got {fn!r}")
        ref = function_ref(fn, "functions")
        if out.setdefault(ref, fn) is not fn:
            raise ConfigurationError(f"two functions named {ref!r} were passed to the worker: rename one")
    return out


def limits_to_data(limits: RunLimits) -> dict[str, Any]:
    return asdict(limits)


def limits_from_data(data: dict[str, Any]) -> RunLimits:
    return RunLimits(**data)


def is_json_data(value: Any) -> bool:
    """Whether `value` survives a JSON round trip unchanged: what may cross into a workflow's history."""
    try:
        return bool(json.loads(json.dumps(value, allow_nan=False)) == value)
    except (TypeError, ValueError, RecursionError):  # RecursionError: nested deeper than JSON goes here
        return False


def check_deps(deps: Any) -> Any:
    """`deps` as it crosses to the workflow and the worker: JSON data, exactly, or refused."""
    if not is_json_data(deps):
        raise ConfigurationError(
            f"deps on Temporal must be JSON data (dicts with str keys, lists, str, numbers, bool, None), got "
            f"{type(deps).__name__}: the deps travel in the workflow's history to the worker's tools, and "
            "agentloop never pickles. Pass plain data (e.g. dataclasses.asdict(deps)) and rebuild live objects "
            "(clients, pools) in the worker's tools."
        )
    return deps


def agent_spec(agent: Any) -> dict[str, Any]:
    """The serializable part of an `Agent` and of every agent it reaches: what the workflow rebuilds.

    The agents' `client` is not sent: the worker's model answers. Things that cannot cross a
    process boundary are refused with a clear message rather than silently dropped.
    """
    keys: dict[int, str] = {id(agent): ROOT_KEY}
    order = [agent]
    nodes: dict[str, dict[str, Any]] = {}
    tools: dict[str, tuple[Any, str]] = {}  # tool name -> (definition, agent label): one tool per name

    def ref(other: Any) -> str:  # an agent's key; a new one is visited after the ones before it
        if id(other) not in keys:
            keys[id(other)] = f"a{len(order)}"
            order.append(other)
        return keys[id(other)]

    while len(nodes) < len(order):
        a = order[len(nodes)]
        nodes[keys[id(a)]] = _node(a, ref, tools, root=a is agent)
    if callable(agent.instructions) and ROOT_KEY in reached(nodes.values()):
        # start_run resolves them for the run's start; a handoff back to this agent, or this agent as
        # an agent tool, resolves them again, in-process as on the worker (which calls the function)
        nodes[ROOT_KEY]["instructions_function"] = _instructions_ref(agent)
    root = nodes.pop(ROOT_KEY)
    if nodes:
        root["agents"] = nodes
    return root


def _label(agent: Any) -> str:
    return f"agent {agent.name!r}" if agent.name else "the agent"


def reached(nodes: Any) -> set[str]:
    """The keys of the agents some agent of `nodes` reaches through an agent tool or a handoff."""
    return {
        link["agent"] for node in nodes for link in (*node.get("agent_tools", ()), *node.get("handoffs", ()))
    }


def _node(agent: Any, ref: Any, seen: dict[str, tuple[Any, str]], *, root: bool) -> dict[str, Any]:
    _refuse_functions(agent)
    names, agent_tools = [], []
    for t in agent.tools:
        inner = getattr(t.fn, AGENT_TOOL, None)
        if inner is not None:
            agent_tools.append({"name": t.name, "description": t.description, "agent": ref(inner)})
            continue
        other = seen.setdefault(t.name, (t.definition, _label(agent)))
        if other[0] != t.definition:
            raise ConfigurationError(
                f"{_label(agent)} and {other[1]} both have a tool named {t.name!r}, with different definitions; "
                "on Temporal the worker has one registry, so a name means one tool. Rename one of them."
            )
        names.append(t.name)
    node: dict[str, Any] = {
        "name": agent.name,
        "model": agent.model,
        "instructions": None if callable(agent.instructions) else agent.instructions,
        "tool_choice": agent.tool_choice,
        "reset_tool_choice": agent.reset_tool_choice,
        "max_concurrent_tools": agent.max_concurrent_tools,
        "model_settings": dict(agent.model_settings),
        "limits": limits_to_data(agent.limits),
        "tools": names,
        "agent_tools": agent_tools,
        "handoffs": [_handoff(agent, h, t, ref) for h, t in agent.handoffs],
        "output": _output(agent),
        "history": _history(agent),
    }
    if callable(agent.instructions) and not root:  # the root's: only when it is reached again (agent_spec)
        node["instructions_function"] = _instructions_ref(agent)
    return node


def _instructions_ref(agent: Any) -> str:
    return function_ref(agent.instructions, f"{_label(agent)}: instructions=<function>")


def _handoff(agent: Any, h: Any, t: Any, ref: Any) -> dict[str, Any]:
    out = {"agent": ref(h.agent), "tool_name": t.name, "description": t.description}
    if h.input_filter is not None:  # runs in an activity on the worker, which has it by this name
        out["input_filter"] = function_ref(
            h.input_filter, f"{_label(agent)}: the input_filter of the handoff {t.name!r}"
        )
    return out


def _refuse_functions(agent: Any) -> None:
    who = _label(agent)
    if agent.require_approval is not None:
        raise ConfigurationError(
            f"{who}: require_approval=<function> cannot run on Temporal: a function cannot be sent to the "
            "worker. Register the tools that need approval with requires_approval=True instead."
        )
    if agent.journal is not None:
        raise ConfigurationError(
            f"{who}: journal=... is not used on Temporal: Temporal's history makes the run durable. "
            "Create the agent without a journal."
        )
    if agent.format_tool_error is not default_error_formatter:
        raise ConfigurationError(
            f"{who}: format_tool_error=... cannot be sent to a Temporal worker; give it to the worker "
            "instead: create_worker(..., options=WorkerOptions(format_tool_error=...))."
        )


def _output(agent: Any) -> dict[str, Any] | None:
    spec = agent.output
    if spec is None:
        return None
    # The schema as the model sees it (a non-object type is already wrapped in {"response": ...});
    # the client turns the validated data back into the type (AgentRun.result). A structured
    # answer is always a JSON object, so with a text fallback (`str | T`) a str output is the text.
    # Text is only ever allowed through the final_result tool ("auto" picks it in-process too).
    out: dict[str, Any] = {
        "schema": spec.schema,
        "name": spec.name,
        "mode": "auto" if spec.auto and not spec.allows_text else spec.mode,
        "retries": agent.output_retries,
    }
    if spec.allows_text:
        out["text"] = True
    return out


def _history(agent: Any) -> dict[str, Any] | None:
    policy = agent.history
    if policy is None:
        return None
    out = {
        "keep_last": policy.keep_last,
        "max_tokens": policy.max_tokens,
        "keep_tool_results": policy.keep_tool_results,
        "tool_result_note": policy.tool_result_note,
    }
    if policy.processor is not None:  # runs in an activity on the worker, which has it by this name
        out["processor"] = function_ref(policy.processor, f"{_label(agent)}: History(processor=...)")
    return out
