"""`CoreTransport`: httpx's `AsyncHTTPTransport`, rebuilt on httpcore's public API, whose pool can
be handed connections opened ahead of the first request (`preconnect`).

Why not `httpx.AsyncHTTPTransport` itself: it builds its `httpcore.AsyncConnectionPool` inside
and takes no network backend, and httpcore's pool has no public way to add a connection without
a request. So `FluxClient.warmup()` could not open a connection for `transport="httpcore"` (or
`"sharded"`): the first request paid its connect, ~900 Python calls more than a later request
(anyio's connect inside httpcore, the new connection's objects), 2.1-2.2x a steady request's CPU
(benchmarks/README.md). Here the pool is built with `httpcore.AsyncConnectionPool(network_backend=...)`
and the backend, `_Parking`, keeps the connections `preconnect` opened (TLS handshake done) and
hands them to the pool's next connects to that host and port, instead of connecting: the first
request finds its connection open and sends nothing the warmup did not already send (nothing:
a preconnect is a connect, no request). A parked connection older than the keep-alive expiry,
or one the server closed (or sent something on) meanwhile, is closed and a new one is opened.

What httpx's transport does besides is done the same way here: the request and response are
carried across (`httpcore.Request` / `httpx.Response`), and httpcore's exceptions become httpx's
(`_mapped`: the same table as httpx's, most specific first; httpcore's others, which httpx lets
out as they are, `httpx.TransportError`), also while the body is read.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any, NoReturn

import anyio
import httpcore
import httpx

from .sockets import on_asyncio

__all__ = ["CoreTransport"]

# httpcore's exceptions and httpx's, as httpx's own transport maps them; a subclass before its base.
_MAP: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)
_PORTS = {b"http": 80, b"https": 443}
_SETTLE_SECONDS = 0.001  # a parked TLS connection's pending records are read within this (once)


def _mapped(exc: Exception) -> Exception:
    """httpx's exception for httpcore's `exc` (raise it `from exc`); `exc` itself if not httpcore's."""
    for theirs, ours in _MAP:
        if isinstance(exc, theirs):
            return ours(str(exc))
    if type(exc).__module__.partition(".")[0] == "httpcore":
        # httpcore's others (`ConnectionNotAvailable`, which its pool retries, and any it adds)
        # are a broken exchange too: the client raises `APIConnectionError`, never httpcore's own.
        # httpx's transport raises them as they are, outside agentloop's exception tree.
        return httpx.TransportError(f"{type(exc).__name__}: {exc}")
    # Not httpcore's: a bug (httpcore's RuntimeError for a request sent to another origin's
    # connection, or ours), raised as itself as httpx does: neither retried nor reported as the
    # network's fault.
    return exc


def _raise(exc: Exception) -> NoReturn:
    mapped = _mapped(exc)
    if mapped is exc:
        raise exc
    raise mapped from exc


class CoreTransport(httpx.AsyncBaseTransport):
    """An httpcore pool behind httpx's transport seam (HTTP/1.1, no proxy: FluxClient keeps
    httpx's own transport when environment proxies are set), with `preconnect`."""

    def __init__(
        self, *, limits: httpx.Limits, verify: ssl.SSLContext | str | bool = True, trust_env: bool = True
    ) -> None:
        self._ssl = httpx.create_ssl_context(verify=verify, trust_env=trust_env)
        expiry = limits.keepalive_expiry
        self._backend = _Parking(math.inf if expiry is None else expiry)
        self._size = limits.max_connections if limits.max_connections is not None else 100
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=self._ssl,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=expiry,
            network_backend=self._backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,  # an AsyncByteStream (httpx's client sends no sync body here)
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core)
        except Exception as e:
            _raise(e)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_CoreStream(response.stream),  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    async def preconnect(self, url: str, count: int, seconds: float | None) -> None:
        """Open connections to `url`'s origin (TLS handshake included), concurrently, until `count`
        are ready (idle in the pool or parked; never past `max_connections`), each within
        `seconds` (the connect timeout); no request is sent. The first failure is raised as
        httpx's (`ConnectError`, `ConnectTimeout`) once all attempts ended; the others are kept."""
        origin = httpx.URL(url)
        host = origin.raw_host.decode("ascii")
        port = origin.port or _PORTS.get(origin.raw_scheme, 80)
        secure = self._ssl if origin.raw_scheme == b"https" else None
        if secure is not None:
            secure.set_alpn_protocols(["http/1.1"])  # what the pool's connections offer (HTTP/1.1 only)
        connections = self._pool.connections
        parked = self._backend.parked(host, port)
        ready = sum(c.is_idle() for c in connections) + parked
        wanted = min(count - ready, self._size - len(connections) - parked)
        try:
            await self._backend.preconnect(host, port, secure, seconds, wanted)
        except Exception as e:
            _raise(e)

    async def aclose(self) -> None:
        await self._backend.aclose()
        await self._pool.aclose()


