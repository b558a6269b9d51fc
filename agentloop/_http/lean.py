"""The lean transport: HTTP/1.1 keep-alive for FluxClient's one request shape, on anyio sockets.

Why not httpx + aiohttp (the former default on asyncio): per request httpx builds a `Request`
(URL merge, header merge), wraps the response in its own objects, and aiohttp writes the body from
a task of its own: ~300 µs of CPU per step of which this keeps ~50 (benchmarks/PROFILE.md). Here
the constant part of a request (request line, headers) is encoded once per client and a request
is one `send` of head + body; the answer is framed by `h1.py`. It runs on asyncio and trio alike.

What it keeps of httpx's guarantees: the same `httpx.Timeout` parts (connect, read per receive,
write, pool), the same exceptions (`httpx.ConnectError`, `ReadTimeout`, `RemoteProtocolError`...,
so the client maps failures as before), keep-alive with `keepalive_expiry`, a connection the
server closed while idle is never reused (checked before each request), `max_connections`,
TLS with httpx's SSL context (`SSL_CERT_FILE` ...), gzip / deflate bodies (decoded in bounded
pieces), and cookies a router sets. What it does not do: proxies, HTTP/2, redirects (FluxClient
never followed them); environment proxies and a caller's `transport=` / `http_client=` keep httpx.
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any

import anyio
import httpx

from .h1 import (
    CHUNKED,
    MAX_HEAD_BYTES,
    UNTIL_CLOSE,
    Dechunker,
    Head,
    StreamIdle,
    body_framing,
    parse_head,
)
from .inflate import inflated
from .sockets import Connection, connect
from .waiters import Expired, SlotQueue

__all__ = ["Dial", "LeanPool", "LeanResponse"]

# How a pool opens a connection: (host, port, TLS context, seconds) -> a connection.
Dial = Callable[[str, int, "ssl.SSLContext | None", float], Awaitable[Connection]]


_SLOT = object()  # what a waiter is handed when a connection closed: leave to open a new one


def _seconds(value: float | None) -> float:
    return float("inf") if value is None else value


class LeanPool:
    """Connections to one origin; `send(head, body)` → a `LeanResponse` whose body is still unread."""

    def __init__(
        self,
        url: str,
        timeout: httpx.Timeout,
        max_connections: int,
        keepalive_expiry: float,
        dial: Dial = connect,  # FluxClient.warmup()'s rehearsal dials a socket pair (rehearsal.py)
    ) -> None:
        parsed = httpx.URL(url)
        self.host = parsed.host
        self.tls = parsed.scheme == "https"
        self.port = parsed.port or (443 if self.tls else 80)
        self.netloc = parsed.netloc.decode("ascii")
        self.target = parsed.raw_path.decode("ascii")
        self._connect_timeout = _seconds(timeout.connect)
        self._read_timeout = _seconds(timeout.read)
        self._write_timeout = _seconds(timeout.write)
        self._pool_timeout = _seconds(timeout.pool)
        self._max = max_connections
        self._expiry = keepalive_expiry
        self._idle: list[Connection] = []
        self._open = 0  # connections open (idle or carrying a request) or being opened
        # requests waiting for a connection, first come first served
        self._queue = SlotQueue(self._give_back)
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        self._dial = dial

    def prepare(self) -> None:
        if self.tls and self._ssl is None:
            context = httpx.create_ssl_context()  # ~30 ms: here, not in the first request
            context.set_alpn_protocols(["http/1.1"])  # the one protocol spoken here (as httpcore offers it)
            self._ssl = context

    async def send(self, request_head: bytes, body: bytes, conn: Connection) -> LeanResponse:
        """Send one request (its line and headers up to the blank line, then `body`) over `conn`
        (from `acquire`) and read the response head.

        Head and body are joined only once a connection is ours, and the joined copy is let go
        once sent: a request queued for a connection or waiting for its answer holds no second
        copy of its body (the caller keeps the one it may retry with)."""
        try:
            try:
                await conn.send(request_head + body, self._write_timeout)
            except httpx.WriteError as broken:
                head = await self._early_head(conn, broken)
            else:
                head = await self._read_head(conn)
        except BaseException:
            await self._discard(conn)
            raise
        return LeanResponse(self, conn, head)

    async def _early_head(self, conn: Connection, broken: httpx.WriteError) -> Head:
        """The head of an answer the server sent before it had read the whole request, then
        closed (nginx's 413 for a body over `client_max_body_size`, a 400, a 401), as httpcore
        reads it: the answer says why, where the broken write only said "connection reset", and
        was retried as such. No answer there: the write's own error."""
        try:
            return await self._read_head(conn)
        except httpx.TransportError:
            raise broken from None

    async def _read_head(self, conn: Connection) -> Head:
        while True:
            buf = conn.buf
            end = buf.find(b"\r\n\r\n")
            cut = 4
            if end < 0 and (end := buf.find(b"\n\n")) >= 0:
                cut = 2
            if end >= 0:
                if end > MAX_HEAD_BYTES:
                    break
                head = parse_head(bytes(buf[:end]))
                del buf[: end + cut]
                if 100 <= head.status_code < 200 and head.status_code != 101:
                    continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
                return head
            if len(buf) > MAX_HEAD_BYTES:
                break
            if not await self.receive(conn):
                raise httpx.RemoteProtocolError(
                    "the server closed the connection without sending a complete response head"
                    if buf
                    else "the server closed the connection without sending a response"
                )
        raise httpx.RemoteProtocolError(f"the response head is larger than {MAX_HEAD_BYTES} bytes")

    def receive(self, conn: Connection, until: float = math.inf) -> Coroutine[Any, Any, bool]:
        """More bytes into `conn.buf`; False at EOF. Each wait is bounded by the read timeout, and
        by `until` when given (a streamed body's idle deadline, on anyio's clock): `StreamIdle`
        once it has passed."""
        if until == math.inf:
            return conn.receive(self._read_timeout)
        return self._receive_until(conn, until)

    async def _receive_until(self, conn: Connection, until: float) -> bool:
        left = until - anyio.current_time()
        if left >= self._read_timeout:
            return await conn.receive(self._read_timeout)
        if left <= 0:
            raise StreamIdle
        try:
            return await conn.receive(left)
        except httpx.ReadTimeout:  # the wait was cut by `until`, before the read timeout
            raise StreamIdle from None

    async def acquire(self, deadline: float = math.inf) -> Connection:
        """A connection for one request: an idle one, a new one, or the next one freed (first
        come first served: handed straight to the request that waited longest). `deadline` (the
        anyio clock) is the request's own bound: past it, `Expired`; `math.inf` when a scope
        around the request ends it first. Give the connection to `send`, or back with `release`."""
        if self._closed:
            raise httpx.ConnectError("the client was closed")
        now = time.monotonic()
        while self._idle:  # (only when no request waits: what is freed then goes to a waiter)
            conn = self._idle.pop()
            if now - conn.idle_since < self._expiry and await self._usable(conn):
                return conn
            await self._discard(conn)
        if self._open < self._max:
            self._open += 1
        else:
            handed = await self._queue.wait(self._pool_timeout, deadline)
            if handed is not _SLOT:
                taken = await self._take(handed, deadline)
                # None: passed on for a cancellation that was then not delivered; ask afresh
                return taken if taken is not None else await self.acquire(deadline)
        return await self._open_slot(deadline)

    async def _usable(self, conn: Connection) -> bool:
        """Whether a connection that sat idle (or was just handed over) can carry a request; if
        the check is cancelled, the connection is closed (never lost with its slot)."""
        try:
            return not conn.stale() or await conn.settle()
        except BaseException:
            await self._discard(conn)
            raise

    async def _take(self, conn: Connection, deadline: float) -> Connection | None:
        """A connection handed over by `release`. If this request was cancelled meanwhile (trio
        resumes a task handed a value, and delivers the cancellation at its next checkpoint), the
        connection goes on to the next waiter rather than into a send that would close it. One
        that went stale is closed; the request keeps its slot and opens a new one."""
        if anyio.current_effective_deadline() == -math.inf:
            await self._queue.pass_on(conn)
            await anyio.lowlevel.checkpoint()  # raises the cancellation
            return None
        if await self._usable(conn):
            return conn
        try:
            await conn.aclose()
        except BaseException:
            self._free_slot()
            raise
        return await self._open_slot(deadline)

    async def _open_slot(self, deadline: float) -> Connection:
        """A new connection on a slot counted in `_open` for this request (freed if this fails)."""
        if self._closed:  # closed while the request waited: it got the slot of a closed connection
            self._free_slot()
            raise httpx.ConnectError("the client was closed")
        try:
            # A connect is bounded by the request's deadline too (one scope per connect, at most
            # max_connections at once: not one per queued request).
            with anyio.CancelScope(deadline=deadline):
                return await self._connect()
            raise Expired
        except BaseException:
            self._free_slot()
            raise

    def _free_slot(self) -> None:
        """A connection closed (or never opened): its slot to the first waiter, else uncounted."""
        if not self._queue.hand(_SLOT):
            self._open -= 1

    async def _give_back(self, handed: Any) -> None:
        """What a cancelled waiter was handed and no other waiter took (the queue's `give_back`)."""
        if handed is _SLOT:
            self._open -= 1
        elif self._closed:
            await self._discard(handed)
        else:
            handed.idle_since = time.monotonic()
            self._idle.append(handed)

    async def _connect(self) -> Connection:
        self.prepare()
        return await self._dial(self.host, self.port, self._ssl, self._connect_timeout)

    async def preconnect(self, count: int) -> None:
        """Open connections, concurrently, until `count` are idle (never past `max_connections`);
        the first failure is raised once all attempts ended (the ones that connected are kept)."""
        if self._closed:
            raise httpx.ConnectError("the client was closed")
        wanted = min(count - len(self._idle), self._max - self._open)
        failures: list[httpx.HTTPError] = []

        async def open_one() -> None:
            try:
                conn = await self._connect()
            except BaseException as e:
                self._free_slot()
                if not isinstance(e, httpx.HTTPError):
                    raise
                failures.append(e)
                return
            await self.release(conn, True)

        if wanted > 0:
            self._open += wanted
            async with anyio.create_task_group() as tg:
                for _ in range(wanted):
                    tg.start_soon(open_one)
        if failures:
            raise failures[0]

    async def release(self, conn: Connection, reusable: bool) -> None:
        """Give a connection back after its response: idle for the next request, or closed."""
        if reusable and not self._closed and not conn.buf:
            if not self._queue.hand(conn):  # the request that waited longest takes it as it is
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
        else:
            await self._discard(conn)

    async def _discard(self, conn: Connection) -> None:
        self._free_slot()
        await conn.aclose()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn)


