"""The SSE reader gives the same events however the network cuts the body (property tests).

A body is drawn as lines (fields `data` / `event` / `id` / unknown, comments, blank lines that
dispatch, bytes that are not UTF-8), each ended by LF, CRLF or CR, mixed; it is then cut at
arbitrary byte offsets (inside a CRLF, inside a UTF-8 character) and fed to the reader piece
by piece. The events must be the ones the WHATWG rules give for the whole body, read line by
line (`expected`), and the budgets (`max_sse_line_bytes`) must hold the same way whatever the cuts.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import Agent, APIResponseError, FluxClient, TextDelta
from agentloop._http.bounded import SSEParser, sse_events  # internal unit under test
from agentloop._retry import Failure  # internal unit under test
from agentloop.testing import FakeFluxRouter, text

NAMES = [b"data", b"data", b"data", b"event", b"id", b"retry", b"", b"x-router"]
ENDINGS = [b"\n", b"\r\n", b"\r"]

values = st.one_of(
    st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12).map(
        str.encode
    ),
    st.binary(max_size=8).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),  # not UTF-8 too
)


@st.composite
def sse_bodies(draw: Any) -> tuple[bytes, list[bytes]]:
    """(body, its lines without their ends); the last line may lack its end (never dispatched)."""
    lines: list[bytes] = []
    body = b""
    previous_end = b"\n"
    for _ in range(draw(st.integers(0, 24))):
        if draw(st.integers(0, 3)) == 0:
            line = b""  # a blank line: dispatch
        else:
            name = draw(st.sampled_from(NAMES))
            space = draw(st.booleans())
            line = name + b":" + (b" " if space else b"") + draw(values)
            if name and draw(st.integers(0, 9)) == 0:
                line = name  # a field without a colon: its value is ""
        end = draw(st.sampled_from(ENDINGS))
        if previous_end == b"\r" and not line and end != b"\r":
            end = b"\r"  # "\r" then a blank line's "\n" would read as one CRLF: not what we mean
        lines.append(line)
        body += line + end
        previous_end = end
    if draw(st.booleans()):
        unfinished = b"data: " + draw(values)
        lines.append(unfinished)
        body += unfinished
    return body, lines


@st.composite
def cut_bodies(draw: Any) -> tuple[bytes, list[bytes], list[int]]:
    """(body, lines, offsets to cut the body at)."""
    body, lines = draw(sse_bodies())
    return body, lines, draw(st.lists(st.integers(0, len(body)), max_size=30))


def expected(lines: list[bytes], max_line: int, ended: bool) -> tuple[list[tuple[str, str]], bool]:
    """The events of `lines` read one by one (WHATWG), up to the first line past the budget;
    True if the budget was broken. `ended`: whether the last line has its end."""
    events: list[tuple[str, str]] = []
    event, data, size = "", [], 0
    for i, line in enumerate(lines):
        if len(line) > max_line:
            return events, True
        if not ended and i == len(lines) - 1:
            break  # the unfinished line is never read as a line
        if not line:
            if data or event:
                events.append((event or "message", "\n".join(data)))
            event, data, size = "", [], 0
            continue
        name, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if name == b"data":
            data.append(value.decode("utf-8", "replace"))
            size += len(value) + 1
            if size > max_line:
                return events, True
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    return events, False


def cut(body: bytes, offsets: list[int]) -> list[bytes]:
    points = sorted({0, len(body), *offsets})
    return [body[a:b] for a, b in itertools.pairwise(points)]


def parse_pieces(pieces: list[bytes], max_line: int) -> tuple[list[tuple[str, str]], bool]:
    parser = SSEParser(max_line)
    events: list[tuple[str, str]] = []
    try:
        for piece in pieces:
            events += parser.feed(piece)
            if parser.failure is not None:
                raise parser.failure
    except Failure as failure:
        assert isinstance(failure.error, APIResponseError)
        assert "InputBudget.max_sse_line_bytes" in str(failure.error) and not failure.retryable
        return events, True
    return events, False


@settings(max_examples=examples(30), deadline=None)
@given(drawn=sse_bodies(), data=st.data())
def test_any_cuts_give_the_events_of_the_whole_body(drawn: tuple[bytes, list[bytes]], data: Any) -> None:
    body, lines = drawn
    offsets = data.draw(st.lists(st.integers(0, len(body)), max_size=30))
    ended = body.endswith(tuple(ENDINGS)) or not lines
    want, _ = expected(lines, 1 << 20, ended)
    assert parse_pieces(cut(body, offsets), 1 << 20) == (want, False)
    assert parse_pieces([body], 1 << 20) == (want, False)
    assert parse_pieces([body[i : i + 1] for i in range(len(body))], 1 << 20) == (want, False)


@settings(max_examples=examples(30), deadline=None)
@given(drawn=sse_bodies(), max_line=st.integers(1, 40), data=st.data())
def test_the_line_budget_holds_the_same_whatever_the_cuts(
    drawn: tuple[bytes, list[bytes]], max_line: int, data: Any
) -> None:
    """A line (or one event's data) past `max_sse_line_bytes` ends the stream with the budget's
    error; every event before it is still delivered, whatever the cuts."""
    body, lines = drawn
    offsets = data.draw(st.lists(st.integers(0, len(body)), max_size=30))
    ended = body.endswith(tuple(ENDINGS)) or not lines
    assert parse_pieces(cut(body, offsets), max_line) == expected(lines, max_line, ended)


def test_a_4_mib_event_is_one_event_whatever_the_cuts() -> None:
    value = ("é" * (2 * 1024 * 1024 - 8)).encode()  # ~4 MiB of two-byte characters
    body = b"event: big\r\ndata: " + value + b"\r\n\r\n"
    for size in (1 << 16, 4093, len(body)):
        events, broken = parse_pieces([body[i : i + size] for i in range(0, len(body), size)], 4 << 20)
        assert not broken and events == [("big", value.decode())]
    events, broken = parse_pieces([body[i : i + 65536] for i in range(0, len(body), 65536)], len(value) - 1)
    assert broken and events == []


@pytest.mark.parametrize("size", [10, 200 * 1024])  # a long line's value is read through a view
def test_long_and_short_lines_read_alike(size: int) -> None:
    v = b"\xc3\xa9\xff:" * size  # a colon inside the value, and bytes that are not UTF-8
    body = b"event:" + v + b"\n" + b"data" + v + b"\n" + b"data:" + v + b"\ndata:  " + v + b"\n\n"
    decoded = v.decode("utf-8", "replace")
    want = [(decoded, "\n".join([decoded, " " + decoded]))]  # `data<v>` is a field named so: ignored
    for cut_at in (1, 7, 4096, len(body)) if size == 10 else (4093, 65536, len(body)):
        assert parse_pieces([body[i : i + cut_at] for i in range(0, len(body), cut_at)], 1 << 22) == (
            want,
            False,
        )


# --- the same through `sse_events`, the reader FluxClient uses, on both backends ------------------


class Pieces(httpx.AsyncByteStream):
    """A body that arrives in exactly these pieces."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


async def read_events(
    pieces: list[bytes], max_line: int, max_body: int, events: list[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    """The events `sse_events` hands over, into `events` (kept when it raises)."""
    response = httpx.Response(200, headers={"x-request-id": "req_1"}, stream=Pieces(pieces))
    events = [] if events is None else events
    async for batch in sse_events(response, max_line, max_body):
        assert batch  # a read that completed no event is not handed over
        events += batch
    return events


@pytest.mark.anyio
@settings(
    max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=cut_bodies(), max_line=st.integers(1, 40))
async def test_sse_events_gives_the_same_events_and_errors(
    drawn: tuple[bytes, list[bytes], list[int]], max_line: int
) -> None:
    body, lines, offsets = drawn
    ended = body.endswith(tuple(ENDINGS)) or not lines
    want, broken = expected(lines, max_line, ended)
    got: list[tuple[str, str]] = []
    try:
        await read_events(cut(body, offsets), max_line, 1 << 20, got)
    except Failure as failure:  # FluxClient raises its `error`
        e = failure.error
        assert isinstance(e, APIResponseError) and not failure.retryable
        assert broken and "InputBudget.max_sse_line_bytes" in str(e) and e.request_id == "req_1"
    else:
        assert not broken
    assert got == want  # with a broken budget: every event before the line past it


@pytest.mark.anyio
@settings(
    max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(n=st.integers(1, 40), over=st.integers(-3, 3), offsets=st.lists(st.integers(0, 1000), max_size=30))
async def test_the_body_budget_counts_every_byte_whatever_the_cuts(
    n: int, over: int, offsets: list[int]
) -> None:
    body = b'data: {"choices": []}\n\n' * n
    limit = len(body) - over
    if over > 0:
        with pytest.raises(Failure) as info:
            await read_events(cut(body, offsets), 1 << 20, limit)
        assert "InputBudget.max_response_bytes" in str(info.value.error)
    else:
        assert await read_events(cut(body, offsets), 1 << 20, limit) == [("message", '{"choices": []}')] * n


@pytest.mark.anyio
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_megabyte_events_stream_through_a_run(wire: str) -> None:
    """Three 1 MB text events, end to end: each one delta, the answer whole."""
    answer = "".join(chr(0x41 + i % 26) for i in range(3_000_000))
    async with FakeFluxRouter([text(answer)]) as router:
        base = router.anthropic_url if wire == "anthropic" else router.base_url
        async with FluxClient(base_url=base, api_key="k") as client:
            deltas: list[str] = []
            async with Agent(client=client).stream("hi") as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        deltas.append(event.text)
    assert "".join(deltas) == answer and len(deltas) == 3
    assert events.result is not None and events.result.output == answer