class _CoreStream(httpx.AsyncByteStream):
    """httpcore's response body as httpx's, its exceptions mapped (httpx's `AsyncResponseStream`;
    the attribute keeps httpx's name: `fence.reach_h11` walks it)."""

    __slots__ = ("_httpcore_stream",)

    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._httpcore_stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._httpcore_stream:
                yield part
        except Exception as e:
            _raise(e)

    async def aclose(self) -> None:
        close = getattr(self._httpcore_stream, "aclose", None)
        if close is not None:
            await close()


class _Parking(httpcore.AsyncNetworkBackend):
    """The running event loop's httpcore backend (trio's, else anyio's, as httpcore's own
    `AutoBackend` picks), which first hands out the connections `preconnect` opened."""

    def __init__(self, expiry: float) -> None:
        self._expiry = expiry
        self._inner: httpcore.AsyncNetworkBackend | None = None
        self._parked: dict[tuple[str, int], list[tuple[float, httpcore.AsyncNetworkStream]]] = {}

    def _backend(self) -> httpcore.AsyncNetworkBackend:
        if self._inner is None:
            self._inner = httpcore.AnyIOBackend() if on_asyncio() else httpcore.TrioBackend()
        return self._inner

    def parked(self, host: str, port: int) -> int:
        return len(self._parked.get((host, port), ()))

    async def preconnect(
        self, host: str, port: int, secure: ssl.SSLContext | None, seconds: float | None, count: int
    ) -> None:
        parked = self._parked.setdefault((host, port), [])
        failures: list[Exception] = []

        async def open_one() -> None:
            try:
                stream = await self._backend().connect_tcp(host, port, timeout=seconds)
            except Exception as e:  # httpcore's ConnectError / ConnectTimeout
                failures.append(e)
                return
            if secure is not None:
                try:
                    stream = _Secured(await stream.start_tls(secure, host, seconds), secure, host)
                except BaseException as e:
                    await _close(stream)
                    if not isinstance(e, Exception):
                        raise
                    failures.append(e)
                    return
            parked.append((anyio.current_time(), stream))

        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(open_one)
        if failures:
            raise failures[0]

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        parked = self._parked.get((host, port))
        while parked:
            at, stream = parked.pop()
            if anyio.current_time() - at < self._expiry and (
                not stream.get_extra_info("is_readable") or await _settled(stream)
            ):
                return stream
            await _close(stream)  # expired, or closed (or written to) by the server meanwhile
        return await self._backend().connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._backend().connect_unix_socket(path, timeout=timeout, socket_options=socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._backend().sleep(seconds)

    async def aclose(self) -> None:
        parked = [stream for streams in self._parked.values() for _, stream in streams]
        self._parked.clear()
        for stream in parked:
            await _close(stream)


async def _settled(stream: httpcore.AsyncNetworkStream) -> bool:
    """A parked connection readable before any request: reusable only if what is there is TLS
    records without data. A TLS 1.3 server sends session tickets after the handshake; nothing
    read them on a connection that carried no request. A read through TLS consumes them and
    then waits (its timeout ends it: reusable); data or an EOF means the server wrote or closed.
    (The lean pool's `settle`; a read cancelled after the handshake leaves TLS usable.)"""
    if not isinstance(stream, _Secured):
        return False
    try:
        await stream.read(65536, _SETTLE_SECONDS)
    except httpcore.ReadTimeout:
        return True
    except Exception:  # broken: the caller closes it
        pass
    return False


async def _close(stream: httpcore.AsyncNetworkStream) -> None:
    with anyio.CancelScope(shield=True):
        await stream.aclose()


class _Secured(httpcore.AsyncNetworkStream):
    """A parked connection whose TLS handshake is done: the pool's connection asks for it again
    (`start_tls`), and gets the connection as it is."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, context: ssl.SSLContext, host: str) -> None:
        self._inner, self._context, self._host = inner, context, host

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        if ssl_context is not self._context or server_hostname != self._host:
            await _close(self._inner)
            raise httpcore.ConnectError("a preconnected connection was asked for another TLS host")
        return self

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)
