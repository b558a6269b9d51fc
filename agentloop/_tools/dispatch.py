"""Running one assistant message's tool calls: concurrently, each to exactly one outcome.

Every call ends in a `ToolCallRecord` whose `content` is the tool message the model receives.
Nothing a call does (bad JSON, schema violations, an unknown name, an exception, a timeout, an
unencodable result) escapes as an exception or touches its siblings: each call runs as if it were
its own task in one task group (its own context; a call that never waits needs no task, see
`Dispatcher.run`) and catches its own failures. Only cancellation of the run propagates, after
the call's record has been written as `cancelled`.
"""

from __future__ import annotations

import contextvars
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import anyio

from .._budget import InputBudget
from .._context import RunContext
from .._events import ToolCallFinished, ToolCallStarted, warning_logger
from .._exceptions import SandboxedToolError
from .._model import Emit
from .._seams import ToolOutcome
from .._types import OutcomeStatus, ToolCallRecord, sendable
from .arguments import Rejected, checked_arguments, clip, truncate
from .executors import call_executor, run_in_process, tool_failure
from .registry import ToolRegistry
from .tool import OUT_OF_PROCESS, Tool

# Room for the "[output truncated: ...]" marker an executor appends to a result cut at its cap.
_MARKER_ROOM = 512

__all__ = ["Dispatcher", "ErrorFormatter", "default_error_formatter"]

ErrorFormatter = Callable[[str, BaseException], str]
"""`(tool_name, exception) -> str`: the text the model reads when a tool raises (`Agent(format_tool_error=...)`)."""


def default_error_formatter(tool_name: str, exc: BaseException) -> str:
    """What the model sees when a tool raises: the tool, the exception type and message, nothing more.

    Override with `Agent(format_tool_error=...)` to reveal less (e.g. only a generic message for
    some exception types) or more. For "process" / "isolated" tools `exc` is a
    `SandboxedToolError` standing in for the child's exception (its `exc_type`, message and
    `traceback`); the traceback is never shown to the model by default.
    """
    return f"Tool {tool_name!r} raised {exception_type(exc)}: {safe_str(exc)}"


def safe_str(exc: BaseException) -> str:
    """`str(exc)`, even for an exception whose `__str__` raises (a tool's own class may): the
    run must not die of the message of an error it was handling."""
    try:
        return str(exc)
    except Exception as e:
        return f"<str() of the exception failed: {type(e).__name__}>"


def exception_type(exc: BaseException) -> str:
    """The class name of the exception the tool raised, wherever it ran."""
    return exc.exc_type if isinstance(exc, SandboxedToolError) else type(exc).__name__


def _named(name: str, text: str) -> str:
    """A sandbox outcome's text with the tool named, as every other error text names it."""
    return f"Tool {name!r}{text[4:]}" if text.startswith("Tool ") else f"Tool {name!r}: {text}"


