"""Checking what a caller hands to `Agent(...)`: every mistake is refused at construction.

A mistake found inside `run()` is found late (after a model request was paid for, or never, in a
branch the caller's tests do not reach). So each argument is checked here, once, and a
`ConfigurationError` names the argument, what was wrong and the fix.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from typing import Any, TypeVar

from .. import _json
from .._budget import InputBudget, check_int
from .._exceptions import ConfigurationError, ToolDefinitionError
from .._seams import ToolSource
from .._tools.dispatch import ErrorFormatter, default_error_formatter
from .._tools.registry import ToolRegistry
from .._tools.tool import Tool
from .agent_tool import AGENT_TOOL
from .approval import ApprovalPredicate
from .conversation import ToolChoice, normalize_tool_choice
from .history import History
from .limits import RunLimits
from .output_spec import OutputMode, OutputSpec

__all__ = ["build_tools", "check_limits", "check_model_settings", "check_callable", "check_int", "check_deps"]

# Request fields the loop itself sets on every request: a model_settings entry would overwrite them.
_OWNED = {
    "model": "pass model=... to Agent",
    "messages": "pass the conversation to Agent.run(messages=...)",
    "tools": "pass tools=... to Agent",
    "tool_choice": "pass tool_choice=... to Agent",
    "stream": "use Agent.stream(...) for a streamed run",
    "stream_options": "the loop sets it when it streams",
    "functions": "the legacy functions API is not used; pass tools=... to Agent",
    "function_call": "the legacy functions API is not used; pass tool_choice=... to Agent",
    "system": "pass instructions=... to Agent (or a system message in messages=...)",
}


def build_tools(tools: Any) -> ToolRegistry:
    """`tools=` as a registry: a registry as is, or a list of functions, registries, `Tool`s, MCP servers."""
    if tools is None:
        return ToolRegistry()
    if isinstance(tools, ToolRegistry):
        return tools
    if not isinstance(tools, (list, tuple)):
        raise ConfigurationError(
            f"tools must be a ToolRegistry or a list of tools (functions, ToolRegistry, Tool, MCPServer), "
            f"got {type(tools).__name__}. {_as_list(tools)}"
        )
    registry = ToolRegistry()
    for i, item in enumerate(tools):
        try:
            _add(registry, item)
        except ToolDefinitionError as e:
            raise ToolDefinitionError(f"tools[{i}]: {e}") from None
        except ConfigurationError as e:
            raise ConfigurationError(f"tools[{i}]: {e}") from None
    return registry


def _add(registry: ToolRegistry, item: Any) -> None:
    if isinstance(item, type) and (issubclass(item, ToolRegistry) or isinstance(item, ToolSource)):
        # a class is callable: ToolRegistry itself became a tool, a ToolSource class a raw TypeError
        raise ConfigurationError(f"{item.__qualname__} is a class: pass an instance of it")
    if isinstance(item, ToolRegistry):
        registry.include(item)
    elif isinstance(item, Tool):
        registry.add(item)
    elif isinstance(item, ToolSource):  # an MCPServer (raises MCPServerError when it is not open)
        item.register_into(registry)
    elif isinstance(item, (str, bytes)) or not callable(item):
        raise ConfigurationError(
            f"{item!r} is not a tool: pass the function itself (tools=[get_weather], not tools=['get_weather']), "
            "a ToolRegistry, a Tool or an open MCPServer."
        )
    else:
        registry.register(item)


def _label(x: Any) -> str:
    return getattr(x, "__name__", None) or repr(x)


def check_limits(limits: Any, max_steps: Any) -> RunLimits:
    """The run limits from `limits=` and the `max_steps=` shortcut; refuses the two disagreeing."""
    if limits is not None and not isinstance(limits, RunLimits):
        raise ConfigurationError(
            f"limits must be a RunLimits (e.g. RunLimits(max_steps=5, timeout=60)), got {limits!r}"
        )
    if max_steps is None:
        return limits or RunLimits()
    check_int("max_steps", max_steps)
    if limits is None:
        return RunLimits(max_steps=max_steps)
    default = next(f.default for f in fields(RunLimits) if f.name == "max_steps")
    if limits.max_steps not in (default, max_steps):
        raise ConfigurationError(
            f"max_steps={max_steps} disagrees with limits=RunLimits(max_steps={limits.max_steps}); pass it once, "
            f"e.g. limits=RunLimits(..., max_steps={max_steps}) without max_steps=."
        )
    return replace(limits, max_steps=max_steps)


def check_model_settings(settings: Any) -> dict[str, Any]:
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise ConfigurationError(
            f"model_settings must be a dict of extra request fields, e.g. {{'temperature': 0.2}}, got {settings!r}"
        )
    for key, value in settings.items():
        if not isinstance(key, str):
            raise ConfigurationError(
                f"model_settings keys must be strings (request field names), got {key!r}"
            )
        if key in _OWNED:
            raise ConfigurationError(
                f"model_settings may not set {key!r}: the agent loop sets it on every request ({_OWNED[key]})."
            )
        if key == "n" and value != 1:
            raise ConfigurationError(
                f"model_settings n={value!r}: the loop continues one conversation, so it needs exactly one "
                "choice per request; remove n (run the agent several times for several answers)."
            )
    try:
        _json.dumps(dict(settings))
    except (TypeError, ValueError) as e:
        raise ConfigurationError(
            f"model_settings must be JSON-encodable (they are sent as they are): {e}"
        ) from None
    for key, value in settings.items():  # the codec writes NaN and infinities as null: silently unset
        if _nonfinite(value):
            raise ConfigurationError(
                f"model_settings[{key!r}] holds a NaN or an infinity, which JSON cannot carry (it would "
                "be sent as null); pass a finite number"
            )
    return dict(settings)


def _nonfinite(value: Any) -> bool:
    stack = [value]  # JSON-encodable already: no cycle, at most the codec's depth
    while stack:
        v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return True
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return False


def check_callable(name: str, fn: Any, args: tuple[str, ...]) -> None:
    """`fn` is a callable that accepts len(args) positional arguments (named in the message)."""
    shape = f"({', '.join(args)})"
    if not callable(fn):
        raise ConfigurationError(f"{name} must be a callable {shape}, got {fn!r}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or C callable without a signature: trust it
    try:
        sig.bind(*args)
    except TypeError:
        raise ConfigurationError(
            f"{name} must accept {len(args)} positional arguments {shape}; {_label(fn)}{sig} does not"
        ) from None


def check_choice_needs_tools(choice: Any, registry: ToolRegistry) -> None:
    if choice == "required" and not len(registry):
        raise ConfigurationError(
            "tool_choice='required' forces a tool call, but the agent has no tools; register tools or use 'auto'."
        )


Formatter = Callable[[str, BaseException], str]


# --- Agent(...)'s other arguments, one check each ----------------------------------------------


T = TypeVar("T")


def _as_list(tools: Any) -> str:
    """The fix for a `tools=` that is not a list: wrap one tool, list a collection's tools."""
    if isinstance(tools, dict):
        return "Pass its tools as a list: tools=list(your_dict.values())."
    if not callable(tools) and hasattr(tools, "__iter__"):
        return f"Pass them as a list: tools=list(your_{type(tools).__name__})."
    return f"Wrap a single function in a list: tools=[{_label(tools)}]."


