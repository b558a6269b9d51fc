"""A fast, stateless fake OpenAI chat-completions server for the benchmarks (stdlib asyncio).

The scenario comes from the model name `bench-s<S>-k<K>[-l<ms>]`: while the conversation has
fewer than S assistant messages, the answer asks for K tools `work_<i>(x, label)`; then it is
the text "done". `-l<ms>` waits before answering (a slow model). `GET /stats` returns the request
count. Hand-parsed HTTP/1.1 with keep-alive: the server must never be the bottleneck, so it
parses only what the benchmark clients send (Content-Length bodies). A request with
`"stream": true` gets the same answer as SSE chunks (chunked transfer encoding): a role chunk,
each tool call's id and name then its arguments in 3 fragments (or the text), a finish chunk,
a usage chunk, `data: [DONE]`.

    python benchmarks/_server.py --port 0     # prints {"url": ...} once listening
    python benchmarks/_server.py --plain      # never streams: a streamed run gets every answer whole
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys

_MODEL = re.compile(rb'"model"\s*:\s*"bench-s(\d+)-k(\d+)(?:-l(\d+))?"')
STATS = {"requests": 0}
PLAIN = {"on": False}  # --plain: every answer plain JSON, also to `stream: true` (see profile_step.py)


def message_for(body: bytes) -> tuple[dict[str, object], str]:
    m = _MODEL.search(body)
    steps, tools = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
    step = body.count(b'"role":"assistant"') + body.count(b'"role": "assistant"')
    if step < steps:
        calls = [
            {
                "id": f"call_{step}_{i}",
                "type": "function",
                "function": {"name": f"work_{i}", "arguments": json.dumps({"x": i, "label": "abc"})},
            }
            for i in range(tools)
        ]
        message = {"role": "assistant", "content": None, "tool_calls": calls}
        finish = "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": "done"}, "stop"
    return message, finish


def answer(body: bytes) -> bytes:
    message, finish = message_for(body)
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1,
            "model": "bench",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        },
        separators=(",", ":"),
    ).encode()


_STREAM = re.compile(rb'"stream"\s*:\s*true')


def sse_chunks(body: bytes) -> list[bytes]:
    """The answer to `body` as SSE events, one per element."""
    message, finish = message_for(body)

    def event(delta: dict[str, object], finish_reason: str | None = None, **extra: object) -> bytes:
        chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "bench",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}  # fmt: skip
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    out = [event({"role": "assistant", "content": None if "tool_calls" in message else ""})]
    for i, call in enumerate(message.get("tool_calls") or []):  # type: ignore[attr-defined]
        fn = call["function"]
        out.append(event({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                          "function": {"name": fn["name"], "arguments": ""}}]}))  # fmt: skip
        args, third = fn["arguments"], -(-len(fn["arguments"]) // 3)
        for j in range(0, len(args), third):
            out.append(event({"tool_calls": [{"index": i, "function": {"arguments": args[j : j + third]}}]}))
    if message.get("content"):
        out.append(event({"content": message["content"]}))
    out.append(event({}, finish))
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    out.append(b"data: " + json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
                                       "model": "bench", "choices": [], "usage": usage}).encode() + b"\n\n")  # fmt: skip
    out.append(b"data: [DONE]\n\n")
    return out


def latency_ms(body: bytes) -> int:
    m = _MODEL.search(body)
    return int(m.group(3)) if m and m.group(3) else 0


class Http(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end]
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            length = int(m.group(1)) if m else 0
            if len(self.buf) < head_end + 4 + length:
                return
            body = self.buf[head_end + 4 : head_end + 4 + length]
            self.buf = self.buf[head_end + 4 + length :]
            self.handle(head.split(b" ", 2)[1], body)

    def handle(self, path: bytes, body: bytes) -> None:
        if path.startswith(b"/stats"):
            self.send(json.dumps(STATS).encode())
            return
        STATS["requests"] += 1
        if not PLAIN["on"] and _STREAM.search(body):
            self.send_stream(sse_chunks(body))
            return
        delay = latency_ms(body)
        payload = answer(body)
        if delay:
            asyncio.get_running_loop().call_later(delay / 1000, self.send, payload)
        else:
            self.send(payload)

    def send(self, payload: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(payload)).encode()
                + b"\r\n\r\n"
                + payload
            )

    def send_stream(self, events: list[bytes]) -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        framed = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
        if not self.transport.is_closing():
            self.transport.write(head + b"".join(framed) + b"0\r\n\r\n")


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", port, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"url": f"http://127.0.0.1:{port}"}), flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--plain", action="store_true", help="never stream: a plain answer to `stream: true` too")
    args = p.parse_args()
    PLAIN["on"] = args.plain
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one fd per waiting client connection
    try:
        import uvloop  # optional: a faster server loop where installed

        uvloop.run(serve(args.port))
    except ImportError:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        sys.exit(0)
