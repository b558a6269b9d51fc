"""Reading an HTTP response within `InputBudget`: body bytes counted while reading, SSE lines bounded.

Why not `response.aread()` / httpx-sse: both buffer without a bound (a 1.5 GB body became 3.1 GB
of RSS before anything could object, a 200 MB SSE line 850 MB). Here every chunk is counted as
it arrives, and past the budget reading stops at once: the rest is never read, and the
connection is closed rather than drained (httpx closes a response that was not read to the end).

SSE parsing follows the WHATWG event-stream rules (the part a client needs: `event`, `data`,
comments, blank-line dispatch, CR / LF / CRLF line ends). It is small enough to own, and owning
it is what makes the line bound possible.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any, Protocol, cast

import anyio
import httpx

from .._budget import InputBudget
from .._exceptions import APIResponseError
from .._model import Emit
from .._retry import Failure
from .h1 import Response, StreamIdle

__all__ = ["SSEParser", "pump", "read_body", "read_some", "sse_events", "too_big"]

# Past this size a line's value is decoded through a memoryview instead of being sliced out
# first: one copy fewer of a multi-megabyte event (each costs ms of page faults, on the loop).
_BIG_LINE = 64 * 1024
_BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark


def too_big(what: str, field: str, limit: int, request_id: str | None) -> Failure:
    """The typed error for a budget overrun: which budget, and how to raise it. Not retried."""
    return Failure(
        APIResponseError(
            f"{what} exceeded InputBudget.{field}={limit} bytes; reading stopped there and the connection was "
            f"closed (not retried: the same request would get the same answer). If the endpoint is "
            f"trusted and answers are really this large, raise it: "
            f"FluxClient(input_budget=InputBudget({field}=...))",
            request_id=request_id,
        ),
        retryable=False,
    )


async def read_body(response: Response, limit: int) -> bytes:
    """The whole (decoded) body, or a non-retryable `Failure` as soon as it passes `limit` bytes."""
    request_id = response.headers.get("x-request-id")
    declared = response.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_big("the response body", "max_response_bytes", limit, request_id)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise too_big("the response body", "max_response_bytes", limit, request_id)
    return bytes(body)


async def read_some(response: Response, limit: int) -> bytes:
    """At most `limit` bytes of the body (an error body: enough to say what went wrong); the rest
    is left unread (the connection is closed instead of drained)."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk[: limit - len(body)]
        if len(body) >= limit:
            break
    return bytes(body)


async def sse_events(
    response: httpx.Response, max_line: int, max_body: int
) -> AsyncIterator[list[tuple[str, str]]]:
    """For each piece of the body as it arrives, the `(event, data)` pairs it completed (never empty).

    One list per network read, not one event at a time: the caller handles what one read brought
    in one go (one idle-clock restart, one hand-over to the consumer). A line longer than
    `max_line` bytes, or a body past `max_body` bytes in all, ends the stream with a
    non-retryable `Failure` (`APIResponseError`) naming the budget.
    """
    request_id = response.headers.get("x-request-id")
    parser = SSEParser(max_line, request_id)
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > max_body:
            raise too_big("the streamed response", "max_response_bytes", max_body, request_id)
        batch = parser.feed(chunk)
        if batch:
            yield batch
            if parser.failure is not None:
                raise parser.failure
    # An event without its final blank line is not dispatched (SSE rules): nothing to flush.


