"""Tool and ToolRegistry: registration, the wire `tools` array, argument parsing and validation.

Everything that can be wrong with a tool definition is caught here, at registration time: a bad
name, a schema jsonschema rejects, a duplicate, an unsupported signature, an unavailable
sandbox. Nothing about a definition can fail in the middle of a run. Per call, the only work is
parsing the arguments leniently and running the validator that was built once, at registration,
against exactly the schema that is sent to the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal, overload

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

# Imported here, not lazily: jsonschema has imported it already, and a lazy import would run inside
# Temporal's workflow sandbox (the workflow registers its tool proxies), which forbids attrs' import.
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from .. import _json
from .._context import context_param
from .._exceptions import ToolDefinitionError
from .._limits import Limits
from .._schema import function_schema
from .fastcheck import compile_fast_check
from .validate import build_validator

if TYPE_CHECKING:
    from .._sandbox import ProcessSandbox
    from .._seams import ToolExecutor

__all__ = ["Tool", "ToolRegistry", "SandboxMode", "parse_arguments"]

SandboxMode = Literal["inline", "thread", "process", "isolated"]
_MODES = ("inline", "thread", "process", "isolated")


@dataclass(frozen=True, slots=True, eq=False)
class Tool:
    """One registered tool. Built by `ToolRegistry.register`; immutable afterwards."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    is_async: bool
    bind: Callable[[dict[str, Any]], dict[str, Any]]
    sandbox: SandboxMode
    limits: Limits
    definition: dict[str, Any] = field(repr=False)  # the entry of the wire `tools` array
    validator: Any = field(repr=False)  # Draft 2020-12 with bounded work (`_validate.py`), built once
    ref: str | None = None  # "module:qualname" for the out-of-process modes
    fast_check: Callable[[dict[str, Any]], bool] | None = field(default=None, repr=False)
    idempotent: bool = False  # safe to run again after a crash left its outcome unknown (journal)
    requires_approval: bool = False  # a run pauses for a human decision before calling it
    context: str | None = None  # the parameter that receives the RunContext (never in the schema)

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
        found = islice(self.validator.iter_errors(arguments), limit)
        errors = sorted(found, key=lambda e: [(isinstance(p, str), p) for p in e.absolute_path])
        return [f"{e.json_path}: {e.message}" for e in errors]


