"""`Tool` and `build_tool`: a function (or an MCP server's tool, or a Temporal proxy) made a tool.

Everything that can be wrong with a tool definition is caught here, when the tool is built: a bad
name, a schema jsonschema rejects, an unsupported signature, a mode that cannot apply. Nothing
about a definition can fail in the middle of a run. Per call, the only work is running the
validator that was built once, here, against exactly the schema that is sent to the model.

`build_tool` is the one way a `Tool` is made: `ToolRegistry.register` calls it (adding what only
a registry knows: its defaults, its names, its fork-server sandboxes), and so do the MCP
integration and Temporal's workflow, through the public `agentloop.build_tool`.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Literal

from .. import _json
from .._context import context_param
from .._exceptions import ToolDefinitionError
from .._json import not_unicode
from .._limits import Limits
from .._schema import FunctionSchema, function_schema
from .._seams import ToolExecutor  # at run time: `typing.get_type_hints(Tool)` resolves it
from .fastcheck import compile_fast_check
from .validate import build_validator, collect_patterns, precise

__all__ = ["MODES", "OUT_OF_PROCESS", "SandboxMode", "Tool", "build_tool", "check_limits"]

SandboxMode = Literal["inline", "thread", "process", "isolated"]
MODES = ("inline", "thread", "process", "isolated")
OUT_OF_PROCESS = ("process", "isolated")  # run by a ToolExecutor; the other two in the host's process

# (name, fn, mode) -> (the ref the executor receives, the executor): what a registry adds for the
# fork-server modes. Without one, such a tool needs an executor of its own (`sandbox=executor`).
SandboxProvider = Callable[[str, Callable[..., Any], str], tuple[str, ToolExecutor]]


@dataclass(frozen=True, slots=True, eq=False)
class Tool:
    """One tool: its definition, its validator and how it runs. Built by `build_tool` (or
    `ToolRegistry.register`); immutable afterwards."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    is_async: bool
    bind: Callable[[dict[str, Any]], dict[str, Any]]
    sandbox: SandboxMode
    limits: Limits
    definition: dict[str, Any] = field(repr=False)  # the entry of the wire `tools` array
    validator: Any = field(repr=False)  # Draft 2020-12 with bounded work (`validate.py`), built once
    ref: str | None = None  # what the executor runs: "module:qualname" for the fork-server modes
    fast_check: Callable[[dict[str, Any]], bool] | None = field(default=None, repr=False)
    idempotent: bool = False  # safe to run again after a crash left its outcome unknown (journal)
    requires_approval: bool = False  # a run pauses for a human decision before calling it
    context: str | None = None  # the parameter that receives the RunContext (never in the schema)
    # "process" / "isolated": what runs it (a fork-server sandbox, or the one given as sandbox=)
    executor: ToolExecutor | None = field(default=None, repr=False)

    def validation_errors(self, arguments: dict[str, Any], limit: int | None = None) -> list[str]:
        """The schema violations as `"<json path>: <message>"`, empty when the arguments are valid.

        With `limit`, only the first `limit` are built: errors are generated lazily, and building
        every one of them is what made a 100,000-item bad argument cost seconds.
        """
        fast = self.fast_check
        if fast is not None and fast(arguments):  # sound for acceptance: jsonschema would agree
            return []
        if self.validator.is_valid(arguments):  # the common case: one pass, no error objects
            return []
        found = map(precise, islice(self.validator.iter_errors(arguments), limit))
        errors = sorted(found, key=lambda e: [(isinstance(p, str), p) for p in e.absolute_path])
        return [f"{e.json_path}: {e.message}" for e in errors]


@dataclass(frozen=True, slots=True)
class ToolOptions:
    """What `build_tool` / `register` take besides the function (one record, so the checks are one place)."""

    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    sandbox: SandboxMode | ToolExecutor | None = None
    limits: Limits | None = None
    idempotent: bool = False
    requires_approval: bool = False


def build_tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    sandbox: SandboxMode | ToolExecutor | None = None,
    limits: Limits | None = None,
    idempotent: bool = False,
    requires_approval: bool = False,
) -> Tool:
    """`fn` as a `Tool`, checked as `ToolRegistry.register` checks it, for `registry.add(tool)` or
    `Agent(tools=[tool])`.

    `sandbox` is a mode ("inline", "thread"; the default is "inline" for async functions and
    "thread" for others) or a `ToolExecutor` that runs the tool out of this process: it receives
    the tool's name as `ref` and the validated arguments. The fork-server modes "process" and
    "isolated" need the sandbox a registry runs: use `ToolRegistry.register` for those.
    """
    options = ToolOptions(name, description, parameters, sandbox, limits, idempotent, requires_approval)
    return make_tool(fn, options)


