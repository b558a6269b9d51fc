"""The queue of requests waiting for a connection of the lean pool, first come first served.

What is freed goes to the first request still waiting, never back to the pool while one waits
(a connection given back, or leave to open one when a connection closed): a request that asks
again at once, or arrives just then, cannot take it first, so under load none starves.

When more runs wait on the model than the pool has connections (100,000 runs, 1,000
connections), nearly every waiting run is a request in this queue, so what one waiter keeps
alive is what the process keeps alive per run (and what each pass of Python's cyclic GC walks;
docs/scaling.md). A waiter is therefore the least the running event loop needs to park a task:

- asyncio: a bare future (an anyio Event is that future plus an asyncio Event, its deque and two
  coroutine frames: ~1 KB and 5 GC-tracked objects more);
- trio: `_TrioWaiter`, the task parked with `wait_task_rescheduled` (an anyio Event is a trio
  Event, its set of tasks, two coroutine frames, a closure and its cell besides);
- any other backend: an anyio Event (`_EventWaiter`).

A waiter that gives up (cancelled, timed out) is not taken out of the queue (a scan of it:
cancelling 100,000 queued requests took 333 s of loop); it is marked gone and skipped by the
hand-over, and the queue is compacted when mostly gone.

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
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from .sockets import on_asyncio

if TYPE_CHECKING:
    import asyncio

__all__ = ["Expired", "Slots", "SlotQueue", "own_deadline"]

_COMPACT_AFTER = 1024  # waiters gone before the queue is compacted (when also half of it)
_EXPIRED = object()  # what an asyncio waiter's future gets from its timer
_NOTHING = object()  # what a waiter that was handed nothing holds
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
    """Requests waiting for a free connection, served first come first served: `hand(value)`
    gives what was freed (a connection, or leave to open one) to the first one still waiting,
    whose `wait` returns it. Nothing freed while someone waits passes through the pool, so a
    request arriving (or retrying) just then cannot take it first: it queues behind them.

    `give_back(value)` is the pool's: what a waiter was handed but could not take (cancelled
    between the hand-over and its resumption) and no one else waits for goes back to it."""

    __slots__ = ("_give_back", "_gone", "_waiters")

    def __init__(self, give_back: Callable[[Any], Awaitable[None]]) -> None:
        self._waiters: deque[Waiter] = deque()
        self._gone = 0  # of which given up, left for `hand` to skip
        self._give_back = give_back

    async def wait(self, seconds: float, deadline: float = math.inf) -> Any:
        """Until handed a value (returned); `httpx.PoolTimeout` after `seconds` (the pool
        timeout), `Expired` at `deadline` (the anyio clock: the request's own bound, `math.inf`
        when a scope around it that is never moved later ends it first)."""
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
            if isinstance(waiter, _TrioWaiter):  # trio's own scope: no anyio one around it
                if at == math.inf:
                    await waiter
                else:
                    with sys.modules["trio"].CancelScope(deadline=at):
                        await waiter
            elif isinstance(waiter, _EventWaiter):
                with anyio.CancelScope(deadline=at):
                    await waiter.event.wait()
            else:  # asyncio (its loop's clock is anyio's): a timer resolves the future, no scope
                if at != math.inf:
                    timer = waiter.get_loop().call_at(at, _expire, waiter, context=_TIMER_CONTEXT)
                await waiter
                if timer is not None:
                    timer.cancel()
        except BaseException:
            if timer is not None:
                timer.cancel()
            handed = self._leave(waiter)
            if handed is not _NOTHING:
                await self.pass_on(handed)
            raise
        handed = _handed(waiter)
        if handed is not _NOTHING:
            return handed
        self._leave(waiter)
        if at == deadline:
            raise Expired
        raise httpx.PoolTimeout(f"no free connection within {seconds:g} s")

    def hand(self, value: Any) -> bool:
        """Give `value` to the first waiter still waiting (skipping the ones gone); False if none."""
        waiters = self._waiters
        while waiters:
            if _set(waiters.popleft(), value):
                return True
            self._gone -= 1
        return False

    async def pass_on(self, value: Any) -> None:
        """`value`, handed to a waiter that cannot take it: to the next one, else back to the pool
        (shielded: this runs while the waiter is being cancelled)."""
        if not self.hand(value):
            with anyio.CancelScope(shield=True):
                await self._give_back(value)

    def _leave(self, waiter: Waiter) -> Any:
        """A waiter gives up. If it was handed something already (a cancellation delivered between
        the hand-over and the waiter's resumption: a deadline firing in the same loop iteration),
        that is returned for the caller to pass on. If not, it stays in the queue marked gone."""
        handed = _handed(waiter)
        if handed is not _NOTHING:
            return handed
        _abandon(waiter)
        self._gone += 1
        if self._gone > _COMPACT_AFTER and 2 * self._gone > len(self._waiters):
            self._waiters = deque(w for w in self._waiters if not _is_gone(w))
            self._gone = 0
        return _NOTHING


class Slots:
    """At most `size` holders at once, served first come first served: a slot given back goes to
    the first request still waiting (`SlotQueue`), else back to the free count. Used in front of
    httpcore's pool (`fence.FencedTransport`) so that no request ever waits inside it: httpcore
    leaks a slot when a request waiting there is cancelled just as a connection opened for it
    (encode/httpcore#1093); a request cancelled while it waits here passes its slot on."""

    __slots__ = ("_free", "_queue")

    def __init__(self, size: int) -> None:
        self._free = size  # > 0 only while nobody waits: `release` hands to a waiter first
        self._queue = SlotQueue(self._give_back)

    async def acquire(self, seconds: float) -> None:
        """A slot, at once if one is free; else after the requests already waiting, within
        `seconds` (the pool timeout: `httpx.PoolTimeout` past it)."""
        if self._free:
            self._free -= 1
            return
        await self._queue.wait(seconds)

    def release(self) -> None:
        if not self._queue.hand(True):
            self._free += 1

    async def _give_back(self, _slot: object) -> None:
        self._free += 1


_WAITING = object()  # a _TrioWaiter's / _EventWaiter's state before it is handed a value
_GONE = object()  # ... once it gave up


class _TrioWaiter:
    """A trio task parked until `set_result` (the part of the future interface used here). Its
    state is the value it was handed, once it was (one slot for both)."""

    __slots__ = ("_state", "_task")

    def __init__(self, task: Any) -> None:
        self._task = task
        self._state: Any = _WAITING

    def done(self) -> bool:
        return self._state is not _WAITING

    def cancelled(self) -> bool:
        return self._state is _GONE

    def result(self) -> Any:
        return self._state

    def set_result(self, value: Any) -> None:
        self._state = value
        sys.modules["trio"].lowlevel.reschedule(self._task)

    def cancel(self) -> None:
        if self._state is _WAITING:
            self._state = _GONE

    def _abort(self, _raise_cancel: Any) -> Any:
        trio = sys.modules["trio"]
        self._state = _GONE  # trio asks only while the task is parked, i.e. not handed anything
        return trio.lowlevel.Abort.SUCCEEDED

    def __await__(self) -> Generator[Any, None, None]:
        return sys.modules["trio"].lowlevel.wait_task_rescheduled(self._abort).__await__()  # type: ignore[no-any-return]


class _EventWaiter(_TrioWaiter):
    """Any other backend: an anyio Event, and the value beside it."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        super().__init__(None)
        self.event = anyio.Event()

    def set_result(self, value: Any) -> None:
        self._state = value
        self.event.set()

    def cancel(self) -> None:
        if self._state is _WAITING:
            self._state = _GONE
            self.event.set()


if TYPE_CHECKING:
    Waiter = asyncio.Future[Any] | _TrioWaiter


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
    return _EventWaiter()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(_EXPIRED)


def _set(waiter: Waiter, value: Any) -> bool:
    """Hand `value` to `waiter`; False if it is gone."""
    if waiter.done():
        return False
    waiter.set_result(value)
    return True


def _handed(waiter: Waiter) -> Any:
    """What `hand` gave the waiter, or `_NOTHING`."""
    if not waiter.done() or waiter.cancelled():
        return _NOTHING
    value = waiter.result()
    return _NOTHING if value is _EXPIRED or value is _GONE else value


def _abandon(waiter: Waiter) -> None:
    """Mark a waiter still in the queue gone (a future is already, when its task was cancelled)."""
    waiter.cancel()


def _is_gone(waiter: Waiter) -> bool:
    """Given up while in the queue: what `hand` skips."""
    return waiter.done()
