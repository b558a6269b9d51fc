"""The event stream behind `Agent.stream`: the loop in a task, its events through a zero-buffer channel.

A zero-capacity memory stream means the loop waits for the consumer at every event: a slow
consumer slows the run instead of events piling up. The loop's own errors are handed to the
consumer as they are (not wrapped in an ExceptionGroup), where the iteration ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from .._events import Event, RunFinished
from .._model import Emit
from .._types import RunResult

__all__ = ["EventStream", "stream_events"]


@asynccontextmanager
async def stream_events(loop: Callable[[Emit], Awaitable[Any]]) -> AsyncIterator[EventStream]:
    """Run `loop(emit)` in a task group and yield the iterator of what it emits."""
    send, receive = anyio.create_memory_object_stream[Event](0)
    events = EventStream(receive)

    async def produce() -> None:
        async with send:
            try:
                await loop(send.send)
            except Exception as e:  # handed to the consumer as is, not wrapped in a group
                events.error = e

    try:
        async with anyio.create_task_group() as tg, receive:
            tg.start_soon(produce)
            try:
                yield events
            finally:
                tg.cancel_scope.cancel()  # leaving early cancels the run
    except BaseExceptionGroup as group:
        # The only task that can fail is the consumer's own body (the loop's errors are caught
        # in produce): give the caller its exception, not a group around it.
        if len(group.exceptions) == 1:
            exc = group.exceptions[0]
            raise exc from exc.__cause__
        raise
    if events.error is not None and not events.raised:
        raise events.error


class EventStream:
    """The async iterator `Agent.stream` yields; raises the run's error where iteration ends."""

    __slots__ = ("_receive", "error", "raised", "result")

    def __init__(self, receive: MemoryObjectReceiveStream[Event]) -> None:
        self._receive = receive
        self.error: Exception | None = None
        self.raised = False
        self.result: RunResult | None = None

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        try:
            event = await self._receive.receive()
        except anyio.EndOfStream:
            pass
        else:
            if isinstance(event, RunFinished):
                self.result = event.result
            return event
        # Raised outside the `except`: the loop's error is not a consequence of the channel's
        # EndOfStream, and `raise ... from None` would overwrite its own __cause__.
        if self.error is not None and not self.raised:
            self.raised = True
            raise self.error
        raise StopAsyncIteration
