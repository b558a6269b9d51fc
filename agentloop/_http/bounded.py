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

import re
from collections.abc import AsyncIterator

import httpx

from .._exceptions import APIResponseError
from .._retry import Failure

__all__ = ["read_body", "read_some", "sse_events", "too_big"]

_NL = re.compile(rb"\r\n?|\n")


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


async def read_body(response: httpx.Response, limit: int) -> bytes:
    """The whole (decoded) body, or a non-retryable `Failure` as soon as it passes `limit` bytes."""
    request_id = response.headers.get("x-request-id")
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big("the response body", "max_response_bytes", limit, request_id)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise too_big("the response body", "max_response_bytes", limit, request_id)
    return bytes(body)


async def read_some(response: httpx.Response, limit: int) -> bytes:
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
) -> AsyncIterator[tuple[str, str]]:
    """`(event, data)` for each dispatched server-sent event; comments and empty events are skipped.

    A line longer than `max_line` bytes, or a body past `max_body` bytes in all, ends the stream
    with a non-retryable `Failure` (`APIResponseError`) naming the budget.
    """
    request_id = response.headers.get("x-request-id")
    buf = bytearray()
    scan = 0  # buf[:scan] holds no line end (but maybe a final CR waiting for its LF)
    total = 0
    event, size = "", 0
    data: list[str] = []
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > max_body:
            raise too_big("the streamed response", "max_response_bytes", max_body, request_id)
        buf += chunk
        start = 0
        for m in _NL.finditer(buf, max(scan - 1, 0)):
            if m.end() == len(buf) and m.group() == b"\r":
                break  # a CR at the very end: its LF may come in the next chunk
            if m.start() - start > max_line:
                raise too_big("one line of the streamed response", "max_sse_line_bytes", max_line, request_id)
            line = buf[start : m.start()].decode("utf-8", "replace")
            start = m.end()
            if not line:
                if data or event:
                    yield event or "message", "\n".join(data)
                event, data, size = "", [], 0
                continue
            name, _, value = line.partition(":")
            if not name:
                continue  # a comment (keep-alive)
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
                size += len(value) + 1
                if size > max_line:  # many short data lines make one long event
                    raise too_big("one server-sent event", "max_sse_line_bytes", max_line, request_id)
        del buf[:start]
        scan = len(buf)
        if scan > max_line:
            raise too_big("one line of the streamed response", "max_sse_line_bytes", max_line, request_id)
    if buf == b"\r" and (data or event):  # the body ended on the CR of the blank line that dispatches
        yield event or "message", "\n".join(data)
    # Otherwise an event without its final blank line is not dispatched (SSE rules).