class LeanResponse:
    """A response whose head was read; `aiter_bytes()` reads the body once, `aclose()` ends it
    (the connection goes back to the pool only when the body was read to its end).

    `idle_deadline` (anyio's clock; none by default): a wait for body bytes past it raises
    `StreamIdle`. The streamed answer's idle clock (`bounded.pump`) moves it: a deadline checked
    where the body waits costs nothing while bytes are already there, where a cancel scope
    around the reading armed and moved a timer per answer (~10 µs of a streamed step's CPU)."""

    __slots__ = (
        "_conn",
        "_done",
        "_framing",
        "_keep",
        "_pool",
        "cookies",
        "headers",
        "idle_deadline",
        "reason_phrase",
        "status_code",
    )

    def __init__(self, pool: LeanPool, conn: Connection, head: Head) -> None:
        self._pool, self._conn = pool, conn
        self.status_code, self.reason_phrase = head.status_code, head.reason_phrase
        self.headers: Mapping[str, str] = head.headers
        self.cookies = head.cookies
        self._framing, self._keep = body_framing(head)
        self._done = False
        self.idle_deadline = math.inf

    @property
    def encoding(self) -> str | None:
        _, _, charset = self.headers.get("content-type", "").partition("charset=")
        return charset.split(";", 1)[0].strip().strip('"') or None

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive, decoded (gzip / deflate); read once."""
        coding = self.headers.get("content-encoding")
        if coding is None or coding.strip().lower() in ("identity", ""):
            return self._raw()  # no generator of its own: one layer less per piece
        return self._inflated(coding.strip().lower())

    def _inflated(self, coding: str) -> AsyncIterator[bytes]:
        return inflated(self._raw(), coding)

    def _raw(self) -> AsyncIterator[bytes]:
        # A chunked body (every streamed answer) is read by `_chunks` itself: one generator
        # layer less, resumed once per network read.
        return self._chunks() if self._framing == CHUNKED else self._unchunked()

    async def _unchunked(self) -> AsyncIterator[bytes]:
        framing, conn, pool = self._framing, self._conn, self._pool
        if framing == UNTIL_CLOSE:
            while conn.buf or await pool.receive(conn, self.idle_deadline):
                piece = bytes(conn.buf)
                conn.buf.clear()
                yield piece
        else:
            left = framing
            while left:
                if not conn.buf and not await pool.receive(conn, self.idle_deadline):
                    raise httpx.RemoteProtocolError(
                        f"the server closed the connection {left} bytes before the body's end"
                    )
                piece = bytes(conn.buf[:left])
                del conn.buf[:left]
                left -= len(piece)
                yield piece
        self._done = True

    async def _chunks(self) -> AsyncIterator[bytes]:
        """The chunked body, one piece per network read (every chunk that read completed, joined)."""
        conn, pool = self._conn, self._pool
        dechunk = Dechunker()
        while True:
            piece = dechunk.take(conn.buf)
            if piece:
                yield piece
            if dechunk.done:
                self._done = True
                return
            if not await pool.receive(conn, self.idle_deadline):
                raise httpx.RemoteProtocolError(f"the server closed the connection {dechunk.where()}")

    async def aclose(self) -> None:
        conn = self._conn
        if conn is None:
            return
        self._conn = None  # type: ignore[assignment]
        await self._pool.release(conn, self._done and self._keep)
