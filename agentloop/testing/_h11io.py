"""The fake router's HTTP/1.1 plumbing over h11: read the next event, write a rendered answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import h11

from agentloop.testing._render import Rendered

__all__ = ["next_event", "out", "send"]


async def next_event(conn: h11.Connection, stream: anyio.abc.SocketStream) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            data = b""  # h11 turns EOF into ConnectionClosed, or an error mid-message
        conn.receive_data(data)


async def send(
    conn: h11.Connection,
    stream: anyio.abc.SocketStream,
    r: Rendered,
    chunk_delay: float = 0,
    before_last_write: Callable[[], None] = lambda: None,
) -> bool:
    """Write a rendered response. With `frames`, one chunk per SSE event (chunked encoding,
    chosen by h11 because there is no Content-Length). False after an `abort` (mid-stream drop)."""
    headers = [*r.headers, ("server", "fake-fluxrouter")]
    if r.frames is None:
        headers.append(("content-length", str(len(r.body))))
        data = out(conn, h11.Response(status_code=r.status, headers=headers))
        data += out(conn, h11.Data(data=r.body)) if r.body else b""
        before_last_write()
        await stream.send(data + out(conn, h11.EndOfMessage()))  # one write: no partial answers
        return True
    await stream.send(out(conn, h11.Response(status_code=r.status, headers=headers)))
    for frame in r.frames:
        if chunk_delay > 0:
            await anyio.sleep(chunk_delay)
        await stream.send(out(conn, h11.Data(data=frame)))
    before_last_write()
    if r.abort:
        return False
    await stream.send(out(conn, h11.EndOfMessage()))
    return True


def out(conn: h11.Connection, event: Any) -> bytes:
    data: bytes | None = conn.send(event)
    assert data is not None  # only ConnectionClosed yields None, and we never send it
    return data
