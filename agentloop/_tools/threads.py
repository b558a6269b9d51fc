"""The worker threads of `def` tools: daemon threads, so an abandoned call never keeps the process alive.

A sync tool that times out, or whose run is cancelled, is abandoned: Python cannot stop a thread.
On trio that thread is one of trio's thread cache, a daemon thread, so `to_thread` is used as is.
On asyncio anyio's worker threads are not daemon threads (on purpose upstream, anyio PR 321), so a
script whose run had ended hung at interpreter exit until the stuck tool returned (forever, for a
tool stuck on I/O). Here, on asyncio, the call runs in a daemon thread of `_CACHE`, which keeps
what `anyio.to_thread.run_sync(..., abandon_on_cancel=True)` gives a tool:

- the bound: the loop's default thread limiter (anyio's, 40 by default, shared with every other
  `to_thread` of the program) is held for the call, as anyio holds it;
- the context: a copy of the caller's contextvars, without sniffio's "current async library";
- `anyio.from_thread.run` / `run_sync` / `check_cancelled` in the tool: the thread is claimed as
  anyio claims its own workers (its thread-locals: the loop's token and the call's cancel scope);
- reuse: idle threads wait for the next call and exit after `IDLE_S` idle (trio's cache does the
  same); their name is `THREAD_NAME`.

The claim uses two names of anyio's internals (`anyio._core._eventloop`); where they are missing
(a future anyio), `DAEMON` is False and calls go through `anyio.to_thread` as before (the caller
then warns when it abandons a thread).
"""

from __future__ import annotations

import inspect
import os
import queue
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from contextvars import copy_context
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

try:  # anyio's own way of making a thread one of its workers (for anyio.from_thread in the tool)
    from anyio._core._eventloop import claim_worker_thread, threadlocals
    from anyio.lowlevel import current_token  # (anyio >= 4.11)

    DAEMON = list(inspect.signature(claim_worker_thread).parameters) == ["backend_class", "token"]
except ImportError:  # pragma: no cover - another anyio: fall back to its (non-daemon) workers
    DAEMON = False

__all__ = ["DAEMON", "IDLE_S", "THREAD_NAME", "run_sync"]

T = TypeVar("T")
THREAD_NAME = "agentloop tool thread"
IDLE_S = 10.0  # as anyio's and trio's workers


async def run_sync(fn: Callable[[], T]) -> T:
    """`fn()` in a worker thread, abandoned (not waited for) if the caller is cancelled."""
    # asked of asyncio itself, not sniffio: sniffio is not a dependency (recent anyio no longer
    # brings it), and a trio program may never import asyncio
    aio = sys.modules.get("asyncio")
    if not DAEMON or aio is None or aio._get_running_loop() is None:
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
    import asyncio  # running on it

    await anyio.lowlevel.checkpoint()
    async with anyio.to_thread.current_default_thread_limiter():
        token = current_token()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        context = copy_context()
        sniffio = sys.modules.get("sniffio")  # its "current library" stays in the loop's thread
        if sniffio is not None:
            context.run(sniffio.current_async_library_cvar.set, None)
        with anyio.CancelScope() as scope:  # what from_thread.check_cancelled reads
            _CACHE.submit((fn, context, future, loop, token, scope))
            return await future  # cancelled: the future is too, and the thread's result dropped
    raise AssertionError("unreachable: nothing cancels the call's own scope")


class _Worker(threading.Thread):
    def __init__(self, cache: _ThreadCache) -> None:
        super().__init__(name=THREAD_NAME, daemon=True)
        self.cache = cache
        self.jobs: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            try:
                fn, context, future, loop, token, scope = self.jobs.get(timeout=IDLE_S)
            except queue.Empty:
                if self.cache.retire(self):
                    return
                continue  # taken for a call just now: its job is on the way
            result, exc = None, None
            if not future.cancelled():  # abandoned before it started: never start it
                result, exc = _call(fn, context, token, scope)
            # idle again before the caller hears of it: its next call reuses this thread
            self.cache.idle(self)
            with suppress(RuntimeError):  # the loop closed meanwhile: nobody waits for this call
                loop.call_soon_threadsafe(_deliver, future, result, exc)
            del fn, context, future, loop, token, scope, result, exc


def _call(fn: Callable[[], Any], context: Any, token: Any, scope: Any) -> tuple[Any, BaseException | None]:
    with claim_worker_thread(token.backend_class, token.native_token):
        threadlocals.current_cancel_scope = scope
        try:
            return context.run(fn), None
        except BaseException as e:
            return None, e
        finally:
            del threadlocals.current_cancel_scope


def _deliver(future: Any, result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller was cancelled: the result is dropped
        return
    if isinstance(exc, StopIteration):  # a future cannot hold one
        wrapped = RuntimeError("the tool raised StopIteration")
        wrapped.__cause__ = exc
        exc = wrapped
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class _ThreadCache:
    """Idle workers, process-wide as trio's thread cache is (a worker serves any event loop: the
    claim is per call). Bounded by the callers' limiters, not here."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def submit(self, job: tuple[Any, ...]) -> None:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = _Worker(self)
            worker.start()
        worker.jobs.put(job)

    def idle(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def retire(self, worker: _Worker) -> bool:
        """Whether `worker`, idle for IDLE_S, may exit (not if a call took it meanwhile)."""
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
                return True
            return False

    def forget(self) -> None:
        """In a forked child: the parent's workers do not exist there."""
        self._lock = threading.Lock()
        self._idle = []


_CACHE = _ThreadCache()
os.register_at_fork(after_in_child=_CACHE.forget)
