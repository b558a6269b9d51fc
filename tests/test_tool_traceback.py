"""A raising tool is debuggable in every sandbox mode; the model sees only the formatted text (issue #13).

The traceback (text) is on the record and in the log with the run/step/call ids;
`format_tool_error` is honoured for "process" / "isolated" too (it used to be ignored there),
and every error text names the tool.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

import pytest
import sandbox_tools as st

from agentloop import Agent, Limits, SandboxedToolError, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio

MODES = [
    "inline",
    "thread",
    "process",
    pytest.param(
        "isolated",
        marks=pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
    ),
]


async def async_boom(message: str) -> None:
    raise ValueError(message)


def registry(mode: str) -> ToolRegistry:
    tools = ToolRegistry(limits=Limits(timeout=30))
    fn = async_boom if mode == "inline" else st.boom
    tools.register(fn, name="boom", sandbox=mode)  # type: ignore[arg-type]
    return tools


async def run_boom(mode: str, **agent_options: Any) -> tuple[Any, ScriptedModel]:
    model = ScriptedModel([tool_calls(call("boom", {"message": "disk on fire"}, id="c1")), text("sorry")])
    async with registry(mode) as tools:
        result = await Agent(client=model, tools=tools, **agent_options).run("go")
    return result, model


@pytest.mark.parametrize("mode", MODES)
async def test_traceback_is_on_the_record_and_the_model_sees_only_the_text(mode: str) -> None:
    result, model = await run_boom(mode)
    record = result.tool_calls[0]
    assert record.status == "raised"
    assert record.content == "Tool 'boom' raised ValueError: disk on fire"  # the same text in every mode
    assert record.traceback is not None
    assert record.traceback.startswith("Traceback (most recent call last)")
    assert "boom" in record.traceback and record.traceback.rstrip().endswith("ValueError: disk on fire")
    fed_back = model.requests[1]["messages"][-1]
    assert fed_back == {"role": "tool", "tool_call_id": "c1", "content": record.content}
    assert "Traceback" not in fed_back["content"]


@pytest.mark.parametrize("mode", MODES)
async def test_format_tool_error_is_used_in_every_mode(mode: str) -> None:
    seen: list[tuple[str, BaseException]] = []

    def formatter(tool_name: str, exc: BaseException) -> str:
        seen.append((tool_name, exc))
        return f"{tool_name} failed, try something else"

    result, _ = await run_boom(mode, format_tool_error=formatter)
    assert result.tool_calls[0].content == "boom failed, try something else"
    [(name, exc)] = seen
    assert name == "boom" and str(exc) == "disk on fire"
    if mode in ("process", "isolated"):
        assert isinstance(exc, SandboxedToolError)
        assert exc.exc_type == "ValueError" and "boom" in exc.traceback
    else:
        assert isinstance(exc, ValueError) and exc.__traceback__ is not None


@pytest.mark.parametrize("mode", ["thread", "process"])
async def test_traceback_is_logged_with_run_step_and_call_ids(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agentloop"):
        result, _ = await run_boom(mode)
    [entry] = [r for r in caplog.records if r.getMessage().startswith("tool raised: ")]
    assert entry.levelno == logging.WARNING
    assert entry.run_id == result.run_id  # type: ignore[attr-defined]
    assert entry.step == 1 and entry.tool_call_id == "c1" and entry.tool == "boom"  # type: ignore[attr-defined]
    assert entry.traceback == result.tool_calls[0].traceback  # type: ignore[attr-defined]


@pytest.mark.parametrize("formatter", [lambda name, exc: 1 / 0, lambda name, exc: None])
async def test_a_broken_formatter_falls_back_to_the_default_text(formatter: Any) -> None:
    result, _ = await run_boom("thread", format_tool_error=formatter)
    assert result.tool_calls[0].content == "Tool 'boom' raised ValueError: disk on fire"
    assert result.output == "sorry"


async def test_sandbox_failures_name_the_tool() -> None:
    tools = ToolRegistry(sandbox="process")
    tools.register(st.block_forever, limits=Limits(timeout=0.2))
    tools.register(st.segfault)
    model = ScriptedModel([tool_calls(call("block_forever", {}), call("segfault", {})), text("ok")])
    async with tools:
        result = await Agent(client=model, tools=tools).run("go")
    timeout, crash = result.tool_calls
    assert timeout.status == "timeout" and timeout.content.startswith("Tool 'block_forever' timed out")
    assert crash.status == "crashed" and crash.content.startswith("Tool 'segfault' ")
    assert timeout.traceback is None and crash.traceback is None


async def test_traceback_survives_to_json_and_back() -> None:
    from agentloop import RunResult

    result, _ = await run_boom("thread")
    again = RunResult.from_json(result.to_json())
    assert again.tool_calls[0].traceback == result.tool_calls[0].traceback
