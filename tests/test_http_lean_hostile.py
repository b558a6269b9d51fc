"""The lean HTTP/1.1 transport (FluxClient's default) against a hostile server, on both backends.

The server here is a raw TCP listener on 127.0.0.1 that writes exactly the bytes each test
scripts (the fake router speaks correct HTTP, so it cannot send a broken one): truncated bodies,
chunked encoding at its edges, oversized heads, a slow drip, a reset mid-body, keep-alive
connections the server closes between requests, compressed bodies and bombs. Every case must end
in the answer or in a typed `AgentloopError`, never hang, never leak a raw socket error.
"""

from __future__ import annotations

import gzip
import itertools
import socket
import ssl
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import pytest
import trustme
from anyio.streams.tls import TLSListener
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    FluxClient,
    InputBudget,
    ModelRequest,
    RetryPolicy,
)

pytestmark = pytest.mark.anyio

ANSWER = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}'
SSE = (
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"o"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":"k"},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
Script = Callable[[int, anyio.abc.SocketStream], Awaitable[None]]


async def read_request(stream: anyio.abc.SocketStream) -> bytes:
    """One whole request (head + content-length body) off the connection; b"" if it closed."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            buf += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return b""
    head, _, body = buf.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += await stream.receive()
    return head


class RawServer:
    """Every accepted connection is handed to `script(index, stream)`; `opened` counts them."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.opened = 0
        self.tls = tls

    async def __aenter__(self) -> RawServer:
        tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = tcp.extra(anyio.abc.SocketAttribute.local_port)
        self._listener: anyio.abc.Listener[Any] = tcp
        if self.tls is not None:
            self._listener = TLSListener(tcp, self.tls, standard_compatible=False)
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/v1"
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._listener.serve, self._handle)
        return self

    async def _handle(self, stream: Any) -> None:
        index = self.opened
        self.opened += 1
        async with stream:
            try:
                await self.script(index, stream)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, ssl.SSLError):
                pass

    async def __aexit__(self, *exc: object) -> None:
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        await self._listener.aclose()


def client(url: str, **kw: Any) -> FluxClient:
    kw.setdefault("retry", RetryPolicy(max_retries=0))
    kw.setdefault("total_timeout", 30)  # a guard: a case that hangs fails here instead of the suite
    return FluxClient(base_url=url, api_key="sk-test", **kw)


async def ask(c: FluxClient, stream: bool = False) -> Any:
    seen: list[Any] = []

    async def emit(event: Any) -> None:
        seen.append(event)

    req = ModelRequest(model="m", messages=[{"role": "user", "content": "hi"}], tools=[], run_id="r", step=1)
    return await c.request(req, emit if stream else None)


def respond(raw: bytes, *, close: bool = True) -> Script:
    """A script: each connection reads one request and writes `raw` (then closes, or keeps serving)."""

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        while await read_request(stream):
            await stream.send(raw)
            if close:
                return

    return script


def ok(body: bytes = ANSWER, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%bcontent-length: %d\r\n\r\n%b" % (
        extra,
        len(body),
        body,
    )


def chunked(pieces: list[bytes], ext: bytes = b"", trailer: bytes = b"") -> bytes:
    out = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    for p in pieces:
        out += b"%x%b\r\n%b\r\n" % (len(p), ext, p)
    return out + b"0\r\n" + trailer + b"\r\n"


# --- answers that are valid, however they are framed -----------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        ok(),
        chunked([ANSWER[:10], ANSWER[10:]]),
        chunked([ANSWER], ext=b";name=value", trailer=b"x-trailer: 1\r\n"),
        b"HTTP/1.1 100 Continue\r\n\r\n" + ok(),
        ok(gzip.compress(ANSWER), b"content-encoding: gzip\r\n"),
        ok(zlib.compress(ANSWER), b"content-encoding: deflate\r\n"),
        ok().replace(b"\r\n", b"\n"),  # bare LF line ends (tolerated, as h11 and browsers do)
        b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n" + ANSWER,  # until the server closes
    ],
    ids=[
        "length",
        "chunked",
        "chunk-ext-trailer",
        "100-continue",
        "gzip",
        "deflate",
        "bare-lf",
        "until-close",
    ],
)
async def test_valid_framings_decode(raw: bytes) -> None:
    async with RawServer(respond(raw)) as server, client(server.url) as c:
        turn = await ask(c)
    assert turn.message["content"] == "ok"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=12), chunks=st.integers(1, 6))