class SSEParser:
    """The WHATWG event-stream rules a client needs (`event`, `data`, comments, blank-line dispatch,
    CR / LF / CRLF line ends), on bytes: a chunk is cut into lines with `bytes.split`, and only
    a field's value is decoded. Chunks may be cut anywhere (inside a CRLF, inside a UTF-8
    character: neither CR nor LF occurs inside one). Other fields (`id`, `retry`) are ignored.
    """

    __slots__ = ("cr", "data", "event", "failure", "head", "max_line", "request_id", "size", "tail")

    def __init__(self, max_line: int, request_id: str | None = None) -> None:
        self.max_line = max_line
        self.request_id = request_id
        self.tail = bytearray()  # the start of a line whose end has not arrived yet
        self.cr = False  # the last chunk ended with a CR: an LF starting the next one belongs to it
        self.event = ""
        self.data: list[str] = []
        self.size = 0  # bytes of the event's data lines so far
        self.failure: Failure | None = None  # a bound broken after the events `feed` returned
        # The stream's first bytes while they may still be a UTF-8 BOM (None: past them). WHATWG:
        # one leading U+FEFF is ignored; read as part of the first line, it hid the first event
        # (a field named "\ufeffdata"), and with it the whole answer of a one-event stream.
        self.head: bytes | None = b""

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """The events `chunk` completed, in order (usually none or a few).

        A line or event over `max_line` raises the budget's `Failure`; when events before it in
        the same chunk were complete, they are returned first and the failure is left in
        `failure` for the caller to raise after handling them (as if they had come one by one).
        """
        out: list[tuple[str, str]] = []
        if self.head is not None:
            chunk = self.head + chunk
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self.head = chunk  # (cut inside the BOM: wait for its end)
                return out
            self.head = None
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        try:
            self._feed(chunk, out)
        except Failure as failure:
            if not out:
                raise
            self.failure = failure
        return out

    def _feed(self, chunk: bytes, out: list[tuple[str, str]]) -> None:
        if not chunk:
            return
        if self.cr:
            self.cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:  # every line end becomes one LF (a final CR: see `cr`)
            self.cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self.tail or self.data or self.event:  # an event begun in an earlier chunk: end it first
            end = chunk.find(b"\n\n")
            if end < 0:
                self._lines(chunk, out)
                return
            self._lines(chunk[: end + 2], out)  # a blank line ends it: nothing is pending after it
            chunk = chunk[end + 2 :]
        chunk = self._events(chunk, out)
        if chunk:
            self._lines(chunk, out)

    def _events(self, chunk: bytes, out: list[tuple[str, str]]) -> bytes:
        """The whole events at the start of `chunk` of the usual shapes, `data: <value>` or
        `event: <name>` then `data: <value>` (then the blank line), each taken as a whole instead
        of line by line; what is left of `chunk`, from the first other event on, for `_lines`.

        Only called with nothing pending (no tail, no field of an undispatched event), so each
        event taken here is the one the line-by-line rules read (`test_sse_split.py`). Lines are
        found with a one-byte `find` (memchr): splitting on two bytes is several times slower.
        """
        pos, size, limit = 0, len(chunk), min(self.max_line, _BIG_LINE - 1)
        find, starts = chunk.find, chunk.startswith
        while (nl := find(b"\n", pos)) >= 0 and nl - pos <= limit:
            if starts(b"data: ", pos):
                if nl + 1 >= size or chunk[nl + 1] != 10:  # not followed by the blank line
                    break
                out.append(("message", chunk[pos + 6 : nl].decode("utf-8", "replace")))
            elif starts(b"event: ", pos) and starts(b"data: ", nl + 1):
                end = find(b"\n", nl + 1)
                if end < 0 or end + 1 >= size or chunk[end + 1] != 10 or end - nl - 1 > limit:
                    break
                name = chunk[pos + 7 : nl].decode("utf-8", "replace") or "message"
                out.append((name, chunk[nl + 7 : end].decode("utf-8", "replace")))
                nl = end
            else:
                break
            pos = nl + 2
        return chunk[pos:] if pos else chunk

    def _lines(self, chunk: bytes, out: list[tuple[str, str]]) -> None:
        """`chunk` line by line (the WHATWG rules): any shape, an event or a line cut anywhere."""
        tail = self.tail
        if b"\n" not in chunk:
            tail += chunk
            if len(tail) > self.max_line:
                raise self._too_long("one line of the streamed response")
            return
        lines = chunk.split(b"\n")
        if tail:
            tail += lines[0]
            lines[0] = cast(bytes, tail)  # a bytearray (no copy of a long line): `_field` takes both
        rest = lines.pop()  # after the last LF: the start of the next line
        max_line = self.max_line
        data = self.data
        for line in lines:
            if len(line) > max_line:
                raise self._too_long("one line of the streamed response")
            if not line:
                if data or self.event:
                    out.append((self.event or "message", data[0] if len(data) == 1 else "\n".join(data)))
                    self.event, self.data, self.size = "", [], 0
                    data = self.data
                else:
                    self.event = ""
            elif line.startswith(b"data: ") and len(line) < _BIG_LINE:  # the usual line, inline
                data.append(line[6:].decode("utf-8", "replace"))
                self.size += len(line) - 5
                if self.size > max_line:
                    raise self._too_long("one server-sent event")
            else:
                self._field(line)
        if len(rest) > max_line:
            raise self._too_long("one line of the streamed response")
        self.tail = bytearray(rest)

    def _field(self, line: bytes | bytearray) -> None:
        name, _, value = line.partition(b":") if len(line) < _BIG_LINE else _split_big(line)
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self.data.append(str(value, "utf-8", "replace"))
            self.size += len(value) + 1
            if self.size > self.max_line:  # many short data lines make one long event
                raise self._too_long("one server-sent event")
        elif name == b"event":
            self.event = str(value, "utf-8", "replace")
        # `name == b""` is a comment (a keep-alive); other fields do not matter here

    def _too_long(self, what: str) -> Failure:
        return too_big(what, "max_sse_line_bytes", self.max_line, self.request_id)


