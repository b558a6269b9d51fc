"""What a waiting run keeps alive, counted in the objects Python's cyclic GC tracks.

A full collection walks every tracked object, so with 100,000 runs waiting in one process each
object a run keeps costs ~20 ms more per pass (0.2 µs each; benchmarks/bench_many_runs.py, docs/scaling.md).
These are regression guards on the count for fixed scenarios, not timings: a new cancel scope,
closure or coroutine layer on the waiting path shows here, and so does anything that piles up
step after step.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import pytest

from agentloop import (
    Agent,
    APITimeoutError,
    FluxClient,
    ModelRequest,
    ModelTurn,
    RetryPolicy,
    RunLimits,
    TimeLimitExceeded,
    Usage,
)
from agentloop.testing import FakeFluxRouter, text

pytestmark = pytest.mark.anyio

RUNS = 100
# Tracked objects of one run waiting on its model after some steps, besides its conversation and
# its per-step records, the caller's task included (~56 on both backends when written; ~55 / ~54
# since a run without a time limit keeps no bound `__exit__` of its no-op scope).
WAITING_RUN_BOUND = 57
# Of one run whose model request is queued for a connection of FluxClient's pool, the caller's
# task included: what most of 100,000 runs waiting on a slow model are (~49 on asyncio and ~51
# on trio since the request's total time is a number passed down, not a cancel scope around the
# queued request; ~59 / ~57 before that, 64 / 67 before this guard).
QUEUED_RUN_BOUND = {"asyncio": 51, "trio": 53}


class Held:
    """Asks for one tool call per step until `steps` steps are done, then waits for `release`."""

    def __init__(self, steps: int) -> None:
        self.steps, self.waiting = steps, 0
        self.release, self.all_waiting = anyio.Event(), anyio.Event()
        self.conversations: list[list[dict[str, Any]]] = []

    async def request(self, request: ModelRequest, emit: Any = None) -> ModelTurn:
        usage = Usage(requests=1, prompt_tokens=10, completion_tokens=5, total_tokens=15)
        done = sum(m["role"] == "assistant" for m in request.messages)
        if done < self.steps:  # other arguments each step: the loop guard must not stop the run
            call = {
                "id": f"c{done}",
                "type": "function",
                "function": {"name": "work", "arguments": f'{{"x": {done}}}'},
            }
            return ModelTurn(
                {"role": "assistant", "content": None, "tool_calls": [call]}, usage, "tool_calls"
            )
        self.conversations.append(request.messages)
        self.waiting += 1
        if self.waiting == RUNS:
            self.all_waiting.set()
        await self.release.wait()
        return ModelTurn({"role": "assistant", "content": "done"}, usage, "stop")


async def work(x: int) -> int:
    return x + 1


def tracked_reachable(roots: list[Any]) -> int:
    """Tracked objects reachable from `roots` (the roots' own list not counted)."""
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        o = todo.pop()
        if id(o) not in seen and gc.is_tracked(o):
            seen.add(id(o))
            todo.extend(gc.get_referents(o))
    return len(seen)


async def waiting_after(steps: int) -> tuple[float, float]:
    """(tracked objects per waiting run, of which its conversation) with RUNS runs waiting after `steps` steps."""
    model = Held(steps)
    agent = Agent(client=model, tools=[work], model="m")
    outputs: list[Any] = []

    async def one() -> None:
        outputs.append((await agent.run("go")).output)

    gc.collect()
    # Held until the second count: an object of earlier tests freed meanwhile (a finishing
    # thread's, a cache's) would otherwise be subtracted from the runs' count (seen: -6.7 per run).
    alive = gc.get_objects()
    before = len(alive)
    async with anyio.create_task_group() as tg:
        for _ in range(RUNS):
            tg.start_soon(one)
        await model.all_waiting.wait()
        gc.collect()
        during = len(gc.get_objects()) - 1  # `alive` itself
        del alive
        conversations = tracked_reachable(model.conversations)
        model.conversations.clear()
        model.release.set()
    assert outputs == ["done"] * RUNS
    return (during - before) / RUNS, conversations / RUNS


async def test_a_waiting_run_keeps_no_more_objects_step_after_step() -> None:
    total2, conversation2 = await waiting_after(2)
    total6, conversation6 = await waiting_after(6)
    # Each step adds its messages to the conversation and, to the run, its tool call's record and
    # its (model, usage) entry: nothing else may pile up (Steps, dispatchers, scopes, coroutines).
    # (+1.5: the counts are process-wide, so another thread's objects made meanwhile count too;
    # one more object per step for 4 steps (+4) is still caught)
    assert (total6 - conversation6) - (total2 - conversation2) <= 4 * 3 + 1.5, (total2, total6)
    assert total2 - conversation2 <= WAITING_RUN_BOUND, (
        f"a run waiting on its model keeps {total2 - conversation2:.1f} GC-tracked objects besides its "
        f"conversation (bound {WAITING_RUN_BOUND}): what was added to the waiting path?"
    )


async def sent(router: FakeFluxRouter, n: int) -> None:
    """Until the router has received `n` requests (and everything else waits)."""
    while len(router.requests) < n:  # the router has no event to wait on: let it read
        await anyio.wait_all_tasks_blocked()
        await anyio.lowlevel.checkpoint()
    await anyio.wait_all_tasks_blocked()


async def test_a_run_queued_for_a_connection_keeps_few_objects(anyio_backend: str) -> None:
    # Two connections, both held by answers that never come in time; the other requests queue.
    router = FakeFluxRouter([text("late", delay=3600)] * 2)
    async with router, FluxClient(base_url=router.base_url, api_key="k", max_connections=2) as client:
        agent = Agent(client=client, model="m")
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(agent.run, "go")
            await sent(router, 2)
            gc.collect()
            before = len(gc.get_objects())
            for _ in range(RUNS):
                tg.start_soon(agent.run, "go")
            await anyio.wait_all_tasks_blocked()  # every one of them waits for a connection
            gc.collect()
            per_request = (len(gc.get_objects()) - before) / RUNS
            tg.cancel_scope.cancel()
    assert len(router.requests) == 2
    bound = QUEUED_RUN_BOUND[anyio_backend]
    assert per_request <= bound, (
        f"a run queued for a connection keeps {per_request:.1f} GC-tracked objects (bound {bound})"
    )


@asynccontextmanager
async def one_connection_held(
    **options: Any,
) -> AsyncIterator[tuple[Agent, anyio.abc.TaskGroup, FakeFluxRouter]]:
    """A client with one connection, held by a first run whose answer never comes; yields its
    agent, a task group to start more runs in (cancelled at the end) and the router."""
    router = FakeFluxRouter([text("late", delay=3600)])
    async with (
        router,
        FluxClient(base_url=router.base_url, api_key="k", max_connections=1, **options) as client,
    ):
        agent = Agent(client=client, model="m")
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.run, "go")  # holds the one connection
            await sent(router, 1)
            yield agent, tg, router
            tg.cancel_scope.cancel()


