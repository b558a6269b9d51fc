"""The queue of requests waiting for a connection of the lean pool, first come first served.

When more runs wait on the model than the pool has connections (100,000 runs, 1,000
connections), nearly every waiting run is a request in this queue, so what one waiter keeps
alive is what the process keeps alive per run (and what each pass of Python's cyclic GC walks;
docs/scaling.md). A waiter is therefore the least the running event loop needs to park a task:

- asyncio: a bare future (an anyio Event is that future plus an asyncio Event, its deque and two
  coroutine frames: ~1 KB and 5 GC-tracked objects more);
- trio: `_TrioWaiter`, the task parked with `wait_task_rescheduled` (an anyio Event is a trio
  Event, its set of tasks, two coroutine frames, a closure and its cell besides);
- any other backend: an anyio Event.

A waiter that gives up (cancelled, timed out) is not taken out of the queue (a scan of it:
cancelling 100,000 queued requests took 333 s of loop); it is marked gone and skipped by the
wake-up, and the queue is compacted when mostly gone.

A queued request's time bounds come as numbers, not as cancel scopes around it: the pool
timeout and the request's own deadline (FluxClient's total time, passed down as a float). The
wait sets one timer for the earlier of the two: on asyncio a timer handle on the loop (2
GC-tracked objects; an anyio scope around the request was 7), elsewhere a cancel scope. None
at all when a scope around the request that is never moved later ends it first (the run's
time limit: `ModelRequest.deadline`), so a run with a time limit waits in the queue with no
timer of the client's.
"""

from __future__ import annotations

import contextvars
import math
import sys
from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from .sockets import on_asyncio

if TYPE_CHECKING:
    import asyncio

__all__ = ["Expired", "SlotQueue", "own_deadline"]

_COMPACT_AFTER = 1024  # waiters gone before the queue is compacted (when also half of it)
_EXPIRED = object()  # what an asyncio waiter's future gets from its timer
_TIMER_CONTEXT = contextvars.Context()  # the timers' callbacks read no context: one for all, not a copy each


class Expired(Exception):
    """The request's own deadline (FluxClient's total time) passed while it was queued."""


def own_deadline(limit: float | None, promised: float) -> float:
    """The request's own bound on the anyio clock: `limit` seconds from now, or `math.inf` when
    the run's deadline (`ModelRequest.deadline`: a scope around the request that is never moved
    later) comes first and a scope with at most that deadline is in force around this call (a
    request that merely says so, with no scope, keeps its bound). With `math.inf` the request
    sets no timer of its own while queued for a connection (~7 GC-tracked objects less)."""
    own = math.inf if limit is None else anyio.current_time() + limit
    if promised <= own and anyio.current_effective_deadline() <= promised:
        return math.inf
    return own


