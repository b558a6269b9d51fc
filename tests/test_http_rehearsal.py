"""`FluxClient.warmup()` runs the request path on canned bytes (its rehearsal), inside the process.

What a user can see from the outside: the codec ran (a wire registered with samples records
its calls), the endpoint received nothing but the pre-opened connection, no socket, thread or
task is left behind, and the first real request is answered as usual. Whether it made the
first request faster is a timing: benchmarks/bench_first_request.py. Both backends.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from typing import Any

import anyio
import pytest
from test_http_lean_hostile import ANSWER, SSE, RawServer, ask, chunked, client, ok, read_request
from test_wire_status import StatusWire, _Recording

from agentloop import Agent, APIResponseError, FluxClient, ModelRequest
from agentloop._wire import WIRES, WireSpec  # internal unit under test: the registry a third-party wire joins

pytestmark = pytest.mark.anyio


class Counting:
    """A server script that answers every request with `ok()` and counts them."""

    def __init__(self) -> None:
        self.requests = 0

    async def __call__(self, index: int, stream: Any) -> None:
        while await read_request(stream):
            self.requests += 1
            await stream.send(ok())


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _register(monkeypatch: pytest.MonkeyPatch, wire: _Recording, samples: tuple[bytes, ...]) -> None:
    spec = WireSpec(
        "mine", lambda _max_tokens: wire, "http://127.0.0.1:9/v1", None, "/chat/completions", samples
    )  # type: ignore[arg-type, return-value]
    monkeypatch.setitem(WIRES, "mine", spec)


async def test_warmup_rehearses_the_codec_without_sending_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    wire = StatusWire()
    _register(monkeypatch, wire, (ANSWER,))
    script = Counting()
    async with RawServer(script) as server, client(server.url, wire="mine") as c:
        await c.warmup()
        rehearsed = len(wire.calls)
        assert rehearsed >= 8  # CPython 3.11 quickens a function at its 8th call
        assert all(call == {"request_id": "rehearsal", "status": 200} for call in wire.calls)
        assert script.requests == 0 and server.opened == 1  # only the connection warmup opens
        assert (await ask(c)).message["content"] == "ok"
        assert script.requests == 1 and server.opened == 1  # on the warm connection
        await c.warmup()  # once per client
        assert len(wire.calls) == rehearsed + 1


async def test_a_wire_without_samples_is_not_rehearsed(monkeypatch: pytest.MonkeyPatch) -> None:
    wire = StatusWire()
    _register(monkeypatch, wire, ())
    async with RawServer(Counting()) as server, client(server.url, wire="mine") as c:
        await c.warmup()
        assert wire.calls == []
        assert (await ask(c)).message["content"] == "ok"


@pytest.mark.parametrize("wire", sorted(WIRES))
async def test_warmup_leaves_no_socket_thread_or_task_behind(wire: str) -> None:
    script = Counting()
    fds, tasks = _fds(), len(anyio.get_running_tasks())
    async with RawServer(script) as server:
        listening, threads = _fds() - fds, set(threading.enumerate())  # the server's own (a resolver)
        async with client(server.url, wire=wire) as c:
            await c.warmup()
            # the one connection warmup opened: its two ends (the server runs in this process)
            assert len(_fds() - fds - listening) == 2
            assert not [t for t in anyio.get_running_tasks() if "rehears" in t.name]  # its far end ended
            assert script.requests == 0
        assert set(threading.enumerate()) - threads == set()
    assert _fds() - fds == set()
    assert len(anyio.get_running_tasks()) == tasks


async def test_a_cancelled_warmup_leaves_nothing_behind_and_the_client_works() -> None:
    fds = _fds()
    async with RawServer(Counting()) as server:
        async with client(server.url) as c:
            with anyio.CancelScope() as scope:
                scope.cancel()
                await c.warmup()
            assert (await ask(c)).message["content"] == "ok"
    assert _fds() - fds == set()


async def test_the_rehearsal_never_reaches_the_endpoint_with_an_agent_run() -> None:
    script = Counting()
    async with RawServer(script) as server, client(server.url) as c:
        await c.warmup()
        result = await Agent(client=c, model="m").run("hi")
    assert result.output == "ok"
    assert script.requests == 1  # the run's one request: the 16 rehearsed ones stayed in the process


async def test_a_sample_the_codec_refuses_fails_warmup_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    # A wire's samples are its own answers; one it cannot decode is a bug, said at warmup.
    _register(monkeypatch, StatusWire(), (b"not json",))
    async with RawServer(Counting()) as server, client(server.url, wire="mine") as c:
        with pytest.raises(APIResponseError, match="answered 200 with a body that is not JSON"):
            await c.warmup()
        assert isinstance(c, FluxClient) and (await ask(c)).message["content"] == "ok"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_warmup_leaves_no_cancelled_timer_for_the_first_request(anyio_backend: str) -> None:
    # Regression (bench_first_request.py): the rehearsal's ~30 cancelled timers stayed in
    # asyncio's heap behind warmup's own time bound, and the first real request popped them one
    # by one (~130 calls of the Python TimerHandle.__lt__: its 591 calls against a later one's
    # 289). asyncio only: trio's deadline heap is not reachable (its stale entries are C tuples).
    import asyncio

    async with RawServer(Counting()) as server, client(server.url) as c:
        loop = asyncio.get_running_loop()
        before = sum(h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]
        await c.warmup()
        assert sum(h.cancelled() for h in loop._scheduled) <= before  # type: ignore[attr-defined]
        assert (await ask(c)).message["content"] == "ok"


class CountingAssembler:
    """The built-in codec of a wire, counting the stream assemblers it makes (one per streamed answer)."""

    def __init__(self, name: str) -> None:
        self.inner = WIRES[name].build(1024)
        self.assemblers = 0

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def assembler(self, *args: Any) -> Any:
        self.assemblers += 1
        return self.inner.assembler(*args)


def _register_streaming(monkeypatch: pytest.MonkeyPatch, name: str) -> CountingAssembler:
    wire = CountingAssembler(name)
    spec = replace(WIRES[name], name="mine", build=lambda _max_tokens: wire)
    monkeypatch.setitem(WIRES, "mine", spec)
    return wire


def _streaming(stream: Any) -> Any:
    async def script(index: int, conn: Any) -> None:
        while await read_request(conn):
            await conn.send(stream)

    return script


@pytest.mark.parametrize("name", sorted(WIRES))
async def test_warmup_rehearses_the_streamed_path_and_no_delta_reaches_the_caller(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    wire = _register_streaming(monkeypatch, name)
    served = Counting()
    async with RawServer(served) as server, client(server.url, wire="mine") as c:
        await c.warmup()
        assert wire.assemblers >= 8  # the SSE reader and this wire's assembler ran, in the process
        assert served.requests == 0
    # The caller's first streamed request gets its own answer's deltas, nothing of the rehearsal's.
    wire = _register_streaming(monkeypatch, "openai")
    async with RawServer(
        _streaming(chunked([SSE]).replace(b"application/json", b"text/event-stream"))
    ) as server:
        async with client(server.url, wire="mine") as c:
            await c.warmup()
            seen: list[Any] = []

            async def emit(event: Any) -> None:
                seen.append(event)

            req = ModelRequest(model="m", messages=[{"role": "user", "content": "hi"}], tools=[])
            turn = await c.request(req, emit)
    assert turn.message["content"] == "ok" and turn.streamed
    assert [type(e).__name__ for e in seen] == ["TextDelta", "TextDelta"]  # the answer's two, no more
    assert "".join(e.text for e in seen) == "ok"


async def test_a_client_that_does_not_stream_rehearses_no_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    wire = _register_streaming(monkeypatch, "openai")
    async with RawServer(Counting()) as server, client(server.url, wire="mine", stream=False) as c:
        await c.warmup()
        assert wire.assemblers == 0
        assert (await ask(c, stream=True)).message["content"] == "ok"  # one plain request, emitted whole
