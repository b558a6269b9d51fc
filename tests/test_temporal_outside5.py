"""The new user's round 5 (outside-in review) on Temporal.

1. A tool's output cap (`Limits(output_bytes=...)`, 64 KB by default) holds on Temporal as in a
   plain run: the same cut, marker, outcome and text for the model, and what the model was sent
   is byte for byte the same. An activity's result is a Temporal payload (2 MB at most); the cap
   is applied by the tool call on the worker, before the result becomes one, so a capped tool
   never nears it (a tool without a cap is cut to 1.5 MB of JSON there:
   tests/test_temporal_versions.py). The same run carries a call whose arguments are encoded
   twice (tests/test_double_encoded_arguments.py): the workflow unwraps them as in-process.
2. `start_run` refuses an agent with `deps_type=` and no `deps=` as `Agent.run` does
   (tests/test_deps_required.py), before any workflow starts.

The fixtures and `both` (in-process, then on Temporal, then Temporal's Replayer over the
history) are tests/test_temporal_parity.py's. Asyncio only (Temporal's SDK)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("temporalio", reason="temporalio is not installed: pip install 'agentloop[temporal]'")

from temporalio.testing import WorkflowEnvironment

from agentloop import Agent, ConfigurationError, Limits, ToolRegistry
from agentloop.temporal import start_run
from agentloop.testing import ScriptedModel, call, text, tool_calls

sys.path.insert(0, str(Path(__file__).parent))
import test_temporal
from test_temporal_parity import assert_same, both

anyio_backend, env = test_temporal.anyio_backend, test_temporal.env  # its fixtures

pytestmark = pytest.mark.anyio

capped = ToolRegistry()


@capped.tool(limits=Limits(output_bytes=1_000))
async def report(n: int) -> str:
    """A report of n characters."""
    return "é" * n  # two bytes each: the cap counts UTF-8 bytes


@capped.tool  # the registry's default Limits: output_bytes=64_000
async def dump(n: int) -> list[str]:
    """n lines, as JSON."""
    return ["line"] * n


@capped.tool
async def weather(city: str) -> str:
    """The forecast."""
    return f"{city}: sunny"


async def test_a_tools_output_cap_holds_on_temporal_as_in_process(env: WorkflowEnvironment) -> None:
    script = [
        tool_calls(
            call("report", {"n": 5_000}, id="r"),
            call("dump", {"n": 10_000}, id="d"),
            call("weather", json.dumps(json.dumps({"city": "Paris"})), id="w"),
        ),
        text("done"),
    ]

    def make(model: Any) -> Agent[Any, Any]:
        return Agent(client=model, tools=capped)

    b = await both(env, make, script, tools=capped)
    assert_same(b)  # result, records (status, content), conversation, and every request body
    by_id = {r.id: r for r in b.remote.tool_calls}
    report_text, dump_text = by_id["r"].content, by_id["d"].content
    assert by_id["r"].status == by_id["d"].status == "output_limit"
    assert report_text.endswith("\n[output truncated: 10000 bytes, limit 1000]")
    assert len(report_text.split("\n[output")[0].encode()) == 1_000  # 500 whole characters
    assert dump_text.endswith(
        f"\n[output truncated: {len(json.dumps(['line'] * 10_000, separators=(',', ':')))} bytes, limit 64000]"
    )
    assert len(dump_text.split("\n[output")[0].encode()) == 64_000
    assert (by_id["w"].status, by_id["w"].content) == ("ok", "Paris: sunny")


async def test_start_run_refuses_deps_type_without_deps(env: WorkflowEnvironment) -> None:
    agent = Agent[dict[str, Any], str](client=ScriptedModel([]), tools=capped, deps_type=dict[str, Any])
    with pytest.raises(ConfigurationError, match=r"deps_type=dict\[str, Any\]"):
        await start_run(env.client, agent, "go", task_queue="q-never-polled")