def check_model_name(model: Any) -> str:
    if not isinstance(model, str) and callable(getattr(model, "request", None)):  # PydanticAI's `model=`
        raise ConfigurationError(
            f"model is the name the router is asked for (a str such as 'flux-auto'), got a "
            f"{type(model).__name__} object: a Model object (TestModel, FunctionModel, a FluxClient) "
            f"goes in client=, e.g. Agent(client={type(model).__name__}(...))"
        )
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"model must be a non-empty string such as 'flux-auto', got {model!r}")
    if problem := _json.not_unicode("model", model):
        raise ConfigurationError(problem)
    return model


def check_client(client: T) -> T:
    if isinstance(client, type):  # `client=FluxClient` (no parentheses) has a `request` function too
        raise ConfigurationError(
            f"client is the class {client.__name__}, not an instance: create one, e.g. "
            f"`async with {client.__name__}() as client:` and pass `client=client`"
        )
    if isinstance(client, str):  # a model name where the client goes
        raise ConfigurationError(
            f"client is the string {client!r}: a model name goes in model= (Agent(client=client, "
            f"model={client!r})), and client= is a FluxClient (`async with FluxClient() as client:`) or "
            "another Model such as agentloop.testing.TestModel()"
        )
    if not callable(getattr(client, "request", None)):
        raise ConfigurationError(
            f"client must implement the Model interface (e.g. a FluxClient or agentloop.testing.ScriptedModel), "
            f"got {client!r}"
        )
    return client


def check_concurrency(max_concurrent_tools: int | None) -> int | None:
    if max_concurrent_tools is not None:
        check_int("max_concurrent_tools", max_concurrent_tools)
    return max_concurrent_tools


def check_hooks(
    require_approval: ApprovalPredicate | None, format_tool_error: ErrorFormatter | None
) -> tuple[ApprovalPredicate | None, ErrorFormatter]:
    """The two callables the run calls back (checked for their shape); the default error formatter."""
    if isinstance(require_approval, bool):  # the tool's flag, given to the agent
        raise ConfigurationError(
            f"require_approval must be a callable (tool_name, arguments) -> bool, got {require_approval!r}; "
            "to pause every call of a tool, register the tool with requires_approval=True (with an s)"
        )
    if require_approval is not None:
        check_callable("require_approval", require_approval, ("tool_name", "arguments"))
    if format_tool_error is not None:
        check_callable("format_tool_error", format_tool_error, ("tool_name", "exception"))
    return require_approval, format_tool_error or default_error_formatter


