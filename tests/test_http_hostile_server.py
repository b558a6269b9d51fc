"""FluxClient attacked from outside, as a hostile (or broken) server would, over both transports.

Raw TCP servers (from test_http_lean_hostile) send exactly the scripted bytes: redirects to
another host, a flood of cookies, a 1 MB header line, a gzip bomb, absurd `Retry-After` values,
a server that accepts and never answers. Each must end in the answer or a typed error, bounded,
with the API key kept home.
"""

from __future__ import annotations

import tracemalloc
import zlib
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from test_http_lean_hostile import ANSWER, RawServer, ask, client, ok, read_request, respond

from agentloop import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    InputBudget,
    RetryPolicy,
)

pytestmark = pytest.mark.anyio

TRANSPORTS = ["lean", "httpcore"]
# Every transport on every backend it runs on (aiohttp is asyncio-only): combinations, not skips.
ON_BACKENDS = [
    *((t, b) for t in TRANSPORTS for b in ("asyncio", "trio")),
    ("aiohttp", "asyncio"),
]
KEY = "sk-test"  # what client() sends


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "status", [b"301 Moved Permanently", b"302 Found", b"307 Temporary Redirect", b"308 Permanent Redirect"]
)
async def test_a_redirect_to_another_host_is_not_followed(transport: str, status: bytes) -> None:
    heads: list[bytes] = []

    async def foreign_script(index: int, stream: anyio.abc.SocketStream) -> None:
        heads.append(await read_request(stream))
        await stream.send(ok())

    async with RawServer(foreign_script) as foreign:
        location = foreign.url.replace("127.0.0.1", "localhost") + "/chat/completions"
        raw = b"HTTP/1.1 %b\r\nlocation: %b\r\ncontent-length: 0\r\n\r\n" % (status, location.encode())
        async with RawServer(respond(raw)) as server, client(server.url, transport=transport) as c:
            with pytest.raises(APIStatusError) as info:
                await ask(c)
    assert info.value.status_code == int(status.split()[0])
    assert foreign.opened == 0 and heads == []  # the key never went to the other host
    assert KEY not in str(info.value)


def _cookie_flood(index: int) -> bytes:
    cookies = b"".join(b"set-cookie: c%d_%d=%b; Path=/\r\n" % (index, i, b"v" * 100) for i in range(200))
    return ok(extra=cookies)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_cookie_flood_does_not_grow_the_requests_without_bound(transport: str) -> None:
    heads: list[bytes] = []

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        n = 0
        while head := await read_request(stream):
            heads.append(head)
            await stream.send(_cookie_flood(n))
            n += 1

    async with RawServer(script) as server, client(server.url, transport=transport) as c:
        for _ in range(30):  # 6,000 distinct cookies of 100 bytes offered
            assert (await ask(c)).message["content"] == "ok"
    cookie_lines = [line for line in heads[-1].split(b"\r\n") if line.lower().startswith(b"cookie:")]
    assert cookie_lines, "cookies a router sets are sent back (load balancers rely on it)"
    assert len(heads[-1]) < 16 * 1024  # bounded, not 6,000 x 100 bytes


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_one_megabyte_header_line_is_refused(transport: str) -> None:
    raw = ok(extra=b"x-big: " + b"a" * (1024 * 1024) + b"\r\n")
    async with RawServer(respond(raw)) as server, client(server.url, transport=transport) as c:
        with pytest.raises(APIConnectionError) as info:
            await ask(c)
    assert not isinstance(info.value, APITimeoutError)


def _gzip_zeros(mib: int) -> bytes:
    """`mib` MiB of zeros, gzip-compressed (~1 KiB per MiB), without holding them uncompressed."""
    compress = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1024 * 1024)
    return b"".join(compress.compress(zeros) for _ in range(mib)) + compress.flush()


