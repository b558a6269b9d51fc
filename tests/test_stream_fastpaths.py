"""The streamed answer's fast paths are the slow paths, faster: proved over generated input.

Each shortcut the stream takes for the usual case (issue #19) is checked against the general code
it bypasses: the stream parser skips the codec's depth check for event data too short to nest
past the limit; events are built by an `__init__` that sets their slots directly; the SSE reader
takes whole events of the usual shapes at once instead of line by line. The property
tests draw the input; the end-to-end tests send it through a real stream.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import pickle
from typing import Any

import anyio
import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sse_split import cut, expected, parse_pieces
from test_stream_reads import HEAD, stream_over_tcp

import agentloop
from agentloop import APIResponseError, Event
from agentloop._json import MAX_DEPTH, loads  # internal unit under test: the slow path
from agentloop._retry import Failure  # internal unit under test
from agentloop._wire.assembler import SHORT, StreamAssembler  # internal unit under test

# --- JSON: no depth check below SHORT characters ------------------------------------------------


@st.composite
def nested_texts(draw: Any) -> str:
    """JSON texts nested 0-260 levels deep (arrays and objects mixed, near the limit of 200 more
    often), padded with whitespace so their lengths fall on both sides of SHORT, sometimes cut
    or damaged so that they are not JSON."""
    depth = draw(st.one_of(st.integers(0, 260), st.integers(MAX_DEPTH - 3, MAX_DEPTH + 3)))
    kinds = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))  # True: an object level
    leaf = json.dumps(draw(st.one_of(st.integers(), st.text(max_size=5), st.none(), st.booleans())))
    text = leaf
    for is_object in reversed(kinds):
        text = '{"k":' + text + "}" if is_object else "[" + text + "]"
    text += " " * draw(st.integers(0, max(0, SHORT + 2 - len(text))))
    damage = draw(st.sampled_from(["none", "none", "cut", "extra"]))
    if damage == "cut" and len(text) > 1:
        text = text[: draw(st.integers(1, len(text) - 1))]
    elif damage == "extra":
        text += draw(st.sampled_from(["]", "}", ",", "[", "x"]))
    return text


def slow(text: str) -> Any:
    """What the general path gives: the value, or the kind of error."""
    try:
        return ("value", loads(text))
    except ValueError as e:
        return ("error", type(e).__name__)


def fast(text: str) -> Any:
    """What the stream assembler gives for the same event data."""
    try:
        return ("value", StreamAssembler("r", 1, None).parse(text))
    except Failure as f:
        assert isinstance(f.error, APIResponseError) and f.retryable
        return ("error", "ValueError")


@settings(max_examples=examples(40), deadline=None)
@given(text=nested_texts())
def test_the_depth_shortcut_accepts_and_refuses_what_the_codec_does(text: str) -> None:
    got, want = fast(text), slow(text)
    if want[0] == "error":
        assert got == ("error", "ValueError")  # DepthError is a ValueError: refused alike
    else:
        assert got == want


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1])
@pytest.mark.parametrize("pad", [0, 1, 200])
def test_the_shortcut_boundary(depth: int, pad: int) -> None:
    """200 levels take 400 characters at least: SHORT (401) is the longest text that cannot nest
    past the limit, so the text 201 deep is never short and is refused; 200 deep is taken."""
    text = "[" * depth + "]" * depth + " " * pad
    if depth > MAX_DEPTH:
        assert len(text) > SHORT
        assert fast(text) == ("error", "ValueError") and slow(text) == ("error", "DepthError")
    else:
        assert fast(text) == slow(text) == ("value", nested_list(depth))


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def nested_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value if depth else None


def chunked(events: list[bytes]) -> bytes:
    sse = b"".join(b"data: " + e + b"\n\n" for e in events)
    return HEAD + b"%x\r\n%b\r\n0\r\n\r\n" % (len(sse), sse)


@pytest.mark.parametrize("extra", [149, MAX_DEPTH - 1, MAX_DEPTH])  # the chunk is 1 + extra levels deep
def test_a_stream_event_deeper_than_the_codec_allows_is_refused(anyio_backend: str, extra: int) -> None:
    """An event nested past 200 levels fails the request (a typed error, nothing emitted); one at
    the limit is read. 150 levels fit in a short event (no depth check), 200 and 201 do not."""
    chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}}], "x": nested(extra)}
    data = json.dumps(chunk, separators=(",", ":")).encode()
    assert (len(data) <= SHORT) == (extra == 149)
    end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    body = chunked([data, json.dumps(end).encode(), b"[DONE]"])
    seen: list[Any] = []
    if 1 + extra > MAX_DEPTH:
        with pytest.raises(APIResponseError, match="nested too deep"):
            anyio.run(stream_over_tcp, [body], seen, backend=anyio_backend)
        assert seen == []
    else:
        turn = anyio.run(stream_over_tcp, [body], seen, backend=anyio_backend)
        assert turn.message["content"] == "hi" and [e.text for e in seen] == ["hi"]


# --- events: the quick __init__ -----------------------------------------------------------------

EVENTS = [
    cls
    for cls in (getattr(agentloop, name) for name in agentloop.__all__)
    if isinstance(cls, type) and issubclass(cls, Event) and cls is not Event
]
values = st.one_of(st.none(), st.integers(), st.text(max_size=8), st.lists(st.integers(), max_size=3))


def test_every_event_class_has_the_quick_init() -> None:
    assert len(EVENTS) >= 12 and agentloop.OutputDelta in EVENTS
    for cls in EVENTS:
        assert "_set_run_id" in cls.__init__.__code__.co_names, cls  # set through the slot descriptors


@settings(max_examples=examples(75), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_events_behave_as_frozen_dataclasses(data: Any) -> None:
    cls = data.draw(st.sampled_from(EVENTS))
    fields = dataclasses.fields(cls)
    positional = [f for f in fields if not f.kw_only and f.default is dataclasses.MISSING]
    optional = [f for f in fields if f.default is not dataclasses.MISSING]
    args = [data.draw(values) for _ in positional]
    kwargs = {f.name: data.draw(values) for f in optional if data.draw(st.booleans())}
    event = cls(*args, **kwargs)
    want = (
        {f.name: f.default for f in optional}
        | dict(zip([f.name for f in positional], args, strict=True))
        | kwargs
    )
    assert {f.name: getattr(event, f.name) for f in fields} == want
    assert event == cls(*args, **kwargs) and repr(event) == repr(cls(*args, **kwargs))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, fields[0].name, "other")
    assert pickle.loads(pickle.dumps(event)) == event
    assert dataclasses.replace(event, run_id="other").run_id == "other"
    with pytest.raises(TypeError):
        cls(*args, *([None] * (len(fields) + 1)))  # too many positional arguments
    if positional:
        with pytest.raises(TypeError):
            cls(*args[:-1])  # one missing


def test_the_signatures_are_the_dataclass_ones() -> None:
    for cls in EVENTS:
        params = list(inspect.signature(cls).parameters.values())
        fields = dataclasses.fields(cls)
        assert [p.name for p in params] == [f.name for f in fields if not f.kw_only] + [
            f.name for f in fields if f.kw_only
        ]
        for p, f in zip(
            params, [*(f for f in fields if not f.kw_only), *(f for f in fields if f.kw_only)], strict=True
        ):
            assert p.kind == (p.KEYWORD_ONLY if f.kw_only else p.POSITIONAL_OR_KEYWORD)
            assert p.default == (p.empty if f.default is dataclasses.MISSING else f.default)


# --- SSE: whole events of the usual shapes taken at once --------------------------------------


@st.composite
def router_bodies(draw: Any) -> tuple[bytes, list[bytes]]:
    """What routers send (`data: <json>` and `event: <name>` + `data: ...`, each ended by a blank
    line), mixed with every other shape the line-by-line reader knows, in a drawn order."""
    value = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=10)
    shapes = st.sampled_from(["data", "data", "event", "other", "blank", "bare", "no-space", "two-data"])
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 16))):
        shape, v, name = draw(shapes), draw(value).encode(), draw(value).encode()
        lines += {
            "data": [b"data: " + v, b""],
            "event": [b"event: " + name, b"data: " + v, b""],
            "other": [b": keep-alive", b"id: " + v, b"data: " + v, b""],
            "blank": [b""],
            "bare": [b"data", b""],
            "no-space": [b"data:" + v, b"event:" + name, b""],
            "two-data": [b"data: " + v, b"data: " + name, b""],
        }[shape]
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    body = b"".join(line + end for line in lines)
    if draw(st.booleans()):  # an event still arriving
        unfinished = b"data: " + draw(value).encode()
        body += unfinished
        lines.append(unfinished)
    return body, lines


@settings(max_examples=examples(100), deadline=None)
@given(drawn=router_bodies(), max_line=st.sampled_from([1 << 20, 12, 30]), data=st.data())
def test_router_shaped_streams_read_as_line_by_line_whatever_the_cuts(
    drawn: tuple[bytes, list[bytes]], max_line: int, data: Any
) -> None:
    body, lines = drawn
    ended = not lines or body.endswith(b"\n")
    offsets = data.draw(st.lists(st.integers(0, len(body)), max_size=12))
    want = expected(lines, max_line, ended)
    assert parse_pieces([body], max_line) == want
    assert parse_pieces(cut(body, offsets), max_line) == want
