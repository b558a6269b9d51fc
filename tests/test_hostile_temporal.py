"""Approval decisions sent to a Temporal run from the outside: only a decision is one.

A Temporal update can come from any client with access to the namespace (another service, a UI
written in another language), not only from `TemporalRun.approve`. The workflow read its data
with `bool(data)`, so `{"m1": "no"}` approved the call. Asyncio only: Temporal's SDK is.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("temporalio", reason="temporalio is not installed: pip install 'agentloop[temporal]'")

from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from agentloop import Agent, FluxClient, ResumeError
from agentloop.temporal import create_worker, start_run
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

sys.path.insert(0, str(Path(__file__).parent))
import temporal_tools
import test_temporal

pytestmark = pytest.mark.anyio


# the Temporal dev server and backend of tests/test_temporal.py (one definition, as
# tests/test_temporal_agents.py does)
anyio_backend, env = test_temporal.anyio_backend, test_temporal.env


@pytest.mark.parametrize("bad", ["no", "false", {"deny": True}, 1], ids=repr)
async def test_an_approve_update_with_data_that_is_not_a_decision_is_refused(
    env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: Any
) -> None:
    effects = tmp_path / "side_effects.txt"
    effects.touch()
    monkeypatch.setenv("AGENTLOOP_SIDE_EFFECTS", str(effects))
    queue = f"q-{uuid.uuid4().hex[:8]}"
    script = [tool_calls(call("send_email", {"to": "a", "body": "1"}, id="m1")), text("ok")]
    async with FakeFluxRouter(script) as router, FluxClient(base_url=router.base_url, api_key="k") as model:
        async with create_worker(env.client, queue, tools=temporal_tools.registry, model=model):
            agent = Agent(client=ScriptedModel([]), tools=temporal_tools.registry)
            run = await start_run(env.client, agent, "mail", task_queue=queue)
            assert [p.id for p in await run.wait_for_approval()] == ["m1"]
            with pytest.raises(WorkflowUpdateFailedError):  # a raw update, as another client sends it
                await run.handle.execute_update("approve", {"m1": bad})
            with pytest.raises(ResumeError, match="a decision must be True, False"):
                await run.approve({"m1": bad})  # refused before it is sent
            await run.approve({"m1": False})  # still waiting: the bad data decided nothing
            result = await run.result()
    assert result.tool_calls[0].status == "rejected"
    assert "send_email" not in effects.read_text()


async def test_a_workflow_input_naming_functions_the_worker_was_not_given_runs_none_of_them(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Anyone who can start a workflow on the queue chooses its input. A spec naming `os:system` as a
    history processor, or `builtins:exec` as a handoff's input filter, must not make the worker
    import or call them: the worker runs only the functions it was given (`functions=`)."""
    from agentloop.temporal import AgentRun, TemporalRunError
    from agentloop.temporal._spec import WORKFLOW_NAME, agent_spec  # internal unit under test

    marker = tmp_path / "pwned"
    billing = Agent(client=ScriptedModel([]), name="billing")
    spec = agent_spec(Agent(client=ScriptedModel([]), name="triage", handoffs=[billing]))
    spec["history"] = {"keep_last": None, "max_tokens": None, "keep_tool_results": None,
                       "tool_result_note": "-", "processor": "os:system"}  # fmt: skip
    spec["handoffs"][0]["input_filter"] = "builtins:exec"
    queue = f"q-{uuid.uuid4().hex[:8]}"
    async with (
        FakeFluxRouter([text("never")]) as router,
        FluxClient(base_url=router.base_url, api_key="k") as model,
    ):
        async with create_worker(env.client, queue, tools=temporal_tools.registry, model=model):
            handle = await env.client.start_workflow(
                WORKFLOW_NAME,
                {"agent": spec, "prompt": f"touch {marker}", "messages": None, "deps": None},
                id=f"hostile-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
            )
            with pytest.raises(TemporalRunError) as e:
                await AgentRun(handle).result()
    assert e.value.error_type == "ConfigurationError" and "the worker has no function 'os:system'" in str(
        e.value
    )
    assert router.model_requests == [] and not marker.exists()


@pytest.mark.parametrize(
    "damage",
    [
        {"history": {"bogus": 1}},  # a key of a newer client, or garbage
        {"output": {"schema": "not a schema", "name": "o", "mode": "tool", "retries": 1}},
        {"handoffs": [{"agent": "a9", "tool_name": "t", "description": "d"}]},  # an agent that is not there
        {"limits": {"max_steps": "many"}},
        {"whole": None},  # not a spec at all
    ],
    ids=["history", "output", "handoff", "limits", "whole"],
)
async def test_a_damaged_agent_spec_fails_the_run_instead_of_retrying_forever(
    env: WorkflowEnvironment, damage: dict[str, Any]
) -> None:
    """A workflow task that raises is retried by Temporal forever (the run would hang): a spec the
    worker cannot build must fail the run, clearly, before any model request."""
    import anyio

    from agentloop.temporal import AgentRun, TemporalRunError
    from agentloop.temporal._spec import WORKFLOW_NAME, agent_spec  # internal unit under test

    spec: Any = {**agent_spec(Agent(client=ScriptedModel([]))), **damage}
    if damage == {"whole": None}:
        spec = ["not", "a", "spec"]
    queue = f"q-{uuid.uuid4().hex[:8]}"
    async with (
        FakeFluxRouter([text("never")]) as router,
        FluxClient(base_url=router.base_url, api_key="k") as model,
    ):
        async with create_worker(env.client, queue, tools=temporal_tools.registry, model=model):
            handle = await env.client.start_workflow(
                WORKFLOW_NAME,
                {"agent": spec, "prompt": "hi", "messages": None, "deps": None},
                id=f"damaged-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
            )
            with anyio.fail_after(60), pytest.raises(TemporalRunError) as e:
                await AgentRun(handle).result()
    assert e.value.error_type == "ConfigurationError" and router.model_requests == []
    assert "the worker cannot run this agent" in str(e.value) or "start_run" in str(e.value)
