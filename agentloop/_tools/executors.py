"""What runs a tool once its arguments are checked: one executor per mode, each ending in a `ToolOutcome`.

- "inline" / "thread" (`run_in_process`): the function itself, awaited on the event loop or in a
  worker thread, under `Limits.timeout` as a cancel scope. The tool's own exception object is
  kept on the outcome, so `format_tool_error` sees it as it was raised.
- "process" / "isolated" (`SandboxExecutor`): the public `ToolExecutor` seam over the fork-server
  `ProcessSandbox`; its `SandboxOutcome` becomes a typed `ToolOutcome` (an exception raised in
  the child becomes a `SandboxedToolError` standing in for it).
- `sandbox=<a ToolExecutor>`: the caller's own (Temporal's activity box). `call_executor`
  guards every such call: an executor that raises or returns something other than an outcome
  ends the call as "crashed", with a text for the model, instead of failing the run.

`SandboxPool` owns the fork servers of one registry (created on first use, stopped by
`aclose`); the registry only holds it. Nothing here writes a model-facing text except the
executors' own "what happened" (`dispatch.py` names the tool, formats exceptions and bounds it).
"""

from __future__ import annotations

import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from types import CoroutineType
from typing import TYPE_CHECKING, Any, cast, get_args

import anyio

from .._exceptions import SandboxedToolError
from .._limits import Limits
from .._seams import ToolExecutor, ToolOutcome
from .._types import OutcomeStatus, encode_result
from . import threads

if TYPE_CHECKING:
    from .._sandbox import ProcessSandbox, SandboxOutcome
    from .tool import Tool

__all__ = ["SandboxExecutor", "SandboxPool", "call_executor", "own_cancel", "run_in_process", "tool_failure"]

_STATUSES = frozenset(get_args(OutcomeStatus))


async def run_in_process(tool: Tool, kwargs: dict[str, Any]) -> ToolOutcome:
    """The "inline" / "thread" executor: call the function here, under its `Limits.timeout`."""
    timeout = tool.limits.timeout
    timed_out = False
    try:
        if timeout is None:  # no cancel scope to enter and leave: the common, hot case
            value = await _call(tool, kwargs)
        else:
            timed_out = True
            with anyio.move_on_after(timeout):
                value = await _call(tool, kwargs)
                timed_out = False
    except BaseException as e:
        if not tool_failure(e):
            raise
        return _raised(_stopped(e))
    if timed_out:
        abandoned = ""
        if tool.sandbox == "thread":
            abandoned = "; its worker thread was abandoned and may still be running"
            _warn_abandoned(tool.name)
        return ToolOutcome("timeout", f"Tool timed out after {timeout:g} s{abandoned}.", "timeout")
    status, content, error = encode_result(tool.name, value, tool.limits.output_bytes)
    return ToolOutcome(status, content, error, final=True)  # encode_result names the tool itself


def _warn_abandoned(name: str) -> None:
    """Said when it becomes true: only where `threads.py` could not give the call a daemon thread
    (an anyio without the internals it uses), the abandoned thread is one of anyio's asyncio worker
    threads, which are not daemon threads, so the interpreter waits for the tool before it exits."""
    asyncio = sys.modules.get("asyncio")  # a thread tool ran: an event loop runs in this thread
    on_asyncio = asyncio is not None and asyncio._get_running_loop() is not None
    if on_asyncio and not threads.DAEMON:
        warnings.warn(
            f"tool {name!r} timed out in a thread, which was abandoned (Python cannot stop a thread): "
            "on asyncio the interpreter will wait for it to return before exiting. Give a tool "
            "that may hang sandbox='process' (it is killed), or make it return on its own.",
            RuntimeWarning,
            stacklevel=2,
        )


class _Stopped(Exception):
    """Carries a thread tool's StopIteration to the event loop, which would turn it into
    "RuntimeError: coroutine raised StopIteration" (a future cannot hold a StopIteration), and its
    GeneratorExit: asyncio delivers a future's exception with `coro.throw`, and a GeneratorExit
    thrown into a coroutine closes it (the run ended as a bare GeneratorExit, or asyncio's
    "coroutine ignored GeneratorExit")."""

    def __init__(self, stop: StopIteration | GeneratorExit) -> None:
        self.stop = stop


def _stopped(e: BaseException) -> BaseException:
    """The StopIteration a tool raised (a `next(...)` that found nothing), as "process" tools report
    it: Python turns it into `RuntimeError('coroutine raised StopIteration')` in an async tool,
    naming a coroutine the tool author never wrote, and the thread's carrier holds it."""
    if isinstance(e, _Stopped):
        return e.stop
    cause = e.__cause__
    if (
        type(e) is RuntimeError
        and isinstance(cause, StopIteration)
        and str(e).endswith("raised StopIteration")
    ):
        return cause
    return e


