"""A model request's time bounds when it waits for a connection of FluxClient's pool.

A request queued for a connection holds no cancel scope of FluxClient's: its total time
(`total_timeout`, else `InputBudget.request_timeout`) is passed down as a number and the queue
sets one timer for it, or none when the run's own time limit (`ModelRequest.deadline`, a scope
the run never moves) ends it first. What must still hold, from the outside: every bound fires,
whichever comes first, a caller moving its own deadline later does not unbound the request, a
request that only claims a deadline keeps its own bound, and the queue still serves the
requests that did not give up in their order.
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from agentloop import (
    Agent,
    APITimeoutError,
    FluxClient,
    ModelRequest,
    RetryPolicy,
    RunLimits,
    TimeLimitExceeded,
)
from agentloop.testing import FakeFluxRouter, error, text

pytestmark = pytest.mark.anyio

NO_RETRY = RetryPolicy(max_retries=0)


async def sent(router: FakeFluxRouter, n: int) -> None:
    """Until the router has received `n` requests (and everything else waits)."""
    while len(router.requests) < n:  # the router has no event to wait on: let it read
        await anyio.wait_all_tasks_blocked()
        await anyio.lowlevel.checkpoint()
    await anyio.wait_all_tasks_blocked()


@asynccontextmanager
async def one_connection_held(
    answers: list[Any] | None = None, **options: Any
) -> AsyncIterator[tuple[FluxClient, anyio.abc.TaskGroup, FakeFluxRouter]]:
    """A client with one connection, held by a first request whose answer never comes (unless
    its task group is cancelled: then the next `answers` are served, in order)."""
    router = FakeFluxRouter([text("late", delay=3600), *(answers or [])])
    async with (
        router,
        FluxClient(base_url=router.base_url, api_key="k", max_connections=1, **options) as client,
    ):
        async with anyio.create_task_group() as tg:
            holder = anyio.CancelScope()

            async def hold() -> None:
                with holder:
                    await Agent(client=client, model="m").run("hold")

            tg.start_soon(hold)
            await sent(router, 1)
            tg.holder = holder  # type: ignore[attr-defined]
            yield client, tg, router
            tg.cancel_scope.cancel()


@asynccontextmanager
async def requeued(total_timeout: float, **options: Any) -> AsyncIterator[tuple[FluxClient, Any]]:
    """A request B that queues for the one connection with the earlier deadline: B is sent
    first and answered a 503 (after 2 s, "retry in 0.1 s"); meanwhile a later request A queues,
    gets the connection B gives back and holds it (its answer never comes); B's retry queues
    behind A. Yields the client and `start(call)`, which runs `call()` as B and returns once A
    waits; the router must see B's first attempt and A, never B's retry."""
    # B retries 0.1 s after the 503, so A (woken when B gives the connection back) takes it first:
    # a woken waiter is not handed the connection, whoever asks first gets it (trio runs ready
    # tasks in random order).
    busy = error(503, "busy", type="server_error", headers={"retry-after-ms": "100"}, delay=2.0)
    router = FakeFluxRouter([busy, text("late", delay=3600)])
    async with (
        router,
        FluxClient(
            base_url=router.base_url,
            api_key="k",
            max_connections=1,
            total_timeout=total_timeout,
            retry=RetryPolicy(max_retries=1),
            **options,
        ) as client,
    ):
        async with anyio.create_task_group() as tg:

            async def start(call: Any) -> None:
                tg.start_soon(call)
                await sent(router, 1)
                tg.start_soon(hold)
                await anyio.wait_all_tasks_blocked()

            async def hold() -> None:  # A: its own total time ends it a moment after B's
                with contextlib.suppress(APITimeoutError):
                    await Agent(client=client, model="m").run("hold")

            yield client, start
            tg.cancel_scope.cancel()
        # The router's second request is A's: B's retry never left the queue.
        assert b"hold" in router.requests[1].body


def a_request() -> ModelRequest:
    return ModelRequest(model="m", messages=[{"role": "user", "content": "x"}], tools=[])


async def test_total_timeout_ends_a_request_queued_for_a_connection() -> None:
    async with requeued(total_timeout=4) as (client, start):
        failed = anyio.Event()

        async def b() -> None:
            with pytest.raises(APITimeoutError, match=r"longer than total_timeout=4 s"):
                await client.request(a_request())
            failed.set()

        await start(b)
        with anyio.fail_after(60):  # a hang would be the bug (generous: a busy machine)
            await failed.wait()


async def test_total_timeout_shorter_than_the_run_time_limit_wins() -> None:
    # The run's deadline (60 s) is passed down, but the client's own bound comes first.
    async with requeued(total_timeout=4) as (client, start):
        failed = anyio.Event()

        async def b() -> None:
            with pytest.raises(APITimeoutError, match=r"total_timeout=4 s"):
                await Agent(client=client, model="m").run("go", limits=RunLimits(timeout=60))
            failed.set()

        await start(b)
        with anyio.fail_after(60):
            await failed.wait()


async def test_a_caller_moving_its_deadline_later_does_not_unbound_the_queued_request() -> None:
    # The caller's scope (300 s, before the pool timeout) would end the wait first, so the queue
    # sets no pool timer; the caller moves it to never while B waits: B's total time still ends it.
    async with requeued(total_timeout=4) as (client, start):
        scope = anyio.CancelScope(deadline=anyio.current_time() + 300)
        failed = anyio.Event()

        async def b() -> None:
            with scope, pytest.raises(APITimeoutError, match=r"total_timeout=4 s"):
                await client.request(a_request())
            failed.set()

        await start(b)
        scope.deadline = math.inf
        with anyio.fail_after(60):
            await failed.wait()


async def test_run_time_limit_shorter_than_total_timeout_wins() -> None:
    async with one_connection_held(total_timeout=600, retry=NO_RETRY) as (client, _, _):
        with pytest.raises(TimeLimitExceeded) as caught:
            await Agent(client=client, model="m").run("go", limits=RunLimits(timeout=0.3))
    assert caught.value.result.steps == 0


async def test_a_request_that_only_claims_a_deadline_keeps_its_own_bound() -> None:
    # ModelRequest.deadline promises a scope around the request; with none in force the client
    # does not take the claim: its total time still ends the request.
    router = FakeFluxRouter([text("late", delay=3600)])
    async with router, FluxClient(base_url=router.base_url, api_key="k", total_timeout=0.3) as client:
        request = a_request()
        request.deadline = anyio.current_time()
        with anyio.fail_after(30), pytest.raises(APITimeoutError, match=r"total_timeout=0.3 s"):
            await client.request(request)


async def test_a_retry_wait_longer_than_the_time_left_ends_at_the_deadline() -> None:
    # The server asks for a retry in 30 s; the request has 0.3 s: it ends with the total-time
    # error (not after the wait), and no second request is sent.
    router = FakeFluxRouter([error(503, "busy", type="server_error", headers={"retry-after": "30"})])
    async with router, FluxClient(base_url=router.base_url, api_key="k", total_timeout=0.3) as client:
        with anyio.fail_after(20):  # a hang would be the bug (generous: a busy machine)
            with pytest.raises(APITimeoutError, match=r"total_timeout=0.3 s"):
                await Agent(client=client, model="m").run("go")
    assert len(router.requests) == 1


async def test_the_queue_serves_in_order_past_requests_that_timed_out_or_were_cancelled() -> None:
    # Eight runs queue behind the held connection, in order; runs 1, 4 and 6 have a time limit
    # that ends them while they wait, run 3 is cancelled by its caller. Once the connection is
    # free the others get it one after the other, in the order they came: the k-th served gets
    # the k-th answer.
    answers = [text(f"a{i}") for i in range(4)]
    async with one_connection_held(answers, retry=NO_RETRY) as (client, tg, router):
        agent = Agent(client=client, model="m")
        got: dict[int, Any] = {}
        ended = {i: anyio.Event() for i in range(8)}
        scopes = {i: anyio.CancelScope() for i in range(8)}

        async def run(i: int) -> None:
            limits = RunLimits(timeout=0.2) if i in (1, 4, 6) else None
            try:
                with scopes[i]:
                    got[i] = (await agent.run("go", limits=limits)).output
            except TimeLimitExceeded:
                got[i] = "time limit"
            finally:
                ended[i].set()

        for i in range(8):
            tg.start_soon(run, i)
            await anyio.wait_all_tasks_blocked()  # queued in this order
        scopes[3].cancel()
        for i in (1, 3, 4, 6):
            await ended[i].wait()
        tg.holder.cancel()  # type: ignore[attr-defined]  # the connection is given up
        for i in range(8):
            await ended[i].wait()
    assert got == {0: "a0", 1: "time limit", 2: "a1", 4: "time limit", 5: "a2", 6: "time limit", 7: "a3"}
    assert len(router.requests) == 5


async def test_a_run_with_a_time_limit_queued_keeps_no_timer_of_the_clients(anyio_backend: str) -> None:
    # The run's deadline is passed down: when it comes before FluxClient's own total time, the
    # client adds no timer while the request waits for a connection (fewer GC-tracked objects).
    async def per_run(limits: RunLimits | None) -> float:
        async with one_connection_held() as (client, tg, _):
            agent = Agent(client=client, model="m")
            gc.collect()
            before = len(gc.get_objects())
            for _ in range(100):
                tg.start_soon(lambda: agent.run("go", limits=limits))
            await anyio.wait_all_tasks_blocked()
            gc.collect()
            return (len(gc.get_objects()) - before) / 100

    # 3600 s: after the client's own bound (600 s), so the client keeps its timer; 300 s: before.
    later, sooner = await per_run(RunLimits(timeout=3600)), await per_run(RunLimits(timeout=300))
    assert sooner <= later - 1.5, (sooner, later)


@pytest.mark.parametrize("streamed", [False, True])
async def test_run_time_limit_ends_a_request_in_flight_with_no_timer_of_the_clients(streamed: bool) -> None:
    # The run's deadline is passed down and comes first: the client's scope around the request in
    # flight has none of its own; the run's scope still ends the request at its time limit.
    router = FakeFluxRouter([text("late", delay=3600)])
    async with router, FluxClient(base_url=router.base_url, api_key="k") as client:
        agent = Agent(client=client, model="m")
        limits = RunLimits(timeout=0.3)
        with anyio.fail_after(60), pytest.raises(TimeLimitExceeded) as caught:
            if streamed:
                async with agent.stream("go", limits=limits) as events:
                    async for _ in events:
                        pass
            else:
                await agent.run("go", limits=limits)
    assert caught.value.result.steps == 0
    assert len(router.requests) == 1