class Dispatcher:
    """Runs tool calls for one run. Holds only that run's settings; cheap to create."""

    __slots__ = (
        "_checker",
        "budget",
        "context",
        "emit",
        "format_error",
        "limiter",
        "log",
        "on_finish",
        "on_invoke",
        "redact",
        "registry",
        "run_id",
    )

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        run_id: str,
        emit: Emit | None,
        log: Any,
        max_concurrent: int | None,
        format_error: ErrorFormatter,
        on_invoke: Callable[[ToolCallRecord], Awaitable[None]] | None = None,
        on_finish: Callable[[ToolCallRecord], Awaitable[bool | None]] | None = None,
        context: Callable[[ToolCallRecord], Any] | None = None,
        budget: InputBudget | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.registry = registry
        # The client's credentials cut out of every outcome text (content, error, traceback)
        # before anything sees it: a tool's exception may quote the key it was given.
        self.redact = redact
        self.run_id = run_id
        self.emit = emit
        self.log = log
        self.limiter = anyio.CapacityLimiter(max_concurrent) if max_concurrent else None
        self.format_error = format_error
        # Durable runs: awaited right before the tool itself runs, and once its record is final
        # (not for cancelled calls). The run journal commits there.
        self.on_invoke = on_invoke
        self.on_finish = on_finish
        self.context = context  # record -> RunContext, for tools that take one
        self.budget = budget or InputBudget()
        # Large arguments are checked in a worker thread, one at a time for this run: a hostile
        # answer with many large calls occupies one thread, never the event loop.
        self._checker: anyio.CapacityLimiter | None = None

    def checker(self) -> anyio.CapacityLimiter:
        """Made on first use: ~560 B and 3 GC-tracked objects per run that never checks in a thread."""
        if self._checker is None:
            self._checker = anyio.CapacityLimiter(1)
        return self._checker

    async def run(self, calls: list[dict[str, Any]], step: int) -> list[ToolCallRecord]:
        """Run `calls` concurrently; return their records in the order the model listed them.

        If the run is cancelled meanwhile, `records` still holds a `cancelled` record for every
        call that did not finish (the caller reads it through `partial`).
        """
        records = [self._record(call, step) for call in calls]  # each `cancelled` until it ends
        if self.emit is not None:  # every call's Started before any call starts (see _announce)
            await self._announce(records, step)
        if len(calls) == 1:  # no task group needed for a single call
            await self._run_one(records[0])
            return records
        async with anyio.create_task_group() as tg:
            for i, record in enumerate(records):
                # Each call starts here, in this task, in a context of its own (as a task would
                # get), and runs until it first waits: what a task per call does in the same
                # order, without the task when it never waits (3.12's eager tasks, on both event
                # loops). When one waits, the calls after it start as tasks and it goes on here,
                # in the task group, under the same cancel scopes as a task of the group. Until a
                # call waits, the current task is the step's (as it always was for a lone call).
                ctx = contextvars.copy_context()
                coro = self._run_one(record)
                try:
                    waits_on = ctx.run(coro.send, None)
                except StopIteration:
                    continue  # finished without waiting
                for j in range(i + 1, len(records)):
                    tg.start_soon(self._run_one, records[j])
                await _go_on(ctx, coro, waits_on)
                break
        return records

    @staticmethod
    def _record(call: dict[str, Any], step: int) -> ToolCallRecord:
        fn = call["function"]
        return ToolCallRecord(
            call["id"], fn["name"], None, "cancelled", "", step, raw_arguments=fn["arguments"]
        )

    async def _announce(self, records: list[ToolCallRecord], step: int) -> None:
        """Every call's `ToolCallStarted`, before any call runs. `Agent.stream`'s buffer holds a
        call until its consumer has gone past the event (`announce` gates the batch once; a plain
        emit gates each event): a consumer that leaves on any event lets no call of the step start."""
        emit: Any = self.emit
        started = [ToolCallStarted(self.run_id, step, r.id, r.name, r.raw_arguments) for r in records]
        try:
            announce = getattr(emit, "announce", None)
            if announce is not None:
                await announce(started)
                return
            for event in started:
                await emit(event)
        except anyio.get_cancelled_exc_class():
            for r in records:
                r.content = f"Tool {r.name!r} was cancelled before it finished."  # (before it started)
            raise

    async def _run_one(self, record: ToolCallRecord) -> None:
        name = record.name
        start = time.perf_counter()
        try:
            status, content, error = await self._execute(record, record.raw_arguments)
        except anyio.get_cancelled_exc_class():
            record.content = f"Tool {name!r} was cancelled before it finished."
            record.duration_s = time.perf_counter() - start
            raise
        if status != "ok":  # an error text, maybe echoing the model's input: never longer than the budget
            content = truncate(sendable(content), self._text_cap(name, status))
        # the error and traceback quote the tool's exception: journaled and sent like the content
        error = error if error is None else sendable(error)
        if record.traceback is not None:
            record.traceback = sendable(record.traceback)
        if self.redact is not None:
            content, error = self.redact(content), error if error is None else self.redact(error)
            if record.traceback is not None:
                record.traceback = self.redact(record.traceback)
        record.status, record.content, record.error = status, content, error
        record.duration_s = time.perf_counter() - start
        # on_finish answers False when the call has no outcome yet (an agent tool whose inner run
        # paused for approval): no ToolCallFinished then, as no record and no journal entry; the
        # run's RunPaused names its pending inner calls, and the resumed call starts again
        settled = True if self.on_finish is None else await self.on_finish(record) is not False
        if self.log is not None:
            self.log.debug(
                "tool finished",
                step=record.step,
                tool_call_id=record.id,
                tool=name,
                outcome=status,
                duration_s=round(record.duration_s, 6),
            )
        if self.emit is not None and settled:
            await self.emit(ToolCallFinished(self.run_id, record.step, record))

    def _text_cap(self, name: str, status: OutcomeStatus) -> int:
        """Bytes of a non-"ok" text the model may read. An `output_limit` text is the tool's result,
        already cut to its `Limits.output_bytes` with a marker saying so: cutting it again to the
        error budget (8 KiB) sent 8 KiB of a 64 KB result under a marker that named the wrong size."""
        cap = self.budget.max_error_bytes
        tool = self.registry.get(name) if status == "output_limit" else None
        if tool is not None and tool.limits.output_bytes is not None:
            cap = max(cap, tool.limits.output_bytes + _MARKER_ROOM)
        return cap

    async def _execute(self, record: ToolCallRecord, raw: str) -> tuple[OutcomeStatus, str, str | None]:
        name = record.name
        budget = self.budget
        tool = self.registry.get(name) if name else None
        if tool is None:
            available = ", ".join(self.registry.names) or "(none)"
            shown = clip(name, budget.max_tool_name_chars)
            what = f"There is no tool named {shown!r}." if name else "The tool call has no function name."
            text = f"{what} Available tools: {available}. Call one of them by its exact name."
            return "unknown_tool", text, clip(name, budget.max_tool_name_chars)
        bind = tool.sandbox not in OUT_OF_PROCESS  # the child process binds for itself
        checked = await checked_arguments(tool, raw, budget, bind, self.checker)
        if isinstance(checked, Rejected):
            return checked.status, checked.content, checked.error  # type: ignore[return-value]
        args = record.arguments = checked.arguments
        if self.log is not None:
            self.log.debug(
                "tool started", step=record.step, tool_call_id=record.id, tool=name, sandbox=tool.sandbox
            )
        if self.limiter is None:
            if self.on_invoke is not None:
                await self.on_invoke(record)
            return await self._invoke(tool, args, checked.kwargs, record)
        async with self.limiter:
            if self.on_invoke is not None:
                await self.on_invoke(record)
            return await self._invoke(tool, args, checked.kwargs, record)

    async def _invoke(
        self, tool: Tool, args: dict[str, Any], kwargs: dict[str, Any] | None, record: ToolCallRecord
    ) -> tuple[OutcomeStatus, str, str | None]:
        if kwargs is None:  # out of process: the executor (its child, its worker) binds the arguments
            executor = self.registry.sandbox_for(tool.sandbox, tool.name)
            ref = tool.ref if tool.ref is not None else tool.name
            outcome = await call_executor(executor, ref, args, tool.limits)
        else:
            if tool.context is not None:  # a new dict: bind may return the validated arguments themselves
                kwargs = {**kwargs, tool.context: self._context(record)}
            outcome = await run_in_process(tool, kwargs)
        return self._text(tool, outcome, record)

    def _text(
        self, tool: Tool, outcome: ToolOutcome, record: ToolCallRecord
    ) -> tuple[OutcomeStatus, str, str | None]:
        """The model-facing text of an outcome, whichever executor ended the call."""
        status = outcome.status
        if status == "raised" and not outcome.final:  # the same formatter, record and log in every mode
            trace = outcome.traceback or ""
            exc = outcome.exception or SandboxedToolError(
                outcome.error or "Exception", outcome.content, trace
            )
            return "raised", self._raised(record, exc, trace), outcome.error
        if outcome.traceback is not None:
            record.traceback = outcome.traceback
        if outcome.final:  # the tool's own output as the sandbox cut it, or a worker's finished text
            content = outcome.content
            if status not in ("ok", "output_limit") and repr(tool.name) not in content:
                content = _named(tool.name, content)  # an error text names the tool, whoever wrote it
            return status, content, outcome.error
        if status == "ok":  # the result, as an executor of the caller's sent it
            return status, sendable(outcome.content), outcome.error
        return status, _named(tool.name, outcome.content), outcome.error

    def _context(self, record: ToolCallRecord) -> Any:
        if self.context is not None:
            return self.context(record)
        # No run behind this dispatcher (a Temporal worker's activity): the call's own facts, no deps.

        return RunContext(None, self.run_id, "", record.step, tool_call_id=record.id, tool_name=record.name)

    def _raised(self, record: ToolCallRecord, exc: BaseException, tb: str) -> str:
        """A tool raised: keep and log its traceback; the model gets only the formatted text."""
        if self.redact is not None:
            tb = self.redact(tb)
        record.traceback = tb
        log = self.log or warning_logger(run_id=self.run_id)
        if log is not None:
            log.warning(
                "tool raised",
                step=record.step,
                tool_call_id=record.id,
                tool=record.name,
                exc_type=exception_type(exc),
                traceback=tb,
            )
        try:
            text = self.format_error(record.name, exc)
            if isinstance(text, str):
                return text
            problem = f"returned {type(text).__name__}, not str"
        except (
            BaseException
        ) as e:  # as for a tool: only KeyboardInterrupt or a real cancellation ends the run
            if not tool_failure(e):
                raise
            problem = f"raised {type(e).__name__}: {safe_str(e)}"
        if log is not None:
            log.warning(
                "format_tool_error failed; the default text was sent", tool=record.name, problem=problem
            )
        return default_error_formatter(record.name, exc)


@types.coroutine
def _go_on(
    ctx: contextvars.Context, coro: Coroutine[Any, Any, None], waits_on: Any
) -> Generator[Any, Any, None]:
    """Await `coro`, already started and suspended on `waits_on`, in its own context: `yield from`
    for a coroutine the caller started, so whatever the event loop sends or throws (a wake-up, a
    cancellation) reaches the call as if it were awaited directly."""
    while True:
        try:
            sent = yield waits_on
        except GeneratorExit:
            ctx.run(coro.close)
            raise
        except BaseException as exc:  # a cancellation, delivered to this task: the call gets it
            try:
                waits_on = ctx.run(coro.throw, exc)
            except StopIteration:
                return
        else:
            try:
                waits_on = ctx.run(coro.send, sent)
            except StopIteration:
                return
