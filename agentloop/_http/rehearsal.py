"""`FluxClient.warmup()`'s rehearsal: the whole request path, run on canned bytes, no network.

Why: a fresh process runs its first requests on cold code. CPython 3.11 quickens a function's
bytecode only at its 8th call (and specializes its instructions after more), and the first pass
also meets cold caches (type attribute caches, the allocator's free lists, the CPU's): measured
with `benchmarks/bench_first_request.py`, the first request on a warm connection cost 4-5x the
steady one in CPU, the 2nd to the 8th 1.2-2x, the 9th on steady. Running the codec once on
canned data changed nothing measurable: once is not enough, and the codec is a fifth of the path.

So the client's own code runs `REHEARSALS` times, end to end, on a twin of the client built the
way the client was (the same classes, the same attribute layouts: CPython's specialized
instructions are keyed on them): `FluxClient.request` (its time bound, the codec's encode), the
sender (the encoded head), the lean pool (acquire, send, read the head, frame and read the body,
release), a connection of the running backend (its socket reads, the event loop's read path),
then the codec's decode; then as many streamed requests (when the client streams and the wire
has streamed samples): the chunked body, the SSE reader, the wire's stream assembler, the
deltas handed to an `emit` that drops them. The pool dials `dial`: the near end of a loopback
TCP connection the rehearsal opens to itself, whose far end answers each request with the next
of the wire's sample answers. Nothing leaves the process: a second dial (the connection was
lost, a bug) raises instead of connecting anywhere, and the twin's request head carries no
credential. Before `warmup()` returns, the event loop sweeps what the rehearsal left (`sweep`).

An httpx transport (`"httpcore"`, `"sharded"`, `"aiohttp"`) takes no prepared connection, so its
twin (an httpx client of the same transport kind, built by the client) dials instead a listener
on 127.0.0.1 that `rehearse_listening` opens in its own task group and closes before returning;
every connection it accepts is answered the same way. Measured: the first httpx request after
`warmup()` made ~900 (asyncio) / ~650 (trio) Python calls more than a later one, mostly cold
first calls (ABC subclass checks, httpx's and httpcore's own), 3.2-4.0x a steady request's CPU;
with the rehearsal ~1.8-2.2x, what is left being the connect of its own connection, which
`warmup()` now opens beforehand for the httpcore kinds (`corepool.CoreTransport.preconnect`).

What stays cold: TLS. The pair is plain, so an https endpoint's record layer (asyncio's
`sslproto`, anyio's `TLSStream`) runs its first request's reads cold.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import httpx

from .._model import ModelRequest
from .._retry import RetryPolicy
from .._types import ModelTurn
from .config import ClientConfig
from .lean import Dial
from .sockets import AnyioConnection, Connection, on_asyncio

__all__ = ["REHEARSALS", "perform", "rehearsal_config", "rehearse", "rehearse_listening", "replies", "sweep"]

# 3.11 quickens a code object at its 8th call; a few more let the adaptive instructions specialize.
REHEARSALS = 16

_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: rehearsal\r\ncontent-length: %d\r\n\r\n"
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-request-id: rehearsal\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)

# The request the rehearsal sends: a conversation with a tool result, and a tool.
_MESSAGES = (
    {"role": "system", "content": "rehearsal"},
    {"role": "user", "content": "hi"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "tool", "arguments": '{"x": 1}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_0", "content": "1"},
)
_TOOLS = (
    {
        "type": "function",
        "function": {
            "name": "tool",
            "description": "rehearsal",
            "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
        },
    },
)

Request = Callable[[ModelRequest, Any], Awaitable[ModelTurn]]


def replies(samples: Sequence[bytes], stream_samples: Sequence[bytes]) -> list[bytes]:
    """What the far end answers, in order: `REHEARSALS` plain answers (the samples in turn, each
    a 200 with `Content-Length`), then as many streamed ones (chunked, one chunk per SSE event,
    as a router sends them) when there are `stream_samples`."""
    plain = [_HEAD % len(body) + body for body in samples]
    streamed = [
        _STREAM_HEAD + b"".join(_chunk(e + b"\n\n") for e in sse.split(b"\n\n") if e) + b"0\r\n\r\n"
        for sse in stream_samples
    ]
    out = [plain[i % len(plain)] for i in range(REHEARSALS)]
    return out + [streamed[i % len(streamed)] for i in range(REHEARSALS if streamed else 0)]


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def perform(request: Request, streamed: bool) -> None:
    """The twin's side: `REHEARSALS` plain requests, then (`streamed`) as many streamed ones
    whose deltas go to an `emit` that drops them."""
    canned = ModelRequest(model="rehearsal", messages=list(_MESSAGES), tools=list(_TOOLS))
    for _ in range(REHEARSALS):
        await request(canned, None)
    for _ in range(REHEARSALS if streamed else 0):
        await request(canned, _drop)


async def _drop(event: object) -> None:
    """The rehearsal's deltas: seen by nobody."""


