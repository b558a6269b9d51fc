"""The HTTP transport under FluxClient's `httpx.AsyncClient`, chosen per event loop from measurements.

httpx's own pool (httpcore) re-examines every connection and queued request on each request, so
its cost per request grows with concurrency (see benchmarks/bench_transport.py for the numbers).
The options, all behind httpx's transport seam so the rest of the client does not change:

- `"httpcore"`: httpx's default pool, keep-alive sized to `max_connections`. Any backend.
- `"sharded"`: several httpcore pools behind a round-robin: each pool scans only its own
  connections. Any backend, no extra dependency.
- `"aiohttp"`: aiohttp's connection pool behind httpx's API (`_aiohttp.py`). asyncio only;
  falls back to `"sharded"` when aiohttp is not installed.
- `"auto"` (default): decided from the running event loop: see `AUTO`.

The choice waits for an event loop because a client may be built outside any and used on either
backend. It is made when the client is entered (`async with FluxClient()` calls `prepare()`),
so the transport's library is imported and its pool built there, not inside the first request
where the time would count against the request's `total_timeout` (aiohttp's import alone is
0.3-0.7 s on a busy machine). A client used without `async with` still prepares at its first
request. When environment proxies are configured the client keeps httpx's own transport (it is
the one that honours them).
"""

from __future__ import annotations

import asyncio
from typing import Literal

import httpx

__all__ = ["TransportKind", "AutoTransport", "ShardedTransport", "make_transport", "prepare", "AUTO"]

TransportKind = Literal["auto", "httpcore", "sharded", "aiohttp"]

# What "auto" picks per backend (from benchmarks/bench_transport.py; see the module doc).
AUTO: dict[str, TransportKind] = {"asyncio": "aiohttp", "trio": "sharded"}

_SHARD_SIZE = 16  # connections per httpcore pool in "sharded"


class ShardedTransport(httpx.AsyncBaseTransport):
    """httpcore pools of at most `_SHARD_SIZE` connections each, used in turn."""

    def __init__(self, limits: httpx.Limits, **kwargs: object) -> None:
        total = limits.max_connections or 1000
        shards = max(1, min(64, total // _SHARD_SIZE))
        per = httpx.Limits(max_connections=-(-total // shards), max_keepalive_connections=-(-total // shards),
                           keepalive_expiry=limits.keepalive_expiry)  # fmt: skip
        kwargs.setdefault("verify", httpx.create_ssl_context())  # one context for all (each costs ~30 ms)
        self._shards = [httpx.AsyncHTTPTransport(limits=per, **kwargs) for _ in range(shards)]  # type: ignore[arg-type]
        self._next = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        i = self._next
        self._next = i + 1 if i + 1 < len(self._shards) else 0
        return await self._shards[i].handle_async_request(request)

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


def make_transport(kind: TransportKind, limits: httpx.Limits, **kwargs: object) -> httpx.AsyncBaseTransport:
    if kind == "httpcore":
        return httpx.AsyncHTTPTransport(limits=limits, **kwargs)  # type: ignore[arg-type]
    if kind == "sharded":
        return ShardedTransport(limits, **kwargs)
    if kind == "aiohttp":
        try:
            from ._aiohttp import AiohttpTransport
        except ImportError:  # aiohttp is not installed: fall back to what works everywhere
            return ShardedTransport(limits, **kwargs)
        return AiohttpTransport(limits, **kwargs)  # type: ignore[arg-type]
    if kind == "auto":
        return AutoTransport(limits, **kwargs)
    raise ValueError(f"unknown transport {kind!r}; use 'auto', 'httpcore', 'sharded' or 'aiohttp'")


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
            self.kind = AUTO["asyncio" if _on_asyncio() else "trio"]
            inner = self._inner = make_transport(self.kind, self._limits, **self._kwargs)
        prepare(inner)
        return inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await (self._inner or self.prepare()).handle_async_request(request)

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # trio (or another loop): no asyncio loop in this thread
        return False
    return True
