"""Tools from Model Context Protocol servers, registered in a `ToolRegistry` next to Python tools.

```python
from agentloop.mcp import MCPServer

async with MCPServer.stdio("python", ["-m", "my_server"]) as server:   # or MCPServer.http(url)
    server.register_into(tools, prefix="fs_")
    result = await agent.run("...")
```

Why it is built this way:
- Each server tool is built once by `build_tool(fn, parameters=inputSchema)` (what
  `ToolRegistry.register` uses), so it gets exactly what a Python tool gets: `check_schema` at
  registration, the validator built once, lenient argument parsing and the same outcomes.
  Nothing about a server's tools fails mid-run. All are built before any is added.
- The connection (and the server process, for stdio) lives exactly as long as the `async with`
  block: the `mcp` client's task group belongs to the task that entered it (structured
  concurrency). Enter and leave the block in the same task.
- After the block, the tools are removed (when the registry can `unregister`) and in any case
  unusable: a call gets `MCPServerError` saying the server is closed; calls still in flight
  when it closes are cancelled and get the same error. Nothing can hang on a dead session.
- One session serves parallel calls: MCP requests carry ids, so the calls of one assistant
  message go out concurrently (`max_concurrent_calls` caps them for servers that cannot cope).

The `mcp` package is imported here only, never by `import agentloop` (extra: `agentloop[mcp]`).
"""

from agentloop import MCPServerError, MCPToolError

from ._content import render_content
from ._server import MCPServer

__all__ = ["MCPServer", "MCPServerError", "MCPToolError", "render_content"]

# Shown as `agentloop.mcp.X` (reprs, tracebacks, docs), not as the private module defining them.
MCPServer.__module__ = render_content.__module__ = __name__
