"""`FluxClient.warmup()` rehearses an httpx transport too: through a loopback listener of its own.

httpx takes no prepared connection, so the twin's httpx client (the same transport kind as the
client's) dials a listener on 127.0.0.1 that the rehearsal opens inside `warmup()` and closes
before it returns. What a user can see from the outside: the codec ran, the endpoint received
no request (only the connection `warmup()` opens before the rehearsal, which the first request
then uses), no other socket, task or thread is left behind, cancelling `warmup()` anywhere
leaves nothing else either, the first real request goes to the endpoint exactly once, and what
cannot be rehearsed safely (a caller's `http_client`, environment proxies) is not.
Whether it made the first request faster is a timing: benchmarks/bench_first_request.py.
Also trio's stale deadlines (the rehearsal's) are swept before `warmup()` returns. Both backends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import anyio
import httpx
import pytest
from test_http_lean_hostile import ANSWER, RawServer, ask, client
from test_http_rehearsal import Counting
from test_wire_status import StatusWire

from agentloop import ModelTurn
from agentloop._wire import WIRES, WireSpec  # internal unit under test: the registry a third-party wire joins

pytestmark = pytest.mark.anyio

TRANSPORTS = ["httpcore", "sharded"]


class CancellingWire(StatusWire):
    """Cancels `scope` at its `at`-th decode: mid-rehearsal, the listener and a connection open."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.scope: anyio.CancelScope | None = None

    def decode(self, content: bytes, *, request_id: str | None = None, status: int = 200) -> ModelTurn:
        if len(self.calls) + 1 == self.at and self.scope is not None:
            self.scope.cancel()
        return super().decode(content, request_id=request_id, status=status)


def _fds() -> set[tuple[str, str]]:
    """The process's open descriptors, each with what it points at (`socket:[inode]`...): a number
    freed meanwhile (another test's garbage collected) and reused by a new socket still shows."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
        except OSError:  # closed between the listing and the look
            pass
    return out


def _tasks() -> int:
    """Running tasks but the test server's (its listeners' serve tasks start when they first run)."""
    return sum("Listener.serve" not in t.name for t in anyio.get_running_tasks())


def _register(monkeypatch: pytest.MonkeyPatch, wire: StatusWire) -> None:
    spec = WireSpec(
        "mine", lambda _max_tokens: wire, "http://127.0.0.1:9/v1", None, "/chat/completions", (ANSWER,)
    )  # type: ignore[arg-type, return-value]
    monkeypatch.setitem(WIRES, "mine", spec)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_warmup_rehearses_an_httpx_transport_and_the_endpoint_sees_only_the_real_request(
    monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    wire = StatusWire()
    _register(monkeypatch, wire)
    script = Counting()
    fds = _fds()
    async with RawServer(script) as server:
        listening, threads = _fds() - fds, set(threading.enumerate())
        async with client(server.url, wire="mine", transport=transport) as c:
            tasks = _tasks()
            await c.warmup()
            rehearsed = len(wire.calls)
            await anyio.wait_all_tasks_blocked()  # the server has taken the connection warmup() opened
            assert rehearsed >= 8  # CPython 3.11 quickens a function at its 8th call
            assert all(call == {"request_id": "rehearsal", "status": 200} for call in wire.calls)
            assert server.opened == 1 and script.requests == 0  # a connection opened, no request
            # its two ends (ours, the server's) only: the loopback listener and its connections are gone
            assert len(_fds() - fds - listening) == 2
            assert _tasks() == tasks + 1  # the server's task serving that connection
            assert set(threading.enumerate()) - threads == set()  # none started (an idle one may end)
            assert (await ask(c)).message["content"] == "ok"
            assert server.opened == 1 and script.requests == 1  # the first real request, once, on it
            await c.warmup()  # rehearsed once per client; the connection is idle in the pool: none opened
            assert len(wire.calls) == rehearsed + 1 and server.opened == 1
    assert _fds() - fds == set()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_warmup_rehearses_the_aiohttp_transport_on_asyncio(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    pytest.importorskip("aiohttp")
    wire = StatusWire()
    _register(monkeypatch, wire)
    script = Counting()
    async with RawServer(script) as server, client(server.url, wire="mine", transport="aiohttp") as c:
        await c.warmup()
        assert len(wire.calls) >= 8 and server.opened == 0
        assert (await ask(c)).message["content"] == "ok"
        assert script.requests == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("at", [1, 5, 16])  # the first answer, mid-way, the last plain one
async def test_a_warmup_cancelled_mid_rehearsal_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch, transport: str, at: int
) -> None:
    wire = CancellingWire(at)
    _register(monkeypatch, wire)
    script = Counting()
    fds = _fds()
    async with RawServer(script) as server:
        listening = _fds() - fds
        async with client(server.url, wire="mine", transport=transport) as c:
            tasks = _tasks()
            with anyio.CancelScope() as scope:
                wire.scope = scope
                await c.warmup()
            assert scope.cancelled_caught and len(wire.calls) == at
            await anyio.wait_all_tasks_blocked()  # the server has taken the connection warmup() opened
            assert server.opened == 1 and script.requests == 0
            assert len(_fds() - fds - listening) == 2  # the connection opened before the rehearsal
            assert _tasks() == tasks + 1  # and the server's task serving it
            wire.scope = None
            assert (await ask(c)).message["content"] == "ok"
            assert server.opened == 1 and script.requests == 1
    assert _fds() - fds == set()


async def test_a_callers_http_client_is_not_rehearsed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its transport, proxies, certificates and hooks are the caller's: a twin of it is not ours to build.
    wire = StatusWire()
    _register(monkeypatch, wire)
    script = Counting()
    async with RawServer(script) as server, httpx.AsyncClient() as http:
        async with client(server.url, wire="mine", http_client=http) as c:
            await c.warmup()
            assert wire.calls == [] and server.opened == 0
            assert (await ask(c)).message["content"] == "ok"
    assert script.requests == 1


@pytest.mark.parametrize("transport", ["auto", "httpcore"])
async def test_with_environment_proxies_nothing_is_rehearsed(
    monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    # httpx would send the twin's requests to the proxy: the rehearsal would leave the process.
    wire = StatusWire()
    _register(monkeypatch, wire)
    async with RawServer(Counting()) as proxy:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with client("http://127.0.0.1:9/v1", wire="mine", transport=transport) as c:
            await c.warmup()
        assert wire.calls == [] and proxy.opened == 0


_STALE = """
import anyio, sys
from trio._core._run import GLOBAL_RUN_CONTEXT  # the deadline heap: trio's own, private
from agentloop import FluxClient

async def main():
    async with FluxClient(base_url="http://127.0.0.1:9/v1", api_key="k", transport=sys.argv[1]) as c:
        await c.warmup(0)  # opens no connection (nothing listens there): the rehearsal only
        heap = GLOBAL_RUN_CONTEXT.runner.deadlines._heap
        print(sum(deadline != scope._registered_deadline for deadline, _, scope in heap))

anyio.run(main, backend="trio")
"""


@pytest.mark.parametrize("transport", ["auto", "httpcore"])
def test_warmup_leaves_no_stale_deadline_for_the_first_request(transport: str) -> None:
    # Regression (bench_first_request.py): trio drops a stale deadline only when it is about to
    # block with no task to run, which warmup's checkpoints never were: the first real request
    # popped the rehearsal's ~95 while waiting for its answer. In a process of its own: the test
    # runner's tasks (and a server's) let the loop block in between and hide it.
    done = subprocess.run(
        [sys.executable, "-c", _STALE, transport], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"]
