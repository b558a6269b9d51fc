"""MCP tool sources: a real MCP server (tests/mcp_server_fixture.py) run as a subprocess, over stdio
and over streamable HTTP on 127.0.0.1, its tools registered next to Python tools.

The `mcp` SDK is anyio-based and its stdio and HTTP clients work on trio too, so every test runs
on both backends. `fail_after` guards below only turn a would-be hang into a failure; they
assert nothing about timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import warm_fork

pytest.importorskip(
    "mcp", reason="the MCP tests need the optional 'mcp' package (pip install 'agentloop[mcp]')"
)

from agentloop import Agent, Limits, ToolDefinitionError, ToolRegistry
from agentloop.mcp import MCPServer, MCPServerError, render_content
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio

FIXTURE = Path(__file__).with_name("mcp_server_fixture.py")
HANG_GUARD = 60  # seconds; only ever reached if something hangs
PRELOAD = warm_fork.MCP_FIXTURE_PRELOAD  # one warm server forks each fixture process (tests/warm_fork.py)


def stdio_server(variant: str = "normal", **kw: object) -> MCPServer:
    executable, *args = warm_fork.command(FIXTURE, ["stdio", variant], preload=PRELOAD)
    return MCPServer.stdio(executable, args, **kw)  # type: ignore[arg-type]


def python_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def local_echo(word: str) -> str:
        """Echo a word back."""
        return word

    return tools


def by_name(result, name):  # type: ignore[no-untyped-def]
    return next(r for r in result.tool_calls if r.name == name)


async def test_stdio_tools_run_next_to_python_tools() -> None:
    tools = python_tools()
    with anyio.fail_after(HANG_GUARD):
        async with stdio_server() as server:
            added = server.register_into(tools, exclude=["crash", "rendezvous"])
            assert server.name == "fixture"  # as the server reports itself
            assert [t.name for t in added] == ["add", "shout", "fail", "picture", "files_read"]
            assert tools.names == ["local_echo", "add", "shout", "fail", "picture", "files_read"]
            assert tools["add"].parameters == server.tools[0]["inputSchema"]  # sent to the model as is
            assert tools["add"].description == "Add two integers."

            model = ScriptedModel(
                [
                    tool_calls(
                        call("add", {"a": 2, "b": 3}),
                        call("shout", {"text": "hi there", "style": "title"}),
                        call("files_read", {"path": "/etc/motd"}),
                        call("picture", {}),
                        call("fail", {"message": "no disk"}),
                        call("add", {"a": "two"}),  # violates the schema: never reaches the server
                        call("shout", {"text": "x", "style": "whisper"}),
                        call("local_echo", {"word": "py"}),
                    ),
                    text("done"),
                ]
            )
            result = await Agent(client=model, tools=tools).run("go")

    statuses = [(r.name, r.status) for r in result.tool_calls]
    assert statuses == [
        ("add", "ok"),
        ("shout", "ok"),
        ("files_read", "ok"),
        ("picture", "ok"),
        ("fail", "raised"),
        ("add", "invalid_arguments"),
        ("shout", "invalid_arguments"),
        ("local_echo", "ok"),
    ]
    contents = [r.content for r in result.tool_calls]
    assert contents[0] == "5"
    assert contents[1] == "Hi There"
    assert contents[2] == "contents of /etc/motd"  # the server was called by its own name, files.read
    assert contents[3].startswith("a red dot\n[image: image/png, about")
    assert (
        contents[4] == "Tool 'fail' raised MCPToolError: cannot do that: no disk"
    )  # the model sees the server's text
    assert "'b' is a required property" in contents[5] and "'two' is not of type 'integer'" in contents[5]
    assert "'whisper' is not one of ['upper', 'title']" in contents[6]
    assert result.output == "done"


async def test_parallel_calls_share_one_session() -> None:
    tools = ToolRegistry()
    # Distinct arguments: identical repeated calls would be stopped by the loop guard.
    with anyio.fail_after(HANG_GUARD):  # a client that serialized calls would deadlock here
        async with stdio_server() as server:
            server.register_into(tools, include=["rendezvous"])
            model = ScriptedModel(
                [tool_calls(*(call("rendezvous", {"parties": 4, "who": i}) for i in range(4))), text("ok")]
            )
            result = await Agent(client=model, tools=tools).run("meet")
    assert [r.status for r in result.tool_calls] == ["ok"] * 4
    assert all(r.content.startswith("met ") for r in result.tool_calls)


async def test_server_tools_are_built_once_with_the_registrys_defaults() -> None:
    # Built by build_tool, once, then added: the Tool returned is the one registered, and the
    # registry's default limits apply as they do to its Python tools (register_into's own win).
    tools = ToolRegistry(limits=Limits(timeout=7, output_bytes=1000))
    with anyio.fail_after(HANG_GUARD):
        async with stdio_server() as server:
            added = server.register_into(
                tools, include=["add", "shout"], limits=Limits(output_bytes=50), requires_approval=True
            )
            assert [tools[t.name] is t for t in added] == [True, True]
            assert [(t.limits.timeout, t.limits.output_bytes) for t in added] == [(7, 50), (7, 50)]
            assert all(t.requires_approval and t.sandbox == "inline" for t in added)


async def test_name_collisions_and_prefix() -> None:
    tools = python_tools()
    with anyio.fail_after(HANG_GUARD):
        async with stdio_server() as one, stdio_server() as two:
            one.register_into(tools, include=["add"])
            with pytest.raises(ToolDefinitionError, match=r"tool 'add': the name 'add' is taken .* prefix"):
                two.register_into(tools, include=["add", "shout"])
            assert tools.names == ["local_echo", "add"]  # all or nothing: 'shout' was not added either
            two.register_into(tools, prefix="two_", include=["add", "shout"])
            assert tools.names == ["local_echo", "add", "two_add", "two_shout"]

            model = ScriptedModel(
                [tool_calls(call("add", {"a": 1, "b": 1}), call("two_add", {"a": 2, "b": 2})), text("ok")]
            )
            result = await Agent(client=model, tools=tools).run("sum")
    assert [r.content for r in result.tool_calls] == ["2", "4"]


async def test_names_that_collide_after_sanitizing() -> None:
    tools = ToolRegistry()
    with anyio.fail_after(HANG_GUARD):
        async with stdio_server("collide") as server:
            with pytest.raises(
                ToolDefinitionError, match=r"'fixture', tool 'files_read'.*taken by another tool"
            ):
                server.register_into(tools)
            assert len(tools) == 0
            server.register_into(tools, exclude=["files_read"])
            assert "files_read" in tools
    assert "files_read" not in tools  # unregistered when the server's block closed


async def test_invalid_server_schema_is_a_definition_error_naming_server_and_tool() -> None:
    tools = ToolRegistry()
    with anyio.fail_after(HANG_GUARD):
        async with stdio_server("bad_schema") as server:
            with pytest.raises(ToolDefinitionError) as info:
                server.register_into(tools)
            message = str(info.value)
            assert "MCP server 'fixture', tool 'broken'" in message
            assert "not a valid JSON Schema" in message and "exclude=['broken']" in message
            assert len(tools) == 0
            server.register_into(tools, exclude=["broken"])
            assert "broken" not in tools and "add" in tools
            with pytest.raises(ToolDefinitionError, match="has no tool named 'nope'"):
                server.register_into(ToolRegistry(), include=["nope"])


async def test_tools_are_unusable_after_the_block() -> None:
    tools = ToolRegistry()
    with anyio.fail_after(HANG_GUARD):
        async with stdio_server() as server:
            server.register_into(tools, include=["add"])
            fn = tools["add"].fn
            assert await fn(a=1, b=2) == "3"
        with pytest.raises(MCPServerError, match="'fixture' is closed: tool 'add' can only be called inside"):
            await fn(a=1, b=2)
        with pytest.raises(MCPServerError, match="already closed"):
            async with server:
                pass
        if "add" in tools:  # a registry without unregister keeps the name; the call fails clearly
            model = ScriptedModel([tool_calls(call("add", {"a": 1, "b": 2})), text("ok")])
            record = (await Agent(client=model, tools=tools).run("sum")).tool_calls[0]
            assert record.status == "raised" and "is closed" in record.content
        else:  # unregistered on close
            assert len(tools) == 0


async def test_close_cancels_calls_in_flight_from_other_tasks() -> None:
    errors: list[BaseException] = []
    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            async with stdio_server() as server:

                async def stuck_caller() -> None:
                    try:
                        await server.call("rendezvous", {"parties": 2})  # nobody else comes
                    except MCPServerError as e:
                        errors.append(e)

                tg.start_soon(stuck_caller)
                await anyio.wait_all_tasks_blocked()
    assert len(errors) == 1 and "was closed while tool 'rendezvous' was running" in str(errors[0])


async def test_server_dying_mid_call_is_an_error_not_a_hang() -> None:
    tools = ToolRegistry()
    with anyio.fail_after(HANG_GUARD):
        async with stdio_server(errlog=subprocess_devnull()) as server:
            server.register_into(tools, include=["crash", "add"])
            model = ScriptedModel(
                [tool_calls(call("crash", {})), tool_calls(call("add", {"a": 1, "b": 1})), text("ok")]
            )
            result = await Agent(client=model, tools=tools).run("crash it")
    crash, after = result.tool_calls
    assert (
        crash.status == "raised"
        and "MCPServerError: MCP server 'fixture' failed the call to tool 'crash'" in crash.content
    )
    assert after.status == "raised" and "failed the call to tool 'add'" in after.content


async def test_a_command_that_is_not_an_mcp_server() -> None:
    with anyio.fail_after(HANG_GUARD):
        with pytest.raises(MCPServerError, match="Could not connect to the MCP server"):
            async with MCPServer.stdio(sys.executable, ["-c", "pass"]):
                pass


def subprocess_devnull():  # type: ignore[no-untyped-def]
    return open(subprocess.os.devnull, "w")  # closed with the test process


# --- streamable HTTP ------------------------------------------------------------------------------


@pytest.fixture
async def http_url() -> AsyncIterator[str]:
    """The fixture server over streamable HTTP on 127.0.0.1 (port chosen by the OS, announced on stdout)."""
    cmd = warm_fork.command(FIXTURE, ["http"], preload=PRELOAD)
    async with await anyio.open_process(cmd, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        line = b""
        with anyio.fail_after(HANG_GUARD):
            while b"\n" not in line:
                line += await proc.stdout.receive()
        port = int(line.split()[1])
        try:
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            proc.terminate()
            await proc.wait()


async def test_streamable_http(http_url: str) -> None:
    tools = python_tools()
    with anyio.fail_after(HANG_GUARD):
        async with MCPServer.http(http_url, name="remote") as server:
            server.register_into(tools, prefix="remote_", include=["add", "fail", "rendezvous"])
            model = ScriptedModel(
                [
                    tool_calls(
                        call("remote_add", {"a": 20, "b": 22}),
                        call("remote_fail", {"message": "over http"}),
                        call("remote_rendezvous", {"parties": 2, "who": 1}),
                        call("remote_rendezvous", {"parties": 2, "who": 2}),
                        call("local_echo", {"word": "w"}),
                    ),
                    text("ok"),
                ]
            )
            result = await Agent(client=model, tools=tools).run("go")
    assert server.name == "remote"
    assert [(r.status, r.content) for r in result.tool_calls] == [
        ("ok", "42"),
        ("raised", "Tool 'remote_fail' raised MCPToolError: cannot do that: over http"),
        ("ok", "met 2"),
        ("ok", "met 2"),
        ("ok", "w"),
    ]


# --- content rendering -----------------------------------------------------------------------------


def test_render_content() -> None:
    blocks = [
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two"},
        {"type": "audio", "data": "AAAA", "mimeType": "audio/wav"},
        {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "hello"}},
        {
            "type": "resource",
            "resource": {"uri": "file:///b.bin", "blob": "AAAA", "mimeType": "application/zip"},
        },
        {"type": "resource_link", "uri": "file:///c", "name": "c"},
        {"type": "hologram"},
    ]
    assert render_content(blocks).split("\n") == [
        "one",
        "two",
        "[audio: audio/wav, about 3 bytes, not shown]",
        "[resource file:///a.txt]",
        "hello",
        "[resource file:///b.bin: application/zip, not shown]",
        "[resource link c: file:///c]",
        "[hologram content, not shown]",
    ]
    assert json.loads(render_content([], {"temp": 21})) == {"temp": 21}
    assert render_content(None) == ""
