"""The first request of a client: `FluxClient.warmup()` and connecting without a name lookup.

A raw TCP listener on 127.0.0.1 (from test_http_lean_hostile) counts the connections it
accepts, so a test can tell a connection opened by `warmup()` from one a request opened. Both
backends (anyio's pytest plugin, see conftest.py).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import anyio
import anyio.abc
import pytest
import trustme
from test_http_lean_hostile import RawServer, ask, ca, client, ok, read_request, respond, server_tls

from agentloop import APIConnectionError, APITimeoutError, ConfigurationError, FluxClient

pytestmark = pytest.mark.anyio
__all__ = ["ca"]  # the fixture, imported for the TLS test below

POOLS = ["auto", "httpcore"]  # the lean pool; httpcore's (warmup() opens its connections too)


@pytest.mark.parametrize("transport", POOLS)
async def test_warmup_opens_the_connections_the_first_requests_use(transport: Any) -> None:
    accepted = anyio.Event()
    both_asked = anyio.Event()
    asked = 0

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        nonlocal asked
        if index == 1:
            accepted.set()  # two connections are open and not a request was sent
        while await read_request(stream):
            asked += 1
            if asked == 2:
                both_asked.set()
            await both_asked.wait()  # two requests in flight at once: each needs its own connection
            await stream.send(ok())

    async with RawServer(script) as server, client(server.url, transport=transport) as c:
        await c.warmup(2)
        with anyio.fail_after(30):
            await accepted.wait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, c)
            tg.start_soon(ask, c)
        assert (await ask(c)).message["content"] == "ok"
    assert server.opened == 2  # the requests used the warm connections, none of their own


@pytest.mark.parametrize("transport", POOLS)
async def test_warmup_again_opens_only_what_is_missing(transport: Any) -> None:
    async with RawServer(respond(ok(), close=False)) as server, client(server.url, transport=transport) as c:
        await c.warmup(1)
        await c.warmup(1)
        await c.warmup(0)
        assert (await ask(c)).message["content"] == "ok"
    assert server.opened == 1


@pytest.mark.parametrize("transport", POOLS)
async def test_warmup_is_bounded_by_the_pool(transport: Any) -> None:
    async with (
        RawServer(respond(ok(), close=False)) as server,
        client(server.url, max_connections=2, transport=transport) as c,
    ):
        await c.warmup(50)
        assert (await ask(c)).message["content"] == "ok"
    assert server.opened == 2


@pytest.mark.parametrize("transport", POOLS)
async def test_warmup_against_nothing_is_a_connection_error_without_the_key(transport: Any) -> None:
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        c = FluxClient(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-warm-secret-123", transport=transport
        )
        async with c:
            with pytest.raises(APIConnectionError) as info:
                await c.warmup()
    assert "sk-warm-secret-123" not in str(info.value) and "sk-warm-secret-123" not in repr(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)


@pytest.mark.parametrize("bad", [-1, True, 1.5, "2", None])
async def test_warmup_refuses_a_count_that_is_not_a_whole_number(bad: Any) -> None:
    async with FluxClient(base_url="http://127.0.0.1:9/v1", api_key="k") as c:
        with pytest.raises(ConfigurationError, match="whole number"):
            await c.warmup(bad)


@pytest.mark.parametrize("transport", ["httpcore", "sharded"])
async def test_warmup_with_an_httpcore_transport_opens_connections_the_requests_use(transport: str) -> None:
    # No request is sent to open them (the server answers only what it is asked), and the requests
    # after warmup() connect no more; a second warmup() opens none while they are idle.
    async with RawServer(respond(ok(), close=False)) as server, client(server.url, transport=transport) as c:
        await c.warmup(3)
        assert server.opened == 3
        for _ in range(3):
            assert (await ask(c)).message["content"] == "ok"
        await c.warmup(3)
    assert server.opened == 3


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


@pytest.mark.parametrize("name", ["localhost", "LOCALHOST", "api.localhost"])
async def test_localhost_is_connected_to_without_a_lookup_thread(name: str) -> None:
    async with RawServer(respond(ok(), close=False)) as server:
        url = server.url.replace("127.0.0.1", name)
        before = _threads()
        async with client(url) as c:
            await c.warmup()
            assert (await ask(c)).message["content"] == "ok"
        # The event loop runs getaddrinfo in a worker thread it starts (and keeps) for a name.
        assert _threads() - before == set()
    assert server.opened == 1


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_localhost_falls_back_to_ipv6_when_nothing_listens_on_ipv4() -> None:
    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            while await read_request(stream):
                await stream.send(ok())

    # A port free on ::1 whose 127.0.0.1 twin we hold bound (so it refuses); on a busy machine
    # another process may hold the twin: try another port (it once skipped the test instead).
    for _ in range(50):
        listener = await anyio.create_tcp_listener(local_host="::1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        blocker = socket.socket()
        try:
            blocker.bind(("127.0.0.1", port))
            break
        except OSError:
            blocker.close()
            await listener.aclose()
    else:
        raise AssertionError("no port free on both ::1 and 127.0.0.1 in 50 tries")
    with blocker:
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            async with client(f"http://localhost:{port}/v1") as c:
                assert (await ask(c)).message["content"] == "ok"
            tg.cancel_scope.cancel()


async def test_tls_to_localhost_checks_the_certificate_against_the_name(ca: trustme.CA) -> None:
    context = server_tls(ca)
    ca.issue_cert("localhost").configure_cert(context)  # the name only, not the address
    async with RawServer(respond(ok(), close=False), tls=context) as server:
        async with client(server.url.replace("127.0.0.1", "localhost")) as c:
            for _ in range(2):
                assert (await ask(c)).message["content"] == "ok"
    assert server.opened == 1


@pytest.mark.parametrize("transport", ["auto", "httpcore"])
@pytest.mark.parametrize("tickets", [2, 0], ids=["tls1.3-tickets", "no-tickets"])
async def test_warmup_over_tls_is_reused_though_the_server_sent_session_tickets(
    ca: trustme.CA, tickets: int, transport: Any
) -> None:
    # TLS 1.3 servers send session tickets after the handshake; nothing reads them on a
    # connection that never carried a request, and they looked like an unasked answer.
    context = server_tls(ca)
    context.num_tickets = tickets
    async with (
        RawServer(respond(ok(), close=False), tls=context) as server,
        client(server.url, transport=transport) as c,
    ):
        await c.warmup()
        assert (await ask(c)).message["content"] == "ok"
        assert (await ask(c)).message["content"] == "ok"
    assert server.opened == 1


@pytest.mark.parametrize("transport", ["auto", "httpcore"])
async def test_a_warm_connection_the_server_closed_is_not_reused(ca: trustme.CA, transport: Any) -> None:
    closed = anyio.Event()

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        if index == 0:
            await stream.aclose()  # closes the warm connection before any request
            closed.set()
            return
        await respond(ok(), close=False)(index, stream)

    async with RawServer(script, tls=server_tls(ca)) as server, client(server.url, transport=transport) as c:
        await c.warmup()
        with anyio.fail_after(30):
            await closed.wait()
        assert (await ask(c)).message["content"] == "ok"  # on a new connection, not retried
    assert server.opened == 2


@pytest.mark.parametrize("transport", POOLS)
async def test_warmup_is_bounded_without_a_connect_timeout(ca: trustme.CA, transport: Any) -> None:
    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        await anyio.sleep_forever()  # accepts, never answers the TLS handshake

    async with RawServer(script) as server:
        url = server.url.replace("http://", "https://")
        async with client(url, timeout=None, total_timeout=0.5, transport=transport) as c:
            with pytest.raises(APITimeoutError, match=r"took longer than 0\.5 s"):
                await c.warmup()
