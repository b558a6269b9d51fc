"""The #17 features on Temporal: structured output, history policies, dynamic instructions, deps,
agent tools (`Agent.as_tool`) and handoffs, each run as a workflow against Temporal's dev server
(the fixtures of tests/test_temporal.py), with the worker's model a FluxClient over the real-HTTP
fake router. Every multi-agent history is replayed by Temporal's `Replayer` under the sandboxed
runner, so the workflow code stays deterministic with these features on. asyncio only: Temporal's
Python SDK supports nothing else. Every test is bounded (`fail_after`)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("temporalio", reason="temporalio is not installed: pip install 'agentloop[temporal]'")

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from agentloop import (
    Agent,
    ConfigurationError,
    FluxClient,
    Handoff,
    History,
    OutputValidationError,
    RunContext,
    RunLimits,
    StepLimitExceeded,
    ToolRegistry,
)
from agentloop.temporal import AgentWorkflow, TemporalRunError, create_worker, sandbox_runner, start_run
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

sys.path.insert(0, str(Path(__file__).parent))
import test_temporal

anyio_backend, env, queue = (
    test_temporal.anyio_backend,
    test_temporal.env,
    test_temporal.queue,
)  # its fixtures
from wirehelp import last_tool_result, system_text, tool_names  # noqa: E402

pytestmark = pytest.mark.anyio
BOUND_S = 300  # a failing workflow task is retried forever: it must fail the test, not hang it


@dataclass
class Invoice:
    customer: str
    total: float


# The worker's registry: every tool of every agent of these tests (one registry per worker).
worker_tools = ToolRegistry()
seen_contexts: list[tuple[Any, ...]] = []


@worker_tools.tool
async def search(q: str) -> str:
    """Search the web."""
    return f"results for {q}"


@worker_tools.tool
async def lookup(key: str) -> str:
    """Look a key up in billing."""
    return f"billing:{key}"


@worker_tools.tool(requires_approval=True)
async def refund(amount: int) -> str:
    """Refund an amount (needs approval)."""
    return f"refunded {amount}"


@worker_tools.tool
async def whoami(ctx: RunContext[dict[str, Any]]) -> str:
    """Who is asking."""
    seen_contexts.append((ctx.deps, ctx.run_id, ctx.tool_call_id, ctx.tool_name, ctx.step))
    return str(ctx.deps["user"])


def tools_named(*names: str) -> ToolRegistry:
    """A client-side registry with some of the worker's tools (the agent names them; the worker runs them)."""
    reg = ToolRegistry()
    for name in names:
        tool = worker_tools.get(name)
        assert tool is not None
        reg.add(tool)
    return reg


def client_agent(**kw: Any) -> Agent[Any, Any]:
    return Agent(client=ScriptedModel([]), **kw)


async def run_on_temporal(
    env: WorkflowEnvironment,
    queue: str,
    router: FakeFluxRouter,
    agent: Agent[Any, Any],
    prompt: str,
    **kw: Any,
) -> tuple[Any, Any]:
    """Start `agent` on a worker over `router`; return (result or exception, workflow history)."""
    with anyio.fail_after(BOUND_S):
        async with FluxClient(base_url=router.base_url, api_key="k") as model:
            async with create_worker(env.client, queue, tools=worker_tools, model=model):
                run = await start_run(env.client, agent, prompt, task_queue=queue, **kw)
                try:
                    outcome: Any = await run.result()
                except Exception as e:
                    outcome = e
                return outcome, await run.handle.fetch_history()


async def replays(history: Any) -> None:
    replayer = Replayer(workflows=[AgentWorkflow], workflow_runner=sandbox_runner())
    await replayer.replay_workflow(history)  # raises on any nondeterminism


# --- structured output -------------------------------------------------------------------------


