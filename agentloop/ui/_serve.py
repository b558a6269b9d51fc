"""How `agentloop ui` serves: uvicorn with bounds on what clients can hold.

uvicorn alone has no connection cap (idle sockets are kept and counted against
`limit_concurrency`, so 64 idle sockets would make every real request a 503) and no deadline for
a request to arrive (a slowloris client that sends one header byte a minute holds its socket
forever). The protocol here keeps at most `max_connections`: a new one past it evicts the
oldest connection with no request being served (an idle or a still-arriving one), or is closed
at once when every one is being served; and it cuts one
whose request (head and body) has not fully arrived `request_timeout` seconds after its first
byte (or after the connection opened); `keep_alive` bounds an idle kept-alive connection and
`max_header_bytes` the head of a request (h11 answers 400 beyond it). A client that stops reading
its answer (the socket's buffers full, uvicorn's writer paused) is cut after `write_timeout`
seconds without progress: a paused writer holds its connection and task, so without this
`max_connections` such clients held the server for good. The cut is a reset (SO_LINGER 0), so the
unsent part of the page is dropped at once rather than kept in the kernel for the stalled peer.
Each connection's kernel send buffer is capped at `SEND_BUFFER` (Linux autotunes it up to ~4 MiB,
which swallowed a whole 2 MiB page, so the writer never paused and a client that reads nothing left
its page in kernel memory after the connection closed); the cap bounds that memory per connection
and lets the write timeout see a stalled reader.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["Limits", "protocol"]

SEND_BUFFER = 256 * 1024  # bytes of kernel send buffer per connection (Linux reserves twice this)


@dataclass(frozen=True)
class Limits:
    max_connections: int = 64
    request_timeout: float = 10.0  # seconds for a request's head and body to arrive
    keep_alive: int = 5  # seconds an idle kept-alive connection stays open
    max_header_bytes: int = 16 * 1024
    write_timeout: float = 30.0  # seconds an answer may wait for a client that reads none of it

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_header_bytes < 1024:
            raise ValueError("max_connections must be >= 1 and max_header_bytes >= 1024")
        if not (self.request_timeout > 0 and self.keep_alive > 0 and self.write_timeout > 0):
            raise ValueError("request_timeout, keep_alive and write_timeout must be more than 0 seconds")

    def uvicorn(self) -> dict[str, Any]:
        """The uvicorn.Config arguments that carry these limits."""
        return {
            "http": protocol(self),
            # a backstop: the protocol keeps connections (so tasks) at or under max_connections
            "limit_concurrency": self.max_connections + 1,
            "timeout_keep_alive": self.keep_alive,
            "h11_max_incomplete_event_size": self.max_header_bytes,
        }


def protocol(limits: Limits) -> type[asyncio.Protocol]:
    """An h11 protocol class bound to `limits` (a class per server: no module state)."""
    return type("BoundedH11", (_Bounded,), {"limits": limits})


class _Bounded(H11Protocol):
    """uvicorn's h11 protocol with the connection cap, the request deadline and the head cap."""

    limits: Limits
    _deadline: asyncio.TimerHandle | None = None
    _stalled: asyncio.TimerHandle | None = None  # the write timeout, while the writer is paused
    _opened = 0.0
    _head = 0  # bytes of the request head received so far

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._opened = self.loop.time()
        if len(self.connections) > self.limits.max_connections:
            idle = [c for c in self.connections if isinstance(c, _Bounded) and c is not self and c.idle()]
            if not idle:
                transport.abort()  # every connection is being served: this one waits its turn elsewhere
                return
            min(idle, key=lambda c: c._opened).transport.abort()  # the oldest idle one makes room
        self._watch()

    def idle(self) -> bool:
        """No request of this connection is being served (none yet, or between two)."""
        served = self.cycle is not None and not self.cycle.response_complete
        return not served and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # h11 only limits a head that arrives in pieces
            end = data.find(b"\r\n\r\n")
            self._head += len(data) if end < 0 else end
            if self._head > self.limits.max_header_bytes:
                self._refuse_head()
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._head = 0
        self._watch()

    def _refuse_head(self) -> None:
        text = f"request head over {self.limits.max_header_bytes} bytes".encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(text), text)
        )
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        self._unstall()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            self._stalled = self.loop.call_later(self.limits.write_timeout, self._reset)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unstall()  # the client read: the clock starts again at the next pause

    def _unstall(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _reset(self) -> None:
        """The client read nothing for `write_timeout` seconds: drop the connection and its page."""
        self._stalled = None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()  # connection_lost resumes uvicorn's writer: the request's task ends

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._stop()  # idle now: uvicorn's keep-alive timer takes over until the next byte

    def _watch(self) -> None:
        # IDLE (its head not all here yet) or SEND_BODY (its body not all here): still arriving
        arriving = self.conn.their_state in (h11.IDLE, h11.SEND_BODY)
        if arriving and self._deadline is None and not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.limits.request_timeout, self._cut)
        elif not arriving:
            self._stop()

    def _stop(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cut(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.abort()
