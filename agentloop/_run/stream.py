"""The event stream behind `Agent.stream`: the loop in a task, its events through a small bounded buffer.

Why a buffer and not a rendezvous: through a zero-capacity channel every event was a round trip
between two tasks (a checkpoint and two task switches; ~30 events a step made that a quarter of
a streamed step's CPU). Here the loop appends to a buffer of at most `BUFFER` events without
suspending, and waits only when it is full; the consumer takes events without suspending while
there are some, and waits only when there are none. So both sides switch when the loop waits
for something anyway (the network, a tool), not per event.

Back-pressure is kept: the run is never more than `BUFFER` events ahead of its consumer, so a
slow consumer slows the run and events never pile up. The loop's own errors are handed to the
consumer as they are (not wrapped in an ExceptionGroup), after the events before them.

A tool call waits for its consumer: the task that emits a `ToolCallStarted` waits until the
consumer has taken that event *and asked for the next one* (its loop body for the event ran to
the end), so a consumer that `break`s out of its `async for` on any event lets no further tool
call start: the calls wait there until the `async with` ends, which cancels the run. The
dispatcher announces a step's calls together (`announce`: one hand-off per step, not per call).
"""

from __future__ import annotations

import functools
import math
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, NoReturn, ParamSpec, TypeVar

import anyio
import anyio.lowlevel

from .._events import Event, RunFinished, ToolCallStarted
from .._exceptions import ConfigurationError, RunError
from .._model import Emit
from .._types import RunResult

__all__ = ["BUFFER", "EventStream", "entered_once", "stream_events"]

# How many events the run may be ahead of its consumer. A streamed step emits ~10 events plus
# one or two per delta; most of them come between two waits of the loop, so 32 lets a typical
# step through without a switch per event. The events hold nothing the run does not hold anyway
# (a delta's text is the same string the assembler keeps), so the buffer costs no copies.
BUFFER = 32


_P = ParamSpec("_P")
_T = TypeVar("_T")


def entered_once(fn: Callable[_P, AsyncIterator[_T]]) -> Callable[_P, AbstractAsyncContextManager[_T]]:
    """`asynccontextmanager`, except that entering one object a second time (or after it finished)
    raises `ConfigurationError` saying what to do, not contextlib's bare AttributeError /
    RuntimeError: a user keeping `s = agent.stream(...)` and entering it twice meets this."""
    factory = asynccontextmanager(fn)

    @functools.wraps(fn)
    def make(*args: _P.args, **kwargs: _P.kwargs) -> AbstractAsyncContextManager[_T]:
        return _Once(factory(*args, **kwargs))

    return make


class _Once(AbstractAsyncContextManager[Any]):
    __slots__ = ("_cm", "_entered")

    def __init__(self, cm: AbstractAsyncContextManager[Any]) -> None:
        self._cm = cm
        self._entered = False

    async def __aenter__(self) -> Any:
        if self._entered:
            raise ConfigurationError(
                "this agent.stream(...) object was already entered; a stream can be entered once "
                "(it is one run): call agent.stream(...) again for another run"
            )
        self._entered = True
        return await self._cm.__aenter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._cm.__aexit__(kind, exc, tb)

    # `async for e in agent.stream(...)` / `await agent.stream(...)` (other SDKs' spellings) met a
    # bare TypeError naming this private class; say what the object is and how to use it.
    _USE = (
        "agent.stream(...) is an async context manager (it owns the run's tasks): write "
        "`async with agent.stream(...) as events:` and then `async for event in events:`"
    )

    def __aiter__(self) -> NoReturn:
        raise ConfigurationError(f"{self._USE}; `async for` cannot take it directly")

    def __await__(self) -> NoReturn:
        raise ConfigurationError(f"{self._USE}, or `await agent.run(...)` for the result alone")