@pytest.mark.parametrize(("transport", "anyio_backend"), ON_BACKENDS)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
async def test_a_gzip_bomb_stops_at_max_response_bytes_in_bounded_memory(
    transport: str, streamed: bool, anyio_backend: str
) -> None:
    # httpx inflated a whole network chunk (the aiohttp transport: the whole body) at once: a
    # 255 KB bomb grew the process by 132 MB (httpcore) / 261 MB (aiohttp) past a 1 MiB budget.
    raw = ok(_gzip_zeros(128), b"content-encoding: gzip\r\n")
    budget = InputBudget(max_response_bytes=1024 * 1024)
    async with (
        RawServer(respond(raw)) as server,
        client(server.url, transport=transport, input_budget=budget) as c,
    ):
        tracemalloc.start()
        try:
            with pytest.raises(APIResponseError, match="max_response_bytes"):
                await ask(c, stream=streamed)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"{peak / 2**20:.0f} MiB held for a 1 MiB budget"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "header",
    [
        b"retry-after: 1e12",
        b"retry-after: inf",
        b"retry-after: nan",
        b"retry-after: -5",
        b"retry-after: 99999999999999999999999999999",
        b"retry-after: Fri, 31 Dec 9999 23:59:59 GMT",
        b"retry-after-ms: 1e15",
    ],
)
async def test_an_absurd_retry_after_is_not_honoured(transport: str, header: bytes) -> None:
    # total_timeout=30 (client()) is the guard: honouring any of these waits would hit it.
    busy = b"HTTP/1.1 429 Too Many Requests\r\n%b\r\ncontent-length: 0\r\n\r\n" % header

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        n = 0
        while await read_request(stream):
            await stream.send(busy if n == 0 and index == 0 else ok())
            n += 1

    retry = RetryPolicy(max_retries=1, initial_delay=0.001, max_delay=0.001)
    async with RawServer(script) as server, client(server.url, transport=transport, retry=retry) as c:
        assert (await ask(c)).message["content"] == "ok"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
async def test_a_server_that_never_answers_is_cut_by_request_timeout(transport: str, streamed: bool) -> None:
    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        await read_request(stream)
        await anyio.sleep_forever()  # accepts, reads, never answers

    budget = InputBudget(request_timeout=0.5)
    kw: dict[str, Any] = {"transport": transport, "input_budget": budget, "total_timeout": None}
    async with RawServer(script) as server, client(server.url, **kw) as c:
        with pytest.raises(APITimeoutError, match=r"request_timeout=0\.5"):
            await ask(c, stream=streamed)


@pytest.mark.parametrize(("transport", "anyio_backend"), ON_BACKENDS)
@pytest.mark.parametrize(
    ("coding", "compress"),
    [
        (b"gzip", lambda b: zlib.compress(b, wbits=zlib.MAX_WBITS | 16)),
        (b"deflate", zlib.compress),
        (b"identity", lambda b: b),
    ],
    ids=["gzip", "deflate", "identity"],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
async def test_compressed_answers_decode_on_every_transport(
    transport: str, coding: bytes, compress: Any, streamed: bool, anyio_backend: str
) -> None:
    raw = ok(compress(ANSWER), b"content-encoding: %b\r\n" % coding)
    async with RawServer(respond(raw)) as server, client(server.url, transport=transport) as c:
        assert (await ask(c, stream=streamed)).message["content"] == "ok"


@pytest.mark.parametrize(("transport", "anyio_backend"), ON_BACKENDS)
@pytest.mark.parametrize(
    ("body", "coding"),
    [(b"\x1f\x8b not gzip", b"gzip"), (zlib.compress(ANSWER)[:-6], b"deflate"), (ANSWER, b"br")],
    ids=["bad-gzip", "truncated-deflate", "unasked-br"],
)
async def test_a_body_that_does_not_decode_is_a_response_error(
    transport: str, body: bytes, coding: bytes, anyio_backend: str
) -> None:
    raw = ok(body, b"content-encoding: %b\r\n" % coding)
    async with RawServer(respond(raw)) as server, client(server.url, transport=transport) as c:
        with pytest.raises(APIResponseError, match="could not be decoded"):
            await ask(c)


async def test_the_httpx_path_asks_only_for_the_codings_it_decodes_in_bounded_pieces() -> None:
    heads: list[bytes] = []

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        heads.append(await read_request(stream))
        await stream.send(ok())

    async with RawServer(script) as server, client(server.url, transport="httpcore") as c:
        await ask(c)
    assert b"accept-encoding: gzip, deflate\r\n" in heads[0].lower()


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_a_callers_client_that_follows_redirects_does_not_take_the_key_abroad(wire: str) -> None:
    # httpx drops only `Authorization` on a cross-origin redirect; the Anthropic wire's key is
    # in `x-api-key`. FluxClient never follows a redirect, whatever the caller's client says.
    heads: list[bytes] = []

    async def foreign_script(index: int, stream: anyio.abc.SocketStream) -> None:
        heads.append(await read_request(stream))
        await stream.send(ok())

    async with RawServer(foreign_script) as foreign:
        location = foreign.url.replace("127.0.0.1", "localhost") + "/messages"
        raw = (
            b"HTTP/1.1 307 Temporary Redirect\r\nlocation: %b\r\ncontent-length: 0\r\n\r\n"
            % location.encode()
        )
        async with RawServer(respond(raw)) as server, httpx.AsyncClient(follow_redirects=True) as http:
            c = client(server.url, http_client=http, wire=wire)
            with pytest.raises(APIStatusError) as info:
                await ask(c)
    assert info.value.status_code == 307
    assert foreign.opened == 0 and heads == []
