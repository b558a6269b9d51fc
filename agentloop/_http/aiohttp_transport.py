"""An httpx transport over aiohttp's connection pool (asyncio only).

Why not httpx's own pool: httpcore re-examines every connection on every request, which costs
~3.6 ms of CPU per request at 200 concurrent runs where aiohttp's pool costs ~0.5 ms (see
benchmarks/bench_transport.py). Why not the `httpx-aiohttp` package: it maps a refused connection
and a server that hangs up to `ConnectTimeout`, which would tell users to raise a timeout when the
host is down; this one maps aiohttp's errors to the httpx exception that says what happened.

The session belongs to the running asyncio loop: it is created by `prepare()` (FluxClient's
`__aenter__`) or else at the first request, and closed by `aclose()`. Compression is decoded by FluxClient's sender in bounded pieces (`inflate.py`; aiohttp does not decompress); redirects are never followed.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]


@contextmanager
def _mapped() -> Iterator[None]:
    """aiohttp / asyncio errors → the httpx exception that names the same failure."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as e:
        raise httpx.ConnectTimeout(str(e) or "connect timed out") from e
    except (TimeoutError, aiohttp.ServerTimeoutError) as e:
        raise httpx.ReadTimeout(str(e) or "read timed out") from e
    except aiohttp.ClientConnectorError as e:
        raise httpx.ConnectError(str(e)) from e
    except aiohttp.ServerDisconnectedError as e:
        raise httpx.RemoteProtocolError(f"the server closed the connection: {e}") from e
    except aiohttp.ClientPayloadError as e:
        raise httpx.RemoteProtocolError(f"incomplete response body: {e}") from e
    except aiohttp.ClientResponseError as e:  # unparseable status line / headers
        raise httpx.RemoteProtocolError(str(e)) from e
    except (aiohttp.ClientOSError, aiohttp.ClientConnectionError) as e:
        raise httpx.ReadError(str(e) or type(e).__name__) from e
    except aiohttp.InvalidURL as e:
        raise httpx.UnsupportedProtocol(str(e)) from e
    except aiohttp.ClientError as e:
        raise httpx.TransportError(f"{type(e).__name__}: {e}") from e


class _Body(httpx.AsyncByteStream):
    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()  # back to the pool when fully read, else the connection closes


class AiohttpTransport(httpx.AsyncBaseTransport):
    """`httpx.AsyncClient(transport=AiohttpTransport(limits))`: httpx's API, aiohttp's pool."""

    def __init__(self, limits: httpx.Limits | None = None, *, verify: ssl.SSLContext | bool = True) -> None:
        limits = limits or httpx.Limits()
        self._limit = limits.max_connections or 0  # 0: no limit (aiohttp's convention)
        self._keepalive = limits.keepalive_expiry if limits.keepalive_expiry is not None else 5.0
        self._ssl: ssl.SSLContext | bool = httpx.create_ssl_context() if verify is True else verify
        self._session: aiohttp.ClientSession | None = None

    def prepare(self) -> None:
        if self._session is None:
            self._open()

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limit, limit_per_host=0, keepalive_timeout=self._keepalive, ssl=self._ssl
        )
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        t: dict[str, Any] = request.extensions.get("timeout") or {}
        timeout = aiohttp.ClientTimeout(
            total=None, connect=t.get("pool"), sock_connect=t.get("connect"), sock_read=t.get("read")
        )
        try:
            body: Any = request.content or None
        except httpx.RequestNotRead:
            body = await request.aread() or None
        with _mapped():
            response = await session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=body,
                allow_redirects=False,
                timeout=timeout,
                server_hostname=request.extensions.get("sni_hostname"),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