def rehearsal_config(config: ClientConfig) -> ClientConfig:
    """The config of warmup()'s twin: no retries (a rehearsal that fails says so at once), and
    every credential in its headers replaced (its requests stay in the process; keep it so)."""

    def masked(headers: Mapping[str, str]) -> dict[str, str]:
        out = dict(headers)
        for secret in config.credentials:
            out = {k: v.replace(secret, "rehearsal") for k, v in out.items()}
        return out

    return replace(
        config,
        retry=RetryPolicy(max_retries=0),
        headers=masked(config.headers),
        stream_headers=masked(config.stream_headers),
    )


async def rehearse(answers: Sequence[bytes], drive: Callable[[Dial], Awaitable[None]]) -> None:
    """`drive(dial)`, while the far end of `dial`'s one connection answers each request with
    the next of `answers` (whole HTTP responses: `replies()`)."""
    try:
        near, far = _pair()
    except OSError:  # no socket to be had (descriptors exhausted): the first request runs cold
        return
    dialed = False

    async def dial(host: str, port: int, context: ssl.SSLContext | None, seconds: float) -> Connection:
        nonlocal dialed
        if dialed:
            raise httpx.ConnectError("the rehearsal's connection was lost (a bug in agentloop: report it)")
        dialed = True
        try:
            return await _wrap(near)
        except BaseException:
            near.close()
            raise

    try:
        far.setblocking(False)
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(_answer, far, list(answers))
            try:
                await drive(dial)
            except Exception as e:  # raised as itself, not in the task group's ExceptionGroup
                failure = e
            tg.cancel_scope.cancel()  # the far end waits for a next request: none comes
        if failure is not None:
            raise failure
    finally:
        if not dialed:
            near.close()  # else the connection owns it: the pool closed it
        far.close()


async def rehearse_listening(answers: Sequence[bytes], drive: Callable[[str], Awaitable[None]]) -> None:
    """`drive(origin)` (`http://127.0.0.1:<port>`), while a listener on the loopback, in this
    task group and gone before this returns, answers each request of every connection it
    accepts with the next of `answers`. For httpx transports, which dial by themselves (they
    take no prepared connection): the twin's own pool connects here, never to the endpoint.
    Every connection gets all the answers, so a stranger connecting too starves nobody (what it
    reads is the wire's samples). Where the loopback cannot listen, nothing is rehearsed."""
    try:
        listener = socket.create_server(("127.0.0.1", 0))
    except OSError:
        return
    try:
        listener.setblocking(False)
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(_accept, listener, answers, tg)
            try:
                await drive(f"http://127.0.0.1:{listener.getsockname()[1]}")
            except Exception as e:  # raised as itself, not in the task group's ExceptionGroup
                failure = e
            tg.cancel_scope.cancel()  # the listener and the connections' ends: none is needed now
        if failure is not None:
            raise failure
    finally:
        listener.close()