def make_tool(
    fn: Callable[..., Any],
    options: ToolOptions,
    *,
    default_sandbox: SandboxMode | None = None,
    default_limits: Limits | None = None,
    taken: Container[str] = (),
    provider: SandboxProvider | None = None,
) -> Tool:
    """`build_tool` with what a registry adds: its defaults, the names it has, its sandboxes."""
    _check_options(fn, options)
    ctx = context_param(fn)
    fs = _schema(fn, options, ctx)
    if fs.name in taken:
        raise ToolDefinitionError(
            f"a tool named {fs.name!r} is already registered; pass name=... to register it under another name"
        )
    mode, executor = _mode(fs, fn, options.sandbox, default_sandbox)
    idempotent = options.idempotent or hasattr(fn, "__agentloop_agent__")  # see _mode
    if ctx is not None and mode in OUT_OF_PROCESS:
        raise ToolDefinitionError(
            f"tool {fs.name!r} takes a RunContext ({ctx!r}) but runs in sandbox={mode!r}: the context "
            "holds live Python objects (deps) and agentloop never pickles them across the process "
            "boundary. Pass the JSON data the tool needs as arguments, or use sandbox='thread'."
        )
    ref = None
    if executor is not None:
        ref = fs.name  # an executor of the caller's knows its tools by name
    elif mode in OUT_OF_PROCESS:
        if provider is None:
            raise ToolDefinitionError(
                f"tool {fs.name!r}: sandbox={mode!r} runs in a registry's fork-server sandbox; register it "
                "with ToolRegistry.register (or pass sandbox=<a ToolExecutor> to build_tool)"
            )
        ref, executor = provider(fs.name, fn, mode)
    base = default_limits or Limits()
    return _assemble(fs, fn, mode, base.merge(options.limits), ref, executor, idempotent, options, ctx)


def _assemble(
    fs: FunctionSchema,
    fn: Callable[..., Any],
    mode: SandboxMode,
    limits: Limits,
    ref: str | None,
    executor: ToolExecutor | None,
    idempotent: bool,
    options: ToolOptions,
    ctx: str | None,
) -> Tool:
    params = fs.parameters
    patterns = collect_patterns(params, fs.name)  # RE2, once: the validator and the fast check share them
    definition: dict[str, Any] = {"type": "function", "function": {"name": fs.name, "parameters": params}}
    if fs.description:
        definition["function"]["description"] = fs.description
    _check_sendable_definition(definition)
    return Tool(
        name=fs.name,
        description=fs.description,
        parameters=params,
        fn=fn,
        is_async=fs.is_async,
        bind=fs.bind,
        sandbox=mode,
        limits=limits,
        definition=definition,
        validator=build_validator(params, fs.name, patterns),
        fast_check=compile_fast_check(params, patterns),
        ref=ref,
        idempotent=bool(idempotent),
        requires_approval=bool(options.requires_approval),
        context=ctx,
        executor=executor,
    )


def _check_sendable_definition(definition: dict[str, Any]) -> None:
    """The definition goes out with every request: text no codec can send (a lone surrogate in a
    description, a docstring's "Args:", a Literal or a default) failed every run's first request
    with a raw TypeError, long after registration."""
    fn = definition["function"]
    if (problem := not_unicode("description", fn.get("description") or "")) is None:
        try:
            _json.dumps(definition)
        except (TypeError, ValueError) as e:
            problem = f"its schema cannot be sent as JSON ({e})"
        else:
            return
    raise ToolDefinitionError(
        f"Tool {fn['name']!r}: {problem}; every request carries the tool's definition, so it must be "
        "valid Unicode JSON (check its description, docstring, Literal values and defaults)"
    )


def _check_options(fn: Callable[..., Any], options: ToolOptions) -> None:
    if isinstance(fn, classmethod):  # `@tool` above `@classmethod` in a class body
        raise ToolDefinitionError(
            f"cannot register {fn!r}: a classmethod cannot be called until its class exists; register "
            "`Cls.method` after the class body instead of decorating it inside"
        )
    if not callable(fn):
        raise ToolDefinitionError(f"cannot register {fn!r}: a tool must be a callable")
    for arg, value in (("name", options.name), ("description", options.description)):
        if value is not None and not isinstance(value, str):
            raise ToolDefinitionError(f"{arg} must be a str or None, got {value!r}")
    if options.parameters is not None and not isinstance(options.parameters, dict):
        raise ToolDefinitionError(
            f"parameters must be a JSON schema dict or None, got {type(options.parameters).__name__}"
        )
    for arg, flag in (("idempotent", options.idempotent), ("requires_approval", options.requires_approval)):
        if not isinstance(flag, bool):
            hint = _PREDICATE_HINT if arg == "requires_approval" and callable(flag) else ""
            raise ToolDefinitionError(f"{arg} must be True or False, got {flag!r}{hint}")
    check_limits(options.limits)


_PREDICATE_HINT = (
    "; a function deciding per call is the Agent's: Agent(require_approval=fn) (without the s), "
    "fn(tool_name, arguments) -> bool"
)


