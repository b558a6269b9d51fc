"""What a user of PydanticAI's Temporal integration expects to work on Temporal as it does in-process:
an output type with a text fallback (`str | T`), `History(processor=...)` and handoff
`input_filter`s. Each test gives the same model answers to the same agent in-process and on a
Temporal worker (Temporal's dev server, the fixtures of tests/test_temporal.py; the model a
FluxClient over the real-HTTP fake router) and compares what the user sees: the output (and its
type), the stop reason, the conversation, the tool calls, and what the model was sent. Every
recorded history is replayed by Temporal's `Replayer` under the sandboxed runner. asyncio only:
Temporal's Python SDK supports nothing else. Every run is bounded (`fail_after`)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("temporalio", reason="temporalio is not installed: pip install 'agentloop[temporal]'")

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from agentloop import Agent, FluxClient, OutputValidationError, RunResult, ToolRegistry
from agentloop.temporal import AgentWorkflow, create_worker, sandbox_runner, start_run
from agentloop.testing import FakeFluxRouter, call, text, tool_calls

sys.path.insert(0, str(Path(__file__).parent))
import test_temporal

anyio_backend, env = test_temporal.anyio_backend, test_temporal.env  # its fixtures

pytestmark = pytest.mark.anyio
BOUND_S = 300  # a failing workflow task is retried forever: it must fail the test, not hang it


@dataclass
class Invoice:
    customer: str
    total: float


tools = ToolRegistry()  # the worker's registry, and the agents' (the worker runs them by name)


@tools.tool
async def search(q: str) -> str:
    """Search the web."""
    return f"results for {q}"


@tools.tool
async def lookup(key: str) -> str:
    """Look a key up in billing."""
    return f"billing:{key}"


@dataclass
class Both:
    """One script run in-process and on Temporal: results (or exceptions), request bodies, history."""

    local: Any
    remote: Any
    local_sent: list[Any]
    remote_sent: list[Any]
    history: Any


async def in_process(
    make: Callable[[Any], Agent[Any, Any]], script: list[Any], prompt: str
) -> tuple[Any, list[Any]]:
    async with (
        FakeFluxRouter(list(script)) as router,
        FluxClient(base_url=router.base_url, api_key="k") as model,
    ):
        try:
            out: Any = await make(model).run(prompt)
        except Exception as e:
            out = e
        return out, [r.json for r in router.model_requests]


async def on_temporal(
    env: WorkflowEnvironment,
    make: Callable[[Any], Agent[Any, Any]],
    script: list[Any],
    prompt: str,
    **worker: Any,
) -> tuple[Any, list[Any], Any]:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    async with (
        FakeFluxRouter(list(script)) as router,
        FluxClient(base_url=router.base_url, api_key="k") as model,
    ):
        async with create_worker(env.client, queue, tools=tools, model=model, **worker):
            run = await start_run(env.client, make(model), prompt, task_queue=queue)
            try:
                out: Any = await run.result()
            except Exception as e:
                out = e
            return out, [r.json for r in router.model_requests], await run.handle.fetch_history()


async def both(
    env: WorkflowEnvironment,
    make: Callable[[Any], Agent[Any, Any]],
    script: list[Any],
    prompt: str = "go",
    **worker: Any,
) -> Both:
    """`make(model)` builds the agent (its client is used in-process only; on Temporal the worker's
    model answers). The same `script` of answers is given to both runs."""
    with anyio.fail_after(BOUND_S):
        local, local_sent = await in_process(make, script, prompt)
        remote, remote_sent, history = await on_temporal(env, make, script, prompt, **worker)
        await Replayer(workflows=[AgentWorkflow], workflow_runner=sandbox_runner()).replay_workflow(history)
    return Both(local, remote, local_sent, remote_sent, history)


def seen(outcome: Any) -> Any:
    """What the user sees of a run: its result, or the error and the partial result it carries."""
    result: RunResult[Any] = outcome.result if isinstance(outcome, Exception) else outcome
    return (
        type(outcome).__name__,
        result.output,
        type(result.output).__name__,
        result.stop_reason,
        result.agent_name,
        result.steps,
        result.messages,
        [(r.id, r.name, r.status, r.content) for r in result.tool_calls],
    )


def assert_same(b: Both) -> None:
    assert seen(b.remote) == seen(b.local)
    assert b.remote_sent == b.local_sent  # the model was asked the very same things


# --- 1. output_type with a text fallback -------------------------------------------------------


def invoice_or_text(model: Any) -> Agent[Any, Any]:
    return Agent(client=model, tools=tools, output_type=str | Invoice)


FINAL = call("final_result", {"customer": "Ana", "total": 9.5}, id="fin")
ANSWERS: dict[str, Callable[[int], Any]] = {  # by position: a call id is unique in the conversation
    "text": lambda i: text("Ana owes nothing."),
    "final": lambda i: tool_calls(call("final_result", {"customer": "Ana", "total": 9.5}, id=f"fin{i}")),
    "bad_final": lambda i: tool_calls(call("final_result", {"customer": "Ana"}, id=f"bad{i}")),
    "search": lambda i: tool_calls(call("search", {"q": "Ana"}, id=f"s{i}")),
    "search_and_final": lambda i: tool_calls(
        call("search", {"q": "Ana"}, id=f"s{i}"),
        call("final_result", {"customer": "Ana", "total": 9.5}, id=f"f{i}"),
    ),
}


def answers(names: list[str]) -> list[Any]:
    return [ANSWERS[n](i) for i, n in enumerate(names)]


@pytest.mark.parametrize(
    "names",
    [
        ["text"],
        ["final"],
        ["search", "text"],
        ["search", "final"],
        ["bad_final", "text"],
        ["bad_final", "final"],
        ["search_and_final"],
        ["bad_final", "bad_final"],  # output_retries=1: OutputValidationError, the same one
    ],
    ids="+".join,
)
async def test_a_text_fallback_gives_the_same_output_as_in_process(
    env: WorkflowEnvironment, names: list[str]
) -> None:
    b = await both(env, invoice_or_text, answers(names))
    assert_same(b)
    if names[-1] == "text":
        assert b.remote.output == "Ana owes nothing."
    elif names == ["bad_final", "bad_final"]:
        assert isinstance(b.remote, OutputValidationError) and b.remote.errors == b.local.errors
    else:
        assert b.remote.output == Invoice("Ana", 9.5)  # the type again on the client
    first = b.remote_sent[0]
    assert first["tool_choice"] == "auto"  # text is allowed: the final_result tool is not forced
    assert "final_result" in [t["function"]["name"] for t in first["tools"]]


@given(names=st.lists(st.sampled_from(sorted(ANSWERS)), min_size=1, max_size=4))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_any_answers_under_a_text_fallback_end_as_in_process(
    env: WorkflowEnvironment, names: list[str]
) -> None:
    script = [*answers(names), text("fallback")]  # the run always has an answer left
    assert_same(await both(env, invoice_or_text, script))


async def test_a_text_fallback_without_tools_is_asked_through_the_tool_not_native(
    env: WorkflowEnvironment,
) -> None:
    """No tools, OpenAI wire: `T` alone would be asked natively; `str | T` must be asked through the
    final_result tool (native cannot say "or text"), in-process and on Temporal alike."""
    b = await both(env, lambda m: Agent(client=m, output_type=str | Invoice), [text("just text")])
    assert_same(b)
    assert b.remote.output == "just text" and "response_format" not in b.remote_sent[0]


async def test_the_output_is_typed_by_the_agent_handed_to(env: WorkflowEnvironment) -> None:
    """After a handoff the output is the type of the agent that finished, as in-process."""

    def triage(model: Any) -> Agent[Any, Any]:
        billing = Agent(client=model, name="billing", output_type=str | Invoice)
        return Agent(client=model, name="triage", handoffs=[billing])

    b = await both(env, triage, [tool_calls(call("transfer_to_billing", {}, id="t")), tool_calls(FINAL)])
    assert_same(b)
    assert b.remote.output == Invoice("Ana", 9.5) and b.remote.agent_name == "billing"
