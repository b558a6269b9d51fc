"""The HTTP transport under FluxClient's `httpx.AsyncClient`, chosen per event loop from measurements.

httpx's own pool (httpcore) re-examines every connection and queued request on each request, so
its cost per request grows with concurrency (see benchmarks/bench_transport.py for the numbers).
The options, all behind httpx's transport seam so the rest of the client does not change:

- `"httpcore"`: httpcore's pool (`corepool.py`: httpx's transport rebuilt, `warmup()` opens its
  connections), keep-alive sized to `max_connections`. Any backend. Both httpcore kinds are fenced
  (`fence.py`: no over-sent connection pooled; requests queue in front of the pool, not in it).
- `"sharded"`: several httpcore pools, the least busy one first: each pool scans only its own
  connections, and sequential requests reuse one. Any backend, no extra dependency.
- `"aiohttp"`: aiohttp's pool behind httpx's API (asyncio only; `"sharded"` without aiohttp).
- `"lean"`: `lean.py`, HTTP/1.1 on anyio sockets with the request head encoded once per client
  (not an httpx transport: FluxClient sends through it directly). Any backend, http and https.
- `"auto"` (default): `"lean"`; with environment proxies httpx's own transport (it honours them).
  `AutoTransport` (the httpx transport picked per event loop, `AUTO`) remains for benchmarks.

FluxClient sends through a `Sender`: `LeanSender` over a `LeanPool`, or `HttpxSender` over an
`httpx.AsyncClient` (its own with one of the httpx transports, or the caller's `http_client`).

The choice waits for an event loop because a client may be built outside any and used on either
backend. It is made when the client is entered (`async with FluxClient()` calls `prepare()`), so
the transport's library is imported and its pool built there, not inside the first request
where the time would count against the request's `total_timeout` (aiohttp's import alone is
0.3-0.7 s on a busy machine). A client used without `async with` still prepares at its first
request. With environment proxies the client keeps httpx's own transport (it honours them).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Coroutine, Mapping
from http.cookiejar import CookieJar
from typing import Any, Literal, Protocol, cast

import httpx

from .config import PoolConfig
from .h1 import Response, encode_head
from .inflate import Inflating, compressed
from .lean import Dial, LeanPool, LeanResponse
from .sockets import Connection, connect, on_asyncio

__all__ = [
    "HttpxSender",
    "LeanSender",
    "Sender",
    "make_sender",
    "TransportKind",
    "AutoTransport",
    "ShardedTransport",
    "make_transport",
    "prepare",
    "http_client",
    "rehearsal_http",
    "AUTO",
]

TransportKind = Literal["auto", "lean", "httpcore", "sharded", "aiohttp"]

# What "auto" picks per backend (from benchmarks/bench_transport.py; see the module doc).
AUTO: dict[str, TransportKind] = {"asyncio": "aiohttp", "trio": "sharded"}

_SHARD_SIZE = 16  # connections per httpcore pool in "sharded"


class ShardedTransport(httpx.AsyncBaseTransport):
    """httpcore pools of at most `_SHARD_SIZE` connections each; a request goes to the least busy
    pool, the first one among equals.

    Why not round-robin: it sent each of N sequential requests to a different pool, so each opened
    its own connection (62 pools at the default 1000 connections: 62 sockets and handshakes where
    one does). Why not "first pool with a free slot": at 200 concurrent requests that fills pools
    to 17 connections each, and httpcore's per-request scan of its pool made a step cost ~40 %
    more CPU than spreading them (~3 per pool). Least busy does both: one request at a time
    always lands on pool 0 and reuses its connection; many spread evenly. A request holds its
    slot until its response body is closed, which is when httpcore gives the connection back."""

    def __init__(self, limits: httpx.Limits, **kwargs: object) -> None:
        total = limits.max_connections or 1000
        shards = max(1, min(64, total // _SHARD_SIZE))
        per = -(-total // shards)
        pool = httpx.Limits(
            max_connections=per, max_keepalive_connections=per, keepalive_expiry=limits.keepalive_expiry
        )
        kwargs.setdefault("verify", httpx.create_ssl_context())  # one context for all (each costs ~30 ms)
        from .fence import FencedTransport  # imports httpcore: only for the transports built on it

        self._shards = [FencedTransport(limits=pool, **kwargs) for _ in range(shards)]
        self._busy = [0] * shards  # requests holding a slot, per pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        busy = self._busy
        i = busy.index(min(busy))  # C-level scans of <= 64 ints: ~1 µs
        self._busy[i] += 1
        try:
            response = await self._shards[i].handle_async_request(request)
        except BaseException:
            self._busy[i] -= 1
            raise
        response.stream = _SlotStream(response.stream, self._busy, i)  # type: ignore[arg-type]
        return response

    async def preconnect(self, url: str, count: int, seconds: float | None) -> None:
        await self._shards[0].preconnect(url, count, seconds)  # where sequential requests go

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


class _SlotStream(httpx.AsyncByteStream):
    """A response body that gives its pool's slot back when closed (once)."""

    __slots__ = ("_busy", "_i", "_inner")

    def __init__(self, inner: httpx.AsyncByteStream, busy: list[int], i: int) -> None:
        self._inner, self._busy, self._i = inner, busy, i

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        if self._i >= 0:
            self._busy[self._i] -= 1
            self._i = -1
        await self._inner.aclose()