def _schema(fn: Callable[..., Any], options: ToolOptions, ctx: str | None) -> FunctionSchema:
    """The function's schema (or the explicit one), checked as jsonschema will use it."""
    skip = frozenset((ctx,)) if ctx is not None else frozenset()
    fs = function_schema(
        fn,
        name=options.name,
        description=options.description,
        parameters=options.parameters,
        skip_params=skip,
    )
    params = fs.parameters
    if not isinstance(params, dict) or params.get("type") != "object":
        raise ToolDefinitionError(
            f"tool {fs.name!r}: the parameters schema must be a JSON schema of type 'object' "
            f"(the model always sends an arguments object); got {params!r}"
        )
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(params)
    except SchemaError as e:
        raise ToolDefinitionError(
            f"tool {fs.name!r}: invalid JSON schema at {e.json_path}: {e.message}"
        ) from None
    _check_refs(fs.name, params)
    return fs


def _mode(
    fs: FunctionSchema,
    fn: Callable[..., Any],
    sandbox: SandboxMode | ToolExecutor | None,
    default: SandboxMode | None,
) -> tuple[SandboxMode, ToolExecutor | None]:
    """The execution mode, and the caller's own executor when `sandbox` is one."""
    if sandbox is not None and not isinstance(sandbox, str):
        if isinstance(sandbox, type):  # its `call` is an unbound function: every call would crash
            raise ToolDefinitionError(
                f"tool {fs.name!r}: sandbox={sandbox.__qualname__} is a class; pass an instance of it"
            )
        if not callable(getattr(sandbox, "call", None)):
            raise ToolDefinitionError(
                f"tool {fs.name!r}: sandbox must be one of {', '.join(MODES)} or a ToolExecutor "
                f"(an object with `async call(ref, arguments, limits)`), got {sandbox!r}"
            )
        if hasattr(fn, "__agentloop_agent__"):
            raise ToolDefinitionError(f"tool {fs.name!r} is an agent (Agent.as_tool): it runs inline")
        return "process", sandbox
    mode = sandbox or default or ("inline" if fs.is_async else "thread")
    if hasattr(fn, "__agentloop_agent__"):  # Agent.as_tool: the inner run is part of this run
        if sandbox not in (None, "inline"):
            raise ToolDefinitionError(
                f"tool {fs.name!r} is an agent (Agent.as_tool): it runs inline, in the outer run's tasks; "
                f"sandbox={sandbox!r} cannot apply. Sandbox the inner agent's own tools instead."
            )
        return "inline", None  # and idempotent: running it again resumes the journaled inner run
    if mode not in MODES:
        raise ToolDefinitionError(
            f"tool {fs.name!r}: unknown sandbox mode {mode!r}; use one of {', '.join(MODES)}"
        )
    if mode == "inline" and not fs.is_async:
        raise ToolDefinitionError(
            f"tool {fs.name!r}: sandbox='inline' needs an async function; a sync function would "
            "block the event loop. Use sandbox='thread' (the default for sync functions)."
        )
    if mode == "thread" and fs.is_async:  # every call would return an unawaited coroutine
        raise ToolDefinitionError(
            f"tool {fs.name!r}: sandbox='thread' runs a sync function in a worker thread; an async "
            "function runs in the event loop. Use sandbox='inline' (the default for async functions), "
            "or make it a plain def."
        )
    return mode, None


def check_limits(limits: Any) -> None:
    if limits is not None and not isinstance(limits, Limits):
        raise ToolDefinitionError(
            f"limits must be a Limits (e.g. Limits(timeout=10, memory_mb=256)) or None, got {limits!r}"
        )


def _check_refs(name: str, schema: dict[str, Any]) -> None:
    """Every `$ref` must resolve now: jsonschema would only find out mid-run, on the first call."""

    from referencing import Registry, Resource  # the workflow sandbox passes them through
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    def walk(node: Any, resolver: Any) -> None:
        if isinstance(node, list):
            for x in node:
                walk(x, resolver)
            return
        if not isinstance(node, dict):
            return
        if isinstance(node.get("$id"), str) and node is not schema:
            resolver = resolver.in_subresource(DRAFT202012.create_resource(node))
        for key in ("$ref", "$dynamicRef"):
            ref = node.get(key)
            if isinstance(ref, str):
                try:
                    resolver.lookup(ref)
                except Unresolvable as e:
                    raise ToolDefinitionError(
                        f"tool {name!r}: the parameters schema has {key} {ref!r}, which does not resolve ({str(e)[:200]}). "
                        'Define it under "$defs" of the parameters schema (remote references are not fetched).'
                    ) from None
        for key, value in node.items():
            if key not in ("enum", "const", "default", "examples"):  # data, not schemas
                walk(value, resolver)

    root = Resource.from_contents(schema, default_specification=DRAFT202012)
    walk(schema, Registry().with_resource(root.id() or "", root).resolver(root.id() or ""))