class SlotQueue:
    """Requests waiting for a free connection; `wake()` lets the first one still waiting go."""

    __slots__ = ("_gone", "_waiters")

    def __init__(self) -> None:
        self._waiters: deque[Waiter] = deque()
        self._gone = 0  # of which given up, left for `wake` to skip

    async def wait(self, seconds: float, deadline: float = math.inf) -> None:
        """Until woken (then the caller looks for a connection again); `httpx.PoolTimeout` after
        `seconds` (the pool timeout), `Expired` at `deadline` (the anyio clock: the request's own
        bound, `math.inf` when a scope around it that is never moved later ends it first)."""
        now = anyio.current_time()
        pool_at = now + seconds
        if anyio.current_effective_deadline() <= pool_at:
            # A scope around the request ends the wait before the pool timeout would; should a
            # caller move its deadline later meanwhile, `deadline` (or the run's) still holds.
            pool_at = math.inf
        at = min(pool_at, deadline)
        waiter = _waiter()
        self._waiters.append(waiter)
        timer = None
        try:
            if at == math.inf:
                await (waiter.wait() if isinstance(waiter, anyio.Event) else waiter)
                return
            if isinstance(waiter, _TrioWaiter):  # trio's own scope: no anyio one around it
                with sys.modules["trio"].CancelScope(deadline=at):
                    await waiter
            elif isinstance(waiter, anyio.Event):
                with anyio.CancelScope(deadline=at):
                    await waiter.wait()
            else:  # asyncio (its loop's clock is anyio's): a timer resolves the future, no scope
                timer = waiter.get_loop().call_at(at, _expire, waiter, context=_TIMER_CONTEXT)
                await waiter
                timer.cancel()
        except BaseException:
            if timer is not None:
                timer.cancel()
            self._leave(waiter)
            raise
        if _is_set(waiter):
            return
        self._leave(waiter)
        if at == deadline:
            raise Expired
        raise httpx.PoolTimeout(f"no free connection within {seconds:g} s")

    def wake(self) -> None:
        """Let the first waiter still waiting go (skipping the ones gone)."""
        waiters = self._waiters
        while waiters:
            if _set(waiters.popleft()):
                return
            self._gone -= 1

    def _leave(self, waiter: Waiter) -> None:
        """A waiter gives up: if it was woken already, wake the next one instead, or that
        connection would sit idle while others wait (a cancellation delivered between the wake-up
        and the waiter's resumption: a deadline firing in the same loop iteration). If not, it
        stays in the queue marked gone."""
        if _is_set(waiter):
            self.wake()
            return
        _abandon(waiter)
        self._gone += 1
        if self._gone > _COMPACT_AFTER and 2 * self._gone > len(self._waiters):
            self._waiters = deque(w for w in self._waiters if not _is_gone(w))
            self._gone = 0


class _TrioWaiter:
    """A trio task parked until `set_result` (the part of the future interface used here)."""

    __slots__ = ("_state", "_task")

    def __init__(self, task: Any) -> None:
        self._task = task
        self._state = 0  # 0 waiting, 1 woken, 2 gone (cancelled while waiting)

    def done(self) -> bool:
        return self._state != 0

    def cancelled(self) -> bool:
        return self._state == 2

    def set_result(self, _: None) -> None:
        self._state = 1
        sys.modules["trio"].lowlevel.reschedule(self._task)

    def cancel(self) -> None:
        if self._state == 0:
            self._state = 2

    def _abort(self, _raise_cancel: Any) -> Any:
        trio = sys.modules["trio"]
        self._state = 2  # trio asks only while the task is parked, i.e. not woken
        return trio.lowlevel.Abort.SUCCEEDED

    def __await__(self) -> Generator[Any, None, None]:
        return sys.modules["trio"].lowlevel.wait_task_rescheduled(self._abort).__await__()  # type: ignore[no-any-return]


if TYPE_CHECKING:
    Waiter = anyio.Event | asyncio.Future[Any] | _TrioWaiter


def _waiter() -> Waiter:
    if on_asyncio():
        import asyncio  # already imported: an asyncio loop runs

        return asyncio.get_running_loop().create_future()
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return _TrioWaiter(trio.lowlevel.current_task())
        except RuntimeError:  # not inside trio.run: another backend
            pass
    return anyio.Event()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(_EXPIRED)


def _set(waiter: Waiter) -> bool:
    """Wake `waiter`; False if it is gone."""
    if _is_gone(waiter):
        return False
    if isinstance(waiter, anyio.Event):
        waiter.set()
    else:
        waiter.set_result(None)
    return True


def _is_set(waiter: Waiter) -> bool:
    """Woken by `wake` (a woken waiter is out of the queue)."""
    if isinstance(waiter, anyio.Event):
        return waiter.is_set()
    if isinstance(waiter, _TrioWaiter):
        return waiter.done() and not waiter.cancelled()
    return waiter.done() and not waiter.cancelled() and waiter.result() is not _EXPIRED


def _abandon(waiter: Waiter) -> None:
    """Mark a waiter still in the queue gone: an Event is set (`wake` never sets one twice), a
    future cancelled (it is already, when its task was)."""
    if isinstance(waiter, anyio.Event):
        waiter.set()
    else:
        waiter.cancel()


def _is_gone(waiter: Waiter) -> bool:
    """Given up while in the queue: what `wake` skips."""
    return waiter.is_set() if isinstance(waiter, anyio.Event) else waiter.done()
