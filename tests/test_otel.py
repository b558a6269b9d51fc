"""OTelObserver: GenAI semantic-convention spans per run, model request and tool call.

Checked with the SDK's in-memory exporter: parentage, attribute names and values, no content
unless opted in, the API key never, concurrent runs kept apart, error status for failed tool
calls, and every started span ended, whichever way the run ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from agentloop import Agent, Event, FluxClient, InternalServerError, ToolRegistry
from agentloop.otel import OTelObserver
from agentloop.testing import FakeFluxRouter, FunctionModel, ScriptedModel, call, error, text, tool_calls

pytestmark = pytest.mark.anyio

SECRET_PROMPT = "my card number is 4111-1111"
API_KEY = "sk-flux-DO-NOT-LEAK-0123456789"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(exporter))
    return p


def registry() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def lookup(key: str) -> dict:
        """Look a key up."""
        return {"key": key, "value": "secret-result-42"}

    @tools.tool
    async def explode(reason: str) -> str:
        """Always fails."""
        raise ValueError(reason)

    return tools


def by_name(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name.startswith(prefix)), key=lambda s: s.start_time or 0)


def all_text(spans: tuple[ReadableSpan, ...]) -> str:
    return json.dumps([{k: str(v) for k, v in (s.attributes or {}).items()} for s in spans]) + "".join(
        str(e.attributes) for s in spans for e in s.events
    )


async def test_spans_parentage_and_semconv_attributes(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = OTelObserver(tracer_provider=provider)
    model = ScriptedModel(
        [tool_calls(call("lookup", {"key": "a"}), call("lookup", {"key": "b"})), text("done")]
    )
    agent = Agent(client=model, tools=registry(), model="flux-pinned-test", observers=[tracing])
    result = await agent.run(SECRET_PROMPT, run_id="run-1")

    spans = exporter.get_finished_spans()
    (run,) = by_name(spans, "invoke_agent")
    chats = by_name(spans, "chat ")
    tools = by_name(spans, "execute_tool ")
    assert len(spans) == 5 and len(chats) == 2 and len(tools) == 2
    assert run.parent is None
    for child in (*chats, *tools):
        assert child.parent is not None and child.parent.span_id == run.context.span_id
        assert child.context.trace_id == run.context.trace_id
        assert child.attributes["agentloop.run.id"] == "run-1"

    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.request.model"] == "flux-pinned-test"
    assert run.attributes["agentloop.run.id"] == "run-1"
    assert run.attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert run.attributes["gen_ai.usage.output_tokens"] == result.usage.completion_tokens
    assert run.attributes["agentloop.run.stop_reason"] == "final"
    assert run.attributes["agentloop.run.steps"] == 2

    assert [c.name for c in chats] == ["chat flux-pinned-test"] * 2
    assert [c.attributes["agentloop.step"] for c in chats] == [1, 2]
    for c in chats:
        assert c.attributes["gen_ai.operation.name"] == "chat"
        assert c.attributes["gen_ai.request.model"] == "flux-pinned-test"
        assert (
            c.attributes["gen_ai.usage.input_tokens"] > 0 and c.attributes["gen_ai.usage.output_tokens"] > 0
        )
    assert [c.attributes["gen_ai.response.finish_reasons"] for c in chats] == [("tool_calls",), ("stop",)]
    # the tool calls run after the model answered: the chat span measures the request alone
    assert chats[0].end_time <= min(t.start_time for t in tools)

    ids = {r.id for r in result.tool_calls}
    assert {t.attributes["gen_ai.tool.call.id"] for t in tools} == ids
    for t in tools:
        assert t.name == "execute_tool lookup"
        assert t.attributes["gen_ai.operation.name"] == "execute_tool"
        assert t.attributes["gen_ai.tool.name"] == "lookup"
        assert t.attributes["agentloop.tool.outcome"] == "ok"
        assert t.status.status_code == StatusCode.UNSET
    assert tracing.open_runs == ()

    # no content by default: not the prompt, the arguments, the result or the answer
    dumped = all_text(spans)
    for secret in (SECRET_PROMPT, "secret-result-42", '"key"', "done"):
        assert secret not in dumped
    assert not any(
        k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.tool.call.arg", "gen_ai.tool.call.res"))
        for s in spans
        for k in (s.attributes or {})
    )


async def test_over_http_response_model_and_id_and_never_the_api_key(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = OTelObserver(tracer_provider=provider, capture_content=True)  # even with content on
    async with FakeFluxRouter([tool_calls(call("lookup", {"key": "k"})), text("fine")]) as router:
        client = FluxClient(base_url=router.base_url, api_key=API_KEY)
        async with client:
            agent = Agent(client=client, tools=registry(), observers=[tracing])
            await agent.run("hello")
    spans = exporter.get_finished_spans()
    chats = by_name(spans, "chat ")
    assert len(chats) == 2
    for c in chats:
        assert c.attributes["gen_ai.response.model"]
        assert str(c.attributes["gen_ai.response.id"]).startswith("req_fake")
    assert API_KEY not in all_text(spans)


async def test_content_only_when_opted_in(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    tracing = OTelObserver(tracer_provider=provider, capture_content=True)
    model = ScriptedModel([tool_calls(call("lookup", {"key": "a"})), text("the answer")])
    agent = Agent(client=model, tools=registry(), instructions="be brief", observers=[tracing])
    await agent.run(SECRET_PROMPT)
    spans = exporter.get_finished_spans()
    (run,) = by_name(spans, "invoke_agent")
    (tool,) = by_name(spans, "execute_tool ")
    chats = by_name(spans, "chat ")
    assert json.loads(tool.attributes["gen_ai.tool.call.arguments"]) == {"key": "a"}
    assert "secret-result-42" in tool.attributes["gen_ai.tool.call.result"]
    sent = json.loads(run.attributes["gen_ai.input.messages"])
    assert sent == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": SECRET_PROMPT}]},
    ]
    assert json.loads(run.attributes["gen_ai.output.messages"])[0]["parts"][0]["content"] == "the answer"
    assert json.loads(chats[1].attributes["gen_ai.output.messages"])[0]["parts"][0]["content"] == "the answer"
    assert "gen_ai.output.messages" not in chats[0].attributes  # the tool-call step had no text


async def test_failed_and_rejected_tool_calls_have_error_status(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = OTelObserver(tracer_provider=provider)
    model = ScriptedModel(
        [
            tool_calls(call("explode", {"reason": "boom"}), call("lookup", {"key": 12}), call("nope", {})),
            text("sorry"),
        ]
    )
    await Agent(client=model, tools=registry(), observers=[tracing]).run("go")
    tools = {
        s.attributes["gen_ai.tool.name"]: s for s in by_name(exporter.get_finished_spans(), "execute_tool ")
    }
    assert set(tools) == {"explode", "lookup", "nope"}
    expected = {
        "explode": ("raised", "ValueError"),
        "lookup": ("invalid_arguments", "invalid_arguments"),
        "nope": ("unknown_tool", "unknown_tool"),
    }
    for name, (outcome, error_type) in expected.items():
        span = tools[name]
        assert span.attributes["agentloop.tool.outcome"] == outcome
        assert span.attributes["error.type"] == error_type
        assert span.status.status_code == StatusCode.ERROR
    assert "boom" not in all_text(exporter.get_finished_spans())  # the exception message is content
    (run,) = by_name(exporter.get_finished_spans(), "invoke_agent")
    assert run.status.status_code == StatusCode.UNSET  # the run itself succeeded


async def test_concurrent_runs_on_one_agent_keep_their_spans_apart(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    both_running = anyio.Event()
    started = 0
    tools = ToolRegistry()

    @tools.tool
    async def work(n: int) -> int:
        """Waits until both runs are inside a tool, so the runs really overlap."""
        nonlocal started
        started += 1
        if started == 2:
            both_running.set()
        await both_running.wait()
        return n

    def script(messages: list[dict[str, Any]], _tools: list[Any]) -> Any:
        if messages[-1]["role"] == "user":
            n = int(messages[-1]["content"])
            return [call("work", {"n": n}), call("work", {"n": n})] if n == 2 else [call("work", {"n": n})]
        return "done"

    tracing = OTelObserver(tracer_provider=provider)
    agent = Agent(client=FunctionModel(script), tools=tools, observers=[tracing])
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: agent.run("1", run_id="r1"))
        tg.start_soon(lambda: agent.run("2", run_id="r2"))

    spans = exporter.get_finished_spans()
    runs = {s.attributes["agentloop.run.id"]: s for s in by_name(spans, "invoke_agent")}
    assert set(runs) == {"r1", "r2"}
    for run_id, expected_tools in (("r1", 1), ("r2", 2)):
        children = [
            s for s in spans if s.parent is not None and s.parent.span_id == runs[run_id].context.span_id
        ]
        assert all(c.attributes["agentloop.run.id"] == run_id for c in children)
        assert sum(c.name.startswith("execute_tool") for c in children) == expected_tools
        assert sum(c.name.startswith("chat") for c in children) == 2
    assert runs["r1"].context.trace_id != runs["r2"].context.trace_id
    assert tracing.open_runs == ()


async def test_run_span_is_a_child_of_the_callers_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = OTelObserver(tracer_provider=provider)
    agent = Agent(client=ScriptedModel([text("hi")]), observers=[tracing])
    with provider.get_tracer("app").start_as_current_span("POST /ask") as request_span:
        await agent.run("hello")
    (run,) = by_name(exporter.get_finished_spans(), "invoke_agent")
    assert run.parent is not None and run.parent.span_id == request_span.get_span_context().span_id


async def test_a_run_that_raises_ends_every_span_inside_guard(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = OTelObserver(tracer_provider=provider)
    model = ScriptedModel([tool_calls(call("lookup", {"key": "a"})), error(500, "router down")])
    agent = Agent(client=model, tools=registry(), observers=[tracing])
    with pytest.raises(InternalServerError), tracing.guard():
        await agent.run("go")
    assert tracing.open_runs == ()
    spans = exporter.get_finished_spans()
    (run,) = by_name(spans, "invoke_agent")
    chats = by_name(spans, "chat ")
    assert len(chats) == 2 and len(by_name(spans, "execute_tool ")) == 1
    assert run.status.status_code == StatusCode.ERROR
    assert run.attributes["error.type"] == "InternalServerError"
    assert chats[1].status.status_code == StatusCode.ERROR  # the request that failed
    assert chats[0].status.status_code == StatusCode.UNSET


async def test_a_cancelled_run_ends_its_tool_spans_inside_guard(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    inside = anyio.Event()
    tools = ToolRegistry()

    @tools.tool
    async def hang() -> str:
        """Never returns."""
        inside.set()
        await anyio.sleep_forever()
        return "unreachable"

    tracing = OTelObserver(tracer_provider=provider)
    agent = Agent(client=ScriptedModel([tool_calls(call("hang", {}))]), tools=tools, observers=[tracing])

    async def run() -> None:
        with tracing.guard():
            await agent.run("go")

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await inside.wait()
        tg.cancel_scope.cancel()
    assert tracing.open_runs == ()
    (tool,) = by_name(exporter.get_finished_spans(), "execute_tool ")
    assert tool.status.status_code == StatusCode.ERROR
    (run_span,) = by_name(exporter.get_finished_spans(), "invoke_agent")
    assert run_span.status.status_code == StatusCode.ERROR


async def test_streamed_runs_are_traced_and_guarded(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = OTelObserver(tracer_provider=provider, capture_content=True)
    agent = Agent(client=ScriptedModel([text("streamed answer")]), observers=[tracing])
    with tracing.guard():
        async with agent.stream("hi") as events:
            async for _ in events:
                pass
    (chat,) = by_name(exporter.get_finished_spans(), "chat ")
    assert (
        json.loads(chat.attributes["gen_ai.output.messages"])[0]["parts"][0]["content"] == "streamed answer"
    )
    assert tracing.open_runs == ()


async def test_without_guard_a_failed_run_still_ends_its_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = OTelObserver(tracer_provider=provider)
    agent = Agent(client=ScriptedModel([error(500, "down")]), observers=[tracing])
    with pytest.raises(InternalServerError):
        await agent.run("go", run_id="lost")
    assert tracing.open_runs == ()  # the loop's RunFailed event closed them, no guard() needed
    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} == {"invoke_agent", "chat flux-auto"}
    (run_span,) = by_name(spans, "invoke_agent")
    assert run_span.status.status_code == StatusCode.ERROR
    tracing.close()  # idempotent when nothing is open


async def test_a_run_failed_event_ends_the_runs_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    # What the loop emits on failure, once it has the event (see RunFailed in the docs): matched by name.
    @dataclass(frozen=True, slots=True)
    class RunFailed(Event):
        error: BaseException

    tracing = OTelObserver(tracer_provider=provider)
    agent = Agent(client=ScriptedModel([error(500, "down")]), observers=[tracing])
    with pytest.raises(InternalServerError) as caught:
        await agent.run("go", run_id="r")
    tracing(RunFailed("r", caught.value))
    assert tracing.open_runs == ()
    assert all(s.status.status_code == StatusCode.ERROR for s in exporter.get_finished_spans())


async def test_a_run_paused_event_ends_the_runs_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @dataclass(frozen=True, slots=True)
    class RunPaused(Event):
        result: Any

    tools = ToolRegistry()

    @tools.tool(requires_approval=True)
    async def pay(amount: int) -> str:
        """Pay."""
        return "paid"

    tracing = OTelObserver(tracer_provider=provider)
    agent = Agent(
        client=ScriptedModel([tool_calls(call("pay", {"amount": 3}))]), tools=tools, observers=[tracing]
    )
    paused = await agent.run("pay 3", run_id="p")
    tracing(RunPaused("p", paused))
    (run,) = by_name(exporter.get_finished_spans(), "invoke_agent")
    assert run.attributes["agentloop.run.stop_reason"] == "approval_required"
    assert tracing.open_runs == ()


async def test_a_resumed_run_ends_the_paused_runs_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tools = ToolRegistry()

    @tools.tool(requires_approval=True)
    async def pay(amount: int) -> str:
        """Pay."""
        return "paid"

    tracing = OTelObserver(tracer_provider=provider)
    model = ScriptedModel([tool_calls(call("pay", {"amount": 3})), text("paid it")])
    agent = Agent(client=model, tools=tools, observers=[tracing])
    paused = await agent.run("pay 3", run_id="p")
    assert paused.stop_reason == "approval_required"
    result = await agent.resume(paused, approvals={paused.pending[0].id: True})
    assert result.output == "paid it"
    runs = by_name(exporter.get_finished_spans(), "invoke_agent")
    assert len(runs) == 2 and tracing.open_runs == ()
    # the loop's RunPaused event ended the first run span; the resume has a span of its own
    assert runs[0].attributes["agentloop.run.stop_reason"] == "approval_required"
    assert "agentloop.span.ended_by" not in runs[0].attributes
    assert runs[1].attributes["agentloop.run.stop_reason"] == "final"


def test_missing_opentelemetry_raises_missing_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentloop import MissingDependencyError

    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'agentloop\[otel\]'"):
        OTelObserver()


def test_import_agentloop_does_not_import_opentelemetry() -> None:
    code = "import sys, agentloop, agentloop.otel; assert not any(m.startswith('opentelemetry') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_an_agent_tools_inner_run_is_a_child_of_the_outer_tool_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Agents as tools (issue 17): invoke_agent (outer) > execute_tool research > invoke_agent (inner) > chat."""
    tracing = OTelObserver(tracer_provider=provider)
    model = ScriptedModel(
        [tool_calls(call("research", {"input": "x"}, id="call_r")), text("inner"), text("outer")]
    )
    inner = Agent(client=model, name="research")
    tools = ToolRegistry()
    tools.register(inner.as_tool())
    await Agent(client=model, tools=tools, observers=[tracing]).run("q")
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    runs = [s for s in spans if s.name == "invoke_agent"]
    assert len(runs) == 2
    outer_run = next(s for s in runs if s.parent is None or s.parent.span_id not in by_id)
    inner_run = next(s for s in runs if s is not outer_run)
    tool = by_id[inner_run.parent.span_id]
    assert tool.name == "execute_tool research" and tool.attributes["gen_ai.tool.call.id"] == "call_r"
    assert by_id[tool.parent.span_id] is outer_run
    inner_chats = [
        s for s in spans if s.name.startswith("chat") and s.parent.span_id == inner_run.context.span_id
    ]
    assert len(inner_chats) == 1
    assert tracing.open_runs == ()
