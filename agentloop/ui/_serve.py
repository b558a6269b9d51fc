"""How `agentloop ui` serves: uvicorn with bounds on what clients can hold.

uvicorn alone has no connection cap (idle sockets are kept and counted against
`limit_concurrency`, so 64 idle sockets would make every real request a 503) and no deadline for
a request to arrive (a slowloris client that sends one header byte a minute holds its socket
forever). The protocol here keeps at most `max_connections`: a new one past it evicts the
oldest connection with no request being served (an idle or a still-arriving one), or is closed
at once when every one is being served; and it cuts one
whose request (head and body) has not fully arrived `request_timeout` seconds after its first
byte (or after the connection opened); `keep_alive` bounds an idle kept-alive connection and
`max_header_bytes` the head of a request (h11 answers 400 beyond it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["Limits", "protocol"]


@dataclass(frozen=True)
class Limits:
    max_connections: int = 64
    request_timeout: float = 10.0  # seconds for a request's head and body to arrive
    keep_alive: int = 5  # seconds an idle kept-alive connection stays open
    max_header_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_header_bytes < 1024:
            raise ValueError("max_connections must be >= 1 and max_header_bytes >= 1024")
        if not (self.request_timeout > 0 and self.keep_alive > 0):
            raise ValueError("request_timeout and keep_alive must be more than 0 seconds")

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
    _opened = 0.0
    _head = 0  # bytes of the request head received so far

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
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
        super().connection_lost(exc)

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