def _raised(e: BaseException) -> ToolOutcome:
    tb = "".join(traceback.format_exception(e))
    return ToolOutcome("raised", error=type(e).__name__, exception=e, traceback=tb)


def tool_failure(exc: BaseException) -> bool:
    """Whether what a tool raised ends only its call ("raised"), not the run: everything but a
    real cancellation, KeyboardInterrupt and the GeneratorExit of a coroutine being closed.
    SystemExit (a tool calling sys.exit()) and a library's own BaseException (pytest's `Failed`,
    gevent's `Timeout`) are the tool's failure: let out, they would tear down every sibling run in
    the caller's task group. A Ctrl-C lands in whatever code runs, a tool's too, and must stop the
    program.

    GeneratorExit is how a coroutine is closed and must not be swallowed then: `close()` closes
    the innermost awaited object first and then raises a fresh GeneratorExit in each suspended
    frame, so the one the catching frame sees was raised in that very frame (its traceback has no
    frame below). One that unwound from below (a tool's `raise GeneratorExit`, a generator's
    misuse in a thread) is the tool's failure: let out, it left the run as a bare exception group
    (or asyncio's "coroutine ignored GeneratorExit")."""
    if isinstance(exc, (Exception, SystemExit)):
        return True
    if isinstance(exc, GeneratorExit):
        tb = exc.__traceback__
        return tb is not None and tb.tb_next is not None
    if isinstance(exc, KeyboardInterrupt):
        return False
    if isinstance(exc, BaseExceptionGroup):
        return all(tool_failure(e) for e in exc.exceptions)
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return own_cancel(exc)
    return True


def own_cancel(exc: BaseException) -> bool:
    """An asyncio `CancelledError` the tool raised without its task being cancelled (it awaited a
    future someone else cancelled, or raised one): the tool's own failure, not the run's
    cancellation, so it ends the call as "raised" and the run goes on, whether the call ran alone
    or beside others. A real cancellation (a deadline, the caller cancelling) always propagates.
    trio's `Cancelled` cannot be raised by a tool, so it is always a real one."""
    asyncio = sys.modules.get("asyncio")  # never imported here: a CancelledError means it is loaded
    if asyncio is None or not isinstance(exc, asyncio.CancelledError):
        return False
    cancelling = getattr(asyncio.current_task(), "cancelling", None)  # a foreign task type: real
    return cancelling is not None and not cancelling()


async def _call(tool: Tool, kwargs: dict[str, Any]) -> Any:
    if tool.sandbox == "inline":
        result = await tool.fn(**kwargs)
        if isinstance(result, CoroutineType):  # `return fetch(x)` in an async def: the same case
            result.close()
            raise TypeError(
                "it returned a coroutine it did not await (a missing `await`?): `return await ...`"
            )
        return result
    # thread: Python cannot kill a thread; on timeout or cancellation it is abandoned (a daemon
    # thread: it never keeps the process alive; threads.py)
    return await threads.run_sync(partial(_in_thread, tool.fn, kwargs))


