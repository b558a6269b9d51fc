"""`FencedTransport`: httpx's own transport, which never pools a connection a server over-sent on.

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
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import h11
import httpx

__all__ = ["FencedTransport", "reach_h11"]


class FencedTransport(httpx.AsyncHTTPTransport):
    """`httpx.AsyncHTTPTransport` whose responses are fenced (see the module doc)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        stream = response.stream
        if isinstance(stream, httpx.AsyncByteStream):
            response.stream = _Fenced(stream, response.extensions.get("network_stream"))
        return response


class _Fenced(httpx.AsyncByteStream):
    """A response body that, when closed, has its connection closed if anything trails the message."""

    __slots__ = ("_inner", "_network")

    def __init__(self, inner: httpx.AsyncByteStream, network: object) -> None:
        self._inner, self._network = inner, network

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        state = reach_h11(self._inner)
        if state is not None and state.their_state is h11.DONE and _trails(state, self._network):
            state.send_failed()  # httpcore's release now closes the connection instead of pooling it
        await self._inner.aclose()


def _trails(state: h11.Connection, network: object) -> bool:
    """Whether the server sent anything past the message: held by h11, or waiting in the socket."""
    if state.trailing_data[0]:
        return True
    readable = getattr(network, "get_extra_info", None)
    return bool(readable("is_readable")) if callable(readable) else False


def reach_h11(stream: object) -> h11.Connection | None:
    """The h11 state machine under an httpx response stream of `httpx.AsyncHTTPTransport`, or None.

    The path (httpx 0.27-0.28, httpcore 1.0): httpx's `AsyncResponseStream._httpcore_stream` is the
    pool's `PoolByteStream`, whose `_stream` is `HTTP11ConnectionByteStream`, whose `_connection`
    is the `AsyncHTTP11Connection` holding `_h11_state`. HTTP/2 and proxies answer None.
    """
    for name in ("_httpcore_stream", "_stream", "_connection", "_h11_state"):
        stream = getattr(stream, name, None)
    return stream if isinstance(stream, h11.Connection) else None
