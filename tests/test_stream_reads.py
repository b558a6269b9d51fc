"""A streamed answer gives the same deltas and turn however the network and the server frame it.

Since the lean transport decodes every HTTP chunk one network read holds in one pass (and the
SSE parser, the idle clock and the hand-over to the consumer then run once per read), the
framing must not show: SSE events split across HTTP chunks or many in one, chunk extensions and
trailers, line ends LF / CRLF / CR mixed, the bytes cut into arbitrary TCP pieces. A raw TCP
server (see test_http_lean_hostile) writes the scripted bytes; the deltas `emit` receives and
the assembled turn are compared with what the generated answer says they must be, independently
of how agentloop parses. A stream cut anywhere before its end is a typed connection error, after
a prefix of the same deltas.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import anyio
import anyio.abc
import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_http_lean_hostile import RawServer, client, read_request

from agentloop import APIConnectionError, ModelRequest, TextDelta, ToolCallDelta

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
ENDINGS = [b"\n", b"\r\n", b"\r"]
pieces = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6)


@st.composite
def answers(draw: Any) -> tuple[list[Any], list[tuple[Any, ...]], dict[str, Any]]:
    """(chunk objects to send, the deltas they must give, the assembled message)."""
    chunks: list[Any] = []
    deltas: list[tuple[Any, ...]] = []
    text = draw(st.lists(pieces, max_size=4))
    for piece in text:
        chunks.append({"choices": [{"index": 0, "delta": {"content": piece}}]})
        deltas.append(("text", piece))
    calls = []
    for i in range(draw(st.integers(0, 3))):
        frags = draw(st.lists(pieces, min_size=1, max_size=4))
        head = {
            "index": i,
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": f"f{i}", "arguments": ""},
        }
        chunks.append({"choices": [{"index": 0, "delta": {"tool_calls": [head]}}]})
        deltas.append(("call", i, f"f{i}", ""))
        for frag in frags:
            chunks.append({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "function": {"arguments": frag}}]}}]})  # fmt: skip
            deltas.append(("call", i, None, frag))
        args = "".join(frags)
        args = args if args.strip() else "{}"  # blank arguments are stored as "{}" (replayable)
        calls.append(
            {"id": f"call_{i}", "type": "function", "function": {"name": f"f{i}", "arguments": args}}
        )
    chunks.append(
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if calls else "stop"}]}
    )
    chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    return chunks, deltas, message


@st.composite
def bodies(draw: Any) -> tuple[bytes, list[tuple[Any, ...]], dict[str, Any]]:
    """A whole response: the SSE text with drawn line ends and keep-alive comments, cut into HTTP
    chunks at drawn places (with or without extensions), with or without trailers."""
    chunks, deltas, message = draw(answers())
    sse = b""
    for obj in [*chunks, "[DONE]"]:
        end = draw(st.sampled_from(ENDINGS))
        if draw(st.integers(0, 5)) == 0:
            sse += b": keep-alive" + end
        data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
        sse += b"data: " + data + end + end
    cuts = sorted({c % len(sse) for c in draw(st.lists(st.integers(1, 10_000), max_size=20))} | {0, len(sse)})
    ext = draw(st.sampled_from([b"", b";x=1"]))
    body = b"".join(b"%x%b\r\n%b\r\n" % (b - a, ext, sse[a:b]) for a, b in itertools.pairwise(cuts) if b > a)
    body += b"0\r\n" + draw(st.sampled_from([b"", b"x-trailer: 1\r\n"])) + b"\r\n"
    return HEAD + body, deltas, message


def tcp_cuts(raw: bytes, offsets: list[int]) -> list[bytes]:
    bounds = sorted({o % len(raw) for o in offsets} | {0, len(raw)})
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def seen_as_tuples(events: list[Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for event in events:
        if isinstance(event, TextDelta):
            out.append(("text", event.text))
        else:
            assert isinstance(event, ToolCallDelta)
            out.append(("call", event.index, event.name, event.arguments_delta))
    return out


async def stream_over_tcp(sends: list[bytes], seen: list[Any]) -> Any:
    """One streamed request against a server that writes `sends` one by one, then closes."""

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        await read_request(stream)
        for piece in sends:
            await stream.send(piece)

    async def emit(event: Any) -> None:
        seen.append(event)

    req = ModelRequest(model="m", messages=[{"role": "user", "content": "hi"}], tools=[], run_id="r", step=1)
    async with RawServer(script) as server, client(server.url) as c:
        return await c.request(req, emit)


@settings(
    max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=bodies(), offsets=st.lists(st.integers(0, 100_000), max_size=25))
def test_any_framing_and_any_reads_give_the_same_deltas_and_turn(
    anyio_backend: str, drawn: tuple[bytes, list[tuple[Any, ...]], dict[str, Any]], offsets: list[int]
) -> None:
    raw, want, message = drawn
    for sends in ([raw], tcp_cuts(raw, offsets)):  # all in one write, and in arbitrary pieces
        seen: list[Any] = []
        turn = anyio.run(stream_over_tcp, sends, seen, backend=anyio_backend)
        assert seen_as_tuples(seen) == want
        assert turn.streamed and turn.message == message and turn.usage.completion_tokens == 2


@settings(
    max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=bodies(), at=st.integers(0, 100_000), offsets=st.lists(st.integers(0, 100_000), max_size=10))
def test_a_stream_cut_anywhere_is_a_connection_error_after_a_prefix_of_the_deltas(
    anyio_backend: str,
    drawn: tuple[bytes, list[tuple[Any, ...]], dict[str, Any]],
    at: int,
    offsets: list[int],
) -> None:
    raw, want, _ = drawn
    cut = len(HEAD) + at % (len(raw) - len(HEAD))  # the head whole, the body short of its last byte
    seen: list[Any] = []
    with pytest.raises(APIConnectionError):
        anyio.run(stream_over_tcp, tcp_cuts(raw[:cut], offsets), seen, backend=anyio_backend)
    assert seen_as_tuples(seen) == want[: len(seen)]


def test_many_events_in_one_chunk_and_one_event_over_many_chunks(anyio_backend: str) -> None:
    """The two extremes a router produces: a whole answer in one HTTP chunk, and one event spread
    over one-byte chunks, in the same response."""
    first = b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n' * 3
    last = b'data: {"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}]}\r\n\r\ndata: [DONE]\r\n\r\n'
    body = b"%x\r\n%b\r\n" % (len(first), first) + b"".join(
        b"1\r\n%b\r\n" % last[i : i + 1] for i in range(len(last))
    )
    seen: list[Any] = []
    turn = anyio.run(stream_over_tcp, [HEAD + body + b"0\r\n\r\n"], seen, backend=anyio_backend)
    assert seen_as_tuples(seen) == [("text", "a")] * 3 + [("text", "b")]
    assert turn.message["content"] == "aaab"


def sse_response(deltas: list[dict[str, Any]], finish: str = "tool_calls") -> bytes:
    """A streamed answer with these `delta` objects, one SSE event each, in one HTTP chunk each."""
    objs = [{"choices": [{"index": 0, "delta": d}]} for d in deltas]
    objs.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    events = [b"data: " + json.dumps(o).encode() + b"\n\n" for o in objs] + [b"data: [DONE]\n\n"]
    return HEAD + b"".join(b"%x\r\n%b\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


def call(cid: str, name: str, args: str) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


LENIENT = {  # the shapes OpenAI-compatible servers send besides the usual (wire-notes)
    "no-index: a new id opens a call, no id continues the last": (
        [
            {"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": '{"x"'}}]},
            {"tool_calls": [{"function": {"arguments": ": 1}"}}]},
            {"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]},
            {"tool_calls": [{"id": "a", "function": {"arguments": ""}}]},
        ],
        [("call", 0, "f", '{"x"'), ("call", 0, None, ": 1}"), ("call", 1, "g", "{}")],
        {"content": None, "tool_calls": [call("a", "f", '{"x": 1}'), call("b", "g", "{}")]},
    ),
    "role, text and a call in one delta; arguments as an object": (
        [
            {
                "role": "assistant",
                "content": "hm",
                "tool_calls": [{"index": 0, "id": "a", "function": {"name": "f"}}],
            },
            {"tool_calls": [{"index": 0, "function": {"arguments": {"x": 1}}}]},
        ],
        [("text", "hm"), ("call", 0, "f", ""), ("call", 0, None, '{"x":1}')],
        {"content": "hm", "tool_calls": [call("a", "f", '{"x":1}')]},
    ),
    "legacy function_call": (
        [{"function_call": {"name": "f", "arguments": "{"}}, {"function_call": {"arguments": "}"}}],
        [("call", 0, "f", "{"), ("call", 0, None, "}")],
        {"content": None, "tool_calls": [call("", "f", "{}")]},
    ),
    "id and name taken once, a repeated name is not appended": (
        [
            {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}}]},
            {"tool_calls": [{"index": 0, "id": "z", "function": {"name": "f", "arguments": "{}"}}]},
        ],
        [("call", 0, "f", ""), ("call", 0, None, "{}")],
        {"content": None, "tool_calls": [call("a", "f", "{}")]},
    ),
}


@pytest.mark.parametrize("case", sorted(LENIENT))
def test_lenient_stream_shapes(anyio_backend: str, case: str) -> None:
    deltas, want, message = LENIENT[case]
    seen: list[Any] = []
    turn = anyio.run(stream_over_tcp, [sse_response(deltas)], seen, backend=anyio_backend)
    assert seen_as_tuples(seen) == want
    assert turn.message == {"role": "assistant", **message}


def test_a_refusal_is_assembled_and_not_emitted_as_text(anyio_backend: str) -> None:
    raw = sse_response([{"role": "assistant", "refusal": "I can"}, {"refusal": "not."}], finish="stop")
    seen: list[Any] = []
    turn = anyio.run(stream_over_tcp, [raw], seen, backend=anyio_backend)
    assert seen == [] and turn.message == {"role": "assistant", "content": None, "refusal": "I cannot."}


@pytest.mark.parametrize("stream", [False, True])
def test_endless_trailers_are_cut_at_the_head_limit(anyio_backend: str, stream: bool) -> None:
    """Trailer lines after the last chunk, more than a response head may hold and never ended by a
    blank line: a typed error once past the limit, not a wait for the end (the server keeps the
    connection open)."""
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    raw = HEAD + b"%x\r\n%b\r\n0\r\n" % (len(body), body) + b"x-trailer: 1\r\n" * 6000  # ~84 KB

    async def script(index: int, s: anyio.abc.SocketStream) -> None:
        await read_request(s)
        await s.send(raw)
        await anyio.sleep_forever()  # never the blank line; the client must give up on its own

    async def main() -> None:
        req = ModelRequest(
            model="m", messages=[{"role": "user", "content": "hi"}], tools=[], run_id="r", step=1
        )

        async def emit(event: Any) -> None:
            pass

        async with RawServer(script) as server, client(server.url) as c:
            with pytest.raises(APIConnectionError, match="trailers line longer than"):
                await c.request(req, emit if stream else None)

    anyio.run(main, backend=anyio_backend)