def tool_choice_for(choice: ToolChoice, registry: ToolRegistry) -> ToolChoice:
    check_choice_needs_tools(choice, registry)
    return normalize_tool_choice(choice, registry)


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {value!r}")
    return value


def check_journal(journal: T) -> T:
    if journal is not None and not all(
        callable(getattr(journal, m, None)) for m in ("create", "append", "load")
    ):
        raise ConfigurationError(f"journal must be a Journal such as SQLiteJournal(path), got {journal!r}")
    return journal


def check_observers(observers: Any) -> tuple[Any, ...]:
    if not isinstance(observers, (list, tuple)):
        raise ConfigurationError(f"observers must be a list of callables taking an Event, got {observers!r}")
    for o in observers:
        if not callable(o):
            raise ConfigurationError(f"observers must be callables taking an Event, got {o!r}")
    return tuple(observers)


def input_budget_for(budget: Any, client: Any) -> InputBudget:
    """The budget given, else the client's (`FluxClient(input_budget=...)`), else the default."""
    if budget is None:
        budget = getattr(client, "input_budget", None)
        return budget if isinstance(budget, InputBudget) else InputBudget()
    if not isinstance(budget, InputBudget):
        raise ConfigurationError(f"input_budget must be an InputBudget, got {budget!r}")
    return budget


def check_output_retries(retries: Any) -> int:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigurationError(f"output_retries must be an int >= 0, got {retries!r}")
    return retries


def check_history(history: Any) -> History | None:
    if history is not None and not isinstance(history, History):
        raise ConfigurationError(f"history must be a History(...) policy, got {history!r}")
    return history


def check_name(name: Any) -> str | None:
    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigurationError(f"name must be a non-empty string, got {name!r}")
    return name


def output_spec_for(
    output_type: Any, mode: OutputMode, client: Any, tools: ToolRegistry
) -> OutputSpec | None:
    """The spec of a structured `output_type` (None for plain text, `str`)."""
    if output_type is str:
        return None
    if "final_result" in tools:
        raise ConfigurationError(
            "a tool named 'final_result' clashes with the final-answer tool of output_type"
        )
    return OutputSpec(output_type, mode, wire=getattr(client, "wire", None), has_tools=len(tools) > 0)


def check_deps(agent: Any, deps: Any) -> None:
    """A run without deps, of an agent that declared a deps type not admitting None: refused at the
    start of the run (run / stream / run_sync / resume / Temporal's start_run), before a request is
    paid for. Otherwise its tools got `ctx.deps = None`, and the first to read a field raised an
    AttributeError the model was told about. The agents it hands off to and its agent tools share
    the run's deps, so they are checked too. Deps of another type are not checked: `Agent[Deps, T]`
    types `run(deps=...)` for type checkers, while `deps=None`, the default, is invisible to them;
    and an isinstance check would refuse duck typing (a test's stand-in, a Protocol) and cannot
    check a generic. Costs a walk of the agent's tools when deps is None (a few microseconds)."""
    if deps is not None:
        return
    todo: list[tuple[Any, str | None]] = [(agent, None)]
    seen = {id(agent)}
    while todo:
        a, via = todo.pop()
        wanted = a.deps_type
        if wanted is not None and not admits_none(wanted):
            raise ConfigurationError(_no_deps(a, via, _type_name(wanted)))
        linked = [(h.agent, "a handoff") for h, _ in a.handoffs]
        linked += [(inner, "an agent tool") for t in a.tools if (inner := getattr(t.fn, AGENT_TOOL, None))]
        for other, how in linked:
            if id(other) not in seen:
                seen.add(id(other))
                todo.append((other, via or how))


def _no_deps(agent: Any, via: str | None, name: str) -> str:
    who = f"agent {agent.name!r}" if agent.name else "the agent"
    if via is not None:
        who = f"{who} ({via} of this run's agent: it shares the run's deps)"
    return (
        f"this run got no deps, but {who} was created with deps_type={name}: its tools and instructions would "
        f"get ctx.deps = None. Pass deps=... (a {name}) to run() / stream() / run_sync() / start_run(), and "
        f"again to resume() (deps are live state, never journaled); if the agent also runs without deps, "
        f"declare deps_type={name} | None."
    )


def admits_none(tp: Any) -> bool:
    """Whether None is a value of the type `tp`; True when that cannot be told (a TypeVar, a string
    forward reference, a NewType): only a type that surely excludes None refuses a run without deps."""
    if tp is None or tp is type(None) or tp is Any or tp is object:
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return admits_none(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(admits_none(arg) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return None in typing.get_args(tp)
    # a class, or a generic one (list[int], Box[T]), excludes None; anything else cannot be told
    return not (isinstance(tp, type) or isinstance(origin, type))


def _type_name(tp: Any) -> str:
    return tp.__qualname__ if isinstance(tp, type) else repr(tp).replace("typing.", "")
