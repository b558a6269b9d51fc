"""`MCPServer`: one connection to an MCP server, a `ToolSource` (see the package's docs)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, TextIO

import anyio

from agentloop import (
    Limits,
    MCPServerError,
    MCPToolError,
    MissingDependencyError,
    Tool,
    ToolDefinitionError,
    ToolRegistry,
    build_tool,
)

from ._content import OwnedHTTP, describe, render_content, wire_form
from ._naming import checked_schema, local_name, suggest

__all__ = ["MCPServer"]


def _import_mcp() -> Any:
    try:
        import mcp
    except ImportError as e:  # the optional dependency is missing: say how to get it
        raise MissingDependencyError(
            f"MCP tool sources need the 'mcp' package ({e}). Install it with: pip install 'agentloop[mcp]'"
        ) from None
    return mcp


class MCPServer:
    """One connection to an MCP server; its tools can be registered into any `ToolRegistry`.

    Build it with `MCPServer.stdio(command, args)` (runs the server as a subprocess) or
    `MCPServer.http(url)` (streamable HTTP), or `MCPServer(transport)` with anything
    `mcp.Client` accepts (a transport, or an in-process `mcp` server in tests). Then
    `async with` it: the connection opens, the tool list is fetched once, and the tools can be
    registered with `register_into`.

    - `name`: how errors and logs name the server (default: the name the server reports).
    - `read_timeout`: seconds to wait for each response from the server (None: no limit; a
      tool's own `Limits(timeout=...)` applies as well).
    - `max_concurrent_calls`: cap on this server's calls in flight at once (None: no cap).
    """

    def __init__(
        self,
        source: Any,
        *,
        name: str | None = None,
        read_timeout: float | None = None,
        max_concurrent_calls: int | None = None,
        _factory: Callable[[], Any] | None = None,
        _label: str | None = None,
    ) -> None:
        if max_concurrent_calls is not None and max_concurrent_calls < 1:
            raise MCPServerError(f"max_concurrent_calls must be >= 1 or None, got {max_concurrent_calls!r}")
        self._source = source
        self._factory = _factory  # stdio/http: the transport is built on entry, when `mcp` is imported
        self._name = name
        self._label = _label or repr(source)
        self._read_timeout = read_timeout
        self._max_concurrent = max_concurrent_calls
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._state = "new"  # new -> open -> closed; one use only, like a file
        self._limiter: anyio.CapacityLimiter | None = None
        self._inflight: set[anyio.CancelScope] = set()
        self._tools: list[dict[str, Any]] = []
        self._registered: list[tuple[ToolRegistry, str]] = []

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        errlog: TextIO | None = None,
        name: str | None = None,
        read_timeout: float | None = None,
        max_concurrent_calls: int | None = None,
    ) -> MCPServer:
        """A server run as a subprocess, spoken to over its stdin/stdout.

        `env` is added to the few variables the `mcp` SDK passes on (PATH, HOME, ...); the
        server's stderr goes to `errlog` (default: this process's stderr).
        """
        argv = [command, *args]

        def source() -> Any:
            mcp = _import_mcp()
            from mcp.client.stdio import stdio_client

            params = mcp.StdioServerParameters(
                command=command, args=list(args), env=dict(env or {}) or None, cwd=cwd
            )
            return stdio_client(params, errlog=errlog if errlog is not None else sys.stderr)

        return cls(
            None,
            name=name,
            read_timeout=read_timeout,
            max_concurrent_calls=max_concurrent_calls,
            _factory=source,
            _label=" ".join(argv),
        )

    @classmethod
    def http(
        cls,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        read_timeout: float | None = None,
        max_concurrent_calls: int | None = None,
    ) -> MCPServer:
        """A server reached over streamable HTTP at `url` (e.g. `http://127.0.0.1:8000/mcp`)."""

        def source() -> Any:
            _import_mcp()
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            # The SDK's own default timeouts: a server may hold a response stream open for long.
            client = httpx2.AsyncClient(headers=dict(headers or {}), timeout=httpx2.Timeout(30.0, read=300.0))
            return OwnedHTTP(client, streamable_http_client(url, http_client=client))

        return cls(
            None,
            name=name,
            read_timeout=read_timeout,
            max_concurrent_calls=max_concurrent_calls,
            _factory=source,
            _label=url,
        )

    # --- lifetime -----------------------------------------------------------------------------

    async def __aenter__(self) -> MCPServer:
        if self._state != "new":
            raise MCPServerError(
                f"MCP server {self.name!r} was already {'opened' if self._state == 'open' else 'closed'}; "
                "an MCPServer is used by one `async with` block. Create a new one to connect again."
            )
        mcp = _import_mcp()
        self._state = "open"
        source = self._factory() if self._factory is not None else self._source
        async with AsyncExitStack() as stack:
            try:
                self._client = await stack.enter_async_context(
                    mcp.Client(source, read_timeout_seconds=self._read_timeout)
                )
                self._tools = await self._list_tools()
            except Exception as e:
                self._state = "closed"
                raise MCPServerError(
                    f"Could not connect to the MCP server {self.name!r}: {describe(e)}. Check that the "
                    "command or URL starts an MCP server (run it by hand to see its errors)."
                ) from e
            if self._name is None:
                info = getattr(self._client, "server_info", None)
                self._name = getattr(info, "name", None) or None
            self._limiter = anyio.CapacityLimiter(self._max_concurrent) if self._max_concurrent else None
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._state = "closed"
        for scope in list(self._inflight):  # calls from other tasks must not wait on a closing session
            scope.cancel()
        for registry, local in self._registered:
            unregister = getattr(registry, "unregister", None)
            if unregister is not None and registry.get(local) is not None:
                unregister(local)
        self._registered.clear()
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.__aexit__(*exc)

    async def _list_tools(self) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:  # the list may be paginated
            page = await self._client.list_tools(cursor=cursor)
            tools.extend(wire_form(t) for t in page.tools)
            cursor = getattr(page, "next_cursor", None)
            if not cursor:
                return tools

    # --- tools --------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name or self._label

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The server's tool definitions as MCP sends them (`name`, `description`, `inputSchema`)."""
        return list(self._tools)

    def register_into(
        self,
        registry: ToolRegistry,
        *,
        prefix: str = "",
        include: Collection[str] | None = None,
        exclude: Collection[str] = (),
        limits: Limits | None = None,
        requires_approval: bool = False,
        idempotent: bool = False,
    ) -> list[Tool]:
        """Register the server's tools (all, or `include` minus `exclude`) into `registry`.

        Local names are `prefix` + the server's name, with characters a model API rejects
        replaced by `_` (`files.read` → `files_read`); the server is always called by its own
        name. All or nothing: every tool is checked first, and a bad schema, an invalid name or
        a collision raises `ToolDefinitionError` naming the server and tool before any is added.
        """
        if self._state != "open":
            raise MCPServerError(
                f"MCP server {self.name!r} is not open: call register_into inside `async with server:`."
            )
        known = {t["name"] for t in self._tools}
        unknown = sorted(set(include or ()) - known)
        if unknown:
            raise ToolDefinitionError(
                f"MCP server {self.name!r} has no tool named {', '.join(map(repr, unknown))}; it has: "
                f"{', '.join(sorted(known)) or '(none)'}."
            )
        chosen = [
            t for t in self._tools if (include is None or t["name"] in include) and t["name"] not in exclude
        ]
        # Every tool built (and so checked) once, before any is added: nothing is half-registered
        # when one tool is bad. The registry's default limits apply, as to its other tools.
        flags = {
            "limits": registry.limits.merge(limits),
            "idempotent": idempotent,
            "requires_approval": requires_approval,
        }
        built: dict[str, Tool] = {}
        for spec in chosen:
            tool = self._build(spec, prefix, registry, built, flags)
            built[tool.name] = tool
        added = [registry.add(tool) for tool in built.values()]
        self._registered.extend((registry, tool.name) for tool in added)
        return added

    def _build(
        self,
        spec: dict[str, Any],
        prefix: str,
        registry: ToolRegistry,
        built: Mapping[str, Tool],
        flags: dict[str, Any],
    ) -> Tool:
        """One server tool as a `Tool` (checked as any tool is), or a `ToolDefinitionError` naming it."""
        remote = spec["name"]
        local = local_name(self.name, prefix, remote)
        if local in built or local in registry:
            clash = "another tool of this server" if local in built else "a tool already in the registry"
            raise ToolDefinitionError(
                f"MCP server {self.name!r}, tool {remote!r}: the name {local!r} is taken by {clash}. Register "
                f"this server's tools with a prefix, e.g. register_into(tools, prefix={suggest(self.name)!r}), "
                f"or leave it out with exclude=[{remote!r}]."
            )
        schema = checked_schema(self.name, remote, spec.get("inputSchema"))
        try:
            return build_tool(
                self._tool_fn(remote, local),
                name=local,
                description=spec.get("description") or "",
                parameters=schema,
                sandbox="inline",  # an async call over the session: runs in the event loop
                **flags,
            )
        except ToolDefinitionError as e:
            raise ToolDefinitionError(
                f"MCP server {self.name!r}, tool {remote!r}: {e} (leave it out with exclude=[{remote!r}])"
            ) from None

    def _tool_fn(self, remote: str, local: str) -> Callable[..., Any]:
        # Called as fn(**arguments) with the validated arguments (an explicit schema means no
        # binding); **kwargs takes any key, even ones that are not Python identifiers.
        async def call_mcp_tool(**arguments: Any) -> str:
            return await self.call(remote, arguments)

        call_mcp_tool.__name__ = call_mcp_tool.__qualname__ = local
        return call_mcp_tool

    async def call(self, tool: str, arguments: dict[str, Any] | None = None) -> str:
        """Call the server's tool `tool` (its own name) and return its result as text for a model.

        Raises `MCPToolError` with the server's text when the result is an error (`isError`),
        and `MCPServerError` when the server fails, is gone, or this block has closed.
        """
        if self._state != "open" or self._client is None:
            raise MCPServerError(
                f"MCP server {self.name!r} is closed: tool {tool!r} can only be called inside the "
                "`async with` block that opened it. Run the agent inside that block."
            )
        client = self._client
        scope = anyio.CancelScope()
        self._inflight.add(scope)
        try:
            with scope:
                if self._limiter is None:
                    result = await client.call_tool(tool, arguments or {})
                else:
                    async with self._limiter:
                        result = await client.call_tool(tool, arguments or {})
        except Exception as e:
            raise MCPServerError(
                f"MCP server {self.name!r} failed the call to tool {tool!r}: {describe(e)}"
            ) from e
        finally:
            self._inflight.discard(scope)
        if scope.cancelled_caught:  # only __aexit__ cancels this scope
            raise MCPServerError(f"MCP server {self.name!r} was closed while tool {tool!r} was running.")
        data = wire_form(result)
        text = render_content(data.get("content"), data.get("structuredContent"))
        if data.get("isError"):
            raise MCPToolError(text or "the tool reported an error without a message")
        return text

    def __repr__(self) -> str:
        return f"MCPServer({self.name!r}, {self._state}, tools={[t['name'] for t in self._tools]})"