class ToolRegistry:
    """A set of tools offered to the model, with their JSON schemas and execution modes.

    `sandbox` and `limits` are the defaults for tools registered here; each tool may override
    them. `sandbox_ro_paths` are what "process" and "isolated" tools may read besides the
    interpreter, the site-packages in use and each tool's own package (data files, say): bound
    read-only by bubblewrap, allowed by Landlock where the kernel has it. A registry can be shared by many agents and runs; registering while runs are in
    flight is safe (the runs keep the tools array they started with).
    """

    def __init__(
        self,
        *,
        sandbox: SandboxMode | None = None,
        limits: Limits | None = None,
        sandbox_ro_paths: Sequence[str] = (),
    ) -> None:
        if sandbox is not None and sandbox not in _MODES:
            raise ToolDefinitionError(f"unknown sandbox mode {sandbox!r}; use one of {', '.join(_MODES)}")
        _check_limits(limits)
        self._default_sandbox = sandbox
        self._default_limits = limits or Limits()
        self._tools: dict[str, Tool] = {}
        self._definitions: list[dict[str, Any]] = []
        self._sandboxes: dict[bool, ProcessSandbox] = {}  # isolated? -> ProcessSandbox, created on first use
        self._ro_paths = tuple(sandbox_ro_paths)  # extra read-only paths of sandboxed tools
        self._owners: dict[str, ToolRegistry] = {}  # tools taken from another registry run in its sandbox

    # --- registration -------------------------------------------------------------------------

    @overload
    def tool(self, fn: Callable[..., Any], /) -> Callable[..., Any]: ...
    @overload
    def tool(
        self,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: dict[str, Any] | None = None,
        sandbox: SandboxMode | None = None,
        limits: Limits | None = None,
        idempotent: bool = False,
        requires_approval: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...

    def tool(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Decorator form of `register`: `@tools.tool` or `@tools.tool(name=..., sandbox=...)`.

        Returns the function unchanged, so it stays callable (and testable) as plain Python.
        """
        unknown = sorted(set(options) - _TOOL_OPTIONS)
        if unknown:
            raise ToolDefinitionError(
                f"unknown option {unknown[0]!r} for tool(); the options are {', '.join(sorted(_TOOL_OPTIONS))}"
            )
        if fn is not None:
            self.register(fn, **options)
            return fn

        def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
            self.register(f, **options)
            return f

        return decorate

    def register(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        description: str | None = None,
        parameters: dict[str, Any] | None = None,
        *,
        sandbox: SandboxMode | None = None,
        limits: Limits | None = None,
        idempotent: bool = False,
        requires_approval: bool = False,
    ) -> Tool:
        """Register `fn` as a tool and return its `Tool`.

        `idempotent=True`: running it twice with the same arguments is harmless, so a durable run
        resumed after a crash that interrupted it runs it again (otherwise the model is told the
        outcome is unknown). `requires_approval=True`: every call pauses the run until a human
        approves, rejects or overrides it (`Agent.resume(result, approvals=...)`).

        The schema comes from the type hints and docstring unless `parameters` gives it
        explicitly. Raises `ToolDefinitionError` for anything that would fail later.
        """
        if not callable(fn):
            raise ToolDefinitionError(f"cannot register {fn!r}: a tool must be a callable")
        for arg, value in (("name", name), ("description", description)):
            if value is not None and not isinstance(value, str):
                raise ToolDefinitionError(f"{arg} must be a str or None, got {value!r}")
        if parameters is not None and not isinstance(parameters, dict):
            raise ToolDefinitionError(
                f"parameters must be a JSON schema dict or None, got {type(parameters).__name__}"
            )
        for arg, flag in (("idempotent", idempotent), ("requires_approval", requires_approval)):
            if not isinstance(flag, bool):
                raise ToolDefinitionError(f"{arg} must be True or False, got {flag!r}")
        _check_limits(limits)
        ctx = context_param(fn)
        skip = frozenset((ctx,)) if ctx is not None else frozenset()
        fs = function_schema(fn, name=name, description=description, parameters=parameters, skip_params=skip)
        params = fs.parameters
        if not isinstance(params, dict) or params.get("type") != "object":
            raise ToolDefinitionError(
                f"tool {fs.name!r}: the parameters schema must be a JSON schema of type 'object' "
                f"(the model always sends an arguments object); got {params!r}"
            )
        try:
            Draft202012Validator.check_schema(params)
        except SchemaError as e:
            raise ToolDefinitionError(
                f"tool {fs.name!r}: invalid JSON schema at {e.json_path}: {e.message}"
            ) from None
        _check_refs(fs.name, params)
        if fs.name in self._tools:
            raise ToolDefinitionError(
                f"a tool named {fs.name!r} is already registered; pass name=... to register it under another name"
            )
        mode = sandbox or self._default_sandbox or ("inline" if fs.is_async else "thread")
        if hasattr(fn, "__agentloop_agent__"):  # Agent.as_tool: the inner run is part of this run
            if sandbox not in (None, "inline"):
                raise ToolDefinitionError(
                    f"tool {fs.name!r} is an agent (Agent.as_tool): it runs inline, in the outer run's tasks; "
                    f"sandbox={sandbox!r} cannot apply. Sandbox the inner agent's own tools instead."
                )
            mode = "inline"
            idempotent = True  # running it again resumes the journaled inner run, never repeats it
        if mode not in _MODES:
            raise ToolDefinitionError(
                f"tool {fs.name!r}: unknown sandbox mode {mode!r}; use one of {', '.join(_MODES)}"
            )
        if mode == "inline" and not fs.is_async:
            raise ToolDefinitionError(
                f"tool {fs.name!r}: sandbox='inline' needs an async function; a sync function would "
                "block the event loop. Use sandbox='thread' (the default for sync functions)."
            )
        if ctx is not None and mode in ("process", "isolated"):
            raise ToolDefinitionError(
                f"tool {fs.name!r} takes a RunContext ({ctx!r}) but runs in sandbox={mode!r}: the context "
                "holds live Python objects (deps) and agentloop never pickles them across the process "
                "boundary. Pass the JSON data the tool needs as arguments, or use sandbox='thread'."
            )
        ref = self._check_sandbox(fs.name, fn, mode) if mode in ("process", "isolated") else None
        definition: dict[str, Any] = {"type": "function", "function": {"name": fs.name, "parameters": params}}
        if fs.description:
            definition["function"]["description"] = fs.description
        return self._insert(
            Tool(
                name=fs.name,
                description=fs.description,
                parameters=params,
                fn=fn,
                is_async=fs.is_async,
                bind=fs.bind,
                sandbox=mode,
                limits=self._default_limits.merge(limits),
                definition=definition,
                validator=build_validator(params, fs.name),
                fast_check=compile_fast_check(params),
                ref=ref,
                idempotent=bool(idempotent),
                requires_approval=bool(requires_approval),
                context=ctx,
            )
        )

    def add(self, tool: Tool) -> Tool:
        """Add an already built `Tool` (e.g. from another registry) under its own name."""
        if not isinstance(tool, Tool):
            raise ToolDefinitionError(
                f"add() takes a Tool (from register()), got {tool!r}; use register(fn) for a function"
            )
        return self._insert(tool)

    def _insert(self, tool: Tool) -> Tool:
        if tool.name in self._tools:
            raise ToolDefinitionError(
                f"a tool named {tool.name!r} is already registered; pass name=... to register it under another name"
            )
        self._tools[tool.name] = tool
        # A new list, never a mutation: runs in flight keep the array they started with.
        self._definitions = [*self._definitions, tool.definition]
        return tool

    def include(self, other: ToolRegistry) -> list[Tool]:
        """Add every tool of `other` (as it is now); sandboxed ones keep running in `other`'s sandbox."""
        clash = sorted(set(other.names) & set(self._tools))
        if clash:
            raise ToolDefinitionError(f"tools named {', '.join(map(repr, clash))} are already registered")
        added = [self._insert(tool) for tool in other]
        for tool in added:
            if tool.sandbox in ("process", "isolated"):
                self._owners[tool.name] = other._owners.get(tool.name, other)
        return added

    def unregister(self, name: str) -> Tool:
        """Remove the tool `name` and return it. Runs in flight keep the tools array they started with."""
        try:
            tool = self._tools.pop(name)
        except KeyError:
            raise KeyError(f"no tool named {name!r} is registered") from None
        self._definitions = [d for d in self._definitions if d is not tool.definition]
        self._owners.pop(name, None)
        return tool

    def _check_sandbox(self, name: str, fn: Callable[..., Any], mode: str) -> str:
        box = self._process_sandbox(mode)
        ref = box.tool_ref(fn)
        box.check_available()
        return ref

    def sandbox_for(self, mode: str, tool: str | None = None) -> ToolExecutor:
        """The fork-server sandbox for "process" or "isolated" (created on first use).

        A tool taken from another registry (`include`) runs in that registry's sandbox, which
        that registry's `aclose()` stops.
        """
        owner = self._owners.get(tool) if tool is not None else None
        if owner is not None:
            return owner.sandbox_for(mode)
        return self._process_sandbox(mode)

    def _process_sandbox(self, mode: str) -> ProcessSandbox:
        isolated = mode == "isolated"
        box = self._sandboxes.get(isolated)
        if box is None:
            # imported on first use: most programs never start a sandbox, so they never pay its import
            from .._sandbox import ProcessSandbox

            box = self._sandboxes[isolated] = ProcessSandbox(isolated=isolated, ro_paths=self._ro_paths)
        return box

    async def aclose(self) -> None:
        """Stop the fork servers of the sandboxed modes, if any were started."""
        for box in self._sandboxes.values():
            await box.aclose()

    async def __aenter__(self) -> ToolRegistry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- lookup -------------------------------------------------------------------------------

    @property
    def definitions(self) -> list[dict[str, Any]]:
        """The `tools` array sent to the model (do not mutate it)."""
        return self._definitions

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({', '.join(self._tools)})"


_TOOL_OPTIONS = frozenset(
    {"name", "description", "parameters", "sandbox", "limits", "idempotent", "requires_approval"}
)


def _check_limits(limits: Any) -> None:
    if limits is not None and not isinstance(limits, Limits):
        raise ToolDefinitionError(
            f"limits must be a Limits (e.g. Limits(timeout=10, memory_mb=256)) or None, got {limits!r}"
        )


def _check_refs(name: str, schema: dict[str, Any]) -> None:
    """Every `$ref` must resolve now: jsonschema would only find out mid-run, on the first call."""

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


class ArgumentsError(ValueError):
    """The arguments of one call cannot be used; the message is written for the model."""


def parse_arguments(raw: Any, max_depth: int = _json.MAX_DEPTH) -> dict[str, Any]:
    """Parse a tool call's `arguments` leniently (see wire-notes: `""`, `null`, missing → `{}`).

    Providers normally send a JSON string; some send an already-parsed object. Nesting deeper
    than `max_depth` is refused (`InputBudget.max_json_depth` in a run).
    """
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            value = _json.loads_exact(raw, max_depth=max_depth)  # an int argument must not arrive rounded
        except _json.DepthError as e:
            raise ArgumentsError(f"{e}. Send flatter arguments.") from None
        except ValueError as e:
            raise ArgumentsError(
                f"The arguments are not valid JSON ({e}). Send the arguments as one JSON object "
                "that matches the tool's parameters schema."
            ) from None
    else:
        value = raw
        if _json.depth_exceeds(value, max_depth):
            raise ArgumentsError(
                f"the JSON is nested deeper than {max_depth} levels. Send flatter arguments."
            )
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ArgumentsError(
            f"The arguments must be a JSON object, got {type(value).__name__ if not isinstance(value, list) else 'an array'}. "
            "Send the arguments as one JSON object that matches the tool's parameters schema."
        )
    return value
