"""The lean transport's connections: one per backend, the same small interface.

- `AsyncioConnection`: an asyncio protocol, what the hand-written asyncio client of the
  benchmarks does. Bytes land in `buf` as the loop reads them; a request is one
  `transport.write`; a wait is one future, its timeout a timer that fails the future (no cancel
  scope, no extra loop iteration per send). ~40 µs of CPU per request less than anyio's stream.
- `AnyioConnection`: an anyio byte stream (trio, and any other backend), timeouts as cancel scopes.

Both: `receive(seconds)` adds to `buf` (False at EOF), `send(data, seconds)`, `stale()` (the
server closed it, or sent something unasked, while it was idle: never reuse), `aclose()`. Errors
are httpx's (`ReadTimeout`, `ReadError`, `WriteTimeout`, `WriteError`), which the client maps.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import select
import socket
import ssl
import sys
from typing import TYPE_CHECKING, cast

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
from anyio.streams.tls import TLSStream

if TYPE_CHECKING:
    import asyncio

__all__ = ["AnyioConnection", "AsyncioConnection", "Connection", "connect", "on_asyncio"]

_RECEIVE = 65536
_SETTLE_SECONDS = 0.001  # a TLS connection's pending records are read within this (once per connection)
_HIGH_WATER = 256 * 1024  # unread bytes past which the asyncio connection stops reading (flow control)


class Connection:
    """What the pool needs of a connection (both kinds below)."""

    __slots__ = ("buf", "idle_since")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.idle_since = 0.0

    async def receive(self, seconds: float) -> bool:
        raise NotImplementedError

    async def send(self, data: bytes, seconds: float) -> None:
        raise NotImplementedError

    def stale(self) -> bool:
        raise NotImplementedError

    async def settle(self) -> bool:
        """After `stale()` said yes: whether the connection is reusable after all. Over TLS 1.3 a
        server sends session tickets after the handshake; on a connection that never carried a
        request (`FluxClient.warmup()`) nothing has read them, and they look like unasked bytes."""
        return False

    async def aclose(self) -> None:
        raise NotImplementedError


async def connect(host: str, port: int, ssl_context: ssl.SSLContext | None, seconds: float) -> Connection:
    """A new connection on the running backend, within `seconds` (TLS handshake included).

    The `seconds` of these functions bound one operation each (httpx's connect / read / write
    timeouts) and end it with httpx's timeout error, which is why they are not cancel scopes.
    An IP literal or a `localhost` name is connected to without a name lookup: the event loop
    would run `getaddrinfo` in a worker thread (started for it on the first request, and kept)."""
    with anyio.move_on_after(seconds):
        try:
            return await _connect_any(host, port, ssl_context)
        except (OSError, anyio.BrokenResourceError, ssl.SSLError) as e:
            raise httpx.ConnectError(str(e) or type(e).__name__) from e
    raise httpx.ConnectTimeout(f"connecting to {host}:{port} took longer than {seconds:g} s")


def numeric_addresses(host: str) -> tuple[str, ...]:
    """The addresses to try for `host` without a lookup: itself if it is an IP literal, the
    loopback addresses for `localhost` (RFC 6761 6.3: it always means this machine; IPv4 first,
    what local servers bind by default), else () (the name must be looked up)."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return ("127.0.0.1", "::1")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return ()
    return (host,)


async def _connect_any(host: str, port: int, ssl_context: ssl.SSLContext | None) -> Connection:
    """The first address of `host` that accepts; when none does, the first one's error."""
    first: OSError | None = None
    for address in numeric_addresses(host) or (host,):
        try:
            return await _connect_one(address, port, ssl_context, host)
        except ssl.SSLError:  # it answered: a TLS failure is the answer, not a reason to try ::1
            raise
        except OSError as e:  # nothing listens there (refused, no IPv6...): the next address
            first = first or e
    assert first is not None
    raise first


async def _connect_one(address: str, port: int, ssl_context: ssl.SSLContext | None, host: str) -> Connection:
    if on_asyncio():
        return await _asyncio_connect(address, port, ssl_context, host)
    stream: anyio.abc.ByteStream
    if address == host and not numeric_addresses(host):  # a name: anyio looks it up (happy eyeballs)
        stream = await anyio.connect_tcp(address, port)
    else:
        stream = await _anyio_connect_numeric(address, port)
    if ssl_context is not None:
        try:
            stream = await TLSStream.wrap(
                stream,
                hostname=host,  # the certificate names the host, not the address
                ssl_context=ssl_context,
                standard_compatible=False,  # a server may close without close_notify (as httpcore)
            )
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
    return AnyioConnection(stream)


async def _anyio_connect_numeric(address: str, port: int) -> anyio.abc.SocketStream:
    """A non-blocking connect to one address. `anyio.connect_tcp` runs a task group, an event and
    a cancel scope per attempt (happy eyeballs) even for one address: ~0.2 ms of CPU on trio
    against ~0.03 here (the first connect of a process: 0.6-0.9 ms against 0.23)."""
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        err = sock.connect_ex((address, port))
        if err == errno.EINPROGRESS:
            await anyio.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"connect to {address}:{port}: {os.strerror(err)}")
        return await anyio.abc.SocketStream.from_socket(sock)
    except BaseException:
        sock.close()
        raise