def make_transport(kind: TransportKind, limits: httpx.Limits, **kwargs: object) -> httpx.AsyncBaseTransport:
    if kind == "httpcore":
        from .fence import FencedTransport  # (as above)

        return FencedTransport(limits=limits, **kwargs)
    if kind == "sharded":
        return ShardedTransport(limits, **kwargs)
    if kind == "aiohttp":
        try:
            from .aiohttp_transport import AiohttpTransport
        except ImportError:  # aiohttp is not installed: fall back to what works everywhere
            return ShardedTransport(limits, **kwargs)
        return AiohttpTransport(limits, **kwargs)  # type: ignore[arg-type]
    if kind == "auto":
        return AutoTransport(limits, **kwargs)
    raise ValueError(f"unknown transport {kind!r}; use 'auto', 'httpcore', 'sharded' or 'aiohttp'")


def http_client(
    timeout: httpx.Timeout | float | None, transport: httpx.AsyncBaseTransport | None, limits: httpx.Limits
) -> httpx.AsyncClient:
    """The `httpx.AsyncClient` FluxClient owns: httpx's, with `_SetCookieOnly` as its cookie store."""
    client = httpx.AsyncClient(timeout=timeout, transport=transport, limits=limits)
    if isinstance(getattr(client, "_cookies", None), httpx.Cookies):  # httpx's private slot; else leave it be
        client._cookies = _SetCookieOnly(client.cookies.jar)
    return client


def rehearsal_http(pool: PoolConfig) -> httpx.AsyncClient | None:
    """An httpx client of `pool`'s own transport kind for `FluxClient.warmup()`'s twin (the same
    classes as the client's: CPython's specialized code is keyed on them), or None where it
    cannot be rehearsed: a caller's own transport, environment proxies (httpx would send the
    rehearsal to the proxy), aiohttp off asyncio. The twin only speaks plain HTTP to the
    rehearsal's loopback listener: its TLS context trusts no CA (never used; a pool loading the
    CA bundle costs ~30 ms)."""
    kind = pool.transport
    if not isinstance(kind, str) or kind in ("auto", "lean") or env_proxies():
        return None
    if kind == "aiohttp" and not on_asyncio():
        return None
    limits = httpx.Limits(
        max_connections=pool.max_connections, max_keepalive_connections=pool.max_connections
    )
    trusts_nothing = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return http_client(
        pool.timeout, make_transport(cast(TransportKind, kind), limits, verify=trusts_nothing), limits
    )


