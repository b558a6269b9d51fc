"""A hostile chat-completions server on 127.0.0.1 for the cross-run isolation tests.

It runs in a thread of its own (its own asyncio loop, through an anyio blocking portal), so that
the client's event loop under test holds only the client's tasks: a task the client leaves behind
is then visible as one. It writes raw bytes, so it can misbehave at the byte level.

Which answer a request gets is read from the run's first user message, `"run <i> <kind>"`: a
healthy run (`kind == "healthy"`) first gets a call of the `echo` tool with `{"text": "<i>"}`,
then, once the tool's answer is in the conversation, the final text `done <i>: <tool answer>`.
Every other kind is hostile on the run's first request (HTTP kinds) or is a hostile model answer
(MODEL_KINDS) followed by the same final text; `call_<name>` calls tool `<name>` with no arguments,
then gives the final text.

No sleeps: a slowloris body sends one byte each time the server answers a healthy request (a tick
driven by the healthy runs' own progress), and waits for nothing else; a stall waits until the
client closes the connection. What ends a hostile run is the run's own deadline.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
from helpers import LoopbackServer, serving_in_thread

from agentloop import (
    Agent,
    AgentloopError,
    FluxClient,
    InputBudget,
    RetryPolicy,
    RunFinished,
    RunLimits,
    ToolRegistry,
)

__all__ = [
    "ON_BACKENDS",
    "HTTP_KINDS",
    "KEY",
    "MODEL_KINDS",
    "STREAM_KINDS",
    "HostileServer",
    "Outcome",
    "client_for",
    "make_agent",
    "play_round",
    "problems",
    "serving",
    "task_count",
]

KEY = "sk-isolation-SECRET-7f3a9c"  # the API key: no error may show it

# hostile answers to the first request of a run, at the HTTP level
# Every transport on every backend it runs on (aiohttp is asyncio-only).
ON_BACKENDS = [
    ("lean", "asyncio"),
    ("lean", "trio"),
    ("httpcore", "asyncio"),
    ("httpcore", "trio"),
    ("sharded", "asyncio"),
    ("sharded", "trio"),
    ("aiohttp", "asyncio"),
]

HTTP_KINDS = (
    "stall_head",  # the head, then nothing until the client leaves
    "slowloris",  # the head (a 1 MB body announced), then one byte per tick
    "garbage_json",  # a 200 whose body is not JSON
    "huge_body",  # a body past max_response_bytes
    "reset_mid_body",  # half a body, then a TCP reset
    "short_length",  # content-length shorter than the body: the rest stays on the connection
    "long_length",  # content-length longer than the body, then close
    "chunked_forever",  # a chunked body that never ends
    "error_status_echo",  # a 401 whose body echoes the Authorization header it got
)
# streamed (SSE) misbehaviour, whatever the request asked for
STREAM_KINDS = (
    "sse_never_done",  # a delta, then the stream stays open without [DONE]
    "sse_closed_without_done",  # a whole answer, then close without [DONE]
    "sse_garbage",  # an event that is not JSON
)
# hostile model answers: the run must go on (the model is told) and finish
MODEL_KINDS = (
    "unknown_tool",  # a call of a tool that does not exist
    "hostile_name",  # a tool name full of control characters, 10 KB long
    "bad_json_args",  # arguments that are not JSON
    "wrong_type_args",  # arguments of the wrong type, plus extra keys
    "deep_args",  # arguments nested 10,000 deep
    "many_calls",  # 3,000 tool calls in one message
)


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _calls(calls: list[tuple[str, str]], index: int) -> list[dict[str, Any]]:
    return [
        {
            "index": n,
            "id": f"call_{index}_{n}",
            "type": "function",
            "function": {"name": name, "arguments": args},
        }
        for n, (name, args) in enumerate(calls)
    ]


def _answer(calls: list[tuple[str, str]] | None, content: str | None, index: int, stream: bool) -> bytes:
    """A well-formed answer (JSON or SSE) with tool calls or a final text."""
    if not stream:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = [
                {k: v for k, v in c.items() if k != "index"} for c in _calls(calls, index)
            ]
        reason = "tool_calls" if calls else "stop"
        body = json.dumps(
            {
                "id": f"r{index}",
                "object": "chat.completion",
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": reason}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        return _head(len(body)) + body
    delta: dict[str, Any] = {"role": "assistant"}
    if calls:
        delta["tool_calls"] = _calls(calls, index)
    else:
        delta["content"] = content
    reason = "tool_calls" if calls else "stop"
    events = _sse({"choices": [{"index": 0, "delta": delta}]})
    events += _sse({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}) + b"data: [DONE]\n\n"
    return _sse_head() + events


def _head(length: int, status: bytes = b"200 OK", ctype: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %b\r\ncontent-type: %b\r\ncontent-length: %d\r\n\r\n" % (status, ctype, length)


def _sse_head() -> bytes:
    # close-delimited: the stream ends when the connection does (as many servers do)
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"


def _model_calls(kind: str, index: int) -> list[tuple[str, str]]:
    if kind == "unknown_tool":
        return [("no_such_tool", "{}")]
    if kind == "hostile_name":
        return [("\x00\x1b[31m\u202e" + "n" * 10_000, "{}")]
    if kind == "bad_json_args":
        return [("echo", '{"text": "x", ')]
    if kind == "wrong_type_args":
        return [("echo", '{"text": {"__proto__": [1, 2]}, "extra": true, "constructor": null}')]
    if kind == "deep_args":
        return [("echo", '{"text": ' + "[" * 10_000 + "]" * 10_000 + "}")]
    assert kind == "many_calls", kind
    return [("echo", json.dumps({"text": str(n)})) for n in range(3000)]


class Request:
    def __init__(self, head: bytes, body: bytes) -> None:
        self.head = head
        data = json.loads(body)
        self.stream = bool(data.get("stream"))
        first = next(m for m in data["messages"] if m["role"] == "user")
        _, index, self.kind = first["content"].split()
        self.index = int(index)
        tools = [m for m in data["messages"] if m["role"] == "tool"]
        self.answered = tools[-1]["content"] if tools else None


async def _read_request(stream: anyio.abc.ByteStream, buf: bytearray) -> Request | None:
    """One request off a keep-alive connection (None when the client closed it)."""
    while b"\r\n\r\n" not in buf:
        try:
            buf += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return None
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(buf) < end + length:
        buf += await stream.receive()
    body = bytes(buf[end : end + length])
    del buf[: end + length]
    return Request(head, body)


class HostileServer(LoopbackServer):
    """The server's state: `requests` counts what it was asked, `tick` wakes slowloris bodies."""

    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0
        self.tick = anyio.Event()
        self.url = ""

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        buf = bytearray()
        # OSError: the connection this handler reset itself; the server must outlive every connection
        with contextlib.suppress(
            anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError
        ):
            async with stream:
                while (request := await _read_request(stream, buf)) is not None:
                    self.requests += 1
                    if not await self._answer(stream, request):
                        return

    async def _answer(self, stream: anyio.abc.SocketStream, r: Request) -> bool:
        """Answer one request; False when the connection must end after it."""
        if r.kind in HTTP_KINDS or r.kind in STREAM_KINDS:
            if r.answered is None:
                return await self._hostile(stream, r)
        elif r.kind in MODEL_KINDS and r.answered is None:
            await stream.send(_answer(_model_calls(r.kind, r.index), None, r.index, r.stream))
            return not r.stream
        if r.kind.startswith("call_") and r.answered is None:  # a call of the tool named, no arguments
            await stream.send(_answer([(r.kind.removeprefix("call_"), "{}")], None, r.index, r.stream))
            return not r.stream
        if r.answered is None:  # a healthy run's first request
            await stream.send(
                _answer([("echo", json.dumps({"text": str(r.index)}))], None, r.index, r.stream)
            )
        else:
            await stream.send(_answer(None, f"done {r.index}: {r.answered}", r.index, r.stream))
        self._wake_slowloris()
        return not r.stream

    def _wake_slowloris(self) -> None:
        tick, self.tick = self.tick, anyio.Event()
        tick.set()

    async def _hostile(self, stream: anyio.abc.SocketStream, r: Request) -> bool:
        kind = r.kind
        if kind == "stall_head":
            await stream.send(_head(1000))
            await _until_closed(stream)
        elif kind == "slowloris":
            await stream.send(_head(1_000_000) + b"{")
            while True:  # one byte per healthy answer, until the client leaves
                closed = await _tick_or_close(stream, self.tick)
                if closed:
                    break
                await stream.send(b" ")
        elif kind == "garbage_json":
            body = b'{"choices": [{"index": 0, "message": nope'
            await stream.send(_head(len(body)) + body)
            return True
        elif kind == "huge_body":
            size = 4 * 1024 * 1024
            await stream.send(_head(size) + b'{"x": "')
            piece = b"a" * 65536
            for _ in range(size // len(piece)):
                await stream.send(piece)
        elif kind == "reset_mid_body":
            await stream.send(_head(1000) + b'{"choices": [')
            await _reset(stream)
        elif kind == "short_length":
            whole = _answer(None, "never the answer", r.index, False)
            body = whole.split(b"\r\n\r\n", 1)[1]
            await stream.send(_head(len(body) - 12) + body)
            return True  # keep-alive: 12 stray bytes are left on the connection
        elif kind == "long_length":
            body = _answer(None, "never the answer", r.index, False).split(b"\r\n\r\n", 1)[1]
            await stream.send(_head(len(body) + 100) + body)
        elif kind == "chunked_forever":
            await stream.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                b'5\r\n{"a":\r\n'
            )
            await _until_closed(stream)
        elif kind == "error_status_echo":
            auth = [line for line in r.head.split(b"\r\n") if line.lower().startswith(b"authorization")]
            body = json.dumps(
                {"error": {"message": f"bad key: {auth[0].decode() if auth else KEY} {KEY}"}}
            ).encode()
            await stream.send(_head(len(body), b"401 Unauthorized") + body)
            return True
        else:
            await self._hostile_stream(stream, r)
        return False

    async def _hostile_stream(self, stream: anyio.abc.SocketStream, r: Request) -> None:
        delta = _sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "partial "}}]})
        if r.kind == "sse_never_done":
            await stream.send(_sse_head() + delta)
            await _until_closed(stream)
        elif r.kind == "sse_closed_without_done":
            end = _sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            await stream.send(_sse_head() + delta + end)
        else:
            assert r.kind == "sse_garbage", r.kind
            await stream.send(_sse_head() + delta + b"data: {nope\n\n")


