"""Sandboxed tools through the whole loop: outcomes reach the model, the host and siblings survive."""

from __future__ import annotations

import json
import os
import shutil

import anyio
import pytest
import sandbox_tools as st

from agentloop import Agent, Limits, ToolDefinitionError, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


@pytest.fixture
async def tools():
    registry = ToolRegistry(sandbox="process", limits=Limits(timeout=10))
    registry.register(st.echo)
    registry.register(st.describe)
    registry.register(st.memory_bomb, limits=Limits(memory_mb=64, timeout=10))
    registry.register(st.segfault)
    registry.register(st.read_env)
    registry.register(st.huge_result, limits=Limits(output_bytes=1000))
    registry.register(st.block_forever, limits=Limits(timeout=0.5))
    async with registry:  # closes the fork server
        yield registry


async def test_every_outcome_reaches_the_model(tools: ToolRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_API_KEY", "sk-must-not-leak-0000")
    model = ScriptedModel(
        [
            tool_calls(
                call("echo", {"text": "hi", "n": 2}),
                call("describe", {"color": "blue", "point": {"x": 1, "y": 2}}),
                call("memory_bomb", {}),
                call("segfault", {}),
                call("read_env", {"name": "FLUX_API_KEY"}),
                call("huge_result", {}),
                call("block_forever", {}),
            ),
            text("done"),
        ]
    )
    result = await Agent(client=model, tools=tools).run("go")
    statuses = {r.name: r.status for r in result.tool_calls}
    assert statuses == {
        "echo": "ok",
        "describe": "ok",
        "memory_bomb": "memory",
        "segfault": "crashed",
        "read_env": "ok",
        "huge_result": "output_limit",
        "block_forever": "timeout",
    }
    contents = {r.name: r.content for r in result.tool_calls}
    assert json.loads(contents["echo"]) == {"text": "hihi"} or "hi" in contents["echo"]
    assert "sk-must-not-leak" not in contents["read_env"]
    assert "SIGSEGV" in contents["segfault"] or "segmentation" in contents["segfault"].lower()
    assert "truncated" in contents["huge_result"]
    assert result.output == "done"  # the host survived all of it and the run finished


async def test_cancelling_the_run_kills_the_child(tools: ToolRegistry) -> None:
    model = ScriptedModel([tool_calls(call("block_forever", {}))])
    tools.register(st.whoami)  # registering while no run is in flight is fine
    agent = Agent(client=model, tools=tools)
    with anyio.move_on_after(0.2):  # a deadline on the run: its cancel scope kills the child
        await agent.run("go")
    # the fork server is still usable afterwards
    model.add(tool_calls(call("echo", {"text": "again"})), text("ok"))
    result = await agent.run("again")
    assert result.tool_calls[0].status == "ok"


def test_process_mode_needs_an_importable_function() -> None:
    registry = ToolRegistry()

    def local_tool(x: int) -> int:
        return x

    with pytest.raises(ToolDefinitionError, match="module"):
        registry.register(local_tool, sandbox="process")


@pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (apt-get install bubblewrap)"
)
async def test_isolated_mode_through_the_loop() -> None:
    """A port the host really listens on is unreachable from "isolated"; "process" reaches it."""
    from agentloop.testing import FakeFluxRouter

    async with FakeFluxRouter() as listening:
        port = int(listening.url.rsplit(":", 1)[1])
        script = [
            tool_calls(
                call("write_file", {"path": "/etc/agentloop-pwned"}),
                call("connect", {"host": "127.0.0.1", "port": port}),
                call("write_file", {"path": "inside.txt"}),
            ),
            text("done"),
        ]
        isolated = ToolRegistry(sandbox="isolated")
        process = ToolRegistry(sandbox="process")
        for registry in (isolated, process):
            registry.register(st.write_file)
            registry.register(st.connect)
        async with isolated, process:
            boxed = await Agent(client=ScriptedModel(script), tools=isolated).run("go")
            control = await Agent(
                client=ScriptedModel(
                    [tool_calls(call("connect", {"host": "127.0.0.1", "port": port})), text("done")]
                ),
                tools=process,
            ).run("go")
    outside, net, inside = boxed.tool_calls
    assert outside.status == "raised" and "Read-only file system" in outside.content
    assert not os.path.exists("/etc/agentloop-pwned")
    # Landlock (ABI >= 4) denies the connect() (PermissionError) before the empty namespace does.
    assert net.status == "raised" and ("Connection" in net.content or "PermissionError" in net.content)
    assert inside.status == "ok" and inside.content.startswith("/scratch/")
    assert control.tool_calls[0].status == "ok" and control.tool_calls[0].content == "connected"