def _in_thread(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    try:
        result = fn(**kwargs)
    except (StopIteration, GeneratorExit) as e:
        raise _Stopped(e) from None
    if isinstance(result, CoroutineType):  # trio refuses it with a puzzling TypeError, asyncio
        # could not encode it: one clear error on both, and no "never awaited" warning
        result.close()
        raise TypeError(_UNAWAITED)
    return result


_UNAWAITED = (
    "it returned a coroutine, which nothing awaits (a missing `await`?): make the tool an `async def` "
    "that awaits it"
)


class SandboxExecutor:
    """The "process" / "isolated" `ToolExecutor`: one `ProcessSandbox` (a fork server, started on
    the first call), its outcomes typed.

    `aclose` stops the fork server and puts a fresh, unstarted one in its place: a registry is
    entered (`async with tools:`) once per script run, request or worker lifetime, and its tools
    hold this executor, so a closed one must not leave them unable to run ("created on first use"
    holds every time)."""

    __slots__ = ("_make", "sandbox")

    def __init__(self, sandbox: ProcessSandbox, make: Callable[[], ProcessSandbox] | None = None) -> None:
        self.sandbox = sandbox
        self._make = make

    async def call(self, ref: str, arguments: dict[str, Any], limits: Limits) -> ToolOutcome:
        return typed(await self.sandbox.call(ref, arguments, limits))

    async def aclose(self) -> None:
        closing = self.sandbox
        if self._make is not None:
            self.sandbox = self._make()  # before the await: a call from now on starts the new one
        await closing.aclose()


def typed(out: SandboxOutcome) -> ToolOutcome:
    """A `SandboxOutcome` (its status a plain str, written by the sandbox) as a `ToolOutcome`."""
    status = cast(OutcomeStatus, out.status)
    if status == "raised":
        exc = SandboxedToolError(out.error or "Exception", out.exc_message, out.traceback)
        return ToolOutcome("raised", out.content, out.error, exception=exc, traceback=out.traceback)
    # the tool's own output, cut with a marker that says so: the model reads it as it is
    own = status == "ok" or (status == "output_limit" and "[output truncated:" in out.content)
    return ToolOutcome(status, out.content, out.error, final=own)


class SandboxPool:
    """The fork-server sandboxes of one registry: one per mode, created when a tool first needs it
    (so a program without sandboxed tools never imports the sandbox), stopped by `aclose`."""

    __slots__ = ("_executors", "_ro_paths")

    def __init__(self, ro_paths: Sequence[str] = ()) -> None:
        self._ro_paths = tuple(ro_paths)  # extra read-only paths of sandboxed tools
        self._executors: dict[bool, SandboxExecutor] = {}  # isolated? -> its executor

    def executor(self, mode: str) -> SandboxExecutor:
        isolated = mode == "isolated"
        found = self._executors.get(isolated)
        if found is None:
            # imported on first use: most programs never start a sandbox, so they never pay its import
            from .._sandbox import ProcessSandbox

            def make() -> ProcessSandbox:
                return ProcessSandbox(isolated=isolated, ro_paths=self._ro_paths)

            found = self._executors[isolated] = SandboxExecutor(make(), make)
        return found

    def check(self, fn: Callable[..., Any], mode: str) -> str:
        """`fn`'s "module:qualname", once this host is known to run `mode` (else a typed error)."""
        box = self.executor(mode).sandbox
        ref = box.tool_ref(fn)
        box.check_available()
        return ref

    async def aclose(self) -> None:
        for executor in self._executors.values():
            await executor.aclose()


async def call_executor(
    executor: ToolExecutor, ref: str, arguments: dict[str, Any], limits: Limits
) -> ToolOutcome:
    """`executor.call(...)`, whatever the executor does short of cancellation: an outcome."""
    try:
        out = await executor.call(ref, arguments, limits)
    except BaseException as e:  # a broken executor: the call fails, the run and its siblings go on
        if not tool_failure(e):
            raise  # a real cancellation (or KeyboardInterrupt)
        tb = "".join(traceback.format_exception(e))
        return ToolOutcome(
            "crashed",
            f"Tool could not be run: its executor raised {type(e).__name__}.",
            type(e).__name__,
            traceback=tb,
        )
    return _bounded(_checked(out), limits)


def _bounded(out: ToolOutcome, limits: Limits) -> ToolOutcome:
    """An executor's "ok" text held to what the tool's own result is held to: sendable (no lone
    surrogates, `final` or not) and cut at `limits.output_bytes` with the visible marker. The
    fork-server sandbox cuts in the child already; an executor of the caller's may not."""
    if out.status != "ok":
        return out
    status, content, error = encode_result("", out.content, limits.output_bytes)
    if content is out.content:  # the common case: nothing to change
        return out
    return ToolOutcome(status, content, error or out.error, traceback=out.traceback, final=True)


def _broken(out: Any) -> ToolOutcome:
    shown = type(out).__name__
    return ToolOutcome(
        "crashed", f"Tool could not be run: its executor returned a {shown}, not a ToolOutcome.", "executor"
    )


def _checked(out: Any) -> ToolOutcome:
    """An executor's answer as a `ToolOutcome` one can rely on. One of the same shape (as executors
    written before the type return, e.g. a `SandboxOutcome`) is read; anything else is a crash."""
    status, content = getattr(out, "status", None), getattr(out, "content", None)
    # type first: a status that is a list is unhashable, not a member of the set
    if type(status) is not str or status not in _STATUSES or not isinstance(content, str):
        return _broken(out)
    error = getattr(out, "error", None)
    error = error if isinstance(error, str) else None
    tb = getattr(out, "traceback", None)
    tb = tb if isinstance(tb, str) and tb else None
    if isinstance(out, ToolOutcome):
        exc = out.exception if isinstance(out.exception, BaseException) else None
        if error is out.error and tb is out.traceback and exc is out.exception:
            return out  # the common case: nothing to repair
        return ToolOutcome(out.status, content, error, exc, tb, out.final is True)
    status = cast(OutcomeStatus, status)
    if getattr(out, "formatted", False) is True:  # written by another dispatcher (Temporal's worker)
        return ToolOutcome(status, content, error, traceback=tb, final=True)
    if status == "raised":
        message = getattr(out, "exc_message", "")
        exc = SandboxedToolError(error or "Exception", message if isinstance(message, str) else "", tb or "")
        return ToolOutcome("raised", content, error, exception=exc, traceback=tb)
    own = status == "ok" or (status == "output_limit" and "[output truncated:" in content)
    return ToolOutcome(status, content, error, traceback=tb, final=own)
