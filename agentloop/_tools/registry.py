"""`ToolRegistry`: the tools offered to the model, by name, and the wire `tools` array.

A registry holds names and definitions. How a tool is built and checked is `tool.py`
(`build_tool`); what runs it is `executors.py` (the registry keeps a `SandboxPool`, which owns
the fork servers of its "process" / "isolated" tools and is stopped by `aclose`); how a call
goes is `dispatch.py`. A registry can be shared by many agents and runs; registering while runs
are in flight is safe (the runs keep the tools array they started with).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from .._exceptions import ToolDefinitionError
from .._limits import Limits
from .executors import SandboxPool
from .tool import MODES, SandboxMode, Tool, ToolOptions, check_limits, make_tool

if TYPE_CHECKING:
    from .._seams import ToolExecutor

__all__ = ["ToolRegistry"]


class ToolRegistry:
    """A set of tools offered to the model, with their JSON schemas and execution modes.

    `sandbox` and `limits` are the defaults for tools registered here; each tool may override
    them. `sandbox_ro_paths` are what "process" and "isolated" tools may read besides the
    interpreter, the site-packages in use and each tool's own package (data files, say): bound
    read-only by bubblewrap, allowed by Landlock where the kernel has it. A registry can be shared
    by many agents and runs; registering while runs are in flight is safe (the runs keep the
    tools array they started with).
    """

    def __init__(
        self,
        *,
        sandbox: SandboxMode | None = None,
        limits: Limits | None = None,
        sandbox_ro_paths: Sequence[str] = (),
    ) -> None:
        if sandbox is not None and sandbox not in MODES:
            raise ToolDefinitionError(f"unknown sandbox mode {sandbox!r}; use one of {', '.join(MODES)}")
        check_limits(limits)
        self._default_sandbox = sandbox
        self._default_limits = limits or Limits()
        self._tools: dict[str, Tool] = {}
        self._definitions: list[dict[str, Any]] = []
        self._pool = SandboxPool(sandbox_ro_paths)  # the fork servers of this registry's sandboxed tools

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
        sandbox: SandboxMode | ToolExecutor | None = None,
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
                f"unknown option {unknown[0]!r} for tool(){_meant(unknown[0])}; the options are "
                f"{', '.join(sorted(_TOOL_OPTIONS))}"
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
        sandbox: SandboxMode | ToolExecutor | None = None,
        limits: Limits | None = None,
        idempotent: bool = False,
        requires_approval: bool = False,
    ) -> Tool:
        """Register `fn` as a tool and return its `Tool`.

        `idempotent=True`: running it twice with the same arguments is harmless, so a durable run
        resumed after a crash that interrupted it runs it again (otherwise the model is told the
        outcome is unknown). `requires_approval=True`: every call pauses the run until a human
        approves, rejects or overrides it (`Agent.resume(result, approvals=...)`).

        `sandbox`: a mode, or a `ToolExecutor` that runs the tool out of this process (it receives
        the tool's name as `ref`). The schema comes from the type hints and docstring unless
        `parameters` gives it explicitly. Raises `ToolDefinitionError` for anything that would
        fail later.
        """
        options = ToolOptions(name, description, parameters, sandbox, limits, idempotent, requires_approval)
        tool = make_tool(
            fn,
            options,
            default_sandbox=self._default_sandbox,
            default_limits=self._default_limits,
            taken=self._tools,
            provider=self._sandboxed,
        )
        return self._insert(tool)

    def add(self, tool: Tool) -> Tool:
        """Add an already built `Tool` (`build_tool`, or another registry's) under its own name."""
        if not isinstance(tool, Tool):
            raise ToolDefinitionError(
                f"add() takes a Tool (from register()), got {tool!r}; use register(fn) for a function"
            )
        sent = tool.definition.get("function", {}).get("name") if isinstance(tool.definition, dict) else None
        if sent != tool.name:  # e.g. dataclasses.replace(tool, name=...): the model would call the old name
            raise ToolDefinitionError(
                f"tool {tool.name!r} is offered to the model as {sent!r}; build it under the new name "
                "with build_tool(fn, name=...) instead of changing a built Tool"
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
        """Add every tool of `other` (as it is now); sandboxed ones keep running in `other`'s sandbox
        (each tool carries its executor), which `other.aclose()` stops."""
        clash = sorted(set(other.names) & set(self._tools))
        if clash:
            raise ToolDefinitionError(f"tools named {', '.join(map(repr, clash))} are already registered")
        return [self._insert(tool) for tool in other]

    def unregister(self, name: str) -> Tool:
        """Remove the tool `name` and return it. Runs in flight keep the tools array they started with."""
        try:
            tool = self._tools.pop(name)
        except KeyError:
            raise KeyError(f"no tool named {name!r} is registered") from None
        self._definitions = [d for d in self._definitions if d is not tool.definition]
        return tool

    def _sandboxed(self, name: str, fn: Callable[..., Any], mode: str) -> tuple[str, ToolExecutor]:
        """What `make_tool` needs for a "process" / "isolated" tool: its ref and its executor."""
        return self._check_sandbox(name, fn, mode), self.sandbox_for(mode)

    def _check_sandbox(self, name: str, fn: Callable[..., Any], mode: str) -> str:
        return self._pool.check(fn, mode)

    def sandbox_for(self, mode: str, tool: str | None = None) -> ToolExecutor:
        """The `ToolExecutor` that runs `tool` (its own), or the fork-server sandbox of `mode`
        ("process" or "isolated"; created on first use, stopped by `aclose`)."""
        found = self._tools.get(tool) if tool is not None else None
        if found is not None and found.executor is not None:
            return found.executor
        return self._pool.executor(mode)

    async def aclose(self) -> None:
        """Stop the fork servers of the sandboxed modes, if any were started."""
        await self._pool.aclose()

    async def __aenter__(self) -> ToolRegistry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- lookup -------------------------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        """The default `Limits` of tools registered here (each tool's own `limits=` overrides fields)."""
        return self._default_limits

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


def _meant(option: str) -> str:
    """The option a misspelt one most likely meant. The agent's `require_approval` (a predicate
    over calls) and a tool's `requires_approval` (a flag) differ by one letter: each is named."""
    if option == "require_approval":
        return (
            ": a tool's flag is requires_approval=True (every call waits for a decision); "
            "require_approval=... is the Agent's predicate over calls"
        )
    close = difflib.get_close_matches(option, _TOOL_OPTIONS, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
