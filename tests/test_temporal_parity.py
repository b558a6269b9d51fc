"""What a user of PydanticAI's Temporal integration expects to work on Temporal as it does in-process:
an output type with a text fallback (`str | T`), `History(processor=...)` and handoff
`input_filter`s. Each test gives the same model answers to the same agent in-process and on a
Temporal worker (Temporal's dev server, the fixtures of tests/test_temporal.py; the model a
FluxClient over the real-HTTP fake router) and compares what the user sees: the output (and its
type), the stop reason, the conversation, the tool calls, and what the model was sent. Every
recorded history is replayed by Temporal's `Replayer` under the sandboxed runner. asyncio only:
Temporal's Python SDK supports nothing else. Every run is bounded (`fail_after`)."""

from __future__ import annotations

import functools
import json
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

from agentloop import (
    Agent,
    ConfigurationError,
    FluxClient,
    Handoff,
    History,
    OutputValidationError,
    RunContext,
    RunResult,
    ToolRegistry,
)
from agentloop.temporal import (
    AgentWorkflow,
    TemporalRunError,
    WorkerOptions,
    create_worker,
    sandbox_runner,
    start_run,
)
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

sys.path.insert(0, str(Path(__file__).parent))
import temporal_tools
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
    make: Callable[[Any], Agent[Any, Any]], script: list[Any], prompt: str, **per_run: Any
) -> tuple[Any, list[Any]]:
    async with (
        FakeFluxRouter(list(script)) as router,
        FluxClient(base_url=router.base_url, api_key="k") as model,
    ):
        try:
            out: Any = await make(model).run(prompt, **per_run)
        except Exception as e:
            out = e
        return out, [r.json for r in router.model_requests]


async def on_temporal(
    env: WorkflowEnvironment,
    make: Callable[[Any], Agent[Any, Any]],
    script: list[Any],
    prompt: str,
    per_run: dict[str, Any] | None = None,
    **worker: Any,
) -> tuple[Any, list[Any], Any]:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    async with (
        FakeFluxRouter(list(script)) as router,
        FluxClient(base_url=router.base_url, api_key="k") as model,
    ):
        async with create_worker(env.client, queue, **{"tools": tools, "model": model, **worker}):
            run = await start_run(env.client, make(model), prompt, task_queue=queue, **(per_run or {}))
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
    per_run: dict[str, Any] | None = None,
    **worker: Any,
) -> Both:
    """`make(model)` builds the agent (its client is used in-process only; on Temporal the worker's
    model answers). The same `script` of answers is given to both runs, with the same `per_run`
    options (`deps=`, `instructions=`, ...); `worker` goes to `create_worker` (`tools=` replaces
    this module's registry)."""
    with anyio.fail_after(BOUND_S):
        local, local_sent = await in_process(make, script, prompt, **(per_run or {}))
        remote, remote_sent, history = await on_temporal(env, make, script, prompt, per_run, **worker)
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


# --- 2. History(processor=...) -------------------------------------------------------------------

processor_calls: list[tuple[Any, ...]] = []


