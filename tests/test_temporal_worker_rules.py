"""What the worker decides for the workflow: the API key never leaves it; usage reports it cannot
count are decided by the workflow, which knows the budget.

On Temporal, a tool (or a worker function) that quotes the model's API key never hands it on.

In-process the loop cuts the client's credentials out of every tool outcome. On Temporal the
outcome is an activity's result: it goes into the workflow's history, the model's next request
and the run's result. The key is known on the worker (its `create_worker(model=FluxClient(...))`),
where the tools run, so the worker cuts it before the result leaves the activity.
Temporal's Python SDK runs on asyncio only, so these tests do too.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest

pytest.importorskip("temporalio", reason="temporalio is not installed: pip install 'agentloop[temporal]'")

from temporalio.testing import WorkflowEnvironment

from agentloop import Agent, APIResponseError, FluxClient, History, RunContext, RunLimits, ToolRegistry
from agentloop.temporal import TemporalRunError, create_worker, start_run
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio

KEY = "sk-live-0123456789abcdef"  # the worker's model key; the tools below quote it

tools = ToolRegistry()


@tools.tool
async def raises() -> None:
    """Fails as an SDK's auth error does: quoting the key."""
    raise RuntimeError(f"upstream refused key {KEY}")


@tools.tool(sandbox="thread")
def returns() -> dict[str, Any]:
    """Returns the key."""
    return {"text": f"the key is {KEY}"}


def leaky_processor(ctx: RunContext[Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    raise RuntimeError(f"history store refused key {KEY}")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # temporalio is asyncio-only


@pytest.fixture(scope="module")
async def env(temporal_address: str) -> WorkflowEnvironment:
    from temporalio.client import Client

    return WorkflowEnvironment.from_client(await Client.connect(temporal_address))


async def on_temporal(
    env: WorkflowEnvironment, agent: Agent[Any, Any], script: list[Any], **worker: Any
) -> Any:
    """The run's result (or its error), the model's requests and the history's raw bytes."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    async with FakeFluxRouter(script) as router, FluxClient(base_url=router.base_url, api_key=KEY) as model:
        async with create_worker(env.client, queue, tools=tools, model=model, **worker):
            run = await start_run(env.client, agent, "go", task_queue=queue)
            try:
                out: Any = await run.result()
            except TemporalRunError as e:
                out = e
            history = await run.handle.fetch_history()
    stored = b"".join(event.SerializeToString() for event in history.events)
    return out, router, stored


async def test_a_tool_quoting_the_worker_model_key_never_reaches_history_model_or_result(
    env: WorkflowEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    script = [tool_calls(call("raises", {}, id="c1"), call("returns", {}, id="c2")), text("done")]
    agent = Agent(client=ScriptedModel([]), tools=tools)
    with caplog.at_level(logging.DEBUG, logger="agentloop"):
        result, router, stored = await on_temporal(env, agent, script)
    assert result.output == "done"
    sent_back = [m for m in router.model_requests[-1].json["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in sent_back] == ["c1", "c2"]
    assert all(KEY not in m["content"] and "[redacted]" in m["content"] for m in sent_back), sent_back
    raised, returned = result.tool_calls
    assert (raised.status, returned.status) == ("raised", "ok")
    for record in result.tool_calls:
        assert all(KEY not in (f or "") for f in (record.content, record.error, record.traceback)), record
    assert raised.traceback and "[redacted]" in raised.traceback  # still there to debug with
    assert b"[redacted]" in stored and KEY.encode() not in stored  # Temporal's history
    assert KEY not in result.to_json()
    assert all(KEY not in json.dumps(r.__dict__, default=str) for r in caplog.records)  # the worker's logs


async def test_a_worker_function_quoting_the_key_fails_the_run_without_it(
    env: WorkflowEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Agent(client=ScriptedModel([]), tools=tools, history=History(processor=leaky_processor))
    with caplog.at_level(logging.WARNING):
        error, router, stored = await on_temporal(env, agent, [text("never")], functions=[leaky_processor])
    # temporalio logs the failed activity (message and traceback) on the worker: without the key
    assert "history store refused key [redacted]" in caplog.text and KEY not in caplog.text
    assert isinstance(error, TemporalRunError) and "history store refused key [redacted]" in str(error)
    assert KEY not in str(error) and KEY.encode() not in stored
    assert router.model_requests == []  # the processor runs before the first request


async def test_an_unreadable_usage_report_is_refused_only_under_a_budget(env: WorkflowEnvironment) -> None:
    """The worker's model activity counts it as 0 and says so; the workflow's loop decides."""
    script = [text("done", usage={"prompt_tokens": -3, "completion_tokens": 2})]
    free, _, _ = await on_temporal(env, Agent(client=ScriptedModel([]), tools=tools), script)
    assert free.output == "done" and free.usage.total_tokens == 2
    budgeted = Agent(client=ScriptedModel([]), tools=tools, limits=RunLimits(max_total_tokens=100))
    error, _, _ = await on_temporal(env, budgeted, list(script))
    assert isinstance(error, TemporalRunError) and error.error_type == APIResponseError.__name__
    assert "usage.prompt_tokens is -3" in str(error)