class _SetCookieOnly(httpx.Cookies):
    """httpx's cookie store, which skips its work on answers that set no cookie.

    httpx hands every response to the cookie jar, wrapping it and its request in urllib objects
    first: ~10 % of agentloop's CPU per step (profiled in benchmarks/PROFILE.md) for answers that
    almost never carry `Set-Cookie`. Cookies a router (or the load balancer in front of it) does
    set are stored and sent back exactly as before.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)
            bound_cookies(self.jar)


_MAX_COOKIES = 20  # a router or its load balancer sets one or two (browsers keep ~180 per site)
_MAX_COOKIE_BYTES = 4096  # name and value, the size every browser honours


def bound_cookies(jar: CookieJar) -> None:
    """At most `_MAX_COOKIES` cookies of at most `_MAX_COOKIE_BYTES` each: the first ones kept (a
    cookie set again keeps its place). Without it a server setting new cookies on every answer
    grew every later request: 200 per answer made the 30th request's head 630 KB."""
    kept = 0
    for cookie in list(jar):
        if kept >= _MAX_COOKIES or len(cookie.name) + len(cookie.value or "") > _MAX_COOKIE_BYTES:
            jar.clear(cookie.domain, cookie.path, cookie.name)
        else:
            kept += 1


def prepare(transport: object) -> None:
    """Build what `transport` builds lazily, now, inside the running event loop (idempotent)."""
    ready = getattr(transport, "prepare", None)
    if ready is not None:
        ready()


class AutoTransport(httpx.AsyncBaseTransport):
    """Picks the transport for the running event loop (see `AUTO`) when prepared or at the first request."""

    def __init__(self, limits: httpx.Limits, **kwargs: object) -> None:
        self._limits = limits
        self._kwargs = kwargs
        self._inner: httpx.AsyncBaseTransport | None = None
        self.kind: TransportKind | None = None

    def prepare(self) -> httpx.AsyncBaseTransport:
        inner = self._inner
        if inner is None:
            self.kind = AUTO["asyncio" if on_asyncio() else "trio"]
            inner = self._inner = make_transport(self.kind, self._limits, **self._kwargs)
        prepare(inner)
        return inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await (self._inner or self.prepare()).handle_async_request(request)

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()


class Sender(Protocol):
    """How FluxClient sends its one request shape: POST `body` to its endpoint, the response
    back with its body unread (closed by the caller).

    In two parts, so that a request queued for a connection holds no cancel scope: `acquire`
    waits for a connection within the request's `deadline` (a float on the anyio clock; past
    it, `waiters.Expired`), then `send` (under the request's scope) sends over it. A sender
    whose library queues inside its own send (httpx) acquires nothing (`None`)."""

    kind: str

    async def acquire(self, deadline: float) -> Any: ...
    async def send(self, body: bytes, *, stream: bool, slot: Any) -> Response: ...
    def prepare(self) -> None: ...
    async def preconnect(self, count: int) -> None: ...
    async def aclose(self) -> None: ...