async def keep_task_and_last_two(
    ctx: RunContext[Any], messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A processor as users write them: reads its context, rewrites the conversation (async)."""
    processor_calls.append((ctx.run_id, ctx.step, ctx.deps, len(ctx.messages), len(messages)))
    note = {"role": "user", "content": f"(step {ctx.step}: {len(ctx.messages) - 3} messages summarised away)"}
    return [messages[0], note, *messages[-2:]] if len(messages) > 3 else messages


def shorten_results(ctx: RunContext[Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A sync processor."""
    return [{**m, "content": m["content"][:9]} if m["role"] == "tool" else m for m in messages]


def searcher(processor: Any, **history: Any) -> Callable[[Any], Agent[Any, Any]]:
    def make(model: Any) -> Agent[Any, Any]:
        return Agent(client=model, tools=tools, history=History(processor=processor, **history))

    return make


SEARCHES = [tool_calls(call("search", {"q": f"topic {i}"}, id=f"s{i}")) for i in range(4)]
FUNCTIONS = [keep_task_and_last_two, shorten_results]  # what the workers of these tests run


@pytest.mark.parametrize(
    ("processor", "history"),
    [(keep_task_and_last_two, {}), (shorten_results, {}), (keep_task_and_last_two, {"keep_tool_results": 1}),
     (shorten_results, {"keep_last": 2})],
    ids=["async", "sync", "async+keep_tool_results", "sync+keep_last"],
)  # fmt: skip
async def test_a_history_processor_sends_the_model_the_same_as_in_process(
    env: WorkflowEnvironment, processor: Any, history: dict[str, Any]
) -> None:
    processor_calls.clear()
    b = await both(env, searcher(processor, **history), [*SEARCHES, text("done")], functions=FUNCTIONS)
    assert_same(b)  # the very same requests: the processor's output, repaired by the loop as in-process
    assert b.remote.output == "done" and len(b.remote.messages) == 10  # the run keeps everything
    if processor is keep_task_and_last_two:
        local, remote = processor_calls[:5], processor_calls[5:]
        assert [c[1:] for c in remote] == [c[1:] for c in local]  # same step, deps, context and input
        assert "summarised away" in str(b.remote_sent[-1]["messages"])


@given(
    processor=st.sampled_from(FUNCTIONS),
    policy=st.fixed_dictionaries({
        "keep_last": st.sampled_from([None, 1, 3]),
        "max_tokens": st.sampled_from([None, 60, 2000]),
        "keep_tool_results": st.sampled_from([None, 1, 2]),
    }),
    steps=st.integers(0, 4),
)  # fmt: skip
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_any_history_policy_with_a_processor_sends_what_it_sends_in_process(
    env: WorkflowEnvironment, processor: Any, policy: dict[str, Any], steps: int
) -> None:
    script = [*SEARCHES[:steps], text("done")]
    assert_same(await both(env, searcher(processor, **policy), script, functions=FUNCTIONS))


async def test_an_inner_agents_processor_runs_for_its_own_run(env: WorkflowEnvironment) -> None:
    """An agent tool's agent with a processor: its requests are processed with its own run's context."""

    def desk(model: Any) -> Agent[Any, Any]:
        inner = Agent(
            client=model, name="research", tools=tools, history=History(processor=keep_task_and_last_two)
        )
        reg = ToolRegistry()
        reg.register(inner.as_tool())
        return Agent(client=model, name="desk", tools=reg)

    script = [
        tool_calls(call("research", {"input": "tea"}, id="r")),
        *(tool_calls(call("search", {"q": f"tea {i}"}, id=f"i{i}")) for i in range(3)),
        text("Tea is good."),
        text("Research says tea is good."),
    ]
    processor_calls.clear()
    b = await both(env, desk, script, functions=FUNCTIONS)
    assert_same(b)
    assert b.remote.output == "Research says tea is good." and b.remote.usage.requests == 6
    local, remote = processor_calls[:4], processor_calls[4:]
    assert [c[1:] for c in remote] == [c[1:] for c in local] and len(remote) == 4
    assert {c[0] for c in remote} != {b.remote.run_id}  # the inner run's own id, as in-process


async def test_a_processor_runs_in_an_activity_and_a_replay_does_not_call_it(
    env: WorkflowEnvironment,
) -> None:
    processor_calls.clear()
    b = await both(env, searcher(keep_task_and_last_two), [*SEARCHES[:2], text("done")], functions=FUNCTIONS)
    assert_same(b)
    names = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in b.history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert names.count("agentloop.call_function") == 3 and names.count("agentloop.model_request") == 3
    assert len(processor_calls) == 6  # 3 in-process + 3 on the worker: the replay (in both()) called none


async def test_the_conversation_goes_to_the_processor_by_reference(env: WorkflowEnvironment) -> None:
    """Only what the step added crosses to the processor (not even the model's answer, which the
    worker stored); the model request after it refers to the processor's stored result instead of
    sending it again."""
    big = "x" * 20_000
    b = await both(
        env, searcher(shorten_results), [*SEARCHES[:2], text("done")], prompt=big, functions=FUNCTIONS
    )
    assert_same(b)
    scheduled = [e.activity_task_scheduled_event_attributes for e in b.history.events
                 if e.HasField("activity_task_scheduled_event_attributes")]  # fmt: skip
    inputs = [
        json.loads(a.input.payloads[0].data) for a in scheduled if a.input.payloads
    ]  # not describe_tools
    calls = [i for i in inputs if i.get("kind") == "history"]
    models = [i for i in inputs if "tools_digest" in i]
    # the second call: the worker holds the conversation up to the model's answer (the first
    # request's messages were the conversation's own), so only the tool result crosses; the third:
    # the second request's were shortened copies, so from the processor's own last call
    assert [[m["role"] for m in c["delta"]] for c in calls] == [["user"], ["tool"], ["assistant", "tool"]]
    assert all(c["messages"] is None for c in calls)  # no other policy: the conversation itself
    assert all(m["delta"] == [] and m["base"] for m in models)  # the processor's result, by digest
    assert sum(big in json.dumps(i) for i in inputs) == 1  # the big prompt crossed once
    results = [json.loads(e.activity_task_completed_event_attributes.result.payloads[0].data)
               for e in b.history.events if e.HasField("activity_task_completed_event_attributes")]  # fmt: skip
    recorded = [r["items"] for r in results if "items" in r]
    assert len(recorded) == 3 and all(big not in json.dumps(r) for r in recorded)  # the prompt by index
    assert recorded[0] == [0]  # the task alone, unchanged: one index


def redact_in_place(ctx: RunContext[Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for m in messages:
        if m["role"] == "tool":
            m["content"] = "[redacted]"  # changes the dicts it was given, not copies
    return messages


async def test_a_processor_that_changes_its_messages_in_place_changes_only_what_is_sent(
    env: WorkflowEnvironment,
) -> None:
    """What the model gets is what the processor returned; the run's own conversation (the result,
    the worker's store for later requests) keeps the tool results, as History promises."""
    remote, sent, history = await on_temporal(
        env, searcher(redact_in_place), [*SEARCHES[:2], text("done")], "go", functions=[redact_in_place]
    )
    assert [m["content"] for m in sent[2]["messages"] if m["role"] == "tool"] == ["[redacted]"] * 2
    assert [m["content"] for m in remote.messages if m["role"] == "tool"] == [
        "results for topic 0",
        "results for topic 1",
    ]
    await Replayer(workflows=[AgentWorkflow], workflow_runner=sandbox_runner()).replay_workflow(history)


async def test_a_processor_the_worker_lacks_fails_the_run_clearly_before_any_request(
    env: WorkflowEnvironment,
) -> None:
    remote, sent, _ = await on_temporal(
        env, searcher(shorten_results), [text("never")], "go"
    )  # no functions=
    assert isinstance(remote, TemporalRunError) and remote.error_type == "ConfigurationError"
    assert "the worker has no function 'test_temporal_parity:shorten_results'" in str(remote)
    assert "create_worker(functions=[...])" in str(remote) and sent == []


def garbage(ctx: RunContext[Any], messages: list[dict[str, Any]]) -> Any:
    return [{"role": "user", "content": object()}]  # not JSON data


def raising(ctx: RunContext[Any], messages: list[dict[str, Any]]) -> Any:
    raise ValueError("the summariser is down")


async def test_a_processor_that_raises_fails_the_run_with_its_error_as_in_process(
    env: WorkflowEnvironment,
) -> None:
    local, _ = await in_process(searcher(raising), [text("never")], "go")
    remote, sent, _ = await on_temporal(env, searcher(raising), [text("never")], "go", functions=[raising])
    assert isinstance(local, ValueError) and str(local) == "the summariser is down"
    assert isinstance(remote, TemporalRunError) and remote.error_type == "ValueError"  # the same, by name
    assert "test_temporal_parity:raising raised ValueError: the summariser is down" in str(remote)
    assert sent == []  # not retried, no request made: in-process it is called once too


async def test_a_processor_that_returns_what_cannot_cross_fails_the_run_clearly(
    env: WorkflowEnvironment,
) -> None:
    remote, sent, _ = await on_temporal(env, searcher(garbage), [text("never")], "go", functions=[garbage])
    assert isinstance(remote, TemporalRunError) and remote.error_type == "ConfigurationError"
    assert "garbage returned list that is not JSON data" in str(remote) and sent == []


def test_a_processor_the_worker_cannot_name_is_refused_before_the_run_starts() -> None:
    from agentloop.temporal._spec import agent_spec  # internal unit under test

    for unnamed in (lambda ctx, m: m, functools.partial(shorten_results)):
        with pytest.raises(ConfigurationError, match="define it with `def`"):
            agent_spec(Agent(client=ScriptedModel([]), history=History(processor=unnamed)))
    spec = agent_spec(
        Agent(client=ScriptedModel([]), history=History(processor=shorten_results, keep_last=3))
    )
    assert spec["history"]["processor"] == "test_temporal_parity:shorten_results"


# --- 3. handoff input_filter ---------------------------------------------------------------------


def only_user_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["role"] == "user"]


async def summary_for_billing(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tools_used = sorted({c["function"]["name"] for m in messages for c in m.get("tool_calls") or ()})
    return [{"role": "user", "content": f"{messages[0]['content']} (tools used so far: {tools_used})"}]


def careless(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keeps the tool calls, drops their results: the loop repairs it, on Temporal as in-process."""
    return [m for m in messages if m["role"] != "tool"]


def triage_to_billing(
    input_filter: Any, instructions: Any = "You do billing."
) -> Callable[[Any], Agent[Any, Any]]:
    def make(model: Any) -> Agent[Any, Any]:
        reg = ToolRegistry()
        reg.add(tools.get("lookup"))  # type: ignore[arg-type]
        billing = Agent(client=model, name="billing", instructions=instructions, tools=reg)
        return Agent(client=model, name="triage", instructions="You triage.", tools=tools,
                     handoffs=[Handoff(billing, input_filter=input_filter)])  # fmt: skip

    return make


HANDOFF = [
    tool_calls(call("search", {"q": "invoice"}, id="s")),
    tool_calls(call("transfer_to_billing", {}, id="t")),
    tool_calls(call("lookup", {"key": "A-1"}, id="l")),
    text("Paid."),
]
FILTERS = [only_user_messages, summary_for_billing, careless]


@pytest.mark.parametrize("input_filter", FILTERS, ids=lambda f: f.__name__)
async def test_an_input_filter_gives_the_next_agent_the_same_conversation_as_in_process(
    env: WorkflowEnvironment, input_filter: Any
) -> None:
    b = await both(env, triage_to_billing(input_filter), HANDOFF, "Is A-1 paid?", functions=FILTERS)
    assert_same(b)
    assert b.remote.output == "Paid." and b.remote.agent_name == "billing"
    billing_first = b.remote_sent[2]["messages"]
    assert billing_first[0] == {"role": "system", "content": "You do billing."}
    if input_filter is summary_for_billing:
        assert billing_first[1:] == [
            {"role": "user", "content": "Is A-1 paid? (tools used so far: ['search', 'transfer_to_billing'])"}
        ]


async def test_an_input_filter_the_worker_lacks_fails_the_run_clearly(env: WorkflowEnvironment) -> None:
    remote, sent, _ = await on_temporal(
        env, triage_to_billing(careless), HANDOFF, "go", functions=[only_user_messages]
    )
    assert isinstance(remote, TemporalRunError) and remote.error_type == "ConfigurationError"
    assert "'test_temporal_parity:careless' (a handoff's input_filter of agent 'triage')" in str(remote)
    assert sent == []


# --- 4. dynamic instructions of the agents a run reaches ------------------------------------------

instruction_calls: list[tuple[Any, ...]] = []


def _seen_by_instructions(who: str, ctx: RunContext[Any]) -> str:
    """What an instructions function gets, recorded, and put in its text (so the model sees it too)."""
    call = (who, ctx.run_id, ctx.model, ctx.step, ctx.deps, ctx.usage.requests, len(ctx.messages),
            ctx.tool_call_id, ctx.messages[-1]["content"] if ctx.messages else None)  # fmt: skip
    instruction_calls.append(call)
    return f"You are {who}. Step {ctx.step}, {len(ctx.messages)} messages so far, deps {ctx.deps}."


def billing_instructions(ctx: RunContext[Any]) -> str:
    return _seen_by_instructions("billing", ctx)


async def research_instructions(ctx: RunContext[Any]) -> str:
    return _seen_by_instructions("research", ctx)


def triage_instructions(ctx: RunContext[Any]) -> str:
    return _seen_by_instructions("triage", ctx)


def no_instructions(ctx: RunContext[Any]) -> None:
    _seen_by_instructions("nobody", ctx)


INSTRUCTIONS = [billing_instructions, research_instructions, triage_instructions, no_instructions]


def desk_with_research(instructions: Any) -> Callable[[Any], Agent[Any, Any]]:
    def make(model: Any) -> Agent[Any, Any]:
        inner = Agent(client=model, name="research", tools=tools, instructions=instructions)
        reg = ToolRegistry()
        reg.register(inner.as_tool())
        return Agent(client=model, name="desk", instructions="You answer.", tools=reg)

    return make


def triage_and_back(model: Any) -> Agent[Any, Any]:
    """triage (dynamic) -> billing (dynamic) -> triage again: each resolved at its handoff."""
    triage = Agent(client=model, name="triage", instructions=triage_instructions, tools=tools)
    billing = Agent(client=model, name="billing", instructions=billing_instructions, handoffs=[triage])
    triage.handoffs = Agent(client=model, name="triage", tools=tools, handoffs=[billing]).handoffs
    return triage


BACK_AND_FORTH = [
    tool_calls(call("search", {"q": "invoice"}, id="s")),
    tool_calls(call("transfer_to_billing", {}, id="t1")),
    tool_calls(call("transfer_to_triage", {}, id="t2")),
    text("Back at triage."),
]


@pytest.mark.parametrize("instructions", [billing_instructions, research_instructions, no_instructions],
                         ids=["sync", "async", "returns_none"])  # fmt: skip
async def test_a_handed_to_agents_dynamic_instructions_resolve_as_in_process(
    env: WorkflowEnvironment, instructions: Any
) -> None:
    instruction_calls.clear()
    b = await both(env, triage_to_billing(None, instructions), HANDOFF, "Is A-1 paid?",
                   {"deps": {"user": "ann"}}, functions=INSTRUCTIONS)  # fmt: skip
    assert_same(b)  # the same system message, from the same context, at the same time
    local, remote = (
        instruction_calls[: len(instruction_calls) // 2],
        instruction_calls[len(instruction_calls) // 2 :],
    )
    assert remote == [(*c[:1], b.remote.run_id, *c[2:]) for c in local] and len(remote) == 1
    if instructions is not no_instructions:
        assert local[0][3:7] == (2, {"user": "ann"}, 2, 6)  # at the handoff: step 2, two requests made
        assert b.remote_sent[2]["messages"][0]["content"].endswith(
            "Step 2, 6 messages so far, deps {'user': 'ann'}."
        )
    else:
        assert b.remote_sent[2]["messages"][0]["role"] == "user"  # None: no system message, as in-process


async def test_an_agent_tools_dynamic_instructions_resolve_for_its_own_run(env: WorkflowEnvironment) -> None:
    instruction_calls.clear()
    script = [
        tool_calls(call("research", {"input": "tea"}, id="r")),
        tool_calls(call("search", {"q": "tea"}, id="i")),
        text("Tea is good."),
        text("Research says tea is good."),
    ]
    b = await both(env, desk_with_research(research_instructions), script, per_run={"deps": [1, 2]},
                   functions=INSTRUCTIONS)  # fmt: skip
    assert_same(b)
    local, remote = instruction_calls[:1], instruction_calls[1:]
    assert len(remote) == 1 and remote[0][0] == "research" and remote[0][2:] == local[0][2:]
    assert remote[0][1] != b.remote.run_id and remote[0][1].startswith(b.remote.run_id)  # the inner run's id
    assert local[0][3:] == (0, [1, 2], 0, 1, None, "tea")  # its own run's start: step 0, the input only
    assert b.remote_sent[1]["messages"][0]["content"].startswith("You are research. Step 0, 1 messages")


async def test_the_first_agents_dynamic_instructions_resolve_again_when_it_is_handed_back_to(
    env: WorkflowEnvironment,
) -> None:
    """The start's are resolved by start_run, a handoff back's by the worker: both as in-process."""
    instruction_calls.clear()
    b = await both(env, triage_and_back, BACK_AND_FORTH, per_run={"deps": "d"}, functions=INSTRUCTIONS)
    assert_same(b)
    n = len(instruction_calls) // 2
    local, remote = instruction_calls[:n], instruction_calls[n:]
    assert [c[0] for c in local] == ["triage", "billing", "triage"]
    assert [c[2:] for c in remote] == [c[2:] for c in local]
    assert [c[3] for c in local] == [0, 2, 3]
    assert b.remote.agent_name == "triage" and b.remote.output == "Back at triage."


async def test_per_run_options_do_not_outlive_the_start_when_the_first_agent_is_handed_back_to(
    env: WorkflowEnvironment,
) -> None:
    """In-process, `run(instructions=, model=, model_settings=)` are the start's; a handoff back to
    the first agent uses its own."""

    def make(model: Any) -> Agent[Any, Any]:
        triage = Agent(client=model, name="triage", instructions="You triage.", tools=tools)
        billing = Agent(client=model, name="billing", instructions="You bill.", handoffs=[triage])
        triage.handoffs = Agent(client=model, name="triage", tools=tools, handoffs=[billing]).handoffs
        return triage

    per_run = {"instructions": "Just for this run.", "model": "flux-fast", "model_settings": {"seed": 7}}
    b = await both(env, make, BACK_AND_FORTH, per_run=per_run)
    assert_same(b)
    firsts = [r["messages"][0]["content"] for r in b.remote_sent]
    assert firsts == ["Just for this run.", "Just for this run.", "You bill.", "You triage."]
    assert [(r["model"], r.get("seed")) for r in b.remote_sent] == [("flux-fast", 7)] * 2 + [
        ("flux-auto", None)
    ] * 2


async def test_dynamic_instructions_run_in_an_activity_and_a_replay_does_not_call_them(
    env: WorkflowEnvironment,
) -> None:
    instruction_calls.clear()
    b = await both(env, triage_and_back, BACK_AND_FORTH, functions=INSTRUCTIONS)  # both() replays it
    assert_same(b)
    assert len(instruction_calls) == 6  # 3 in-process + start_run's + 2 on the worker: none by the replay
    scheduled = [e.activity_task_scheduled_event_attributes for e in b.history.events
                 if e.HasField("activity_task_scheduled_event_attributes")]  # fmt: skip
    inputs = [json.loads(a.input.payloads[0].data) for a in scheduled if a.input.payloads]
    assert [(i["ref"], i["step"]) for i in inputs if i.get("kind") == "instructions"] == [
        ("test_temporal_parity:billing_instructions", 2),
        ("test_temporal_parity:triage_instructions", 3),
    ]


def raising_instructions(ctx: RunContext[Any]) -> str:
    raise LookupError("the profile service is down")


def wrong_instructions(ctx: RunContext[Any]) -> Any:
    return {"role": "system"}


@pytest.mark.parametrize(
    ("fn", "kind", "says"),
    [(raising_instructions, "LookupError", "raised LookupError: the profile service is down"),
     (wrong_instructions, "ConfigurationError", "returned dict; it must return a str")],
    ids=["raises", "wrong_type"],
)  # fmt: skip
async def test_failing_dynamic_instructions_fail_the_run_with_their_error_as_in_process(
    env: WorkflowEnvironment, fn: Any, kind: str, says: str
) -> None:
    local, _ = await in_process(triage_to_billing(None, fn), HANDOFF, "go")
    remote, sent, _ = await on_temporal(env, triage_to_billing(None, fn), HANDOFF, "go", functions=[fn])
    assert type(local).__name__ == kind and says.split(": ")[-1].split(";")[0][-20:] in str(local)
    assert isinstance(remote, TemporalRunError) and remote.error_type == kind and says in str(remote)
    assert len(sent) == 2  # the requests before the handoff; none after it, and not retried


async def test_dynamic_instructions_the_worker_lacks_fail_the_run_before_any_request(
    env: WorkflowEnvironment,
) -> None:
    remote, sent, _ = await on_temporal(env, triage_to_billing(None, billing_instructions), HANDOFF, "go")
    assert isinstance(remote, TemporalRunError) and remote.error_type == "ConfigurationError"
    assert "'test_temporal_parity:billing_instructions' (instructions=<function> of agent 'billing')" in str(
        remote
    )
    assert sent == []


# --- 5. WorkerOptions ------------------------------------------------------------------------------


async def test_worker_options_and_the_old_keywords_give_the_same_worker(env: WorkflowEnvironment) -> None:
    model = ScriptedModel([])
    new = create_worker(
        env.client,
        fresh(),
        tools=tools,
        model=model,
        options=WorkerOptions(heartbeat_timeout=2, model_attempts=1),
    )
    with pytest.warns(
        DeprecationWarning, match=r"options=WorkerOptions\(heartbeat_timeout=..., model_attempts=...\)"
    ):
        old = create_worker(
            env.client, fresh(), tools=tools, model=model, heartbeat_timeout=2, model_attempts=1
        )
    for w in (new, old):
        acts = w.agent_activities  # type: ignore[attr-defined]
        assert (acts.heartbeat_timeout, acts.model_attempts, acts.model_timeout) == (2, 1, 600.0)
    with pytest.raises(ConfigurationError, match="put them in the WorkerOptions"):
        create_worker(
            env.client, fresh(), tools=tools, model=model, options=WorkerOptions(), heartbeat_timeout=2
        )
    with pytest.raises(ConfigurationError, match="options must be a WorkerOptions"):
        create_worker(env.client, fresh(), tools=tools, model=model, options={"heartbeat_timeout": 2})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="two functions named 'test_temporal_parity:careless'"):
        create_worker(env.client, fresh(), tools=tools, model=model, functions=[careless, _twin()])


def fresh() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"  # one worker per queue and client


def _twin() -> Any:
    """Another function under the name of `careless` (as a second module-level definition would be)."""

    def careless(messages: Any) -> Any:
        return messages

    careless.__qualname__ = "careless"
    careless.__module__ = __name__
    return careless


# --- 4. the worker's --tool loading, on public seams only ------------------------------------------


def test_several_tool_options_gather_registries_and_functions_into_one() -> None:
    from agentloop.temporal._worker import _load_tools, _parser  # internal unit under test

    args = _parser().parse_args(
        ["--task-queue", "q", "--tool", "temporal_tools:registry", "--tools", "test_temporal_parity:tools"]
    )
    gathered = _load_tools(args.tool)
    assert set(gathered.names) == set(temporal_tools.registry.names) | {"search", "lookup"}
    assert gathered.get("search") is tools.get("search")  # included as built, not rebuilt
    with pytest.raises(ConfigurationError, match="cannot load the tool 'no_such_module:x'"):
        _load_tools(["temporal_tools:registry", "no_such_module:x"])


# --- 5. per-run instructions over a conversation that has its own ----------------------------------

CONVERSATION = [
    {"role": "system", "content": "Answer in English."},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
]


def french(ctx: RunContext[Any]) -> str:
    return "Answer in French."


@pytest.mark.parametrize(
    ("own", "per_run", "first"),
    [
        ("Be terse.", "Answer in French.", "Answer in French."),  # per-run: replaces it
        ("Be terse.", french, "Answer in French."),  # a function per run: its text replaces it
        ("Be terse.", None, "Answer in English."),  # the agent's own: the conversation's stay
        (triage_instructions, "Answer in French.", "Answer in French."),  # own dynamic: per-run wins
        (triage_instructions, None, "Answer in English."),
    ],
    ids=["text", "function", "agents-own", "own-function-and-text", "own-function"],
)
async def test_per_run_instructions_replace_a_leading_system_message_as_in_process(
    env: WorkflowEnvironment, own: Any, per_run: Any, first: str
) -> None:
    options: dict[str, Any] = {"messages": [dict(m) for m in CONVERSATION]}
    if per_run is not None:
        options["instructions"] = per_run
    b = await both(env, lambda model: Agent(client=model, instructions=own), [text("ok")], "again", options,
                   functions=INSTRUCTIONS)  # fmt: skip
    assert_same(b)
    assert b.remote_sent[0]["messages"][0] == {"role": "system", "content": first}
    assert b.remote.messages[0] == {"role": "system", "content": first}