async def test_the_pool_timeout_still_bounds_a_queued_request() -> None:
    timeout = httpx.Timeout(600.0, pool=0.2)
    async with one_connection_held(timeout=timeout, retry=RetryPolicy(max_retries=0)) as (agent, _, _):
        with pytest.raises(APITimeoutError, match=r"PoolTimeout"):
            await agent.run("go")


async def test_a_run_deadline_ends_its_queued_request() -> None:
    # The pool timeout (600 s) is longer than the run's time limit: the run's deadline ends the wait.
    async with one_connection_held() as (agent, _, router):
        with pytest.raises(TimeLimitExceeded) as caught:
            await agent.run("go", limits=RunLimits(timeout=0.3))
        assert caught.value.result.steps == 0  # it never got a connection
    assert len(router.requests) == 1


async def queued_behind_one(
    queued: int, answers: int, cancel: Callable[[anyio.CancelScope, list[anyio.CancelScope]], Awaitable[None]]
) -> tuple[list[Any], int]:
    """One connection held by a first run whose answer never comes, `queued` runs waiting behind
    it; `cancel(holder, scopes)` once all wait. Returns the outputs and the requests the router got."""
    router = FakeFluxRouter([text("first", delay=3600)] + [text("ok")] * answers)
    async with router, FluxClient(base_url=router.base_url, api_key="k", max_connections=1) as client:
        agent = Agent(client=client, model="m")
        outputs: list[Any] = []
        holder, *scopes = [anyio.CancelScope() for _ in range(queued + 1)]

        async def run(scope: anyio.CancelScope) -> None:
            with scope:
                outputs.append((await agent.run("go")).output)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, holder)
            await sent(router, 1)
            for scope in scopes:
                tg.start_soon(run, scope)
            await anyio.wait_all_tasks_blocked()
            await cancel(holder, scopes)
    return outputs, len(router.requests)


