"""OpenTelemetry tracing for agent runs, with the GenAI semantic-convention attribute names.

```python
from agentloop.otel import OTelObserver

tracing = OTelObserver()                      # the global tracer provider, or tracer_provider=...
agent = Agent(client=client, tools=tools, observers=[tracing])
with tracing.guard():                         # ends the spans of a run that raises (see below)
    result = await agent.run("...")
```

Spans (the run span is a child of whatever span is current when the run starts):

    invoke_agent                  gen_ai.operation.name=invoke_agent, agentloop.run.id, model, usage
    ├── chat {model}              one per model request: request/response model, tokens, finish reasons
    ├── execute_tool {name}       one per tool call: tool name, call id, agentloop.tool.outcome
    │   └── invoke_agent          an agent used as a tool (`Agent.as_tool`): the inner run, nested
    └── ...

Content (prompts, answers, tool arguments and results) is recorded only with
`capture_content=True`; nothing here ever sees the API key. Spans are keyed by run id, step and
call id, so any number of concurrent runs can share one observer.

Why `guard()`: a run that raises (a limit, a model error, cancellation) emits no `RunFinished`.
The observer also ends a run's spans on a `RunFailed` event, when the loop emits one, and when
the same run id starts again (a resumed run); `guard()` covers what is left, and `close()` ends
whatever is still open at shutdown.

Needs `pip install 'agentloop[otel]'`; `import agentloop` never imports OpenTelemetry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentloop import (
    Event,
    MissingDependencyError,
    ModelRequestStarted,
    ModelResponded,
    RunFinished,
    RunStarted,
    TextDelta,
    ThinkingDelta,
    ToolCallFinished,
    ToolCallStarted,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from agentloop import RunResult, ToolCallRecord

__all__ = ["OTelObserver"]

PROVIDER = "fluxrouter"
# Runs started inside a `guard()` block register here, so the block can end them if it raises.
_guarded: ContextVar[list[str] | None] = ContextVar("agentloop_otel_guard", default=None)


def _import_trace() -> Any:
    try:
        from opentelemetry import trace
    except ImportError as e:  # the optional dependency is missing: say how to get it
        raise MissingDependencyError(
            f"OpenTelemetry tracing needs the 'opentelemetry-api' package ({e}). "
            "Install it with: pip install 'agentloop[otel]'"
        ) from None
    return trace


@dataclass(slots=True)
class _Chat:
    span: Span
    text: list[str] = field(default_factory=list)
    ended_ns: int | None = None  # set at ModelResponded; the span ends at the run's next event


@dataclass(slots=True)
class _Run:
    run_id: str
    span: Span
    model: str
    chats: dict[int, _Chat] = field(default_factory=dict)
    tools: dict[str, Span] = field(default_factory=dict)
    first_request_messages: int | None = None


class OTelObserver:
    """An `Agent` observer that turns run events into OpenTelemetry spans.

    - `tracer_provider`: where spans go (default: the global provider set by the application).
    - `capture_content`: also record prompts, answers, tool arguments and tool results
      (`gen_ai.input.messages`, `gen_ai.output.messages`, `gen_ai.tool.call.arguments`,
      `gen_ai.tool.call.result`). Off by default: they may hold personal data.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None, capture_content: bool = False) -> None:
        from . import __version__

        self._trace = _import_trace()
        self._tracer: Tracer = self._trace.get_tracer(
            "agentloop", __version__, tracer_provider=tracer_provider
        )
        self.capture_content = capture_content
        self._runs: dict[str, _Run] = {}

    # --- the observer ---------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Handle one event (sync and cheap: OpenTelemetry's span API does no I/O)."""
        run = self._runs.get(event.run_id)
        if isinstance(event, RunStarted):
            self._start_run(event)
            return
        if run is None:
            return  # a run that started before this observer, or already ended
        if not (isinstance(event, TextDelta | ThinkingDelta) and event.step in run.chats):
            self._end_answered_chats(run)
        if isinstance(event, ModelRequestStarted):
            self._start_chat(run, event)
        elif isinstance(event, ModelResponded):
            self._model_responded(run, event)
        elif isinstance(event, TextDelta):
            chat = run.chats.get(event.step)
            if chat is not None and self.capture_content:
                chat.text.append(event.text)
        elif isinstance(event, ToolCallStarted):
            self._start_tool(run, event)
        elif isinstance(event, ToolCallFinished):
            self._finish_tool(run, event.record)
        elif isinstance(event, RunFinished):
            self._finish_run(event.run_id, event.result)
        elif type(event).__name__ == "RunFailed":  # the loop's failure event, where it has one
            self.end_run(event.run_id, getattr(event, "error", None))
        elif type(event).__name__ == "RunPaused":  # an approval pause, where the loop reports one
            self._finish_run(event.run_id, event.result)  # type: ignore[attr-defined]

    # --- ending what is left open ----------------------------------------------------------------

    def end_run(
        self, run_id: str, error: BaseException | None = None, *, description: str | None = None
    ) -> None:
        """End every open span of `run_id` (ERROR status when `error` is given). No-op if none."""
        run = self._runs.pop(run_id, None)
        if run is None:
            return
        self._end_answered_chats(run)
        what = description or (f"run failed: {type(error).__name__}" if error is not None else None)
        for span in [*(c.span for c in run.chats.values()), *run.tools.values(), run.span]:
            if error is not None:
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, what))
                if span is run.span and self.capture_content:  # its message and traceback: content
                    span.record_exception(error)
            elif description is not None:
                span.set_attribute("agentloop.span.ended_by", description)
            span.end()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """End the spans of runs started in this block if the block raises (or leaves them open).

        A run that raises emits no `RunFinished`; without this (or a loop that emits
        `RunFailed`), its spans would stay open. Works for `run`, `resume` and `stream` alike,
        on asyncio and trio: the runs register through a context variable.
        """
        started: list[str] = []
        token = _guarded.set(started)
        try:
            yield
        except BaseException as e:
            for run_id in started:
                self.end_run(run_id, e)
            raise
        else:
            for run_id in started:  # e.g. a run paused for approval: it emits no RunFinished
                self.end_run(run_id, description="guard exit")
        finally:
            _guarded.reset(token)

    def close(self) -> None:
        """End every span still open (at shutdown): a span that never ends is never exported."""
        for run_id in list(self._runs):
            self.end_run(run_id, description="observer closed")

    @property
    def open_runs(self) -> Sequence[str]:
        """Run ids whose spans are still open."""
        return tuple(self._runs)

    # --- spans ----------------------------------------------------------------------------------

    def _start_run(self, event: RunStarted) -> None:
        # The same run id again: a resumed run (after a pause or a crash). Its old spans end here.
        self.end_run(event.run_id, description="run restarted")
        # A nested run (an agent used as a tool) is a child of the outer call's execute_tool span.
        outer = self._runs.get(event.parent_run_id) if event.parent_run_id else None
        call_span = outer.tools.get(event.parent_call_id) if outer and event.parent_call_id else None
        context = self._trace.set_span_in_context(call_span) if call_span is not None else None
        span = self._tracer.start_span(
            "invoke_agent",
            kind=self._trace.SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.provider.name": PROVIDER,
                "gen_ai.request.model": event.model,
                "agentloop.run.id": event.run_id,
            },
            context=context,
        )  # context None: the current span (the caller's, e.g. an HTTP request) is the parent
        self._runs[event.run_id] = _Run(event.run_id, span, event.model)
        started = _guarded.get()
        if started is not None:
            started.append(event.run_id)

    def _start_chat(self, run: _Run, event: ModelRequestStarted) -> None:
        if run.first_request_messages is None:
            run.first_request_messages = event.messages
        span = self._tracer.start_span(
            f"chat {event.model}",
            context=self._trace.set_span_in_context(run.span),
            kind=self._trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": PROVIDER,
                "gen_ai.request.model": event.model,
                "agentloop.run.id": event.run_id,
                "agentloop.step": event.step,
            },
        )
        run.chats[event.step] = _Chat(span)

    def _model_responded(self, run: _Run, event: ModelResponded) -> None:
        chat = run.chats.get(event.step)
        if chat is None:
            return
        span = chat.span
        if event.response_model:
            span.set_attribute("gen_ai.response.model", event.response_model)
        # ModelResponded carries the router's request id; a completion id, if the loop adds one, wins.
        response_id = getattr(event, "response_id", None) or event.request_id
        if response_id:
            span.set_attribute("gen_ai.response.id", response_id)
        span.set_attribute("gen_ai.usage.input_tokens", event.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", event.usage.completion_tokens)
        if event.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [event.finish_reason])
        span.set_attribute("agentloop.tool_calls", event.tool_calls)
        # Not ended yet: a non-streamed answer's TextDelta comes after ModelResponded; the end
        # time is taken now so the span still measures the request alone.
        chat.ended_ns = time.time_ns()

    def _end_answered_chats(self, run: _Run) -> None:
        for step, chat in list(run.chats.items()):
            if chat.ended_ns is None:
                continue
            if self.capture_content and chat.text:
                output = [{"role": "assistant", "parts": [{"type": "text", "content": "".join(chat.text)}]}]
                chat.span.set_attribute("gen_ai.output.messages", _dumps(output))
            chat.span.end(end_time=chat.ended_ns)
            del run.chats[step]

    def _start_tool(self, run: _Run, event: ToolCallStarted) -> None:
        span = self._tool_span(run, event.name, event.tool_call_id, event.step)
        if self.capture_content:
            span.set_attribute("gen_ai.tool.call.arguments", event.arguments)
        run.tools[event.tool_call_id] = span

    def _tool_span(self, run: _Run, name: str, call_id: str, step: int) -> Span:
        return self._tracer.start_span(
            f"execute_tool {name}",
            context=self._trace.set_span_in_context(run.span),
            kind=self._trace.SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": call_id,
                "gen_ai.tool.type": "function",
                "agentloop.run.id": run.run_id,
                "agentloop.step": step,
            },
        )

    def _finish_tool(self, run: _Run, record: ToolCallRecord) -> None:
        span = run.tools.pop(record.id, None)
        if span is None:  # rejected before it ran (bad arguments, unknown tool): no ToolCallStarted
            span = self._tool_span(run, record.name, record.id, record.step)
            if self.capture_content:
                span.set_attribute("gen_ai.tool.call.arguments", record.raw_arguments)
        span.set_attribute("agentloop.tool.outcome", record.status)
        if self.capture_content:
            span.set_attribute("gen_ai.tool.call.result", record.content)
        if record.status != "ok":
            span.set_attribute(
                "error.type", record.error if record.status == "raised" and record.error else record.status
            )
            span.set_status(
                self._trace.Status(self._trace.StatusCode.ERROR, f"tool outcome: {record.status}")
            )
        span.end()

    def _finish_run(self, run_id: str, result: RunResult) -> None:
        run = self._runs.get(run_id)
        if run is None:
            return
        span = run.span
        span.set_attribute("gen_ai.usage.input_tokens", result.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", result.usage.completion_tokens)
        span.set_attribute("agentloop.run.steps", result.steps)
        span.set_attribute("agentloop.run.stop_reason", result.stop_reason)
        span.set_attribute("agentloop.run.tool_calls", len(result.tool_calls))
        if self.capture_content:
            sent = result.messages[: run.first_request_messages or 0]
            span.set_attribute("gen_ai.input.messages", _dumps([_semconv_message(m) for m in sent]))
            if result.output is not None:
                output = [{"role": "assistant", "parts": [{"type": "text", "content": result.output}]}]
                span.set_attribute("gen_ai.output.messages", _dumps(output))
        self.end_run(run_id)


def _semconv_message(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat message in the GenAI conventions' message shape (role + typed parts)."""
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if message.get("role") == "tool":
        parts.append({"type": "tool_call_response", "id": message.get("tool_call_id"), "response": content})
    elif isinstance(content, str) and content:
        parts.append({"type": "text", "content": content})
    elif isinstance(content, list):
        parts.extend({"type": "text", "content": p.get("text", "")} for p in content if isinstance(p, dict))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        parts.append(
            {
                "type": "tool_call",
                "id": call.get("id"),
                "name": fn.get("name"),
                "arguments": fn.get("arguments"),
            }
        )
    return {"role": message.get("role"), "parts": parts}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