def _split_big(line: bytes | bytearray) -> tuple[bytes | bytearray, bytes, memoryview]:
    """`line.partition(b":")` with the value as a view into `line`, not a copy."""
    colon = line.find(b":")
    if colon < 0:
        return line, b"", memoryview(b"")
    return line[:colon], b":", memoryview(line)[colon + 1 :]


class _Progress(Protocol):
    emitted: bool


class _Clock(Protocol):
    idle_deadline: float


async def pump(
    batches: Any,
    assembler: Any,
    emit: Emit,
    budget: InputBudget,
    progress: _Progress,
    clock: _Clock | None = None,
) -> bool:
    """Feed each read's SSE events to the assembler and its deltas to `emit`. False: the stream went idle.

    The idle clock restarts after a read that brought an event the assembler understood (so
    keep-alive comments, `ping`s and a router's status events do not keep a dead stream open),
    and stops while `emit` waits: a slow consumer is its own business, not the server's idleness.
    It is moved once per read, not per event: each move reschedules a timer.

    An `emit` with an `offer(deltas) -> bool` method (`Agent.stream`'s buffer) takes a read's
    deltas in one call when they fit without waiting; then nothing waits, and the clock is not
    stopped at all (one timer move per read instead of two).

    `clock`: the response when it keeps the deadline itself (`LeanResponse.idle_deadline`: a
    read of its body waits at most until then, then raises `StreamIdle`): no cancel scope and no
    timer of its own then, and the deadline costs nothing while the bytes are already there.
    Otherwise the deadline is a cancel scope's around the reading.

    `budget`: `stream_idle_timeout` is the idle deadline; after the wire's last event the rest of
    the body (a chunked body's terminator, usually in the same or the next read) is read for at
    most `stream_end_grace` (no longer than the idle timeout), so the connection can be pooled
    again: a server or proxy that holds it open after the end costs that connection and this
    wait, never the answer (it used to cost the answer, after the whole idle timeout). A tail
    that breaks the framing is still the transport's error.
    """
    if clock is not None:
        try:
            return await _feed(batches, assembler, emit, budget, progress, clock)
        except StreamIdle:
            return _ended(assembler)  # idle, unless it was the tail's deadline after the end
    with anyio.CancelScope() as scope:  # (`_feed` sets its deadline first)
        return await _feed(batches, assembler, emit, budget, progress, _ScopeClock(scope))
    return _ended(assembler)  # the deadline passed: idle, unless it was the drain's after the end


def _ended(assembler: Any) -> bool:
    return getattr(assembler, "ended", False) is True  # (a `Wire` of the user's may not say)


async def _feed(
    batches: Any, assembler: Any, emit: Emit, budget: InputBudget, progress: _Progress, clock: _Clock
) -> bool:
    idle = budget.stream_idle_timeout
    offer = getattr(emit, "offer", None)
    now = anyio.current_time
    clock.idle_deadline = now() + idle
    async for batch in batches:
        seen = assembler.chunks, assembler.complete
        deltas, failure = assembler.feed_all(batch)
        if deltas:
            progress.emitted = True
            if offer is None or not offer(deltas):
                clock.idle_deadline = math.inf
                for delta in deltas:
                    await emit(delta)
        if failure is not None:  # after the deltas before it, as if the events came one by one
            raise failure
        if deltas or (assembler.chunks, assembler.complete) != seen:
            clock.idle_deadline = now() + idle
        if _ended(assembler):
            # The tail (a chunked body's terminator), read only so the connection can be pooled
            # again; its deadline passing is not idleness (`pump` returns True then), and what
            # it carries is not part of the answer
            clock.idle_deadline = now() + min(idle, budget.stream_end_grace)
            async for _ in batches:
                pass
            return True
    return True


class _ScopeClock:
    """The idle deadline as a cancel scope's (a response that does not keep one itself)."""

    __slots__ = ("scope",)

    def __init__(self, scope: anyio.CancelScope) -> None:
        self.scope = scope

    @property
    def idle_deadline(self) -> float:
        return self.scope.deadline

    @idle_deadline.setter
    def idle_deadline(self, value: float) -> None:
        self.scope.deadline = value