async def test_a_structured_output_is_validated_in_the_workflow_and_typed_on_the_client(
    env: WorkflowEnvironment, queue: str
) -> None:
    async with FakeFluxRouter() as router:
        router.add(
            tool_calls(call("final_result", {"customer": "Ana"}, id="bad")),  # invalid: fed back
            tool_calls(call("final_result", {"customer": "Ana", "total": 9.5}, id="good")),
        )
        agent = client_agent(tools=tools_named("search"), output_type=Invoice)
        result, history = await run_on_temporal(env, queue, router, agent, "Invoice for Ana")
    assert result.output == Invoice("Ana", 9.5)  # the type again, from the workflow's JSON
    first, second = (r.json for r in router.model_requests)
    assert "final_result" in tool_names(first) and first["tool_choice"] == "required"
    assert "'total' is a required property" in last_tool_result(second)
    await replays(history)


async def test_output_validation_error_comes_back_with_the_partial_result(
    env: WorkflowEnvironment, queue: str
) -> None:
    async with FakeFluxRouter() as router:
        router.add(*(tool_calls(call("final_result", {"customer": 1})) for _ in range(2)))
        agent = client_agent(output_type=Invoice, output_mode="tool", output_retries=1)
        outcome, _ = await run_on_temporal(env, queue, router, agent, "Invoice")
    assert isinstance(outcome, OutputValidationError)
    assert outcome.result.stop_reason == "output_invalid" and outcome.errors
    assert json.loads(outcome.last_answer or "null") == {"customer": 1}


async def test_native_output_on_the_workers_openai_wire(env: WorkflowEnvironment, queue: str) -> None:
    async with FakeFluxRouter() as router:
        router.add(text(json.dumps({"response": [{"customer": "Bo", "total": 1}]})))
        agent = client_agent(output_type=list[Invoice])  # no tools, OpenAI wire on the worker: native
        result, _ = await run_on_temporal(env, queue, router, agent, "Invoices")
    assert result.output == [Invoice("Bo", 1.0)]
    body = router.model_requests[0].json
    assert body["response_format"]["type"] == "json_schema" and "tools" not in body


# --- history, instructions, deps ---------------------------------------------------------------


async def test_a_history_policy_shapes_each_request_and_the_result_keeps_everything(
    env: WorkflowEnvironment, queue: str
) -> None:
    async with FakeFluxRouter() as router:
        router.add(*(tool_calls(call("search", {"q": str(i)})) for i in range(4)), text("done"))
        agent = client_agent(tools=tools_named("search"), history=History(keep_last=2))
        result, history = await run_on_temporal(env, queue, router, agent, "go")
    assert result.output == "done" and len(result.messages) == 10  # all of it
    sent = [len(r.json["messages"]) for r in router.model_requests]
    assert sent[0] == 1 and max(sent) <= 5  # the task + the last two turns, never more
    await replays(history)


async def test_dynamic_instructions_are_resolved_once_with_the_runs_context(
    env: WorkflowEnvironment, queue: str
) -> None:
    calls: list[tuple[Any, str, int]] = []

    async def instructions(ctx: RunContext[dict[str, str]]) -> str:
        calls.append((ctx.deps, ctx.run_id, ctx.step))
        return f"The user is {ctx.deps['user']}."

    async with FakeFluxRouter() as router:
        router.add(tool_calls(call("whoami", {}, id="w1")), text("You are ann."))
        agent = client_agent(tools=tools_named("whoami"), instructions=instructions)
        result, history = await run_on_temporal(
            env, queue, router, agent, "who am I?", deps={"user": "ann"}, run_id="dyn-1"
        )
    assert result.output == "You are ann."
    assert calls == [({"user": "ann"}, "dyn-1", 0)]
    assert [system_text(r.json) for r in router.model_requests] == ["The user is ann."] * 2
    # the tool on the worker got the deps and the model's own call id and step
    assert ({"user": "ann"}, "dyn-1", "w1", "whoami", 1) in seen_contexts
    await replays(history)