def test_any_split_of_a_chunked_answer_decodes(anyio_backend: str, cuts: list[int], chunks: int) -> None:
    """The answer arrives in arbitrary TCP pieces (a chunk-size line, a CRLF, the head split
    anywhere): the decoded turn is the same."""
    size = -(-len(ANSWER) // chunks)
    raw = chunked([ANSWER[i : i + size] for i in range(0, len(ANSWER), size)])
    bounds = sorted({c % len(raw) for c in cuts} | {0, len(raw)})

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        await read_request(stream)
        for a, b in itertools.pairwise(bounds):
            await stream.send(raw[a:b])

    async def main() -> None:
        async with RawServer(script) as server, client(server.url) as c:
            assert (await ask(c)).message["content"] == "ok"

    anyio.run(main, backend=anyio_backend)


async def test_streamed_answer_in_one_byte_chunks() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        await read_request(stream)
        await stream.send(head)
        for i in range(len(SSE)):
            await stream.send(b"1\r\n" + SSE[i : i + 1] + b"\r\n")
        await stream.send(b"0\r\n\r\n")

    async with RawServer(script) as server, client(server.url) as c:
        turn = await ask(c, stream=True)
    assert turn.message["content"] == "ok" and turn.streamed


# --- broken answers: a typed error, never a hang -------------------------------------------------

BROKEN = {
    "truncated-length": ok()[:-20],
    "truncated-chunk": chunked([ANSWER])[:-30],
    "no-last-chunk": chunked([ANSWER])[:-5],
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk-longer-than-size": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n",
    "negative-chunk-size": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-5\r\nabc\r\n0\r\n\r\n",
    "huge-chunk-size-line": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"1" * 10000,
    "garbage-status": b"HTTQ/9 abc\r\n\r\n",
    "folded-header": b"HTTP/1.1 200 OK\r\nx-a: 1\r\n  folded\r\ncontent-length: 0\r\n\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nabcdef",
    "signed-length": b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nabcde",
    "cr-in-value": b"HTTP/1.1 200 OK\r\nx-a: 1\rset-cookie: a=b\r\ncontent-length: 0\r\n\r\n",
    "empty": b"",
    "head-only-then-close": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
@pytest.mark.parametrize("stream", [False, True])
async def test_broken_answers_are_typed_errors(name: str, stream: bool) -> None:
    async with RawServer(respond(BROKEN[name])) as server, client(server.url) as c:
        with pytest.raises((APIConnectionError, APIResponseError)) as info:
            await ask(c, stream=stream)
    assert "sk-test" not in str(info.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_101_switching_protocols_is_a_status_error_not_an_answer(stream: bool) -> None:
    # Only 2xx is an answer. A 101 ends HTTP on the connection (other 1xx are interim and skipped);
    # it used to be decoded as a completion, and a body that did not parse blamed on an "answered 200".
    raw = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n" + ANSWER
    async with RawServer(respond(raw)) as server, client(server.url) as c:
        with pytest.raises(APIStatusError) as info:
            await ask(c, stream=stream)
    assert info.value.status_code == 101 and "answered 101" in str(info.value)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (ok(extra=b"x-big: " + b"a" * 70000 + b"\r\n"), "larger than 65536"),
        (ok(extra=b"x-h: 1\r\n" * 300), "more than 256 header lines"),
    ],
    ids=["oversized-head", "too-many-headers"],
)
async def test_header_limits(raw: bytes, match: str) -> None:
    """An otherwise valid answer whose head passes the limits is refused for its head."""
    async with RawServer(respond(raw)) as server, client(server.url) as c:
        with pytest.raises(APIConnectionError, match=match):
            await ask(c)


async def test_an_endless_head_is_cut_at_the_limit() -> None:
    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        await read_request(stream)
        await stream.send(b"HTTP/1.1 200 OK\r\nx: ")
        while True:  # no blank line, ever
            await stream.send(b"a" * 4096)

    async with RawServer(script) as server, client(server.url) as c:
        with pytest.raises(APIConnectionError, match="larger than 65536"):
            await ask(c)


async def test_bad_gzip_is_a_response_error() -> None:
    raw = ok(b"\x1f\x8b not gzip at all", b"content-encoding: gzip\r\n")
    async with RawServer(respond(raw)) as server, client(server.url) as c:
        with pytest.raises(APIResponseError, match="could not be decoded"):
            await ask(c)


async def test_a_gzip_bomb_stops_at_max_response_bytes() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MB inflated, ~64 KB on the wire
    raw = ok(bomb, b"content-encoding: gzip\r\n")
    budget = InputBudget(max_response_bytes=1024 * 1024)
    async with RawServer(respond(raw)) as server, client(server.url, input_budget=budget) as c:
        with pytest.raises(APIResponseError, match="max_response_bytes"):
            await ask(c)


async def test_a_body_until_close_is_bounded_by_max_response_bytes() -> None:
    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        await read_request(stream)
        await stream.send(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n")
        while True:  # no length, no end: only the budget stops the client
            await stream.send(b"x" * 65536)

    budget = InputBudget(max_response_bytes=256 * 1024)
    async with RawServer(script) as server, client(server.url, input_budget=budget) as c:
        with pytest.raises(APIResponseError, match="max_response_bytes"):
            await ask(c)


async def test_a_slow_drip_is_cut_by_the_total_timeout() -> None:
    """One byte now and then keeps every read within the read timeout; the request's total bound ends it."""

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        await read_request(stream)
        await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
        while True:
            await stream.send(b" ")
            await anyio.sleep(0.05)  # the hostile server's pace, not a wait of the test

    async with RawServer(script) as server, client(server.url, total_timeout=1) as c:
        with pytest.raises(APITimeoutError, match="total_timeout"):
            await ask(c)


async def test_a_reset_mid_body_is_a_connection_error() -> None:
    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        await read_request(stream)
        await stream.send(ok()[:-40])
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST

    async with RawServer(script) as server, client(server.url) as c:
        with pytest.raises(APIConnectionError):
            await ask(c)


# --- keep-alive -------------------------------------------------------------------------------


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    """The server answers with keep-alive and then closes: the next request (no retries allowed)
    must go out on a fresh connection, not fail on the dead one."""
    closed = anyio.Event()

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        await read_request(stream)
        await stream.send(ok())
        if index == 0:
            await stream.aclose()
            closed.set()

    async with RawServer(script) as server, client(server.url) as c:
        assert (await ask(c)).message["content"] == "ok"
        await closed.wait()  # the FIN is on its way (loopback: already in the client's socket)
        assert (await ask(c)).message["content"] == "ok"
    assert server.opened == 2


async def test_keep_alive_reuses_one_connection_and_connection_close_does_not() -> None:
    async with RawServer(respond(ok(), close=False)) as server, client(server.url) as c:
        for _ in range(5):
            await ask(c)
    assert server.opened == 1
    async with (
        RawServer(respond(ok(extra=b"connection: close\r\n"), close=False)) as server,
        client(server.url) as c,
    ):
        for _ in range(3):
            await ask(c)
    assert server.opened == 3


async def test_length_and_chunked_together_is_decoded_as_chunked_and_not_reused() -> None:
    raw = chunked([ANSWER]).replace(b"transfer-encoding", b"content-length: 3\r\ntransfer-encoding")
    async with RawServer(respond(raw, close=False)) as server, client(server.url) as c:
        assert (await ask(c)).message["content"] == "ok"
        assert (await ask(c)).message["content"] == "ok"
    assert server.opened == 2


async def test_bytes_after_the_body_spoil_the_connection_not_the_answer() -> None:
    async with (
        RawServer(respond(ok() + b"HTTP/1.1 200 OK\r\n", close=False)) as server,
        client(server.url) as c,
    ):
        assert (await ask(c)).message["content"] == "ok"
        assert (await ask(c)).message["content"] == "ok"
    assert server.opened == 2


async def test_a_dropped_request_is_retried_on_a_new_connection() -> None:
    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        await read_request(stream)
        if index > 0:
            await stream.send(ok())

    retry = RetryPolicy(max_retries=1, initial_delay=0.001, max_delay=0.001)
    async with RawServer(script) as server, client(server.url, retry=retry) as c:
        assert (await ask(c)).message["content"] == "ok"
    assert server.opened == 2


async def test_pool_limit_holds_and_every_request_is_answered() -> None:
    async with RawServer(respond(ok(), close=False)) as server, client(server.url, max_connections=3) as c:
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(ask, c)
    assert server.opened <= 3


async def test_the_request_head_is_built_once_and_right() -> None:
    heads: list[bytes] = []

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        while head := await read_request(stream):
            heads.append(head)
            await stream.send(ok())

    async with RawServer(script) as server, client(server.url, headers={"X-Team": "a"}) as c:
        await ask(c)
        await ask(c)
    plain, again = (h.decode().lower().split("\r\n") for h in heads)
    assert plain[0] == "post /v1/chat/completions http/1.1"
    assert "x-team: a" in plain and "authorization: bearer sk-test" in plain
    assert plain == again and server.opened == 1


@pytest.mark.parametrize(
    "headers", [{"x-a": "1\r\nx-evil: 1"}, {"x a": "1"}, {"content-length": "5"}, {"x": "é"}]
)
def test_header_injection_is_refused_at_construction(headers: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        FluxClient(api_key="k", headers=headers)


async def test_http10_answers_are_not_kept_alive_unless_they_say_so() -> None:
    plain = ok().replace(b"HTTP/1.1", b"HTTP/1.0")
    async with RawServer(respond(plain, close=False)) as server, client(server.url) as c:
        await ask(c)
        await ask(c)
    assert server.opened == 2
    kept = ok(extra=b"connection: keep-alive\r\n").replace(b"HTTP/1.1", b"HTTP/1.0")
    async with RawServer(respond(kept, close=False)) as server, client(server.url) as c:
        await ask(c)
        await ask(c)
    assert server.opened == 1


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """A throwaway CA the client trusts through SSL_CERT_FILE (as httpx's context reads it)."""
    authority = trustme.CA()
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    return authority


def server_tls(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_tls_answers_and_keeps_the_connection(ca: trustme.CA) -> None:
    async with RawServer(respond(ok(), close=False), tls=server_tls(ca)) as server, client(server.url) as c:
        for _ in range(3):
            assert (await ask(c)).message["content"] == "ok"
        assert (await ask(c, stream=True)).message["content"] == "ok"  # a plain answer to a streamed ask
    assert server.opened == 1


async def test_tls_body_until_close_without_close_notify(ca: trustme.CA) -> None:
    raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + ANSWER
    async with RawServer(respond(raw), tls=server_tls(ca)) as server, client(server.url) as c:
        assert (await ask(c)).message["content"] == "ok"


async def test_tls_truncated_body_is_a_connection_error(ca: trustme.CA) -> None:
    async with RawServer(respond(ok()[:-20]), tls=server_tls(ca)) as server, client(server.url) as c:
        with pytest.raises(APIConnectionError):
            await ask(c)


async def test_an_untrusted_certificate_is_refused(ca: trustme.CA) -> None:
    stranger = trustme.CA()  # the server's certificate is not from the CA the client trusts
    async with RawServer(respond(ok()), tls=server_tls(stranger)) as server, client(server.url) as c:
        with pytest.raises(APIConnectionError, match=r"(?i)certificate") as info:
            await ask(c)
    assert not isinstance(info.value, APITimeoutError)
