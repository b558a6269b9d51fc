"""A tiny MCP server for tests/test_mcp.py, run as a subprocess (stdio, or streamable HTTP on 127.0.0.1).

    python tests/mcp_server_fixture.py stdio [normal|bad_schema|collide]
    python tests/mcp_server_fixture.py http            # prints "PORT <n>" once listening

It is a low-level `mcp.server.lowlevel.Server` rather than the decorator API so that the tests
control every byte of the tool list: odd names ("files.read"), a schema that is not a JSON
Schema, error results, non-text content.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server

VARIANT = sys.argv[2] if len(sys.argv) > 2 else "normal"


def _tool(name: str, schema: dict[str, Any], description: str | None = None) -> types.Tool:
    return types.Tool(name=name, description=description, input_schema=schema)


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": required if required is not None else list(props),
    }


TOOLS = [
    _tool("add", _obj({"a": {"type": "integer"}, "b": {"type": "integer"}}), "Add two integers."),
    _tool(
        "shout",
        _obj({"text": {"type": "string"}, "style": {"type": "string", "enum": ["upper", "title"]}}),
        "Change the case of a text.",
    ),
    _tool("fail", _obj({"message": {"type": "string"}}), "Always reports an error result."),
    _tool("picture", _obj({}), "Returns a caption and an image."),
    _tool("files.read", _obj({"path": {"type": "string"}}), "Read a (pretend) file."),
    _tool(
        "rendezvous",
        _obj({"parties": {"type": "integer", "minimum": 1}, "who": {"type": "integer"}}, ["parties"]),
        "Wait until `parties` calls are in.",
    ),
    _tool("crash", _obj({}), "Kills the server process mid-call."),
]
if VARIANT == "bad_schema":
    TOOLS.append(_tool("broken", {"type": "object", "properties": {"x": {"type": "nonsense"}}}))
if VARIANT == "collide":  # two remote names that sanitize to the same local name
    TOOLS.append(_tool("files_read", _obj({"path": {"type": "string"}})))


class Rendezvous:
    """Holds callers until `parties` of them are waiting: proves the client sends calls concurrently."""

    def __init__(self) -> None:
        self.waiting = 0
        self.event = anyio.Event()

    async def meet(self, parties: int) -> int:
        self.waiting += 1
        if self.waiting >= parties:
            self.event.set()
        await self.event.wait()
        return self.waiting


RENDEZVOUS = Rendezvous()


def _text(text: str, *, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=error)


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    match params.name:
        case "add":
            return _text(str(args["a"] + args["b"]))
        case "shout":
            return _text(args["text"].upper() if args["style"] == "upper" else args["text"].title())
        case "fail":
            return _text(f"cannot do that: {args['message']}", error=True)
        case "picture":
            return types.CallToolResult(
                content=[
                    types.TextContent(text="a red dot"),
                    types.ImageContent(data="iVBORw0KGgo=", mime_type="image/png"),
                ]
            )
        case "files.read" | "files_read":
            return _text(f"contents of {args['path']}")
        case "rendezvous":
            return _text(f"met {await RENDEZVOUS.meet(args['parties'])}")
        case "crash":
            os._exit(3)
    return _text(f"unknown tool {params.name!r}", error=True)


server = Server("fixture", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio() -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def serve_http() -> None:
    import uvicorn

    # Bind first, then announce: connections queue in the backlog until uvicorn accepts them,
    # so the test can connect as soon as it has read the port (no polling, no sleeps).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    if sys.argv[1] == "http":
        serve_http()
    else:
        anyio.run(serve_stdio)