class HttpxSender:
    """Through an `httpx.AsyncClient`: ours (with a chosen httpx transport) or the caller's."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: tuple[Mapping[str, str], Mapping[str, str]],
        *,
        owned: bool,
        transport: object = None,
        kind: str = "httpx",
    ) -> None:
        # Ask for the codings decoded here in bounded pieces (`inflate.py`), unless the caller chose.
        self.http, self._url = client, url
        self._headers = tuple(
            h if any(k.lower() == "accept-encoding" for k in h) else {"accept-encoding": "gzip, deflate", **h}
            for h in headers
        )
        self._owned, self._transport, self.kind = owned, transport, kind

    async def acquire(self, deadline: float) -> None:
        """httpx's pool queues a request inside `send` (under the request's scope)."""

    async def send(self, body: bytes, *, stream: bool, slot: Any = None) -> Response:
        http = self.http
        request = http.build_request("POST", self._url, content=body, headers=self._headers[stream])
        # Never follow a redirect, whatever a caller's client says: httpx drops only
        # `Authorization` on a redirect to another host, and the Anthropic key is `x-api-key`.
        response = await http.send(request, stream=True, follow_redirects=False)
        coding = compressed(response.headers)
        return response if coding is None else Inflating(response, coding)  # bounded, not httpx's

    def prepare(self) -> None:
        prepare(self._transport)
        # httpcore's trio backend looks even an IP literal up with socket.getaddrinfo, which encodes
        # the host with the stdlib's idna codec: imported on its first use (~1 ms), so here.
        import encodings.idna  # noqa: F401

    async def preconnect(self, count: int) -> None:
        """Open `count` connections in our httpcore pool (`corepool`; no request); else prepare."""
        self.prepare()
        opener = getattr(self._transport, "preconnect", None)
        if opener is not None and count:
            await opener(self._url, count, self.http.timeout.connect)

    async def aclose(self) -> None:
        if self._owned:
            await self.http.aclose()


class LeanSender:
    """Through a `LeanPool`: the request head (line and headers) encoded once, per mode."""

    kind = "lean"

    def __init__(
        self, pool: LeanPool, url: str, headers: tuple[Mapping[str, str], Mapping[str, str]]
    ) -> None:
        self.pool, self._url = pool, url
        common = {"host": pool.netloc, "accept-encoding": "gzip, deflate"}
        self._heads = tuple(encode_head("POST", pool.target, {**common, **h}) for h in headers)
        self.cookies: httpx.Cookies = _SetCookieOnly()  # what the router (or its load balancer) set, bounded

    def acquire(self, deadline: float) -> Coroutine[Any, Any, Connection]:
        return self.pool.acquire(deadline)

    async def send(self, body: bytes, *, stream: bool, slot: Any) -> Response:
        """Over `slot`, the connection from `acquire` (given back to the pool however this ends)."""
        try:
            head = self._heads[stream]
            if self.cookies.jar:
                head = self._with_cookies(head)
        except BaseException:
            await self.pool.release(slot, True)
            raise
        response = await self.pool.send(b"%b%d\r\n\r\n" % (head, len(body)), body, slot)
        if response.cookies:
            self._store(response)
        return response

    def _with_cookies(self, head: bytes) -> bytes:
        """The head with the `Cookie` header the jar sends to this URL (httpx's rules: expiry, path)."""
        probe = httpx.Request("POST", self._url)
        self.cookies.set_cookie_header(probe)
        cookie = probe.headers.get("cookie")
        if not cookie:
            return head
        tail = b"content-length: "
        return bytes(head[: -len(tail)] + b"cookie: " + cookie.encode("latin-1") + b"\r\n" + tail)

    def _store(self, response: LeanResponse) -> None:
        headers = [("set-cookie", c) for c in response.cookies]
        self.cookies.extract_cookies(
            httpx.Response(200, headers=headers, request=httpx.Request("POST", self._url))
        )

    def prepare(self) -> None:
        self.pool.prepare()

    async def preconnect(self, count: int) -> None:
        self.pool.prepare()
        await self.pool.preconnect(count)

    async def aclose(self) -> None:
        await self.pool.aclose()


def make_sender(
    pool: PoolConfig,
    url: str,
    headers: tuple[Mapping[str, str], Mapping[str, str]],
    client: httpx.AsyncClient | None,
    dial: Dial | None = None,
) -> Sender:
    """The sender of a new connection pool (or over the caller's `http_client`); `dial`: how the
    lean pool connects (`rehearsal.py`'s socket pair; by default `sockets.connect`)."""
    if client is not None:
        return HttpxSender(client, url, headers, owned=False)
    kind = pool.transport
    limits = httpx.Limits(
        max_connections=pool.max_connections, max_keepalive_connections=pool.max_connections
    )
    if kind in ("auto", "lean") and not (kind == "auto" and env_proxies()):
        expiry = limits.keepalive_expiry if limits.keepalive_expiry is not None else 5.0
        lean = LeanPool(url, pool.timeout, pool.max_connections, expiry, dial or connect)
        return LeanSender(lean, url, headers)
    built: httpx.AsyncBaseTransport | None = kind  # the caller's own httpx transport, or:
    if isinstance(kind, str):
        # Environment proxies are honoured by httpx's own transport only: keep it then.
        built = None if env_proxies() else make_transport(cast(TransportKind, kind), limits)
    # Keep-alive as large as the pool: with fewer, every request past it opens a new connection.
    built_client = http_client(pool.timeout, built, limits)
    name = getattr(built, "kind", None) or (kind if isinstance(kind, str) else "custom")
    return HttpxSender(built_client, url, headers, owned=True, transport=built, kind=name)


def env_proxies() -> bool:
    return any(k.lower() in ("http_proxy", "https_proxy", "all_proxy") for k in os.environ)