async def test_queued_requests_cancelled_while_waiting_do_not_hold_up_the_others() -> None:
    # One connection; eight requests queue behind the first; the first and every other queued one
    # are cancelled. The rest must each get a connection in turn (none stranded behind a
    # cancelled waiter).
    async def cancel(holder: anyio.CancelScope, scopes: list[anyio.CancelScope]) -> None:
        # All in one go: the first's connection is given up, and the wake-up it sends meets
        # waiters that are cancelled but not yet out of the queue (their tasks run later).
        holder.cancel()
        for scope in scopes[::2]:
            scope.cancel()

    outputs, requests = await queued_behind_one(8, 8, cancel)
    assert outputs == ["ok"] * 4
    assert requests == 5


async def test_thousands_of_queued_requests_cancelled_at_once() -> None:
    # Cancelling a queued request takes no scan of the queue (100,000 of them cancelled at once
    # took minutes of loop time); the queue is compacted when mostly cancelled and still serves
    # the rest in turn.
    async def cancel(holder: anyio.CancelScope, scopes: list[anyio.CancelScope]) -> None:
        kept = set(range(0, 2000, 50))  # 40 of them
        for i, scope in enumerate(scopes):
            if i not in kept:
                scope.cancel()
        await anyio.wait_all_tasks_blocked()
        holder.cancel()

    outputs, requests = await queued_behind_one(2000, 40, cancel)
    assert outputs == ["ok"] * 40
    assert requests == 41


GC_SETTINGS = """
import gc
before = (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count(), len(gc.callbacks))
import anyio
import agentloop, agentloop.testing
from agentloop import Agent
from agentloop.testing import ScriptedModel, text

async def main():
    async with agentloop.testing.FakeFluxRouter([text("hi")]) as router:
        async with agentloop.FluxClient(base_url=router.base_url, api_key="k") as client:
            assert (await Agent(client=client, model="m").run("go")).output == "hi"
    assert (await Agent(client=ScriptedModel([text("ok")]), model="m").run("go")).output == "ok"

anyio.run(main, backend=__import__("sys").argv[1])
after = (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count(), len(gc.callbacks))
print(before == after, before, after)
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_agentloop_leaves_the_garbage_collector_alone(backend: str) -> None:
    # Tuning the collector (gc.freeze, thresholds) is the operator's decision for the whole
    # process (docs/scaling.md), never done for them on import or by a run.
    done = subprocess.run(
        [sys.executable, "-c", GC_SETTINGS, backend], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("True"), done.stdout


async def test_runs_that_end_normally_leave_no_cyclic_garbage() -> None:
    # docs/scaling.md's promise for gc.freeze(): what a finished run leaves is freed by reference
    # counting alone, so freezing waiting runs keeps nothing alive after they end normally.
    router = FakeFluxRouter([text("ok")] * RUNS)
    async with router, FluxClient(base_url=router.base_url, api_key="k") as client:
        over_http = Agent(client=client, model="m")
        in_process = Agent(client=Held(2), tools=[work], model="m")
        in_process.client.release.set()  # type: ignore[attr-defined]
        await over_http.run("warm-up")  # the connection, caches
        router.add(text("ok"))
        gc.collect()
        gc.disable()  # nothing collected behind the count's back
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(RUNS):
                    tg.start_soon(over_http.run, "go")
                    tg.start_soon(in_process.run, "go")
            left = gc.collect()
        finally:
            gc.enable()
    assert left < 2 * RUNS / 10, f"{left} objects of cyclic garbage after {2 * RUNS} runs"


async def test_a_queued_request_holds_one_copy_of_its_body() -> None:
    # The request body is encoded once and kept for a retry; head and body are joined only once
    # a connection is free, and that copy is let go once sent. Before: every waiting request held
    # two copies (31.2 KB per waiting run with a 10 KB prompt over HTTP; 21.1 KB since).
    size, runs = 50_000, 20
    prompts = [f"{i} " + "x" * size for i in range(runs)]  # made before counting: not the runs' own
    async with one_connection_held() as (agent, tg, _):
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for prompt in prompts:
                tg.start_soon(agent.run, prompt)
            await anyio.wait_all_tasks_blocked()  # every one of them waits for a connection
            per_run = (tracemalloc.get_traced_memory()[0] - before) / runs
        finally:
            tracemalloc.stop()
    assert size < per_run < 1.5 * size, per_run