@asynccontextmanager
async def stream_events(loop: Callable[[Emit], Awaitable[Any]]) -> AsyncIterator[EventStream]:
    """Run `loop(emit)` in a task group and yield the iterator of what it emits."""
    buffer = _Buffer(_waiters())
    events = EventStream(buffer)

    async def produce() -> None:
        try:
            await loop(buffer)
        except Exception as e:  # handed to the consumer as is, not wrapped in a group
            events.error = e
        except anyio.get_cancelled_exc_class():
            if anyio.current_effective_deadline() == -math.inf:  # a cancel scope's: a real cancellation
                raise
            # asyncio: something called cancel() on this task itself (a tool cancelling "its" task),
            # no scope asked for it. Ending quietly would end the consumer's `async for` as if the
            # run were complete, with no RunFinished and no error: the run silently lost.
            events.error = RunError(
                "The streamed run's task was cancelled from inside the run (a tool or observer "
                "called cancel() on its own asyncio task) before the run finished; no result. Cancel "
                "a run through a cancel scope around it, not by cancelling the task it runs in."
            )
        finally:
            buffer.close()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce, name="agentloop stream")  # (a name: anyio need not build one)
            try:
                yield events
            finally:
                buffer.leave()  # whatever the loop emits from here on is dropped, never waited on
                if not buffer.closed:  # leaving early cancels the run
                    # (not when it has ended: anyio's cancel() formats the task's repr, ~50 µs)
                    tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The only task that can fail is the consumer's own body (the loop's errors are caught
        # in produce): give the caller its exception, not a group around it.
        if len(group.exceptions) == 1:
            exc = group.exceptions[0]
            raise exc from exc.__cause__
        raise
    if events.error is not None and not events.raised:
        raise events.error


class _Buffer:
    """At most `BUFFER` events between one producer (the loop) and its consumer.

    Each side parks on a one-shot waiter only when it cannot go on (`writers`: the buffer is
    full; `reader`: it is empty), and the other side wakes it when that changes.
    """

    __slots__ = (
        "appended",
        "closed",
        "events",
        "first_gate",
        "gates",
        "gone",
        "new_waiter",
        "popped",
        "reader",
        "writers",
    )

    def __init__(self, new_waiter: Callable[[], Any]) -> None:
        self.events: deque[Event] = deque()
        self.appended = 0  # events put in so far (an event's number is the count before it)
        self.popped = 0  # events the consumer has taken so far
        self.gates: list[tuple[int, Any]] = []  # (event number, waiter): tool calls not started yet
        # The lowest event number in `gates` (inf: none). The consumer compares it once per event
        # and calls `release` only when a gate opens: while a step's deltas and `ToolCallStarted`s
        # are taken, a call per event rebuilt `gates` each time (~16 per streamed tool step).
        self.first_gate = math.inf
        self.closed = False  # the loop has ended: no more events
        self.gone = False  # the consumer has left: nobody will read
        self.new_waiter = new_waiter
        self.reader: Any = None
        # Every task waiting for room: the calls of one step emit from tasks of their own, so
        # several can find the buffer full (one waiter slot lost all wake-ups but the last).
        self.writers: list[Any] = []

    async def __call__(self, event: Event) -> None:
        """The `emit` the loop is given: returns at once while there is room."""
        events = self.events
        while len(events) >= BUFFER and not self.gone:
            waiter = self.new_waiter()
            self.writers.append(waiter)
            await waiter  # cancelled with the run when the consumer leaves
        if self.gone:
            return
        events.append(event)
        number = self.appended
        self.appended = number + 1
        self._wake_reader()
        if type(event) is ToolCallStarted:  # the call starts once the consumer went past its event
            await self._gate(number)

    async def announce(self, events: list[Event]) -> None:
        """A step's `ToolCallStarted`s (the dispatcher's): put in together and gated once, on the
        last, so the consumer goes past them all in one hand-off, not one per call."""
        if self.gone or len(self.events) + len(events) > BUFFER:
            for event in events:  # (rare: many calls, or a full buffer) each waits for room, gated
                await self(event)
            return
        self.events.extend(events)
        self.appended += len(events)
        self._wake_reader()
        await self._gate(self.appended - 1)

    async def _gate(self, number: int) -> None:
        """Wait until the consumer asked for the event after event `number`, or left (then the
        run's cancellation is delivered here: the call never starts)."""
        while self.popped <= number and not self.gone:
            waiter = self.new_waiter()
            self.gates.append((number, waiter))
            if number < self.first_gate:
                self.first_gate = number
            await waiter
        if self.gone:
            await anyio.lowlevel.checkpoint()  # trio: a wake-up before the cancel is not a checkpoint

    def release(self, taken: int) -> None:
        """The consumer asks for an event after `taken` events: the calls whose events it took start."""
        waiting = self.gates
        self.gates = [g for g in waiting if g[0] >= taken]
        self.first_gate = min((g[0] for g in self.gates), default=math.inf)
        for number, waiter in waiting:
            if number < taken:
                _wake(waiter)

    def offer(self, events: list[Event]) -> bool:
        """All of `events` at once when they fit (True), else none of them (False: `await` each).

        What the client's stream reader uses for the deltas of one network read: the same as
        awaiting this emit for each while there is room (it would not wait), in one call.
        """
        if self.gone:
            return True  # dropped, as `__call__` drops them
        queue = self.events
        if len(queue) + len(events) > BUFFER:
            return False
        queue.extend(events)
        self.appended += len(events)
        self._wake_reader()
        return True

    def close(self) -> None:
        self.closed = True
        self._wake_reader()

    def _wake_reader(self) -> None:
        reader = self.reader
        if reader is not None:
            self.reader = None
            _wake(reader)

    def leave(self) -> None:
        self.gone = True
        self.events.clear()
        self.room()
        self.release(self.appended)

    async def wait_for_events(self) -> None:
        waiter = self.reader
        if waiter is None:  # (a second consumer task waits on the same one)
            waiter = self.reader = self.new_waiter()
        await waiter

    def room(self) -> None:
        """Wake every task waiting for room (the consumer took half the buffer: refill it at once);
        each checks again, so the buffer never holds more than `BUFFER`."""
        writers = self.writers
        if writers:
            self.writers = []
            for writer in writers:
                _wake(writer)


