"""The lean pool hands a connection given back to the request that has waited longest.

A connection given back goes straight to the first request still waiting (FIFO), never to the
pool's idle list for whoever asks first: a request that asks again at once (its next step, a
retry) or arrives just then queues behind the ones already waiting, so under load no request
starves. A waiter cancelled at the hand-over passes the connection on; none is lost or leaked.

Order is made deterministic without sleeping: the router's handler waits on a per-request event,
and each request is started only once every task is blocked (`wait_all_tasks_blocked`), so the
order requests reach the queue is the order they were started. Nothing here measures time; the
`fail_after` guards turn a request stranded by a lost connection into a failure, not a hang.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import pytest
from helpers import all_tasks_blocked, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import FluxClient
from agentloop.abc import ModelRequest
from agentloop.testing import FakeFluxRouter, RecordedRequest, text

pytestmark = pytest.mark.anyio

GUARD = 60  # seconds: only a stranded request reaches it


class GatedRouter:
    """A FakeFluxRouter whose answer to the request saying `name` waits for `open(name)`; records
    the order requests arrive and how many the client has in flight at once (the router cannot see
    a connection the client closed while it waits: the test names those in `cut`)."""

    def __init__(self) -> None:
        self.router = FakeFluxRouter(self._answer)
        self.gates: dict[str, anyio.Event] = {}
        self.arrivals: dict[str, anyio.Event] = {}  # set when the request saying `name` reaches it
        self.order: list[str] = []
        self.busy: set[str] = set()  # answers not yet sent
        self.cut: set[str] = set()  # requests the test cancelled: the client closed their connection
        self.most_busy = 0
        self.connections: set[int] = set()

    def gate(self, name: str) -> anyio.Event:
        return self.gates.setdefault(name, anyio.Event())

    def open(self, name: str) -> None:
        self.gate(name).set()

    def arrived(self, name: str) -> anyio.Event:
        return self.arrivals.setdefault(name, anyio.Event())

    async def _answer(self, req: RecordedRequest) -> Any:
        name = req.json["messages"][-1]["content"]
        self.order.append(name)
        self.connections.add(req.connection)
        self.busy.add(name)
        self.most_busy = max(self.most_busy, len(self.busy - self.cut))
        self.arrived(name).set()
        try:
            await self.gate(name).wait()
        finally:
            self.busy.discard(name)
        return text(f"re: {name}")


def ask(name: str) -> ModelRequest:
    return ModelRequest(model="m", messages=[{"role": "user", "content": name}], tools=[])


async def settle() -> None:
    """Until every task (client, router) waits on something only the test can give."""
    for _ in range(3):  # the router's reads and the client's wake-ups take a few rounds
        await all_tasks_blocked()
        await anyio.lowlevel.checkpoint()
    await all_tasks_blocked()


async def test_a_request_asking_again_at_once_does_not_take_the_connection_from_a_waiter() -> None:
    # The exact repro: one connection; A's first request holds it, B queues. A's answer comes and A
    # sends its next request at once (no checkpoint between): before the fix it found the connection
    # idle and took it, and B, woken, went back to waiting (on trio, every time).
    gated = GatedRouter()
    async with gated.router, FluxClient(base_url=gated.router.base_url, api_key="k", max_connections=1) as c:
        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as tg:

                async def a() -> None:
                    await c.request(ask("a1"))
                    await c.request(ask("a2"))

                tg.start_soon(a)
                await settle()
                tg.start_soon(c.request, ask("b"))
                await settle()
                for name in ("a1", "b", "a2"):
                    gated.open(name)
    assert gated.order == ["a1", "b", "a2"]
    assert len(gated.connections) == 1


@pytest.mark.parametrize("n", [2, 8])
async def test_requests_queued_for_one_connection_are_served_in_arrival_order(n: int) -> None:
    # n requests queue behind a first one; each, answered, asks again at once. Every first request
    # is served before any second one, in the order they arrived; then the second ones, in order.
    gated = GatedRouter()
    async with gated.router, FluxClient(base_url=gated.router.base_url, api_key="k", max_connections=1) as c:
        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as tg:

                async def twice(i: int) -> None:
                    await c.request(ask(f"{i}"))
                    await c.request(ask(f"{i}+"))

                for i in range(n):
                    tg.start_soon(twice, i)
                    await settle()
                for i in range(n):
                    gated.open(f"{i}")
                    gated.open(f"{i}+")
    assert gated.order == [f"{i}" for i in range(n)] + [f"{i}+" for i in range(n)]
    assert gated.most_busy == 1


async def test_a_waiter_cancelled_at_the_hand_over_passes_the_connection_on() -> None:
    # A holds the connection; B then C queue. A's task cancels B right after A's answer is read,
    # i.e. after the connection was handed to B and before B's task resumed. The connection must
    # reach C (the same one: handed on, not closed), and the pool must still work afterwards.
    gated = GatedRouter()
    async with gated.router, FluxClient(base_url=gated.router.base_url, api_key="k", max_connections=1) as c:
        with anyio.fail_after(GUARD):
            b_scope = anyio.CancelScope()
            async with anyio.create_task_group() as tg:

                async def a() -> None:
                    await c.request(ask("a"))
                    b_scope.cancel()  # no checkpoint since the connection was given back

                async def b() -> None:
                    with b_scope:
                        await c.request(ask("b"))

                tg.start_soon(a)
                await settle()
                tg.start_soon(b)
                await settle()
                tg.start_soon(c.request, ask("c"))
                await settle()
                gated.open("a")
                gated.open("c")
            # the pool counts its one connection right: two more at once still get it in turn
            async with anyio.create_task_group() as tg:
                for name in ("d", "e"):
                    tg.start_soon(c.request, ask(name))
                    await settle()
                gated.open("d")
                gated.open("e")
    assert b_scope.cancelled_caught
    assert gated.order == ["a", "c", "d", "e"]
    assert len(gated.connections) == 1
    assert gated.most_busy == 1


# --- every interleaving of arrivals, answers and cancellations --------------------------------

# ("arrive", -), ("answer", k-th in flight), ("cancel", k-th alive), ("handover", k-th waiting),
# ("cutover", k): the first in flight is cancelled (its connection closes, so the pool opens a new
# one for a waiter) and the first waiting one k % 4 loop passes later (encode/httpcore#1093's order)
Step = tuple[str, int]


def _steps() -> st.SearchStrategy[list[Step]]:
    one = st.one_of(
        st.tuples(st.just("arrive"), st.just(0)),
        st.tuples(st.just("answer"), st.integers(0, 3)),
        st.tuples(st.just("cancel"), st.integers(0, 7)),
        st.tuples(st.just("handover"), st.integers(0, 7)),
        st.tuples(st.just("cutover"), st.integers(0, 7)),
    )
    return st.lists(one, min_size=1, max_size=14)


@settings(max_examples=examples(20), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_steps(), size=st.sampled_from([1, 2]))
def test_any_interleaving_serves_in_order_within_the_pool(
    anyio_backend: str, steps: list[Step], size: int
) -> None:
    # A model of the pool: requests arrive one at a time; the router answers one in flight, or a
    # request is cancelled (queued or in flight), or an answered request's own task cancels a
    # still-waiting one at the hand-over moment, or a waiting one is cancelled a few loop passes
    # after an in-flight one. Whatever the interleaving: requests reach the router in arrival
    # order, never more than `size` at once, every one not cancelled is answered (none stranded
    # behind a lost connection), and then `size` requests reach the router at once (no slot lost).
    anyio.run(_interleaving, steps, size, backend=anyio_backend)


async def _interleaving(steps: list[Step], size: int, transport: Any = "auto") -> None:
    gated = GatedRouter()
    names: list[str] = []
    scopes: dict[str, anyio.CancelScope] = {}
    done: list[str] = []
    after: dict[str, Callable[[], None]] = {}
    async with (
        gated.router,
        FluxClient(
            base_url=gated.router.base_url, api_key="k", max_connections=size, transport=transport
        ) as c,
    ):

        async def one(name: str) -> None:
            with scopes[name]:
                await c.request(ask(name))
                done.append(name)
                if name in after:
                    after.pop(name)()  # no checkpoint since the connection was given back

        def alive() -> list[str]:
            return [n for n in names if n not in done and not scopes[n].cancel_called]

        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as tg:
                for kind, k in steps:
                    live = alive()
                    flying = [n for n in gated.order if n in live]
                    if kind == "arrive":
                        name = f"r{len(names)}"
                        names.append(name)
                        scopes[name] = anyio.CancelScope()
                        tg.start_soon(one, name)
                    elif kind == "answer" and flying:
                        gated.open(flying[k % len(flying)])
                    elif kind == "cancel" and live:
                        gated.cut.add(live[k % len(live)])
                        scopes[live[k % len(live)]].cancel()
                    elif kind == "handover" and flying:
                        waiting = [n for n in live if n not in gated.order]
                        if waiting:
                            victim = waiting[k % len(waiting)]
                            after[flying[0]] = scopes[victim].cancel
                            gated.open(flying[0])
                    elif kind == "cutover" and flying:
                        waiting = [n for n in live if n not in gated.order]
                        if waiting:
                            gated.cut.update((flying[0], waiting[0]))
                            scopes[flying[0]].cancel()
                            for _ in range(k % 4):
                                await anyio.lowlevel.checkpoint()
                            scopes[waiting[0]].cancel()
                    await settle()
                for name in names:  # the rest are answered, in turn
                    gated.open(name)
            order, connections = list(gated.order), len(gated.connections)
            # no cancelled request kept a slot: `size` requests still reach the router at once
            probes = [f"probe{i}" for i in range(size)]
            async with anyio.create_task_group() as tg:
                for name in probes:
                    tg.start_soon(c.request, ask(name))
                for name in probes:
                    await gated.arrived(name).wait()
                for name in probes:
                    gated.open(name)
    assert order == sorted(order, key=names.index)
    assert gated.most_busy <= size
    cancelled = {n for n in names if scopes[n].cancel_called}
    assert set(done) | cancelled == set(names)
    # a connection is closed only when a request on it was cancelled: none at a hand-over
    cut = {n for n in cancelled if n in order}
    assert connections <= size + len(cut)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_waiter_cancelled_natively_after_the_hand_over_passes_the_connection_on(
    anyio_backend: str,
) -> None:
    # asyncio's own cancel (asyncio.timeout, wait_for, a task.cancel() of a library) lands at the
    # waiter's await although its future already holds the connection: the queue hands it on.
    import asyncio

    gated = GatedRouter()
    async with gated.router, FluxClient(base_url=gated.router.base_url, api_key="k", max_connections=1) as c:
        with anyio.fail_after(GUARD):
            b_task: list[asyncio.Task[Any]] = []
            b_cancelled: list[bool] = []
            async with anyio.create_task_group() as tg:

                async def a() -> None:
                    await c.request(ask("a"))
                    b_task[0].cancel()  # no checkpoint since the connection was given back

                async def b() -> None:
                    b_task.append(asyncio.current_task())  # type: ignore[arg-type]
                    try:
                        await c.request(ask("b"))
                    except asyncio.CancelledError:
                        b_task[0].uncancel()
                        b_cancelled.append(True)

                tg.start_soon(a)
                await settle()
                tg.start_soon(b)
                await settle()
                tg.start_soon(c.request, ask("c"))
                await settle()
                gated.open("a")
                gated.open("c")
    assert b_cancelled == [True]
    assert gated.order == ["a", "c"]
    assert len(gated.connections) == 1