async def test_deps_that_are_not_json_data_are_refused_before_anything_starts() -> None:
    agent = client_agent(tools=tools_named("whoami"))

    @dataclass
    class Deps:
        user: str

    for bad in (Deps("ann"), {"when": {1, 2}}, {1: "int key"}, float("nan"), ("a", "tuple")):
        with pytest.raises(ConfigurationError, match="deps on Temporal must be JSON data"):
            await start_run(None, agent, "hi", task_queue="q", deps=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown options"):
        await start_run(None, agent, "hi", task_queue="q", dep={"a": 1})  # type: ignore[arg-type, call-arg]


# --- agent tools and handoffs ------------------------------------------------------------------


def research(**kw: Any) -> Agent[Any, Any]:
    return client_agent(name="research", instructions="You research.", tools=tools_named("search"), **kw)


async def test_an_agent_tool_runs_its_inner_agent_in_the_workflow(
    env: WorkflowEnvironment, queue: str
) -> None:
    outer_tools = ToolRegistry()
    outer_tools.register(research().as_tool(description="Research a topic."))
    outer = client_agent(name="desk", instructions="You answer.", tools=outer_tools)
    async with FakeFluxRouter() as router:
        router.add(
            tool_calls(call("research", {"input": "green tea"}, id="out")),
            tool_calls(call("search", {"q": "green tea"}, id="in")),
            text("Green tea is good."),
            text("Research says: good."),
        )
        result, history = await run_on_temporal(env, queue, router, outer, "Is green tea good?")
    assert result.output == "Research says: good."
    first, inner1, inner2, last = (r.json for r in router.model_requests)
    assert tool_names(first) == ["research"] and system_text(first) == "You answer."
    assert tool_names(inner1) == ["search"] and system_text(inner1) == "You research."
    assert last_tool_result(inner2) == "results for green tea"  # the inner tool ran on the worker
    assert last_tool_result(last) == "Green tea is good."
    assert result.usage.requests == 4  # the inner run's requests counted in the outer result, once
    assert [(r.id, r.status) for r in result.tool_calls] == [("out", "ok")]
    await replays(history)


async def test_an_agent_that_is_its_own_tool_is_bounded_by_the_outer_budget(
    env: WorkflowEnvironment, queue: str
) -> None:
    tools = ToolRegistry()
    agent = client_agent(name="myself", tools=tools, limits=RunLimits(max_steps=4, loop_threshold=None))
    tools.register(agent.as_tool())
    async with FakeFluxRouter(lambda req: tool_calls(call("myself", {"input": "again"}))) as router:
        outcome, _ = await run_on_temporal(env, queue, router, agent, "go")
    assert isinstance(outcome, StepLimitExceeded)
    assert len(router.model_requests) == 4 and outcome.result.usage.requests == 4
    assert outcome.result.tool_calls[0].status == "raised"  # the inner run stopped on the shared budget


async def test_an_inner_agent_that_fails_is_a_tool_error_for_the_outer_model(
    env: WorkflowEnvironment, queue: str
) -> None:
    outer_tools = ToolRegistry()
    outer_tools.register(research(max_steps=1).as_tool())
    outer = client_agent(tools=outer_tools)
    async with FakeFluxRouter() as router:
        router.add(
            tool_calls(call("research", {"input": "x"})),
            tool_calls(call("search", {"q": "a"})),  # the inner agent may make one request only
            text("It could not research it."),
        )
        result, _ = await run_on_temporal(env, queue, router, outer, "q")
    assert result.output == "It could not research it."
    assert result.tool_calls[0].status == "raised" and "StepLimitExceeded" in result.tool_calls[0].content


async def test_a_handoff_then_an_approval_pause_continue_with_the_agent_handed_to(
    env: WorkflowEnvironment, queue: str
) -> None:
    billing = client_agent(
        name="billing", instructions="You do billing.", tools=tools_named("lookup", "refund")
    )
    triage = client_agent(
        name="triage", instructions="You triage.", tools=tools_named("search"), handoffs=[billing]
    )
    async with FakeFluxRouter() as router:
        router.add(
            tool_calls(call("transfer_to_billing", {})),
            tool_calls(call("lookup", {"key": "A-17"}), call("refund", {"amount": 5}, id="r")),
            text("Refunded 5."),
        )
        with anyio.fail_after(BOUND_S):
            async with FluxClient(base_url=router.base_url, api_key="k") as model:
                async with create_worker(env.client, queue, tools=worker_tools, model=model):
                    run = await start_run(env.client, triage, "refund A-17", task_queue=queue)
                    pending = await run.wait_for_approval()
                    assert [(p.id, p.name) for p in pending] == [("r", "refund")]
                    await run.approve({"r": True})
                    result = await run.result()
                    history = await run.handle.fetch_history()
    assert result.output == "Refunded 5." and result.agent_name == "billing"
    assert {r.name: r.status for r in result.tool_calls} == {
        "transfer_to_billing": "ok",
        "lookup": "ok",
        "refund": "ok",
    }
    first, second, third = (r.json for r in router.model_requests)
    assert sorted(tool_names(first)) == ["search", "transfer_to_billing"]
    assert system_text(second) == "You do billing." and sorted(tool_names(second)) == ["lookup", "refund"]
    assert system_text(third) == "You do billing."  # resumed after the pause with billing, not triage
    await replays(history)


async def test_a_handoff_loop_is_bounded_by_max_steps(env: WorkflowEnvironment, queue: str) -> None:
    b = client_agent(name="b")
    a = client_agent(name="a", handoffs=[b], limits=RunLimits(max_steps=5, loop_threshold=None))
    b.handoffs = client_agent(name="b", handoffs=[a]).handoffs  # a <-> b

    def handler(req: Any) -> Any:
        names = tool_names(req.json)
        return tool_calls(call(names[0], {}))

    async with FakeFluxRouter(handler) as router:
        outcome, _ = await run_on_temporal(env, queue, router, a, "go")
    assert isinstance(outcome, StepLimitExceeded) and len(router.model_requests) == 5


# --- what cannot cross, and a worker that lacks a tool -----------------------------------------


def test_what_cannot_be_sent_to_a_workflow_is_refused_with_the_way_out() -> None:
    from agentloop.temporal._spec import agent_spec  # internal unit under test

    inner = client_agent(name="inner", instructions=lambda ctx: "dynamic")
    tools = ToolRegistry()
    tools.register(inner.as_tool())
    with pytest.raises(ConfigurationError, match=r"agent 'inner': instructions=<function>.*`def`"):
        agent_spec(client_agent(tools=tools))  # runs on the worker, by name (tests/test_temporal_parity.py)
    # a named input_filter / History processor runs on the worker (tests/test_temporal_parity.py); a
    # lambda has no name the worker could have it by
    with pytest.raises(
        ConfigurationError, match=r"input_filter of the handoff 'transfer_to_research'.*`def`"
    ):
        agent_spec(client_agent(handoffs=[Handoff(research(), input_filter=lambda m: m)]))
    with pytest.raises(ConfigurationError, match=r"History\(processor=...\): .*`def`"):
        agent_spec(client_agent(history=History(processor=lambda ctx, m: m)))
    # a text fallback (str | Invoice) works on Temporal: tests/test_temporal_parity.py
    other = ToolRegistry()

    @other.tool(name="search")
    async def search2(q: int) -> str:
        return "other"

    twin = client_agent(name="twin", tools=other)
    with pytest.raises(ConfigurationError, match="both have a tool named 'search'"):
        agent_spec(research(handoffs=[twin]))
    spec = agent_spec(research(handoffs=[client_agent(name="billing", tools=tools_named("lookup"))]))
    assert spec["tools"] == ["search"] and spec["agents"]["a1"]["tools"] == ["lookup"]


async def test_a_worker_without_an_agents_tool_fails_the_run_clearly(
    env: WorkflowEnvironment, queue: str
) -> None:
    mine = ToolRegistry()

    @mine.tool
    async def not_on_the_worker(x: int) -> int:
        return x

    async with FakeFluxRouter() as router:
        outcome, _ = await run_on_temporal(env, queue, router, client_agent(tools=mine), "go")
    assert isinstance(outcome, TemporalRunError) and outcome.error_type == "ConfigurationError"
    assert "the worker has no tool 'not_on_the_worker'" in str(outcome)
    assert router.model_requests == []


async def test_an_approval_inside_an_agent_tool_pauses_the_workflow(
    env: WorkflowEnvironment, queue: str
) -> None:
    billing = client_agent(name="billing", tools=tools_named("refund"))
    outer_tools = ToolRegistry()
    outer_tools.register(billing.as_tool())
    desk = client_agent(name="desk", tools=outer_tools)
    async with FakeFluxRouter() as router:
        router.add(
            tool_calls(call("billing", {"input": "refund 5"}, id="out")),
            tool_calls(call("refund", {"amount": 5}, id="r")),
            text("Refunded."),
            text("Done."),
        )
        with anyio.fail_after(BOUND_S):
            async with FluxClient(base_url=router.base_url, api_key="k") as model:
                async with create_worker(env.client, queue, tools=worker_tools, model=model):
                    run = await start_run(env.client, desk, "refund 5", task_queue=queue)
                    pending = await run.wait_for_approval()
                    assert [(p.id, p.name, p.arguments) for p in pending] == [
                        ("out/r", "refund", {"amount": 5})
                    ]
                    await run.approve({"out/r": True})
                    result = await run.result()
                    history = await run.handle.fetch_history()
    assert result.output == "Done." and result.usage.requests == 4 and len(router.model_requests) == 4
    assert last_tool_result(router.model_requests[2].json) == "refunded 5"
    await replays(history)


# --- the agent graph survives the trip, whatever its shape -------------------------------------


@given(
    n=st.integers(1, 5),
    edges=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.booleans()), max_size=10),
)
@settings(max_examples=examples(25), deadline=None)
def test_any_graph_of_agent_tools_and_handoffs_is_rebuilt_as_it_was(
    n: int, edges: list[tuple[int, int, bool]]
) -> None:
    """Circles, self-loops, shared targets: `agent_spec` then `build_agents` (what the workflow runs)
    gives the same agents, each with the same worker tools, agent tools and handoff targets."""
    from agentloop.temporal._agents import build_agents  # internal unit under test
    from agentloop.temporal._spec import agent_spec  # internal unit under test

    agents = [
        client_agent(name=f"ag{i}", tools=tools_named("search") if i % 2 else ToolRegistry())
        for i in range(n)
    ]
    handoffs: dict[int, list[int]] = {i: [] for i in range(n)}
    for src, dst, as_tool in edges:
        src, dst = src % n, dst % n
        if as_tool and f"t{dst}" not in agents[src].tools:
            agents[src].tools.register(agents[dst].as_tool(name=f"t{dst}"))
        elif not as_tool and dst not in handoffs[src] and src != dst:
            handoffs[src].append(dst)
    for i, targets in handoffs.items():  # after the agent tools: handoffs may close circles too
        if targets:
            agents[i].handoffs = client_agent(
                name=f"ag{i}", tools=agents[i].tools, handoffs=[agents[t] for t in targets]
            ).handoffs

    def shape(root: Agent[Any, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        todo = [root]
        while todo:
            a = todo.pop()
            if a.name in out:
                continue
            inner = {t.name: getattr(t.fn, "__agentloop_agent__", None) for t in a.tools}
            out[a.name] = (
                sorted(name for name, agent in inner.items() if agent is None),
                sorted((name, agent.name) for name, agent in inner.items() if agent is not None),
                [h.agent.name for h, _ in a.handoffs],
            )
            todo += [agent for agent in inner.values() if agent is not None] + [
                h.agent for h, _ in a.handoffs
            ]
        return out

    available = {"search": {"name": "search", "definition": worker_tools.get("search").definition,  # type: ignore[union-attr]
                            "idempotent": False, "requires_approval": False}}  # fmt: skip
    model = ScriptedModel([])

    def tools_for(specs: list[dict[str, Any]]) -> ToolRegistry:
        return tools_named(*(s["name"] for s in specs))

    rebuilt = build_agents(
        agent_spec(agents[0]), available, tools_for, lambda **kw: Agent(client=model, **kw)
    )
    assert shape(rebuilt) == shape(agents[0])