def _waiters() -> Callable[[], Any]:
    """What makes a one-shot waiter (awaitable; `done()`, `set_result(None)`) on this backend.

    On asyncio a bare future of the running loop: an `anyio.Event` is an `asyncio.Event` inside
    a wrapper, ~3x the CPU per hand-off, and a streamed step has several. Cancellation is the
    same: anyio cancels the task, which cancels the future it awaits. Elsewhere an anyio.Event.
    """
    asyncio = sys.modules.get("asyncio")  # not imported here: `import agentloop` stays free of it
    if asyncio is not None:
        try:
            return asyncio.get_running_loop().create_future  # type: ignore[no-any-return]
        except RuntimeError:  # trio: no asyncio loop in this thread
            pass
    return _EventWaiter


def _wake(waiter: Any) -> None:
    if not waiter.done():  # (a waiter cancelled with its task is done already)
        waiter.set_result(None)


class _EventWaiter:
    """An `anyio.Event` with a future's face (trio)."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = anyio.Event()

    def __await__(self) -> Generator[Any, Any, Any]:
        return self.event.wait().__await__()

    def done(self) -> bool:
        return self.event.is_set()

    def set_result(self, _: None) -> None:
        self.event.set()


_AFTER_THE_BLOCK = (
    "these events are read after their `async with agent.stream(...)` block ended; leaving the block "
    "ended the run (cancelled it, if it had not finished) and dropped its events: put the "
    "`async for event in events:` loop inside the `async with` block"
)


class EventStream:
    """The async iterator `Agent.stream` yields; raises the run's error where iteration ends."""

    __slots__ = ("_buffer", "error", "raised", "result")

    def __init__(self, buffer: _Buffer) -> None:
        self._buffer = buffer
        self.error: Exception | None = None
        self.raised = False
        self.result: RunResult | None = None

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        buffer = self._buffer
        if buffer.first_gate < buffer.popped:  # the body for the events taken so far has run:
            buffer.release(buffer.popped)  # the tool calls gated on them may start
        events = buffer.events
        while not events:  # (the common case skips this: the loop was ahead)
            if buffer.closed:
                if self.error is not None and not self.raised:
                    self.raised = True
                    raise self.error
                if buffer.gone and self.result is None:  # the `async for` dedented out of the block:
                    raise ConfigurationError(_AFTER_THE_BLOCK)  # it ended at once, empty, without a word
                # Once per stream: a scope cancelled around it (which is what ended the run, if
                # no RunFinished came) is delivered here, not after a clean-looking end of the
                # `async for` (asyncio took events without a checkpoint up to this point).
                await anyio.lowlevel.checkpoint()
                raise StopAsyncIteration
            await buffer.wait_for_events()
        event = events.popleft()
        buffer.popped += 1
        if buffer.writers and len(events) <= BUFFER // 2:
            buffer.room()
        if isinstance(event, RunFinished):
            self.result = event.result
        return event
