"""`FencedTransport`: the httpcore transport (`corepool.CoreTransport`, httpx's own rebuilt), which
never pools a connection a server over-sent on, and whose requests never wait inside httpcore's pool.

The leak it closes: httpcore reads a socket in pieces of up to 64 KiB and hands each to h11. When a
server sends more than the response's framing says (a `content-length` shorter than the body; bytes
after the last chunk), h11 stops at the end of the message and keeps the rest in its receive
buffer. httpcore then gives the connection back to the pool as idle, and its staleness check
(`has_expired`: is the socket readable?) cannot see bytes that were already read. The next request
on that connection, usually another run's, reads them as the start of its own response: garbage
("illegal status line"), or a whole forged answer the server planted there for whoever comes next.

The fence looks when a response is released: if h11 holds bytes past the message, or the socket
already has more, it tells h11 the connection failed (`h11.Connection.send_failed()`, public h11
API), and httpcore closes the connection instead of pooling it, exactly as it does for a body left
unread. httpx does not expose httpcore's connection, so it is reached by attribute (`_reach`), each
step checked; the pinned versions are tested (tests/test_fence.py asserts the reach works), and an
httpcore that moved them leaves the fence open (as before) rather than failing requests.

Bytes that arrive after the next request was sent cannot be told from its answer by any HTTP/1.1
client; what the fence guarantees is that nothing the server sent before the response ended is
ever read as another response.

The queue: httpcore's pool can keep a connection slot forever when a request waiting in it for a
connection is cancelled just after a new connection was created for it (encode/httpcore#1093,
open upstream): the connection stays `CONNECTING` with no request, never reaped, never reused;
with `max_connections` of them the pool is dead. So requests wait in front of the pool instead,
in agentloop's own first-come-first-served queue (`waiters.Slots`, as the lean pool's): at most
`max_connections` requests are inside httpcore at once, each finds a connection there at once
and never waits in it, and a request cancelled in our queue passes its slot on. A slot is held
until the response is closed, when httpcore has given the connection back (or dropped it).
The repro is kept in tests/test_http_httpcore_slots.py.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import h11
import httpx

from .corepool import CoreTransport
from .waiters import Slots

__all__ = ["FencedTransport", "reach_h11"]


class FencedTransport(CoreTransport):
    """The httpcore transport, its responses fenced and its requests queued in front of httpcore's
    pool (see the module doc)."""

    def __init__(self, *, limits: httpx.Limits | None = None, **kwargs: Any) -> None:
        limits = (
            limits if limits is not None else httpx.Limits(max_connections=100, max_keepalive_connections=20)
        )
        super().__init__(limits=limits, **kwargs)  # (httpx's default limits when none are given)
        size = limits.max_connections
        self._slots = Slots(size) if size is not None else None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        slots = self._slots
        if slots is not None:
            pool = request.extensions.get("timeout", {}).get("pool")
            await slots.acquire(math.inf if pool is None else pool)
        try:
            response = await super().handle_async_request(request)
        except BaseException:
            if slots is not None:  # httpcore let go of the request (its cleanup is shielded)
                slots.release()
            raise
        stream = response.stream
        if isinstance(stream, httpx.AsyncByteStream):
            release = slots.release if slots is not None else None
            response.stream = _Fenced(stream, response.extensions.get("network_stream"), release)
        elif slots is not None:  # (httpx's transport always answers an AsyncByteStream)
            slots.release()
        return response


class _Fenced(httpx.AsyncByteStream):
    """A response body that, when closed, has its connection closed if anything trails the
    message, then gives its request's slot back."""

    __slots__ = ("_inner", "_network", "_release")

    def __init__(
        self, inner: httpx.AsyncByteStream, network: object, release: Callable[[], None] | None
    ) -> None:
        self._inner, self._network, self._release = inner, network, release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            state = reach_h11(self._inner)
            if state is not None and state.their_state is h11.DONE and _trails(state, self._network):
                state.send_failed()  # httpcore's release now closes the connection instead of pooling it
            await self._inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:  # httpcore gave the connection back (or dropped it): once
                release()


def _trails(state: h11.Connection, network: object) -> bool:
    """Whether the server sent anything past the message: held by h11, or waiting in the socket."""
    if state.trailing_data[0]:
        return True
    readable = getattr(network, "get_extra_info", None)
    return bool(readable("is_readable")) if callable(readable) else False


def reach_h11(stream: object) -> h11.Connection | None:
    """The h11 state machine under a response stream of the httpcore transport, or None.

    The path (httpcore 1.0): `corepool._CoreStream._httpcore_stream` (so named in httpx's
    `AsyncResponseStream` too) is the pool's `PoolByteStream`, whose `_stream` is
    `HTTP11ConnectionByteStream`, whose `_connection` is the `AsyncHTTP11Connection` holding
    `_h11_state`. HTTP/2 and proxies answer None.
    """
    for name in ("_httpcore_stream", "_stream", "_connection", "_h11_state"):
        stream = getattr(stream, name, None)
    return stream if isinstance(stream, h11.Connection) else None