async def _accept(listener: socket.socket, answers: Sequence[bytes], tg: anyio.abc.TaskGroup) -> None:
    while True:
        await anyio.wait_readable(listener)
        try:
            conn, _ = listener.accept()
        except BlockingIOError:  # taken back by the peer before we got to it
            continue
        conn.setblocking(False)
        tg.start_soon(_serve, conn, list(answers))


async def _serve(conn: socket.socket, answers: list[bytes]) -> None:
    try:
        await _answer(conn, answers)
    finally:
        conn.close()


async def sweep() -> None:
    """Let the event loop clear what the rehearsal (and warmup's own time bound) left behind,
    before warmup() returns: else the first real request pays for it. On asyncio the ~30 timers
    the rehearsal cancelled sit in the loop's heap behind warmup's bound until its timer is
    cancelled too; the next loop iteration pops them one by one (~130 calls of the Python
    `TimerHandle.__lt__`) and delivers the rehearsal task group's last cancellation. Two
    iterations do it (measured by counting the calls of the first request against a later one:
    591 against 289 before, equal after). Trio drops its deadline heap's stale entries (~95 of
    the rehearsal's requests' deadlines) only when it is about to block with no task to run,
    which a checkpoint never is (the task is runnable again at once): the first real request
    popped them while waiting for its answer. So the sweep also waits once for a byte already
    there, on a socket pair of its own: the loop blocks (for no time) and pops them first."""
    await anyio.lowlevel.checkpoint()
    await anyio.lowlevel.checkpoint()
    try:
        ready, waiting = socket.socketpair()
    except OSError:  # no descriptor to be had: the first request pops them
        return
    with ready, waiting:
        ready.send(b"\0")
        await anyio.wait_readable(waiting)


def _pair() -> tuple[socket.socket, socket.socket]:
    """Two connected TCP sockets on 127.0.0.1, made here (the listener lives for the two calls
    and takes one connection, checked to be ours): the kernel's TCP paths are the first
    request's too, and warming them took ~40 µs more off it than a Unix socket pair
    (bench_first_request.py). Where the loopback cannot listen, a Unix socket pair."""
    try:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(1.0)  # the connection is queued before accept: never waits
            near = socket.create_connection(listener.getsockname(), timeout=1.0)
            try:
                far, peer = listener.accept()
            except BaseException:
                near.close()
                raise
            if peer != near.getsockname():  # another local process connected first: not ours
                far.close()
                near.close()
                raise OSError("the rehearsal's listener accepted a stranger")
            return near, far
    except OSError:
        return socket.socketpair()


async def _wrap(sock: socket.socket) -> Connection:
    """A connection of the running backend's kind over `sock` (what `sockets.connect` makes)."""
    sock.setblocking(False)
    if on_asyncio():
        import asyncio  # already imported: an asyncio loop runs

        from .sockets import AsyncioConnection

        conn = AsyncioConnection(asyncio.get_running_loop())
        protocol: asyncio.Protocol = conn  # type: ignore[assignment]  # the protocol's methods, duck-typed
        await asyncio.get_running_loop().create_connection(lambda: protocol, sock=sock)
        return conn
    return AnyioConnection(await anyio.abc.SocketStream.from_socket(sock))


async def _answer(far: socket.socket, answers: list[bytes]) -> None:
    """The far end: reads each whole request (head, then `content-length` bytes) and answers it
    with the next answer; after the last, waits to be cancelled."""
    buf = b""
    try:
        for reply in answers:
            while (size := _request_size(buf)) is None or len(buf) < size:
                await anyio.wait_readable(far)
                chunk = far.recv(65536)
                if not chunk:
                    return
                buf += chunk
            buf = buf[size:]
            far.sendall(reply)  # ~1 KB into an empty socket buffer: never blocks
    except OSError:  # the near end sees the connection end, and the rehearsal fails with that
        far.close()


def _request_size(buf: bytes) -> int | None:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    for line in buf[:end].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return end + 4 + int(value)
    return end + 4