async def _until_closed(stream: anyio.abc.SocketStream) -> None:
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        while True:
            await stream.receive()


async def _tick_or_close(stream: anyio.abc.SocketStream, tick: anyio.Event) -> bool:
    """Wait for the next tick or for the client to close; True if it closed."""
    closed = False

    async def watch() -> None:
        nonlocal closed
        await _until_closed(stream)
        closed = True
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await tick.wait()
        tg.cancel_scope.cancel()
    return closed


async def _reset(stream: anyio.abc.SocketStream) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN."""
    sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


@contextlib.contextmanager
def serving() -> Iterator[HostileServer]:
    """The server running in a thread of its own (its own asyncio loop) for the duration of the block."""
    server = HostileServer()
    with serving_in_thread(server.serve):
        yield server


# --- one round: N concurrent runs on one shared client, some of them hostile -------------------------

HOSTILE_TIMEOUT = 0.5  # seconds: the deadline of a run whose server stalls (what ends it; not asserted)


@dataclass
class Outcome:
    index: int
    kind: str
    mode: str  # "run" (Agent.run) or "stream" (Agent.stream)
    output: Any = None
    error: BaseException | None = None
    tool_contents: list[str] = field(default_factory=list)


def make_agent(client: FluxClient) -> Agent[Any, Any]:
    tools = ToolRegistry()

    @tools.tool
    async def echo(text: str) -> str:
        """Echo the text back."""
        return f"echo {text}"

    # loop detection off: many_calls repeats one tool on purpose
    return Agent(client=client, tools=tools, model="m", limits=RunLimits(max_steps=4, loop_threshold=None))


async def one_run(agent: Agent[Any, Any], index: int, kind: str, mode: str) -> Outcome:
    out = Outcome(index, kind, mode)
    hostile = kind in HTTP_KINDS or kind in STREAM_KINDS
    limits = RunLimits(max_steps=4, loop_threshold=None, timeout=HOSTILE_TIMEOUT if hostile else None)
    prompt = f"run {index} {kind}"
    try:
        if mode == "run":
            result = await agent.run(prompt, limits=limits)
        else:
            result = None
            async with agent.stream(prompt, limits=limits) as events:
                async for event in events:
                    if isinstance(event, RunFinished):
                        result = event.result
            assert result is not None
    except Exception as e:  # a BaseException other than these is a bug the round must not hide
        out.error = e
        return out
    out.output = result.output
    out.tool_contents = [m["content"] for m in result.messages if m["role"] == "tool"]
    return out


async def play_round(agent: Agent[Any, Any], plan: list[tuple[str, str]]) -> list[Outcome]:
    """Every run of the plan at once; their outcomes in the plan's order."""
    outcomes: list[Outcome | None] = [None] * len(plan)

    async def go(i: int, kind: str, mode: str) -> None:
        outcomes[i] = await one_run(agent, i, kind, mode)

    async with anyio.create_task_group() as tg:
        for i, (kind, mode) in enumerate(plan):
            tg.start_soon(go, i, kind, mode)
    return [o for o in outcomes if o is not None]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)