def on_asyncio() -> bool:
    """Whether an asyncio loop runs in this thread. Without importing asyncio: if nothing has
    imported it, no asyncio loop runs (and `import agentloop` stays free of it, ~20 ms)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # trio (or another loop): no asyncio loop in this thread
        return False
    return True


async def _asyncio_connect(
    address: str, port: int, ssl_context: ssl.SSLContext | None, host: str
) -> Connection:
    import asyncio  # already imported: an asyncio loop runs

    loop = asyncio.get_running_loop()
    conn = AsyncioConnection(loop)
    protocol = cast("asyncio.Protocol", conn)  # it has the protocol's methods (see the class)
    await loop.create_connection(
        lambda: protocol, address, port, ssl=ssl_context, server_hostname=host if ssl_context else None
    )
    return conn


def _readable(fd: int) -> bool:
    """Whether the kernel holds bytes or an EOF for `fd` (a closed fd counts as readable)."""
    if fd < 0:
        return True
    try:
        poller = select.poll()  # not select.select: it refuses fds >= 1024 (a pool of 1000 has them)
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _expire(waiter: asyncio.Future[None], error: type[Exception], message: str, seconds: float) -> None:
    if not waiter.done():
        waiter.set_exception(error(message.format(seconds)))


class AsyncioConnection(Connection):
    """asyncio's protocol interface (duck-typed: subclassing asyncio.Protocol would import asyncio
    with agentloop)."""

    __slots__ = ("_closed", "_eof", "_error", "_fd", "_loop", "_paused", "_waiter", "_writable", "transport")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._eof = self._closed = self._paused = False
        self._writable = True
        self._error: BaseException | None = None
        self._fd = -1

    # --- asyncio's side -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()  # the reader is slower than the server: stop reading
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._error = exc
        self._writable = True
        self._wake()

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the pool's side ----------------------------------------------------------------------

    async def receive(self, seconds: float) -> bool:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        had = len(self.buf)
        while len(self.buf) == had:
            if self._eof or self._closed:
                if self._error is not None:
                    raise httpx.ReadError(f"the connection broke: {self._error}") from self._error
                return False
            await self._wait(seconds, httpx.ReadTimeout, "no data from the server for {:g} s")
        return True

    async def send(self, data: bytes, seconds: float) -> None:
        transport = self.transport
        if self._closed or transport is None or transport.is_closing():
            raise httpx.WriteError("the connection was closed")
        transport.write(data)
        while not self._writable and not self._closed:  # a large body: wait until the kernel took it
            await self._wait(seconds, httpx.WriteTimeout, "writing the request timed out")
        if self._closed and self._error is not None:
            raise httpx.WriteError(f"the connection broke while sending: {self._error}") from self._error

    async def _wait(self, seconds: float, error: type[Exception], message: str) -> None:
        """Until `_wake`, or `error(message.format(seconds))` after `seconds`. The error is made
        only if the timer fires: made up front, every waiting request held one (2 GC-tracked
        objects and ~200 B)."""
        waiter = self._waiter = self._loop.create_future()
        timer = (
            self._loop.call_later(seconds, _expire, waiter, error, message, seconds)
            if seconds != float("inf")
            else None
        )
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def stale(self) -> bool:
        transport = self.transport
        if self.buf or self._eof or self._closed or transport is None or transport.is_closing():
            return True
        # The loop may not have polled this socket since the server's FIN arrived: ask the kernel.
        return _readable(self._fd)

    async def settle(self) -> bool:
        transport = self.transport
        if transport is None or transport.get_extra_info("ssl_object") is None:
            return False
        # The loop's TLS protocol reads the socket when the loop polls it: the task resumes
        # first, the read callback in the same iteration, so two iterations. Tickets are
        # consumed inside it; data or an EOF would land in buf / _eof.
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        return not self.stale()

    async def aclose(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # no graceful close: a connection given up on is not drained


class AnyioConnection(Connection):
    __slots__ = ("raw", "stream")

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        super().__init__()
        self.stream = stream
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        self.raw: socket.socket | None = raw
        if raw is not None and raw.family in (socket.AF_INET, socket.AF_INET6):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def receive(self, seconds: float) -> bool:
        with anyio.move_on_after(seconds):
            try:
                chunk = await self.stream.receive(_RECEIVE)
            except anyio.EndOfStream:
                return False
            except (anyio.BrokenResourceError, OSError) as e:
                raise httpx.ReadError(f"the connection broke: {e.__cause__ or e or type(e).__name__}") from e
            self.buf += chunk
            return True
        raise httpx.ReadTimeout(f"no data from the server for {seconds:g} s")

    async def send(self, data: bytes, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            try:
                await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as e:
                raise httpx.WriteError(f"the connection broke while sending: {e or type(e).__name__}") from e
            return
        raise httpx.WriteTimeout("writing the request timed out")

    def stale(self) -> bool:
        """Readable while idle: the server closed it (EOF) or sent something unasked."""
        raw = self.raw
        return bool(self.buf) or raw is None or _readable(raw.fileno())

    async def settle(self) -> bool:
        if self.buf or not isinstance(self.stream, TLSStream):
            return False
        # Read through TLS: records without data (tickets) are consumed and the read waits for
        # more, which ends it; data or an EOF means the connection is not reusable.
        with anyio.move_on_after(_SETTLE_SECONDS):
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                self.buf += await self.stream.receive(_RECEIVE)
            return False
        return not self.stale()

    async def aclose(self) -> None:
        await anyio.aclose_forcefully(self.stream)
