"""A server that sends more than its response's framing says must not reach the next run.

The bytes past the end of a response (after `content-length` bytes, or after the last chunk) stay
on the connection; a pool that reuses it hands them to whoever sends next on it, usually another
run: garbage, or a whole answer forged for that run. Every transport must close such a connection
(httpx's: agentloop/_http/fence.py). Property: for any framing, any split of the answer into
writes, and any over-sent bytes (junk or a forged answer) written with the answer's end, the first
run gets its own answer and the next run on the same single-connection client gets its own.

Over-sent bytes that arrive only after the next request was sent cannot be told from its answer
by any HTTP/1.1 client; they are not part of the promise (the test writes them with the answer).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import h11
import httpx
import pytest
from helpers import LoopbackServer, serving_in_thread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_isolation_server import ON_BACKENDS

from agentloop import Agent, FluxClient, RetryPolicy, RunFinished

GUARD = 60  # seconds: a hang fails here instead of hanging the suite (not a timing claim)


def _completion(text: str) -> bytes:
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    return json.dumps(
        {"id": "r", "object": "chat.completion", "model": "m", "choices": [choice], "usage": usage}
    ).encode()


def _sse(text: str) -> bytes:
    first = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]}
    last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in (first, last)) + b"data: [DONE]\n\n"


def answer(text: str, *, stream: bool, chunked: bool, chunks: int = 1) -> bytes:
    """A whole, well-framed HTTP/1.1 keep-alive answer carrying `text`."""
    body = _sse(text) if stream else _completion(text)
    ctype = b"text/event-stream" if stream else b"application/json"
    if not chunked:
        return b"HTTP/1.1 200 OK\r\ncontent-type: %b\r\ncontent-length: %d\r\n\r\n%b" % (
            ctype,
            len(body),
            body,
        )
    step = max(1, -(-len(body) // chunks))
    pieces = [body[i : i + step] for i in range(0, len(body), step)]
    framed = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\ncontent-type: %b\r\ntransfer-encoding: chunked\r\n\r\n%b" % (ctype, framed)


class OverSender(LoopbackServer):
    """Answers a prompt "first" with `self.writes` (the answer, split, the over-sent bytes riding on
    its last write) and any other prompt with its own well-framed answer."""

    def __init__(self) -> None:
        self.url = ""
        self.writes: list[bytes] = []
        self.chunked = False

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        with contextlib.suppress(
            anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError
        ):
            async with stream:
                while (data := await _request(stream, conn)) is not None:
                    prompt = data["messages"][-1]["content"]
                    if prompt == "first":
                        for write in self.writes:
                            await stream.send(write)
                    else:
                        await stream.send(
                            answer(
                                f"answer to {prompt}", stream=bool(data.get("stream")), chunked=self.chunked
                            )
                        )


async def _request(stream: anyio.abc.SocketStream, conn: h11.Connection) -> dict[str, Any] | None:
    """One request's JSON body (None when the client closed the connection)."""
    body = b""
    if conn.their_state is h11.DONE:
        conn.start_next_cycle()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive())
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            # the answer is written raw, so tell h11 this side finished too
            conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
            conn.send(h11.EndOfMessage())
            return dict(json.loads(body))
        elif isinstance(event, h11.ConnectionClosed):
            return None


@contextlib.contextmanager
def serving() -> Iterator[OverSender]:
    """The server in a thread of its own (its own loop), so its writes are not paced by the client's."""
    server = OverSender()
    with serving_in_thread(server.serve):
        yield server


async def run_once(agent: Agent[Any, Any], prompt: str, stream: bool) -> Any:
    if not stream:
        return (await agent.run(prompt)).output
    output = None
    async with agent.stream(prompt) as events:
        async for event in events:
            if isinstance(event, RunFinished):
                output = event.result.output
    return output


def forged(stream: bool, chunked: bool) -> bytes:
    """A whole answer planted for the next run on the connection."""
    return answer("LEAKED", stream=stream, chunked=chunked)


over_sent = st.one_of(
    st.binary(min_size=1, max_size=600),
    st.builds(lambda s, c, n: forged(s, c) * n, st.booleans(), st.booleans(), st.integers(1, 3)),
    st.sampled_from([b"\r\n", b"H", b"HTTP/1.1 200 OK\r\n", b"0\r\n\r\n"]),
)