def problems(outcomes: list[Outcome]) -> list[str]:
    """What broke the promise, one line each (an empty list: the round held)."""
    found = []
    for o in outcomes:
        what = f"run {o.index} ({o.kind}, {o.mode})"
        if o.error is not None:
            if o.kind == "healthy" or o.kind in MODEL_KINDS:
                found.append(f"{what} failed: {type(o.error).__name__}: {o.error}")
            elif not isinstance(o.error, AgentloopError):
                found.append(f"{what} raised an untyped {type(o.error).__name__}: {o.error!r}")
            for e in _chain(o.error):
                if KEY in str(e) or KEY in repr(e) or KEY in "".join(str(a) for a in e.args):
                    found.append(f"{what}: the API key is in {type(e).__name__}: {e!r}"[:300])
            continue
        if o.kind == "healthy" and (o.output != f"done {o.index}: echo {o.index}"):
            found.append(f"{what} answered {o.output!r}")
        elif o.kind in MODEL_KINDS:
            if not (isinstance(o.output, str) and o.output.startswith(f"done {o.index}: ")):
                found.append(f"{what} answered {o.output!r}")
            if o.kind != "many_calls" and not o.tool_contents:
                found.append(f"{what}: the model was not told about its bad call")
        elif o.kind not in ("healthy", "sse_closed_without_done") and o.kind not in MODEL_KINDS:
            found.append(f"{what} succeeded against a hostile answer: {o.output!r}")
        elif o.kind == "sse_closed_without_done" and o.output != f"done {o.index}: echo {o.index}":
            pass  # a stream that ended cleanly but without [DONE] may be taken as the answer it was
    return found


def client_for(url: str, transport: str, **kw: Any) -> FluxClient:
    kw.setdefault("retry", RetryPolicy(max_retries=0))  # a retry would hide a poisoned connection
    kw.setdefault("input_budget", InputBudget(max_response_bytes=1024 * 1024))
    return FluxClient(base_url=url, api_key=KEY, transport=transport, **kw)  # type: ignore[arg-type]


def task_count() -> int:
    return len(anyio.get_running_tasks())