def _check(transport: str, anyio_backend: str, stream: bool, chunked: bool, writes: list[bytes]) -> None:
    async def main() -> None:
        retry = RetryPolicy(max_retries=0)  # a retry would hide a poisoned connection
        async with FluxClient(
            base_url=server.url,
            api_key="sk-x",
            transport=transport,
            max_connections=1,
            retry=retry,  # type: ignore[arg-type]
        ) as client:
            agent: Agent[Any, Any] = Agent(client=client, model="m")
            with anyio.fail_after(GUARD):
                assert await run_once(agent, "first", stream) == "the first answer"
                for n in range(2):
                    assert await run_once(agent, f"next {n}", stream) == f"answer to next {n}"

    with serving() as server:
        server.writes, server.chunked = writes, chunked
        anyio.run(main, backend=anyio_backend)


# aiohttp's parser keeps a partial line it read past a message for the next response on the
# connection; nothing public says it holds one, so that transport is not fenced yet (see below).
FENCED = [tb for tb in ON_BACKENDS if tb[0] != "aiohttp"]


@pytest.mark.parametrize(("transport", "anyio_backend"), FENCED)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stream=st.booleans(),
    chunked=st.booleans(),
    chunks=st.integers(1, 5),
    extra=over_sent,
    cuts=st.lists(st.floats(0.0, 1.0, exclude_max=True), max_size=3),
)
def test_over_sent_bytes_never_reach_the_next_run(
    transport: str,
    anyio_backend: str,
    stream: bool,
    chunked: bool,
    chunks: int,
    extra: bytes,
    cuts: list[float],
) -> None:
    whole = answer("the first answer", stream=stream, chunked=chunked, chunks=chunks)
    at = sorted({int(c * len(whole)) for c in cuts} - {0})
    writes = [whole[i:j] for i, j in zip([0, *at], [*at, len(whole)], strict=True)]
    writes[-1] += extra  # with the answer's end: read before, or with, the message's last byte
    _check(transport, anyio_backend, stream, chunked, writes)


@pytest.mark.parametrize(("transport", "anyio_backend"), ON_BACKENDS)
@pytest.mark.parametrize("stream", [False, True])
def test_a_forged_answer_after_the_body_is_not_the_next_runs(
    transport: str, anyio_backend: str, stream: bool
) -> None:
    """The exact repro: a content-length answer followed, in the same write, by a whole answer
    planted for the next request on the connection."""
    _check(
        transport,
        anyio_backend,
        stream,
        False,
        [answer("the first answer", stream=stream, chunked=False) + forged(stream, False)],
    )


@pytest.mark.xfail(
    strict=True,
    reason="transport='aiohttp': aiohttp's response parser keeps bytes read past a message (here one "
    "NUL byte) and parses the next response on the pooled connection after them ('Bad status line'); "
    "neither aiohttp's response nor its connection says so publicly, so the pool reuses it.",
)
def test_a_partial_line_after_the_body_on_aiohttp() -> None:
    whole = answer("the first answer", stream=False, chunked=False)
    _check("aiohttp", "asyncio", False, False, [whole + b"\x00"])


def test_the_fence_reaches_h11_on_the_pinned_httpx() -> None:
    """The fence finds h11's state through httpx's response stream (agentloop/_http/fence.py); if an
    httpx or httpcore upgrade moved it, this fails rather than the fence silently opening."""
    from agentloop._http.fence import FencedTransport, reach_h11  # internal unit under test

    async def main() -> None:
        with serving() as server:
            async with FencedTransport() as transport:
                body = json.dumps({"messages": [{"role": "user", "content": "probe"}]}).encode()
                request = httpx.Request("POST", server.url, content=body)
                response = await transport.handle_async_request(request)
                state = reach_h11(getattr(response.stream, "_inner", None))
                assert isinstance(state, h11.Connection)
                assert b"answer to probe" in await response.aread()
                assert state.their_state is h11.IDLE  # nothing trailed: pooled for the next request

    anyio.run(main)
